"""Per-voxel votes: negative evidence, edge weights, the footprint search, where in each
voxel its points lay."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.instances import InstanceMap
from panoptic_mapping.core.map.votes import VoteGrid

from wall_scene import H, W, K, camera, ingest, established


def test_negative_evidence_moves_a_voxel_but_never_empties_it():
    im = InstanceMap()
    table, cup = established(im, 2)
    pts = np.array([[0.005, 0.005, 0.005], [0.105, 0.005, 0.005]])  # two voxels
    im.integrate(pts, np.array([table, table]))
    im.integrate(pts[1:], np.array([cup]))
    slots = im.votes.slots_of(pts)
    im.votes.unvote(slots, table, 1.0)
    assert im.votes.weights[slots[0]].sum() == 1.0  # table's only vote stays: nothing else seen
    ids, w = im.votes.ids[slots[1]], im.votes.weights[slots[1]]
    assert w[ids == table].tolist() == [0.0] and w[ids == cup].tolist() == [1.0]


def test_mask_edges_vote_with_half_weight():
    im = InstanceMap()
    masks = np.ones((H, W), np.int64)
    masks[:, W // 2:] = 2
    ingest(im, masks, 0.0)
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(0.0))
    slots = im.votes.slots_of(backproject(np.ones((H, W), np.float32), K, camera(0.0))[0])
    w = im.votes.weights[slots].sum(1).reshape(H, W)
    assert w[H // 2, 2] == 1.0  # inside a mask
    assert w[H // 2, W // 2] == 0.5  # on the edge between the two masks


def test_search_widens_to_the_pixel_footprint():
    im = InstanceMap()
    (far_object,) = established(im, 1)
    im.integrate(np.array([[0.005, 0.005, 0.005]]), np.array([far_object]))
    point = np.array([[0.025, 0.005, 0.005]])  # two voxels away from the only voxel
    assert im.votes.slots_of(point)[0] == -1  # search_radius 1 does not reach it
    assert im.votes.slots_of(point, footprint=np.array([0.005]))[0] == -1  # a small pixel
    ids, _ = im.render_points(point, footprint=np.array([0.02]))  # a 2 cm pixel does
    assert ids.tolist() == [far_object]


def test_voters_under_are_the_ids_holding_votes_under_enough_pixels():
    """Any vote counts (outvoted or not), once per pixel; pixels without a voxel (-1)
    and ids under fewer than min_count pixels do not."""
    from panoptic_mapping.core.map.votes import VoteGrid

    g = VoteGrid(0.01, votes_per_voxel=3)
    pts = np.array([[0.005, 0.005, 0.005], [0.015, 0.005, 0.005]])
    g.integrate(pts, np.array([1, 1]))
    g.integrate(pts, np.array([1, 1]))
    g.integrate(pts[:1], np.array([2]))  # 2 outvoted in the first voxel
    g.integrate(pts[1:], np.array([3]))
    a, b = g.own_slots(pts)
    assert sorted(g.voters_under(np.array([a, a, b, -1]), 2).tolist()) == [1, 2]
    assert sorted(g.voters_under(np.array([a, b, b, -1, -1]), 2).tolist()) == [1, 3]
    assert g.voters_under(np.array([-1, -1]), 1).size == 0


def test_relabel_adds_the_absorbed_votes_to_the_survivors_in_the_same_voxel():
    from panoptic_mapping.core.map.votes import VoteGrid

    g = VoteGrid(0.01, votes_per_voxel=3)
    pts = np.array([[0.005, 0.005, 0.005], [0.015, 0.005, 0.005], [0.025, 0.005, 0.005]])
    g.integrate(pts, np.array([1, 2, 3]))
    g.integrate(pts[:1], np.array([2]), weight=2.0)  # voxel 0: 1 (1.0), 2 (2.0)
    g.integrate(pts[2:], np.array([1]), weight=0.5)  # voxel 2: 3 (1.0), 1 (0.5)
    g.relabel(2, 1)
    held = [dict(zip(g.ids[s].tolist(), g.weights[s].tolist())) for s in g.own_slots(pts)]
    assert [{i: w for i, w in h.items() if w > 0} for h in held] == [
        {1: 3.0}, {1: 1.0}, {3: 1.0, 1: 0.5}]
    assert g.mass_of(1) == 4.5 and g.mass_of(2) == 0.0 and g.mass_of(3) == 1.0


def test_per_voxel_arrays_grow_by_a_quarter_with_zero_rows_and_save_only_voxels():
    from panoptic_mapping.core.map.voxels import grown_rows
    from panoptic_mapping.core.map.votes import VoteGrid

    a = np.ones((100_000, 2), np.float32)
    assert grown_rows(a, 100_000) is a
    b = grown_rows(a, 100_001)
    assert b.shape == (129_096, 2) and b[:100_000].all() and not b[100_000:].any()
    assert grown_rows(a, 100_001, limit=110_000).shape[0] == 110_000
    assert grown_rows(a, 120_000, limit=110_000).shape[0] == 120_000  # needed wins
    g = VoteGrid(0.01, votes_per_voxel=2)
    g.integrate(np.array([[0.005, 0.005, 0.005]]), np.array([1]))
    assert g.ids.shape[0] > len(g) == 1
    state = g.state()
    assert state["vote_ids"].shape == (1, 2) and state["vote_w"].tolist() == [[1.0, 0.0]]


def _plate(x0: float, x1: float, z: float = 1.0) -> np.ndarray:
    """Points every millimetre on a plate facing the camera, x in [x0, x1], |y| <= 5 cm."""
    xs, ys = np.arange(x0, x1 + 1e-4, 0.001), np.arange(-0.05, 0.0501, 0.001)
    return np.stack(np.meshgrid(xs, ys, [z]), -1).reshape(-1, 3)


def test_a_view_without_depth_draws_voxels_where_their_points_lay():
    """A plate from x = 1.7 cm to 8.3 cm at 1 m, 2 cm voxels, 200 px focal length: the
    pixels whose centres see the plate are columns 43-56. Its five voxels span x = 0 to
    10 cm; drawn at their centres they covered columns 40-59 (three pixels too wide on
    each side); drawn at the mean of their points (the first at x = 1.8 cm, the last at
    8.15 cm) they cover 42-57."""
    K = np.array([[200.0, 0, 39.5], [0, 200.0, 29.5], [0, 0, 1]])
    im = InstanceMap(InstanceConfig(voxel_size_m=0.02))
    plate = _plate(0.017, 0.083)
    im.integrate(plate, np.ones(len(plate), np.int64))
    depth = im.surface_depth(K, np.eye(4), (60, 80), min_weight=1.0)
    assert np.flatnonzero(depth[30] > 0).tolist() == list(range(42, 58))
    assert np.allclose(depth[30][depth[30] > 0], 1.0)  # the plate's depth, not a centre's
    slot = im.votes.own_slots(np.array([[0.019, 0.001, 1.0]]))
    assert np.allclose(im.votes.surface_points(slot)[0, :1], [0.018], atol=1e-3)


def test_surface_points_follow_a_move_and_are_forgotten_with_the_last_vote():
    im = InstanceMap(InstanceConfig(voxel_size_m=0.02))
    plate = _plate(0.017, 0.019)  # one column of voxels, points at x = 1.7-1.9 cm
    im.integrate(plate, np.ones(len(plate), np.int64))
    a_slot = im.votes.own_slots(plate[:1])
    before = im.votes.surface_points(a_slot)[0]
    assert np.isclose(before[0], 0.018, atol=1e-6)
    turn = np.eye(4)
    turn[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about z
    turn[:3, 3] = [0.5, 0.0, 0.0]
    members = np.zeros(2, bool)
    members[1] = True
    im.votes.move(members, turn)
    moved_to = turn[:3, :3] @ before + turn[:3, 3]
    b_slot = im.votes.own_slots(moved_to[None])
    assert np.allclose(im.votes.surface_points(b_slot)[0], moved_to, atol=1e-6)
    # the old voxel lost its only vote, and with it where its points lay
    assert im.votes.samples[a_slot[0]] == 0 and not im.votes.offsets[a_slot[0]].any()
    # free space seen through the new voxel takes its last vote: forgotten too
    im.votes.withdraw(b_slot, 10.0)
    assert im.votes.samples[b_slot[0]] == 0 and not im.votes.offsets[b_slot[0]].any()


def test_surface_points_are_saved_and_maps_saved_before_them_load_at_centres():
    im = InstanceMap(InstanceConfig(voxel_size_m=0.02))
    plate = _plate(0.017, 0.083)
    im.integrate(plate, np.ones(len(plate), np.int64))
    state = im.votes.state()
    grid = VoteGrid(0.02, im.cfg.votes_per_voxel)
    grid.load_state(state)
    slots = np.arange(len(grid))
    assert np.array_equal(grid.surface_points(slots), im.votes.surface_points(slots))
    older = {k: v for k, v in state.items() if k not in ("vote_offsets", "vote_samples")}
    grid.load_state(older)
    assert np.array_equal(grid.surface_points(slots), grid.index.centers(0.02))
    bad = dict(state, vote_offsets=state["vote_offsets"] + 0.05)  # outside the voxels
    with pytest.raises(ValueError, match="outside their voxels"):
        grid.load_state(bad)
    with pytest.raises(ValueError, match="sample counts are not finite or negative"):
        grid.load_state(dict(state, vote_samples=-state["vote_samples"]))
    with pytest.raises(ValueError, match="sample counts for"):
        grid.load_state(dict(state, vote_samples=state["vote_samples"][:-1]))


def test_stereo_points_vote_but_leave_their_voxels_drawn_at_the_centres():
    """Stereo depth is off by more than a voxel: its points' mean says nothing about where
    in the voxel the surface is (on a real kitchen it drew held-out surfaces farther
    off), so only measured points place a voxel's surface."""
    grid = VoteGrid(0.02, votes_per_voxel=2)
    plate = _plate(0.017, 0.019)
    grid.integrate(plate, np.ones(len(plate), np.int64), locate=False)
    slots = np.arange(len(grid))
    assert grid.weights[slots, 0].min() == 1.0 and not grid.samples[slots].any()
    assert np.array_equal(grid.surface_points(slots), grid.index.centers(0.02))
    grid.integrate(plate, np.ones(len(plate), np.int64))  # the same points, measured
    assert np.allclose(grid.surface_points(slots)[:, 0], 0.018)


def test_a_frame_located_once_votes_as_one_looked_up_at_every_step():
    """Votes through PointVoxels equal votes that look every point up again, including the
    majority label per voxel (ties: the smallest id) and the voxels' surface points."""
    rng = np.random.default_rng(5)
    plain, shared = VoteGrid(0.02, 3), VoteGrid(0.02, 3)
    for frame in range(3):
        points = rng.uniform(0, 0.2, (2000, 3))
        labels = rng.integers(0, 4, 2000)  # 0: no vote
        edge = rng.random(2000) < 0.3
        at = shared.locate(points)
        np.testing.assert_array_equal(shared.slots_of(points, None, at),
                                      plain.slots_of(points))
        for grid, where in ((plain, None), (shared, at)):
            grid.integrate(points, np.where(edge, 0, labels), locate=frame != 1, at=where)
            grid.integrate(points, np.where(edge, labels, 0), weight=0.5, at=where)
        np.testing.assert_array_equal(shared.own_slots(points, at), plain.own_slots(points))
    n = len(plain)
    assert len(shared) == n and n > 100
    for name in ("ids", "weights", "offsets", "samples"):
        np.testing.assert_array_equal(getattr(shared, name)[:n], getattr(plain, name)[:n])
    np.testing.assert_array_equal(shared.index.slot_keys(), plain.index.slot_keys())


def test_the_majority_label_of_a_voxel_breaks_ties_to_the_smallest_id():
    grid = VoteGrid(1.0, 3)
    pts = np.array([[0.5, 0.5, 0.5]] * 5 + [[1.5, 0.5, 0.5]] * 3)
    grid.integrate(pts, np.array([7, 3, 7, 3, 9, 4, 4, 2]))
    labels, _ = grid.labels(grid.own_slots(pts[[0, 5]]), np.ones(10, bool))
    assert labels.tolist() == [3, 4]
