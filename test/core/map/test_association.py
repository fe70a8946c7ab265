"""Association rules on a synthetic wall with patches: worked examples with known answers
(ownership, glue, displaced parts, fragments, smooth pieces)."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import depth_edges
from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.instances import InstanceMap

from wall_scene import (
    H, W, K, A, PAINTED, camera, world_x, ground_truth, shuffled, ingest, map_ids,
    established, side_by_side)


def test_objects_glued_at_first_sight_are_separated_at_once():
    """One glued view against apart views: the young id splits, and B is shown on its own
    as soon as it is confirmed (before it could count as a late id change)."""
    im, rng = InstanceMap(PAINTED), np.random.default_rng(1)
    glued = ground_truth(0.0).copy()
    glued[glued == 3] = 2  # the front-end merged A and B in the first frame
    labels = ingest(im, shuffled(glued, rng), 0.0).labels
    gt = ground_truth(0.0)
    (glued_id,) = np.unique(labels[(gt == 2) | (gt == 3)])
    # whole pixel footprints: the voxels the glued view filled; B's own id is joined in
    # the first two views and shown in the next two (confirm_frames of each)
    for tx in (0.02, 0.04, 0.06):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.06)
    assert ids[2] != ids[3] and 0 not in ids.values()
    assert glued_id in (ids[2], ids[3])  # one of them keeps the glued id
    assert not im.ids.parent.any()


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
    assert im.ids.parent[part] == table  # shown as the table until seen apart from it
    shown = im.ids.display_lut()[[table, part, cup]].tolist()
    assert shown == [table, table, cup]


def test_a_small_displaced_mask_is_an_object_not_a_pending_part():
    im = InstanceMap()
    (table,) = established(im, 1)
    ref = np.full((10, 20), table)
    masks = np.ones((10, 20), np.int64)
    masks[4:7, 4:7] = 2  # 9 px absorbed into the table when first seen: 5 % of it
    result = im.associate(masks, ref, np.ones_like(ref, bool))
    new = int(result.labels[5, 5])
    assert new != table and new in result.new_ids
    assert im.ids.parent[new] == 0


def test_a_mask_displaced_from_a_young_id_takes_the_fragment_it_owns_across_a_depth_edge():
    """Two objects glued into one young id; now a mask holds each. The right one owns a
    fragment id left by an earlier split of it: it takes that id where the view shows a
    depth edge between the two masks, and a new id where the cut crosses a flat surface."""
    masks, valid, flat, step = side_by_side()
    h, w = masks.shape
    for depth, takes_fragment in ((flat, False), (step, True)):
        im = InstanceMap(PAINTED)  # the displacement rules; 'smooth' pieces below
        glued = im.ids.new_id()
        im.ids.assigned[glued], im.ids.visible[glued] = im.cfg.confirm_frames, 2  # young
        fragment = im.ids.new_id()
        im.ids.assigned[fragment], im.ids.visible[fragment] = 1, 1
        ref = np.full((h, w), glued)
        ref[:, 36:] = fragment  # a sliver of mask 2: it owns the fragment, joins `glued`
        result = im.associator.associate(masks, ref, valid, edges=depth_edges(depth, 0.02))
        assert (result.labels[masks == 1] == glued).all()
        right = np.unique(result.labels[masks == 2]).tolist()
        assert len(right) == 1 and right[0] != glued
        assert (right[0] == fragment) == takes_fragment
        assert im.ids.parent[right[0]] == 0  # split off a young id: an object at once
    # with 'smooth' evidence on, the cut across the flat surface is a piece of the same
    # surface: the right mask stays in the glued id (the step case is unchanged)
    im = InstanceMap()
    glued = im.ids.new_id()
    im.ids.assigned[glued], im.ids.visible[glued] = im.cfg.confirm_frames, 2
    result = im.associator.associate(masks, np.full((h, w), glued), valid,
                                     edges=depth_edges(flat, 0.02))
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


def test_a_small_piece_split_off_a_settled_id_is_reported_with_its_origin():
    """A settled object, a small piece of it in a mask of its own (under part_min_share):
    a new object, and the frame says which settled id it was split off (the mapper asks
    its vocabulary whether it is a piece of that id)."""
    im = InstanceMap(InstanceConfig(smooth_weight=0.0))
    for tx in np.linspace(0.0, 0.02, im.cfg.settled_frames + 2):
        ingest(im, ground_truth(tx), tx)
    ids = map_ids(im, 0.02)
    masks = ground_truth(0.02).astype(np.int64)
    masks[16:20, np.flatnonzero(masks[16] == 2)[:3]] = 4  # 12 px of A's 24 x 14
    result = ingest(im, masks, 0.02)
    (piece,) = np.unique(result.labels[masks == 4])
    assert piece != ids[2] and piece in result.new_ids and im.ids.parent[piece] == 0
    assert result.split_from == {piece: ids[2]}
