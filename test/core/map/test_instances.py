"""Instance association on a synthetic wall with patches: worked examples with known
answers for every rule (ownership, glue, displaced parts, merge evidence, ghosts)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import render_boxes

from panoptic_mapping.core.geometry import backproject, depth_edges
from panoptic_mapping.core.map.instances import InstanceConfig, InstanceMap, vote_masks

H, W = 48, 64
# principal point off the 1 cm voxel lattice, so no pixel ray lands on a voxel boundary
K = np.array([[50.0, 0, W / 2 + 0.3], [0, 50.0, H / 2 + 0.3], [0, 0, 1]])
# world x ranges of two touching objects on a wall at z = 1 m (y spans the middle rows)
A = (-0.30, -0.02)
B = (-0.02, 0.25)


# These worlds are painted on one flat wall: no geometry tells their objects apart, and
# 'smooth' evidence (one surface, cut by the front-end) would rightly merge them. Tests of
# the mask rules run on them with that evidence off.
PAINTED = InstanceConfig(smooth_weight=0.0)


def camera(tx: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = tx
    return T


def world_x(tx: float) -> np.ndarray:
    u = np.arange(W)
    return (u - K[0, 2]) / K[0, 0] + tx


def ground_truth(tx: float) -> np.ndarray:
    """(H, W) ids: 1 = wall, 2 = A, 3 = B."""
    x = np.broadcast_to(world_x(tx), (H, W))
    gt = np.ones((H, W), np.int32)
    rows = slice(12, 36)
    gt[rows][(x[rows] >= A[0]) & (x[rows] < A[1])] = 2
    gt[rows][(x[rows] >= B[0]) & (x[rows] < B[1])] = 3
    return gt


def shuffled(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same segmentation with random ids 1..M, as a front-end emits them."""
    ids = np.unique(labels[labels > 0])
    perm = rng.permutation(len(ids)) + 1
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[ids] = perm
    return lut[labels]


def ingest(im: InstanceMap, masks: np.ndarray, tx: float):
    return im.process_frame(masks, np.ones((H, W), np.float32), K, camera(tx))


def map_ids(im: InstanceMap, tx: float) -> dict[int, int]:
    """GT id -> majority rendered map id at view tx."""
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(tx))
    gt = ground_truth(tx)
    out = {}
    for g in (1, 2, 3):
        ids, c = np.unique(rendered[gt == g], return_counts=True)
        out[g] = int(ids[np.argmax(c)])
    return out


def test_backproject_worked_example():
    depth = np.zeros((H, W), np.float32)
    depth[24, 42] = 2.0  # 9.7 px right of and 0.3 px above the principal point, 2 m away
    pts, flat = backproject(depth, K, camera(1.0))
    assert flat.tolist() == [24 * W + 42]
    np.testing.assert_allclose(pts[0], [1.0 + 9.7 / 50 * 2, -0.3 / 50 * 2, 2.0])


def test_consistent_ids_under_random_per_frame_ids():
    im, rng = InstanceMap(PAINTED), np.random.default_rng(0)
    # steps of 1.67 cm: the 2 cm pixel footprint samples every 1 cm voxel in some view
    for k, tx in enumerate(np.linspace(0, 0.1, 7)):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.05)
    assert len(set(ids.values())) == 3 and 0 not in ids.values()
    assert set(im.confirmed_ids().tolist()) == set(ids.values())
    rendered, conf = im.render_view(np.ones((H, W), np.float32), K, camera(0.05))
    gt = ground_truth(0.05)
    for g, i in ids.items():
        iou = ((rendered == i) & (gt == g)).sum() / ((rendered == i) | (gt == g)).sum()
        assert iou > 0.95, (g, iou)
    assert conf[gt == 2].min() > 0.5


def test_objects_glued_at_first_sight_are_separated_at_once():
    """One glued view against apart views: the young id splits, and B is shown on its own
    as soon as it is confirmed (before it could count as a late id change)."""
    im, rng = InstanceMap(PAINTED), np.random.default_rng(1)
    glued = ground_truth(0.0).copy()
    glued[glued == 3] = 2  # the front-end merged A and B in the first frame
    labels = ingest(im, shuffled(glued, rng), 0.0).labels
    gt = ground_truth(0.0)
    (glued_id,) = np.unique(labels[(gt == 2) | (gt == 3)])
    for tx in (0.02, 0.04):  # whole pixel footprints: the voxels the glued view filled
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.04)
    assert ids[2] != ids[3] and 0 not in ids.values()
    assert glued_id in (ids[2], ids[3])  # one of them keeps the glued id
    assert not im._parent.any()


def test_objects_glued_while_the_id_settled_are_separated_after_apart_views():
    """Glued in the first settled_frames + 1 views: B is a pending part of the established
    id, shown as it until seen apart in release_min_apart views.

    (A and B are patches on one flat wall here: no depth edge between them, so the gate on
    'apart' evidence is off; it has its own test.)"""
    cfg = InstanceConfig(apart_edge_share=0.0, smooth_weight=0.0)
    im, rng = InstanceMap(cfg), np.random.default_rng(1)
    glued_views = np.linspace(0.0, 0.01, cfg.settled_frames + 1)
    for tx in glued_views:
        glued = ground_truth(tx)
        glued[glued == 3] = 2
        ingest(im, shuffled(glued, rng), tx)
    views = np.linspace(0.02, 0.2, 18)
    for tx in views[:3]:
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.05)
    assert ids[2] == ids[3] and im._parent.any()
    for tx in views[3:]:
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.05)
    assert ids[2] != ids[3] and 0 not in ids.values()


def test_front_end_split_does_not_leave_two_ids():
    im, rng = InstanceMap(), np.random.default_rng(2)
    for k, tx in enumerate(np.linspace(0, 0.12, 12)):
        masks = ground_truth(tx)
        if k in (2, 5):  # A split into left and right halves in two views
            x = np.broadcast_to(world_x(tx), (H, W))
            masks[(masks == 2) & (x < (A[0] + A[1]) / 2)] = 4
        ingest(im, shuffled(masks, rng), tx)
    ids = map_ids(im, 0.06)
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(0.06))
    inside_a = np.unique(rendered[ground_truth(0.06) == 2])
    assert inside_a.tolist() == [ids[2]], "A is rendered with more than one id"


def test_one_view_glue_is_not_a_merge():
    im, rng = InstanceMap(PAINTED), np.random.default_rng(3)
    for k, tx in enumerate(np.linspace(0, 0.12, 10)):
        masks = ground_truth(tx)
        if k == 6:
            masks[masks == 3] = 2  # a single front-end merge among separate views
        ingest(im, shuffled(masks, rng), tx)
    ids = map_ids(im, 0.06)
    assert ids[2] != ids[3]
    assert im.merges == []  # the glued view's 'together' stays below merge_min_together


def test_spurious_fragment_never_becomes_an_instance():
    im, rng = InstanceMap(PAINTED), np.random.default_rng(4)
    for k, tx in enumerate(np.linspace(0, 0.12, 10)):
        masks = ground_truth(tx)
        if k == 3:  # a blob on the wall that no other view confirms
            masks[2:8, 2:10] = 5
        ingest(im, shuffled(masks, rng), tx)
    assert len(im.confirmed_ids()) == 3


def test_stable_ids_when_the_map_grows():
    """Established objects keep their ids while new ones appear."""
    im, rng = InstanceMap(), np.random.default_rng(5)
    first = None
    for k, tx in enumerate(np.linspace(0, 0.3, 16)):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
        if k == 5:
            first = map_ids(im, 0.1)
    assert map_ids(im, 0.1) == first


# ------------------------------------------------- merge and ghost deletion in process_frame

# Two fronto-parallel boxes, A 0.8 m and B 0.6 m away, before the wall at 1 m (all at
# z = depth for a camera at (tx, 0, 0)): depth jumps at their outlines, none across them.
WALL_Z = 1.0
BOX_A = (-0.30, -0.05, -0.12, 0.12, 0.8)
BOX_B = (0.05, 0.25, -0.12, 0.12, 0.6)


def boxes_view(tx: float, stain: tuple[float, float, float, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(depth, ground truth: 1 = wall, 2 = A, 3 = B, 4 = ``stain``) at view tx; ``stain``:
    the world x0, x1, y0, y1 of a patch on the wall (no depth of its own)."""
    boxes = [BOX_A, BOX_B] + ([(*stain, WALL_Z)] if stain else [])
    depth, which = render_boxes(K, (H, W), tx, boxes, WALL_Z)
    return depth, (which + 2).astype(np.int32)


def test_an_object_split_in_some_views_ends_as_one_id():
    """The front-end cuts A in half in its first views (two confirmed ids: the cut crosses
    A's flat face, so no view says the halves are apart) and shows it whole in the others:
    each whole view holds both halves in one mask, 'together', and after
    merge_min_together of them process_frame merges the halves into one id."""
    cfg = InstanceConfig()
    im, rng = InstanceMap(cfg), np.random.default_rng(7)
    split = {0, 1, 3, 5}  # whole in views 2, 4, 6, 7, ...: the 4th whole view is view 7
    merged_at = sorted(set(range(12)) - split)[cfg.merge_min_together - 1]
    halves = set()
    for k, tx in enumerate(np.linspace(0, 0.1, 12)):
        depth, gt = boxes_view(tx)
        masks = gt.copy()
        if k in split:
            x = tx + (np.arange(W) - K[0, 2]) / K[0, 0] * BOX_A[4]  # world x on A's face
            masks[(gt == 2) & (x < (BOX_A[0] + BOX_A[1]) / 2)[None, :]] = 4
        labels = im.process_frame(shuffled(masks, rng), depth, K, camera(tx)).labels
        if k < merged_at:
            assert im.merges == [], k
            halves |= set(np.unique(labels[gt == 2]).tolist())
        if k == 1:  # seen split twice: both halves are instances
            assert len(halves) == 2 and halves <= set(im.confirmed_ids().tolist())
        if k == merged_at:
            assert len(im.merges) == 1, im.merges
            ((absorbed, survivor),) = im.merges
            assert {absorbed, survivor} == halves
        if k >= merged_at:
            assert np.unique(labels[gt == 2]).tolist() == [survivor]
    depth, gt = boxes_view(0.05)
    rendered, _ = im.render_view(depth, K, camera(0.05))
    ids = {g: np.unique(rendered[gt == g]).tolist() for g in (1, 2, 3)}
    assert ids[2] == [survivor] and len(ids[1]) == len(ids[3]) == 1
    assert len({survivor, ids[1][0], ids[3][0]}) == 3
    assert sorted(im.confirmed_ids().tolist()) == sorted([survivor, ids[1][0], ids[3][0]])
    assert im.resolve(absorbed) == survivor and im.id_lut()[absorbed] == survivor


def test_a_fragment_never_confirmed_is_deleted_after_ghost_visible_frames_views():
    """The front-end masks only the boxes (the wall stays unmasked) and, in view 2 alone, a
    stain on the wall: a new id that no later mask joins, so it is never confirmed. Each
    later view shows its voxels; after ghost_visible_frames of them it is deleted, votes
    and all, and the boxes are untouched."""
    cfg = InstanceConfig()
    im, rng = InstanceMap(cfg), np.random.default_rng(8)
    stain = (0.30, 0.40, -0.40, -0.30)
    created, deleted_at = 2, 2 + cfg.ghost_visible_frames
    for k, tx in enumerate(np.linspace(0, 0.1, 10)):
        depth, gt = boxes_view(tx, stain)
        assert (gt == 4).sum() >= 20  # the stain is in every view
        masks = np.where((gt == 2) | (gt == 3), gt, 0)
        if k == created:
            masks[gt == 4] = 4
        result = im.process_frame(shuffled(masks, rng), depth, K, camera(tx))
        if k == created:
            (ghost,) = np.unique(result.labels[gt == 4]).tolist()
            assert result.new_ids == [ghost]
        if k >= created:
            assert ghost not in im.confirmed_ids()
            shown, _ = im.render_view(depth, K, camera(tx), confirmed_only=False)
            alive = k < deleted_at
            assert (im.id_lut()[ghost] == ghost) == alive, k
            assert (shown[gt == 4] == ghost).all() == alive, k
            if not alive:
                assert not shown[gt == 4].any()  # its voxels hold no votes any more
    boxes = [np.unique(shown[gt == g]).tolist() for g in (2, 3)]
    assert len(boxes[0]) == len(boxes[1]) == 1 and boxes[0] != boxes[1]
    assert sorted(im.confirmed_ids().tolist()) == sorted(boxes[0] + boxes[1])
    assert im.merges == [] and im.stats()["ids_created"] == 3


def test_vote_masks_worked_example():
    masks = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    rendered = np.array([[7, 7, 8, 0], [7, 9, 0, 0]])
    valid = np.ones_like(masks, bool)
    ids, answers = vote_masks(masks, rendered, valid, min_share=0.3, min_pixels=1)
    assert answers == {1: (7, 0.75)}  # mask 2: 1 of 4 pixels (25 %) < min_share 0.3
    # 9 holds 1 of mask 1's 4 pixels = 25 % >= split_share 0.25, so it keeps its pixel
    assert ids[:, :2].tolist() == [[7, 7], [7, 9]]
    assert (ids[:, 2:] == 0).all()


def test_vote_masks_keeps_glued_objects_apart():
    masks = np.array([[1, 1, 1, 1, 1, 1, 1, 1]])
    rendered = np.array([[7, 7, 7, 7, 7, 8, 8, 8]])  # one mask over two map objects
    ids, answers = vote_masks(masks, rendered, np.ones_like(masks, bool), min_share=0.3,
                              min_pixels=1)
    assert ids.tolist() == [[7, 7, 7, 7, 7, 8, 8, 8]]
    assert answers == {1: (7, 5 / 8)}


def test_vote_masks_takes_boundaries_between_present_objects_from_the_map():
    masks = np.array([[1, 1, 1, 2, 2, 2]])  # mask 1 overreaches one pixel into object 8
    rendered = np.array([[7, 7, 8, 8, 8, 8]])
    ids, answers = vote_masks(masks, rendered, np.ones_like(masks, bool), min_share=0.3,
                              min_pixels=1)
    assert answers == {1: (7, 2 / 3), 2: (8, 1.0)}
    assert ids.tolist() == [[7, 7, 8, 8, 8, 8]]


def test_vote_masks_keeps_a_swallowed_small_object_only_where_the_mask_holds_it():
    masks = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                      [0, 0, 0, 0, 0, 0, 0, 0]])
    rendered = np.array([[7, 7, 7, 7, 7, 7, 7, 5],  # 5: one pixel, 12 % of the mask
                         [0, 0, 0, 0, 0, 0, 0, 0]])
    ones = np.ones_like(masks, bool)
    ids, _ = vote_masks(masks, rendered, ones, min_share=0.3, min_pixels=1)
    assert ids[0].tolist() == [7] * 7 + [5]  # all of 5's view lies in the mask: kept
    rendered[1, :3] = 5  # most of 5 lies outside the mask: the mask's pixel is not 5's
    ids, _ = vote_masks(masks, rendered, ones, min_share=0.3, min_pixels=1)
    assert ids[0].tolist() == [7] * 8


def localize(im: InstanceMap, masks: np.ndarray, depth: np.ndarray, tx: float,
             map_boundaries: bool = True) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """InstanceLoc on the voxel map, as Mapper.localize does it: the masks vote with the
    view's confirmed rendering; between two answered objects the map's boundary is taken
    where it is sure (vote confidence >= 0.75), or never without ``map_boundaries``."""
    rendered, conf = im.render_view(depth, K, camera(tx), confirmed_only=True)
    return vote_masks(masks, rendered, depth > 0, min_share=0.3, confidence=conf,
                      boundary_confidence=0.75 if map_boundaries else np.inf)


def test_localize_matches_the_map():
    im, rng = InstanceMap(), np.random.default_rng(6)
    for tx in np.linspace(0, 0.1, 6):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    expected = map_ids(im, 0.07)
    masks = shuffled(ground_truth(0.07), rng)
    depth = np.ones((H, W), np.float32)
    ids, answers = localize(im, masks, depth, 0.07, map_boundaries=False)
    gt = ground_truth(0.07)
    for g in (1, 2, 3):
        assert np.all(ids[gt == g] == expected[g])
    assert all(share > 0.9 for _, share in answers.values())
    # with the map's boundaries: the same ids, edges off by at most the voxels' quantisation
    ids_map, answers_map = localize(im, masks, depth, 0.07)
    assert answers_map == answers
    differ = ids_map != ids
    assert differ.mean() < 0.02
    edge = np.zeros_like(gt, bool)
    edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    edge[:, :-1] |= gt[:, 1:] != gt[:, :-1]
    edge[1:] |= gt[1:] != gt[:-1]
    edge[:-1] |= gt[1:] != gt[:-1]
    assert not (differ & ~edge).any()


def test_config_is_validated_through_the_dataclasses():
    from panoptic_mapping.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="cover_fraction"):
        config_from_dict({"cover_fraction": 0.2}, InstanceConfig)


# --------------------------------------------------------------------------- hand-built maps


def established(im: InstanceMap, n: int) -> list[int]:
    """n fresh ids that masks have joined often enough to be confirmed."""
    ids = [im._new_id() for _ in range(n)]
    im._assigned[ids] = im.cfg.confirm_frames
    im._visible[ids] = im.cfg.settled_frames + 1
    return ids


def side_by_side(h: int = 20, w: int = 40
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two masks, the left and right halves of an (h, w) view (all pixels valid), and two
    depths for them: one flat surface 2 m away, or the right half standing 0.5 m in front
    of the left (a depth step at the masks' boundary)."""
    masks = np.ones((h, w), np.int64)
    masks[:, w // 2:] = 2
    flat = np.full((h, w), 2.0)
    step = flat.copy()
    step[:, w // 2:] = 1.5
    return masks, np.ones((h, w), bool), flat, step


def test_negative_evidence_moves_a_voxel_but_never_empties_it():
    im = InstanceMap()
    table, cup = established(im, 2)
    pts = np.array([[0.005, 0.005, 0.005], [0.105, 0.005, 0.005]])  # two voxels
    im.integrate(pts, np.array([table, table]))
    im.integrate(pts[1:], np.array([cup]))
    slots = im._slots_of(pts)
    im._unvote(slots, table)
    assert im._vote_w[slots[0]].sum() == 1.0  # table's only vote stays: nothing else seen
    ids, w = im._vote_ids[slots[1]], im._vote_w[slots[1]]
    assert w[ids == table].tolist() == [0.0] and w[ids == cup].tolist() == [1.0]


def test_a_small_object_swallowed_by_a_split_part_of_its_support_keeps_its_id():
    im = InstanceMap()
    table, cup = established(im, 2)
    ref = np.full((10, 20), table)
    ref[4:6, 14:18] = cup  # 8 pixels
    masks = np.ones((10, 20), np.int64)
    masks[:, 11:] = 2  # the table split in two; the cup missed, inside the right part
    result = im.associate(masks, ref, np.ones_like(ref, bool))
    assert (result.labels[ref == cup] == cup).all()
    right = (masks == 2) & (ref == table)
    # the right part is no cup: it is the table's (a part of it; mask 1 owns the table)
    assert not (result.labels[right] == cup).any()
    part = int(result.labels[right][0])
    assert (result.labels[right] == part).all() and part != table
    assert im._parent[part] == table  # shown as the table until seen apart from it
    shown = im._display_lut()[[table, part, cup]].tolist()
    assert shown == [table, table, cup]


def test_together_evidence_does_not_merge_things_that_look_different():
    """A ball glued to its tray by front-end merges is 'together' with it in many views;
    the masks' embeddings say they are different things."""
    im = InstanceMap(embedding_dim=2)
    tray, ball, tray_part = established(im, 3)
    im._emb[tray], im._emb[ball], im._emb[tray_part] = [1.0, 0.0], [0.5, 1.0], [3.0, 0.5]
    evidence = [im.cfg.merge_min_together, 0, 0]
    im._pairs = {(tray, ball): list(evidence), (tray, tray_part): list(evidence)}
    assert im._merge_ready_pairs() == [(tray, tray_part)]
    no_embeddings = InstanceMap()
    a, b = established(no_embeddings, 2)
    no_embeddings._pairs = {(a, b): list(evidence)}
    assert no_embeddings._merge_ready_pairs() == [(a, b)]


def test_apart_evidence_needs_a_depth_edge_between_the_ids():
    """Two masks over two map ids: evidence they are apart only where the view shows a
    jump or crease between them; a cut across one flat surface is 'smooth' evidence of
    one surface instead."""
    masks, valid, flat, step = side_by_side()
    for depth, apart in ((flat, 0), (step, 1)):
        im = InstanceMap()
        left, right = established(im, 2)
        ref = np.where(masks == 1, left, right)
        im._associate(masks, ref, valid, edges=depth_edges(depth, 0.02))
        assert im._pairs.get((left, right)) == [0, apart, 1 - apart]


def test_apart_evidence_for_an_id_no_mask_holds_most_of():
    """An id whose pixels the front-end left partly unmasked (or that glued views spread
    over two objects) has no owner; the mask whose plurality id it is speaks for it, so
    views showing it apart from its neighbour still count. One mask over both, holding
    neither's majority, says nothing."""
    _, valid, _, step = side_by_side()
    h, w = valid.shape
    edges = depth_edges(step, 0.02)
    im = InstanceMap()
    left, right = established(im, 2)
    ref = np.where(np.arange(w) < 20, left, right)[None].repeat(h, 0)
    masks = np.zeros((h, w), np.int64)
    masks[:, 11:20] = 1  # 45 % of `left`: no owner, but its plurality id
    masks[:, 20:] = 2
    im._associate(masks, ref, valid, edges=edges)
    assert im._pairs.get((left, right)) == [0, 1, 0]
    im = InstanceMap()
    left, right = established(im, 2)
    glued = np.zeros((h, w), np.int64)
    glued[:, 11:] = 1  # holds all of `right` but not most of `left`
    im._associate(glued, ref, valid, edges=edges)
    assert (left, right) not in im._pairs


def test_depth_edges_worked_example():
    # a plane tilted in x: inverse depth affine in u, depth not -> no edge anywhere
    u = np.arange(30, dtype=np.float64)
    plane = np.broadcast_to(1.0 / (0.5 + 0.01 * u), (10, 30)).copy()
    assert not depth_edges(plane, 0.02).any()
    # two planes meeting at column 15 (a corner): inverse depth bends there
    inverse = np.where(u <= 15, 0.5 + 0.01 * u, 0.65 - 0.01 * (u - 15))
    e = depth_edges(np.broadcast_to(1.0 / inverse, (10, 30)).copy(), 0.02)
    assert e[:, 14:17].all() and not e[:, :14].any() and not e[:, 17:].any()
    hole = plane.copy()
    hole[5, 5] = 0.0  # missing depth marks its neighbours
    assert depth_edges(hole, 0.02)[4:7, 4:7].all()


def test_merge_survivor_is_the_id_most_of_the_object_is_shown_as():
    im = InstanceMap()
    old, big = established(im, 2)
    im._assigned[old] += 5  # joined in more frames, but
    pts = np.stack([np.arange(10) * 0.01 + 0.005, np.full(10, 0.005), np.full(10, 0.005)], 1)
    im.integrate(pts[:3], np.full(3, old))
    im.integrate(pts[3:], np.full(7, big))  # most of the object's voxels vote for `big`
    assert im._merge(old, big) == big and im.resolve(old) == big


def test_a_small_displaced_mask_is_an_object_not_a_pending_part():
    im = InstanceMap()
    (table,) = established(im, 1)
    ref = np.full((10, 20), table)
    masks = np.ones((10, 20), np.int64)
    masks[4:7, 4:7] = 2  # 9 px absorbed into the table when first seen: 5 % of it
    result = im.associate(masks, ref, np.ones_like(ref, bool))
    new = int(result.labels[5, 5])
    assert new != table and new in result.new_ids
    assert im._parent[new] == 0


def test_a_mask_displaced_from_a_young_id_takes_the_fragment_it_owns_across_a_depth_edge():
    """Two objects glued into one young id; now a mask holds each. The right one owns a
    fragment id left by an earlier split of it: it takes that id where the view shows a
    depth edge between the two masks, and a new id where the cut crosses a flat surface."""
    masks, valid, flat, step = side_by_side()
    h, w = masks.shape
    for depth, takes_fragment in ((flat, False), (step, True)):
        im = InstanceMap(PAINTED)  # the displacement rules; 'smooth' pieces below
        glued = im._new_id()
        im._assigned[glued], im._visible[glued] = im.cfg.confirm_frames, 2  # young
        fragment = im._new_id()
        im._assigned[fragment], im._visible[fragment] = 1, 1
        ref = np.full((h, w), glued)
        ref[:, 36:] = fragment  # a sliver of mask 2: it owns the fragment, joins `glued`
        result = im._associate(masks, ref, valid, edges=depth_edges(depth, 0.02))
        assert (result.labels[masks == 1] == glued).all()
        right = np.unique(result.labels[masks == 2]).tolist()
        assert len(right) == 1 and right[0] != glued
        assert (right[0] == fragment) == takes_fragment
        assert im._parent[right[0]] == 0  # split off a young id: an object at once
    # with 'smooth' evidence on, the cut across the flat surface is a piece of the same
    # surface: the right mask stays in the glued id (the step case is unchanged)
    im = InstanceMap()
    glued = im._new_id()
    im._assigned[glued], im._visible[glued] = im.cfg.confirm_frames, 2
    result = im._associate(masks, np.full((h, w), glued), valid, edges=depth_edges(flat, 0.02))
    assert (result.labels[valid] == glued).all()


def test_a_small_far_object_joins_its_id_from_a_few_pixels():
    """A 12-px mask over a far mug whose rendering shows 4 px of its id (the rest stray
    ids of 2-3 px and unmapped pixels) joins the mug instead of making a new id."""
    im = InstanceMap()
    table, mug, stray = established(im, 3)
    ref = np.full((10, 20), table)
    ref[3:7, 8:11] = 0  # the mug's 12 pixels
    ref[3, 8:10], ref[4, 8:10] = mug, mug
    ref[5, 8:10] = stray
    masks = np.ones((10, 20), np.int64)
    masks[3:7, 8:11] = 2
    result = im.associate(masks, ref, np.ones_like(ref, bool))
    assert result.mask_to_id[2] == mug and not result.new_ids


def test_interior_pixels_worked_example():
    from panoptic_mapping.core.map.instances import _interior

    masks = np.array([[1, 1, 1, 2],
                      [1, 1, 1, 2],
                      [1, 1, 1, 2]])
    assert _interior(masks).tolist() == [[True, True, False, False],
                                         [True, True, False, False],
                                         [True, True, False, False]]


def test_mask_edges_vote_with_half_weight():
    im = InstanceMap()
    masks = np.ones((H, W), np.int64)
    masks[:, W // 2:] = 2
    ingest(im, masks, 0.0)
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(0.0))
    slots = im._slots_of(backproject(np.ones((H, W), np.float32), K, camera(0.0))[0])
    w = im._vote_w[slots].sum(1).reshape(H, W)
    assert w[H // 2, 2] == 1.0  # inside a mask
    assert w[H // 2, W // 2] == 0.5  # on the edge between the two masks


def test_search_widens_to_the_pixel_footprint():
    im = InstanceMap()
    (far_object,) = established(im, 1)
    im.integrate(np.array([[0.005, 0.005, 0.005]]), np.array([far_object]))
    point = np.array([[0.025, 0.005, 0.005]])  # two voxels away from the only voxel
    assert im._slots_of(point)[0] == -1  # search_radius 1 does not reach it
    assert im._slots_of(point, footprint=np.array([0.005]))[0] == -1  # a small pixel
    ids, _ = im.render_points(point, footprint=np.array([0.02]))  # a 2 cm pixel does
    assert ids.tolist() == [far_object]


def test_a_surface_split_the_same_way_in_every_view_ends_as_one_id():
    """A segmenter that cuts one surface into two masks does so in every view, so no view
    ever holds both in one mask; the missing depth edge between the two parts is the 3D
    evidence that they are one surface ('smooth' views). The same cut at a depth step
    stays two objects, and with the smooth rule off the flat cut is never undone."""
    masks, _, flat, step = side_by_side()
    h, w = masks.shape
    K_ = np.array([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]])

    def run(depth: np.ndarray, cfg: InstanceConfig) -> list[int]:
        im = InstanceMap(cfg)
        for k in range(cfg.merge_min_together + 3):
            im.process_frame(masks, depth.astype(np.float32), K_, camera(0.002 * k))
        rendered, _ = im.render_view(depth.astype(np.float32), K_, camera(0.0))
        return sorted({int(rendered[masks == m][0]) for m in (1, 2)})

    one_surface = run(flat, InstanceConfig())
    assert len(one_surface) == 1 and one_surface[0] > 0
    assert len(run(step, InstanceConfig())) == 2  # a depth step: two objects
    assert len(run(flat, InstanceConfig(smooth_weight=0.0))) == 2


def test_a_map_saved_before_smooth_evidence_loads_with_none():
    """Pair statistics saved with two counts (together, apart) load with smooth = 0."""
    im = InstanceMap()
    a, b = established(im, 2)
    im._pairs = {(a, b): [3, 1, 2]}
    state = im.state()
    assert state["pairs"].shape == (1, 5)
    state["pairs"] = state["pairs"][:, :4]  # the old layout
    assert InstanceMap.from_state(state)._pairs == {(a, b): [3, 1, 0]}
    state["pairs"] = np.zeros((0, 4), np.int64)
    assert InstanceMap.from_state(state)._pairs == {}
