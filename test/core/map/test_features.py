"""Worked examples of the per-voxel feature fusion (core/map/features.py)."""
import numpy as np
import pytest

from panoptic_mapping.core.map.features import VoxelFeatures, mask_shares


def _unit(*v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_running_mean_counts_each_view_once():
    f = VoxelFeatures(1.0, 2)
    # view 1: three points of mask 1 in voxel (0, 0, 0); view 2: one point of mask 1
    f.integrate(np.full((3, 3), 0.5), np.array([1, 1, 1]), np.array([[1.0, 0.0]]))
    f.integrate(np.full((1, 3), 0.5), np.array([1]), np.array([[0.0, 2.0]]))
    feats, w = f.at_points(np.array([[0.5, 0.5, 0.5], [5.5, 0.5, 0.5]]))
    assert w.tolist() == [2.0, 0.0]  # two views, not four points
    np.testing.assert_allclose(feats[0], _unit(1, 1), atol=1e-3)
    assert not feats[1].any()


def test_one_view_mixes_masks_by_pixel_weight():
    f = VoxelFeatures(1.0, 2)
    emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    pts = np.full((4, 3), 0.5)
    # three pixels of mask 1 at weight 1, one of mask 2 at weight 1: direction (3, 1)
    f.integrate(pts, np.array([1, 1, 1, 2]), emb)
    np.testing.assert_allclose(f.at_points(pts[:1])[0][0], _unit(3, 1), atol=1e-3)
    # a second view whose points carry no weight leaves the voxel as it was
    f.integrate(pts, np.array([2, 2, 2, 2]), emb, point_weights=np.zeros(4))
    assert f.weight[0] == 1.0
    # masks without an embedding (zero rows) and pixels off masks are ignored
    assert f.integrate(pts, np.array([0, 0, 3, 3]), np.vstack([emb, [0.0, 0.0]])) == 0


def test_mask_shares_worked_example():
    masks = np.array([[1, 1, 1, 1], [2, 2, 0, 0]])
    labels = np.array([[5, 5, 5, 7], [7, 0, 7, 0]])
    # mask 1: 3 of 4 pixels on id 5, 1 on id 7; mask 2: one pixel on 7, one unlabelled
    np.testing.assert_allclose(mask_shares(labels, masks),
                               [[0.75, 0.75, 0.75, 0.25], [1.0, 0.0, 0.0, 0.0]])


def test_move_clear_and_state_round_trip():
    f = VoxelFeatures(1.0, 2)
    f.integrate(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5]]), np.array([1, 2]),
                np.array([[1.0, 0.0], [0.0, 1.0]]))
    keys = f.index.slot_keys()[:1]
    shift = np.eye(4)
    shift[:3, 3] = [0.0, 3.0, 0.0]
    f.move(keys, shift)
    feats, w = f.at_points(np.array([[0.5, 0.5, 0.5], [0.5, 3.5, 0.5], [1.5, 0.5, 0.5]]))
    assert w.tolist() == [0.0, 1.0, 1.0]
    np.testing.assert_allclose(feats[1], [1.0, 0.0], atol=1e-3)
    g = VoxelFeatures.from_state(f.state(), 1.0, 2)
    np.testing.assert_array_equal(g.at_points(np.array([[0.5, 3.5, 0.5]]))[0], feats[1:2])
    f.clear(f.index.slot_keys())
    assert not f.weight.any()
    with pytest.raises(ValueError, match="dimension"):
        VoxelFeatures.from_state(f.state(), 1.0, 3)
    assert len(VoxelFeatures.from_state({}, 1.0, 2)) == 0  # a map saved before features


def test_slots_at_searches_the_nearest_held_neighbour():
    f = VoxelFeatures(1.0, 2)
    f.integrate(np.array([[0.5, 0.5, 0.5], [3.5, 0.5, 0.5]]), np.array([1, 1]),
                np.array([[1.0, 0.0]]))
    s = f.slots_at(np.array([[1.2, 0.5, 0.5], [2.9, 0.5, 0.5], [9.5, 9.5, 9.5]]), 1)
    assert s.tolist() == [f.index.lookup(f.index.slot_keys()[:1])[0],
                          f.index.lookup(f.index.slot_keys()[1:])[0], -1]
    assert f.slots_at(np.array([[1.2, 0.5, 0.5]]), 0).tolist() == [-1]


def test_a_full_store_keeps_its_voxels_and_counts_the_refused():
    f = VoxelFeatures(1.0, 2, max_voxels=2)
    emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    pts = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [2.5, 0.5, 0.5], [3.5, 0.5, 0.5]])
    assert f.integrate(pts, np.array([1, 1, 1, 1]), emb) == 2
    assert len(f) == 2 and f.refused == 2
    # the voxels it has still fuse new views; new places are refused again
    assert f.integrate(pts, np.array([2, 2, 2, 2]), emb) == 2
    assert f.weight[:len(f)].tolist() == [2.0, 2.0] and f.refused == 4
    np.testing.assert_allclose(f.at_points(pts[:1])[0][0], [np.sqrt(0.5)] * 2, atol=1e-3)
    assert VoxelFeatures.from_state(f.state(), 1.0, 2, max_voxels=2).max_voxels == 2


def test_cosines_of_voxel_means_with_directions():
    f = VoxelFeatures(1.0, 3)
    f.integrate(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [2.5, 0.5, 0.5]]),
                np.array([1, 2, 3]), np.stack([_unit(3, 4, 0), _unit(0, 0, 1),
                                               np.zeros(3, np.float32)]))
    slots = f.slots_at(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5]]), 0)
    dirs = np.stack([_unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)])
    np.testing.assert_allclose(f.cosines(slots, dirs), [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]],
                               atol=1e-3)  # float16 means
    # many slots, in chunks: the same as the unit rows' products
    rng = np.random.default_rng(0)
    big = VoxelFeatures(1.0, 16)
    pts = np.stack([np.arange(5000) + 0.5, np.full(5000, 0.5), np.full(5000, 0.5)], 1)
    big.integrate(pts, np.arange(1, 5001), rng.normal(size=(5000, 16)).astype(np.float32))
    slots = big.slots_at(pts, 0)
    d = rng.normal(size=(4, 16)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    from panoptic_mapping.core.map.features import unit_rows
    np.testing.assert_allclose(big.cosines(slots, d), unit_rows(big.mean[slots]) @ d.T,
                               atol=1e-5)
