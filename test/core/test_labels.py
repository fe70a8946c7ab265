"""Worked examples of instance labels from the map (core/labels.py) and per-point
relevance (Vocabulary.relevance)."""
import numpy as np

import pytest

from panoptic_mapping.core.labels import (label_instances, resting_on, support_explains,
                                          voxel_relevance, without_directions)
from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.instances import InstanceMap
from panoptic_mapping.core.map.features import VoxelFeatures
from panoptic_mapping.core.semantics import SemanticConfig, Vocabulary

def test_resting_on_by_contact():
    # 1 table (1.5 m), 2 mug (0.1 m) on it, 3 ball (0.1 m) in 4 tray (0.4 m) on the table,
    # 5 a wall (3 m) standing on 6 the floor (5 m)
    sizes = {1: 1.5, 2: 0.1, 3: 0.1, 4: 0.4, 5: 3.0, 6: 5.0}
    contacts = {2: {1: 40}, 3: {4: 30, 1: 2}, 4: {1: 90}, 5: {6: 300}}
    # the ball is in the tray (the two voxels of table under its rim decide nothing); the
    # wall is not "on" a floor less than twice its size
    assert resting_on(contacts, sizes) == {2: [1], 3: [4], 4: [1]}
    assert resting_on({3: {4: 30, 1: 20}}, sizes) == {3: [1, 4]}
    assert resting_on({3: {4: 30, 1: 20}}, sizes, min_contact_share=0.5) == {3: [4]}
    assert resting_on({2: {1: 2}}, sizes) == {}  # fewer than min_contacts
    # interleaved: each under the other about as often
    assert resting_on({2: {1: 30}, 1: {2: 40}}, sizes) == {}


def test_contacts_below_on_a_voxel_map():
    cfg = InstanceConfig(confirm_frames=1)
    im = InstanceMap(cfg)
    v = cfg.voxel_size_m
    # a table top of 20 x 20 voxels at z = 0 (id 1), a 3 x 3 x 3 box on it (id 2), a tile
    # of the top (id 3) cut out of it in the same layer
    top = np.array([[x, y, 0] for x in range(20) for y in range(20)], float)
    box = np.array([[x, y, z] for x in range(5, 8) for y in range(5, 8) for z in range(1, 4)],
                   float)
    tile = np.array([[x, y, 0] for x in range(12, 15) for y in range(12, 15)], float)
    top = top[~((top[:, 0] >= 12) & (top[:, 0] < 15) & (top[:, 1] >= 12) & (top[:, 1] < 15))]
    labels = np.r_[np.full(len(top), 1), np.full(len(box), 2), np.full(len(tile), 3)]
    im.integrate((np.vstack([top, box, tile]) + 0.5) * v, labels)
    for _ in range(3):  # three ids, shown as if joined in enough frames
        im.ids.new_id()
    im.ids.assigned[1:4] = im.ids.best_run[1:4] = 10
    im.ids.visible[1:4] = 10
    if not {1, 2, 3} <= set(im.confirmed_ids().tolist()):
        pytest.fail(f"test set-up: ids 1-3 not shown ({im.confirmed_ids()})")
    # the box's bottom layer (9 voxels) has the table under it; the tile has nothing
    assert im.contacts_below("z", 0.03) == {2: {1: 9}}
    assert im.contacts_below("-z", 0.03) == {1: {2: 9}}  # upside down: the table on the box


def _vocab(n=4, d=8):
    v = Vocabulary(SemanticConfig())
    v.set([f"c{i}" for i in range(n)], np.eye(n, d))
    return v


def test_support_label_excluded_and_the_rest_labelled():
    v = _vocab()
    text = v.text_embeddings()
    # the table is c0; the mug's crops are 0.8 table, 0.2 mug (c2), as every view saw it
    mug = 0.8 * text[0] + 0.2 * text[2]
    emb = {1: text[0], 2: mug / np.linalg.norm(mug)}
    supports = {2: [1]}
    cfg = SemanticConfig()
    corrected = {}
    out = label_instances(v, cfg, emb, supports, corrected)
    assert out[1][0] == 1 and out[2][0] == 3 and out[2][1] > 0.9
    assert corrected == {2: [1]}
    cfg.exclude_support_label = False
    assert label_instances(v, cfg, emb, supports)[2][0] == 1
    # a real mug on the table keeps its label
    assert label_instances(v, SemanticConfig(), {1: text[0], 2: text[2]}, supports)[2][0] == 3


def test_a_piece_of_its_support_keeps_the_supports_label():
    """A piece of the floor that a segmenter cut out rests on the floor's id: what is left
    of its embedding without the floor's direction is noise, which fits another prompt
    (c1 here, at cosine 0.45) but much less well than the whole fitted the floor (0.98),
    so it stays 'floor'; a mug biased toward its table keeps a clear direction of its own
    (the test above)."""
    v = _vocab()
    text = v.text_embeddings()
    piece = np.r_[1.0, 0.1, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1]
    emb = {1: text[0], 2: piece / np.linalg.norm(piece)}
    corrected = {}
    out = label_instances(v, SemanticConfig(), emb, {2: [1]}, corrected)
    assert out[2][0] == 1 and corrected == {}
    # always relabelled, as before the residual test: the noise's best prompt
    cfg = SemanticConfig(support_min_residual=0.0)
    assert label_instances(v, cfg, emb, {2: [1]}, corrected)[2][0] == 2
    assert corrected == {2: [1]}
    # a rest that fits no prompt at all (noise outside them) was 'other': it stays 'floor'
    flat = np.r_[1.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1]
    emb[2] = flat / np.linalg.norm(flat)
    assert label_instances(v, SemanticConfig(), emb, {2: [1]})[2][0] == 1
    assert label_instances(v, cfg, emb, {2: [1]})[2][0] == v.other_id


def test_without_directions():
    e = without_directions(np.array([3.0, 4.0, 0.0]), np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(e, [0.0, 1.0, 0.0])
    assert not without_directions(np.array([1.0, 0.0]), np.eye(2)).any()


def test_relevance_worked_example():
    v = _vocab(2, 2)  # prompts c0 = (1, 0), c1 = (0, 1); temperature 0.05
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    rel = v.relevance(feats, np.array([1.0, 0.0]))
    # against the one negative c1: 1 / (1 + exp((s_c1 - s_c0) / 0.05))
    np.testing.assert_allclose(rel, [1 / (1 + np.exp(-20)), 1 / (1 + np.exp(20)), 0.5, 0.0],
                               atol=1e-6)
    # an extra canonical negative equal to the feature takes the relevance to one half
    np.testing.assert_allclose(v.relevance(feats[:1], np.array([1.0, 0.0]),
                                           negatives=np.array([[1.0, 0.01]])), [0.5],
                               atol=0.01)


def test_voxel_relevance_applies_the_support_correction():
    v = _vocab()
    text = v.text_embeddings()
    f = VoxelFeatures(1.0, 8)
    mug = 0.8 * text[0] + 0.2 * text[2]
    f.integrate(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5]]), np.array([1, 2]),
                np.stack([text[0], mug]))
    owners = np.zeros(len(f), np.int64)
    owners[f.slots_at(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5]]), 0)] = [1, 2]
    pts = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [7.5, 0.5, 0.5]])
    plain = voxel_relevance(f, v, pts, text[2])
    assert plain[1] < 0.5 and plain[2] == 0.0
    fixed = voxel_relevance(f, v, pts, text[2], owners=owners, corrected={2: [1]})
    assert fixed[1] > 0.99 and fixed[0] < 0.01


def _mapper_with_parts(parts: list[list[list[int]]], embeddings: list[np.ndarray]):
    """A CPU mapper whose instance map holds ``parts`` (voxel coordinates) as shown ids
    1.. with the given mean embeddings (4-D), as if joined in 10 frames each."""
    from panoptic_mapping.core.mapper import Mapper, MapperConfig

    m = Mapper(MapperConfig(device="cpu"), embedding_dim=4)
    cfg = m.cfg.instances
    cfg.confirm_frames = 1
    im = InstanceMap(cfg, embedding_dim=4)
    m.instances = im
    labels = np.concatenate([np.full(len(p), i + 1) for i, p in enumerate(parts)])
    im.integrate((np.vstack([np.array(p, float) for p in parts]) + 0.5) * cfg.voxel_size_m,
                 labels)
    for _ in parts:
        im.ids.new_id()
    n = len(parts)
    im.ids.assigned[1:n + 1] = im.ids.best_run[1:n + 1] = 10
    im.ids.visible[1:n + 1] = 10
    im.ids.emb[1:n + 1] = embeddings
    if not set(range(1, n + 1)) <= set(im.confirmed_ids().tolist()):
        pytest.fail(f"test set-up: ids 1-{n} not shown ({im.confirmed_ids()})")
    return m, im


def _look(m) -> list[tuple[int, int]]:
    """A look for parts after the frames between looks (merge_parts_every) were mapped."""
    m.instances.ids.frames += m.cfg.instances.merge_parts_every
    return m._merge_resting_parts()


def _enclosed(m, im, same_kind, counts) -> list[tuple[int, int]]:
    """:meth:`Mapper._enclosed_parts` after the frames between looks were mapped."""
    im.ids.frames += m.cfg.instances.merge_parts_every
    return m._enclosed_parts(im, same_kind, counts)


def _duck_and_mug_on_table() -> tuple[list[list[int]], ...]:
    """Voxel coordinates of a 30 x 30 table top, a duck's body on it, the duck's head on
    the body, and a mug on the table."""
    top = [[x, y, 0] for x in range(30) for y in range(30)]
    body = [[x, y, z] for x in range(4, 10) for y in range(4, 10) for z in range(1, 4)]
    head = [[x, y, z] for x in range(5, 9) for y in range(5, 9) for z in range(4, 7)]
    mug = [[x, y, z] for x in range(20, 22) for y in range(20, 22) for z in range(1, 4)]
    return top, body, head, mug


def test_parts_resting_on_their_own_kind_merge():
    """A duck's head on its body (one kind, narrower but not narrow, smaller) is one
    instance with it; a narrow mug that every view embedded as the table it rests on, two
    blocks of one kind stacked (alike in size) and the duck on the table (another kind)
    keep their ids."""
    top, body, head, mug = _duck_and_mug_on_table()
    block = [[x, y, z] for x in range(14, 18) for y in range(20, 24) for z in range(1, 3)]
    on_block = [[x, y, z] for x in range(14, 18) for y in range(20, 24) for z in range(3, 5)]
    table, duck, jenga = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
    m, im = _mapper_with_parts([top, body, head, mug, block, on_block],
                               [table, duck, duck, table, jenga, jenga])
    cfg = m.cfg.instances
    assert m._merge_resting_parts() == [(3, 2)]
    assert im.resolve(3) == im.resolve(2) != im.resolve(1)
    assert sorted(im.confirmed_ids().tolist()) == [1, im.resolve(2), 4, 5, 6]
    # a pair looked at before another thread merged or removed one of them is skipped
    assert im.merge_parts([(3, 2)]) == []
    im.ids.alive[6] = False
    assert im.merge_parts([(6, 5)]) == []
    im.ids.alive[6] = True
    # without the volume bound the stacked blocks merge too
    cfg.merge_parts_max_volume_ratio = 1.0
    assert m._merge_resting_parts() == [(6, 5)]
    # without the width test the mug, of the table's kind by its embedding, goes into it
    m.cfg.semantics.support_max_size_ratio = 0.0
    assert m._merge_resting_parts() == [(4, 1)]


def test_pending_parts_judged_against_their_parent():
    """A duck's head that 'one mask per id' split off the settled duck is a pending part,
    shown as the duck; the part rules merge it back before views showing it apart could
    release it (no output ever shows it). A mug glued to the table when first seen
    (another kind) stays pending, and a pending piece is judged against its parent only."""
    top, body, head, mug = _duck_and_mug_on_table()
    # a second duck beside the first, its head pending on the table instead
    body2, head2 = ([[x + 10, y, z] for x, y, z in part] for part in (body, head))
    table, duck, cup = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
    m, im = _mapper_with_parts([top, body, head, mug, body2, head2],
                               [table, duck, duck, cup, duck, duck])
    im.ids.parent[3], im.ids.parent[4], im.ids.parent[6] = 2, 1, 1
    im.version += 1
    assert sorted(im.confirmed_ids().tolist()) == [1, 2, 5]
    assert im.pending_parts() == {3: 2, 4: 1, 6: 1}
    # the head's voxels count as the duck's in outputs, as its own when parts are judged
    assert im.owned_voxel_counts()[2] == len(body) + len(head)
    assert im.owned_voxel_counts(parts=True)[[2, 3]].tolist() == [len(body), len(head)]
    m.cfg.instances.merge_pending_parts = False
    assert _look(m) == []
    m.cfg.instances.merge_pending_parts = True
    assert _look(m) == [(3, 2)]
    assert im.resolve(3) == 2 and im.pending_parts() == {4: 1, 6: 1}
    assert sorted(im.confirmed_ids().tolist()) == [1, 2, 5]
    assert im.owned_voxel_counts(parts=True)[2] == len(body) + len(head)
    # a pending part merges only into the id it is shown as
    assert im.merge_parts([(6, 5)]) == []


def test_small_pieces_of_a_settled_ids_label_become_its_pending_parts():
    """Small pieces 'one mask per id' split off a settled shelf: one embedded as the shelf
    and noise is a pending part of it (shown as the shelf); a duck whose masks, mostly the
    shelf's surroundings, embed close to the shelf keeps a duck direction, and a cup is
    another kind: objects at once. Off, or without a vocabulary: objects at once."""
    shelf = [[x, y, z] for x in range(10) for y in range(4) for z in range(10)]
    pieces = [[[x, 5, z] for x in range(2) for z in range(2)] for _ in range(3)]
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    kinds = [np.eye(4)[0], unit(np.r_[1.0, 0.02, 0.0, 0.05]), unit(np.r_[0.85, 0.5, 0, 0]),
             np.eye(4)[2]]
    for on, vocabulary, pending in ((True, True, [2]), (False, True, []), (True, False, [])):
        m, im = _mapper_with_parts([shelf, *pieces], kinds)
        m.cfg.instances.small_parts_pending = on
        if vocabulary:
            m.vocabulary.set(["shelf", "duck", "cup"], np.eye(3, 4))
        m._pend_small_parts({2: 1, 3: 1, 4: 1})
        assert np.flatnonzero(im.ids.parent).tolist() == pending
        assert im.pending_parts() == {i: 1 for i in pending}


def test_voxel_relevance_is_the_relevance_of_each_points_voxel_feature():
    """The chunked cosine path gives what Vocabulary.relevance gives on the unit features
    of each point's voxel, duplicates and misses included."""
    rng = np.random.default_rng(1)
    v = _vocab(6, 32)
    f = VoxelFeatures(0.1, 32)
    centres = rng.integers(0, 20, size=(300, 3)) * 0.1 + 0.05
    f.integrate(centres, np.arange(1, 301), rng.normal(size=(300, 32)).astype(np.float32))
    pts = np.concatenate([centres, centres[:50], rng.uniform(5, 6, size=(10, 3))])
    text = v.text_embeddings()[3]
    got = voxel_relevance(f, v, pts, text, search_radius=0)
    slots = f.slots_at(pts, 0)
    want = np.zeros(len(pts), np.float32)
    ok = slots >= 0
    want[ok] = v.relevance(f.mean[slots[ok]].astype(np.float32), text)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (got[-10:] == 0).all() and ok[:-10].all()


def test_parts_inside_their_own_kind_merge():
    """A shelf's boards that a segmenter cut from its frame lie inside the frame's box and
    merge with it, whatever they rest on; a mug on a board (another kind), a crate of the
    shelf's kind standing beside it (outside its box) and a box of the crate's kind as
    large as the crate stacked on it keep their ids."""
    floor = [[x, y, 0] for x in range(40) for y in range(40)]
    # a frame of 4 uprights 20 voxels tall around 10 x 6 voxels, with a top board
    frame = [[x, y, z] for x in (2, 11) for y in (2, 7) for z in range(1, 21)] + \
        [[x, y, 20] for x in range(2, 12) for y in range(2, 8)]
    boards = [[[x, y, z] for x in range(3, 11) for y in range(3, 7)] for z in (6, 13)]
    mug = [[x, y, z] for x in range(5, 7) for y in range(4, 6) for z in range(14, 17)]
    crate = [[x, y, z] for x in range(20, 24) for y in range(3, 7) for z in range(1, 4)]
    lid = [[x, y, z] for x in range(20, 24) for y in range(3, 7) for z in range(4, 7)]
    ground, shelf, cup = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
    m, im = _mapper_with_parts([floor, frame, *boards, mug, crate, lid],
                               [ground, shelf, shelf, shelf, cup, shelf, shelf])
    cfg, v = m.cfg.instances, m.cfg.instances.voxel_size_m
    # the boards (32 voxels each) are a quarter of the frame (136): smallest first
    shares, _ = im.shares_inside([(3, 2), (4, 2), (5, 2), (6, 2), (7, 6)])
    assert shares.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    # a camera standing inside the frame's box: the frame surrounds the viewer, as a
    # room's walls do, and encloses nothing
    m._viewpoints.append(np.array([6.0, 5.0, 10.0]) * v)
    for _ in range(2):
        assert _look(m) == []
    m._viewpoints.clear()
    m._viewpoints.append(np.array([6.0, 5.0, 30.0]) * v)  # above it
    # the first look that finds the boards enclosed waits for the next to find them too
    assert _look(m) == []
    assert _look(m) == [(3, 2), (4, 2)]
    assert sorted(im.confirmed_ids().tolist()) == [1, im.resolve(2), 5, 6, 7]
    counts = im.owned_voxel_counts()
    assert counts[6] == counts[7] == 48 and counts[im.resolve(2)] == 200
    # outside each other's box the crate and the box on it stay two without the volume
    # bound, and the crate stays beside the shelf
    cfg.merge_parts_max_volume_ratio = 1.0
    for _ in range(2):
        assert _enclosed(m, im, {(6, 7), (7, 6), (6, 2)}, counts) == []
    # the mug stays by its embedding alone: of the shelf's kind, it would go into it
    assert _enclosed(m, im, {(5, 2)}, counts) == []
    assert _enclosed(m, im, {(5, 2)}, counts) == [(5, 2)]
    # a look in between that does not find it enclosed starts the count again
    assert _enclosed(m, im, {(6, 2)}, counts) == []
    assert _enclosed(m, im, {(5, 2)}, counts) == []
    # the hold is a span of frames: looks 3 frames apart need three looks for 5 frames
    cfg.merge_parts_every = 3
    assert _enclosed(m, im, {(6, 2)}, counts) == []
    assert [_enclosed(m, im, {(5, 2)}, counts) for _ in range(3)] == [[], [], [(5, 2)]]
    cfg.merge_parts_hold_frames = 0  # at the first look
    assert _enclosed(m, im, {(6, 2)}, counts) == []
    assert _enclosed(m, im, {(5, 2)}, counts) == [(5, 2)]
    cfg.merge_parts_min_inside = 0.0  # off
    for _ in range(2):
        assert _enclosed(m, im, {(5, 2)}, counts) == []


def test_parts_under_their_own_kind_merge():
    """A table's legs, cut from its top at the same creases in every view, stand under
    the top's box, within its footprint, and reach lower: the top rests on them, and
    they merge into it. A small block of the table's kind stacked on it lies above it, a
    box of the kind of the box beside it on the floor reaches as low as that one: both
    keep their ids; off, the legs stay too."""
    floor = [[x, y, 0] for x in range(40) for y in range(40)]
    top = [[x, y, 12] for x in range(2, 14) for y in range(2, 10)]
    legs = [[[x, y, z] for x in (lx, lx + 1) for y in (ly, ly + 1) for z in range(1, 12)]
            for lx, ly in ((2, 2), (12, 2), (2, 8), (12, 8))]
    block = [[x, y, 13] for x in range(5, 8) for y in range(4, 6)]
    big = [[x, y, z] for x in range(20, 26) for y in range(2, 8) for z in range(1, 7)]
    small = [[x, y, z] for x in range(27, 30) for y in range(2, 5) for z in range(1, 4)]
    ground, table, crate = np.eye(4)[0], np.eye(4)[1], np.eye(4)[3]
    m, im = _mapper_with_parts([floor, top, *legs, block, big, small],
                               [ground, table, table, table, table, table, table,
                                crate, crate])
    counts = im.owned_voxel_counts()
    # each leg (44 voxels) lies outside the top's box (96 voxels), all of it under it
    shares, boxes = im.shares_inside([(3, 2), (7, 2), (9, 8)], up_axis="z")
    assert shares[0].tolist() == [0.0, 1.0] and shares[1].tolist() == [0.0, 0.0]
    assert shares[2].tolist() == [0.0, 0.0]
    assert m._reaches_below(boxes, 3, 2) and not m._reaches_below(boxes, 9, 8)
    assert not m._reaches_below(boxes, 7, 2)
    assert _look(m) == []  # the first look only finds them
    assert _look(m) == [(3, 2), (4, 2), (5, 2), (6, 2)]
    assert im.resolve(6) == im.resolve(2)
    assert sorted(im.confirmed_ids().tolist()) == [1, im.resolve(2), 7, 8, 9]
    assert im.owned_voxel_counts()[im.resolve(2)] == 96 + 4 * 44
    assert counts[7] == 6 and counts[9] == 27

    # what the whole rests on decides: a wall stands on the floor, whatever piece of a
    # table a glued mask lent its kind; the top stands on its legs
    kind = {(3, 2), (4, 2), (5, 2), (2, 5)}
    assert m._carried_by_own_kind({2: {3: 4, 4: 4, 1: 1}, 5: {1: 90, 2: 10}}, kind) == \
        {2: {3, 4}}

    m2, im2 = _mapper_with_parts([floor, top, *legs], [ground] + [table] * 5)
    m2.cfg.instances.merge_parts_under = False
    for _ in range(2):
        assert _look(m2) == []

    # the same table in a frame whose up is -y (x, y, z) -> (x, 30 - z, y): the same merges
    turned = [[[x, 30 - z, y] for x, y, z in part] for part in [floor, top, *legs]]
    m3, im3 = _mapper_with_parts(turned, [ground] + [table] * 5)
    m3.cfg.semantics.up_axis = "-y"
    assert _look(m3) == []
    assert _look(m3) == [(3, 2), (4, 2), (5, 2), (6, 2)]


def test_support_explains_a_piece_not_a_biased_thing():
    v = Vocabulary(SemanticConfig())
    v.set(["table", "duck", "cup"], np.eye(3, 4))  # the fourth dimension: no prompt's
    piece = np.r_[0.0, 0.05, 1.0, 0.3]  # a cup and noise
    mug = np.r_[0.8, 0.0, 0.2, 0.1]  # a cup its views embed mostly as the table
    cup, table = np.eye(4)[2], np.eye(4)[0]
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    assert support_explains(v, SemanticConfig(), unit(piece), cup)
    assert not support_explains(v, SemanticConfig(), unit(mug), table)
    assert not support_explains(v, SemanticConfig(support_min_residual=0.0), unit(piece), cup)
    assert not support_explains(Vocabulary(SemanticConfig()), SemanticConfig(), unit(piece),
                                cup)


def test_a_narrow_piece_its_support_explains_merges():
    """A piece a segmenter cut off the top of a mug rests on the mug and is narrow, as a
    thing on its support is; its embedding is the mug's and noise, so it is a piece of it.
    A cup on the table that its views embed mostly as the table (of the table's kind by
    cosine) keeps a clear cup direction and its id."""
    top = [[x, y, 0] for x in range(30) for y in range(30)]
    body = [[x, y, z] for x in range(4, 10) for y in range(4, 10) for z in range(1, 5)]
    piece = [[x, y, 5] for x in range(6, 8) for y in range(6, 8)]
    mug = [[x, y, z] for x in range(20, 22) for y in range(20, 22) for z in range(1, 4)]
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    m, im = _mapper_with_parts(
        [top, body, piece, mug],
        [np.eye(4)[0], np.eye(4)[2], unit(np.r_[0.0, 0.05, 1.0, 0.3]),
         unit(np.r_[0.8, 0.0, 0.2, 0.1])])
    m.vocabulary.set(["table", "duck", "cup"], np.eye(3, 4))
    assert m._merge_resting_parts() == [(3, 2)]
    assert sorted(im.confirmed_ids().tolist()) == [1, im.resolve(2), 4]
    # off, or without a vocabulary to tell noise from a direction of its own: it stays
    for off in ("rule", "vocabulary"):
        m2, im2 = _mapper_with_parts(
            [top, body, piece], [np.eye(4)[0], np.eye(4)[2],
                                 unit(np.r_[0.0, 0.05, 1.0, 0.3])])
        if off == "rule":
            m2.vocabulary.set(["table", "duck", "cup"], np.eye(3, 4))
            m2.cfg.instances.merge_parts_explained = False
        assert m2._merge_resting_parts() == []
