"""Sparse voxel index: packing round trip, stable slots, far points."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.geometry import pack_voxel_keys as pack_keys
from panoptic_mapping.core.geometry import unpack_voxel_keys as unpack_keys
from panoptic_mapping.core.geometry import voxel_coords
from panoptic_mapping.core.map.voxels import VoxelIndex


def test_pack_round_trip_and_coords():
    c = np.array([[0, 0, 0], [-1, 2, -3], [1000, -1000, 5]], np.int64)
    np.testing.assert_array_equal(unpack_keys(pack_keys(c)), c)
    np.testing.assert_array_equal(voxel_coords(np.array([[0.015, -0.005, 0.0]]), 0.01),
                                  [[1, -1, 0]])
    with pytest.raises(ValueError, match="key range"):
        voxel_coords(np.array([[1e5, 0, 0]]), 0.01)


def test_slots_are_stable_and_lookup_misses():
    index = VoxelIndex()
    keys = pack_keys(np.array([[5, 5, 5], [0, 0, 0]], np.int64))
    assert index.insert(keys).tolist() == [1, 0]  # new slots numbered in key order
    assert index.insert(pack_keys(np.array([[-3, 0, 0], [5, 5, 5]]))).tolist() == [2, 1]
    assert index.lookup(pack_keys(np.array([[9, 9, 9]]))).tolist() == [-1]
    np.testing.assert_allclose(index.centers(0.1)[1], [0.55, 0.55, 0.55])
    restored = VoxelIndex.from_state(index.state())
    assert restored.lookup(keys).tolist() == [1, 0] and len(restored) == 3


def _brute_nearest(index: VoxelIndex, points, coords, r, v, inner=0, usable=None):
    """The nearest existing voxel centre within the Chebyshev shell, by enumeration."""
    centres = index.centers(v)
    keys = index.slot_keys()
    out = np.full(len(points), -1)
    for k, (p, c) in enumerate(zip(points, coords)):
        cheb = np.abs(unpack_keys(keys) - c).max(1)
        ok = (cheb > inner) & (cheb <= r)
        if usable is not None:
            ok &= usable
        if ok.any():
            d = np.linalg.norm(centres - p, axis=1)
            d[~ok] = np.inf
            out[k] = int(np.argmin(d))
    return out


@pytest.mark.parametrize("r,inner,use", [(1, 0, False), (2, 1, False), (2, 0, True)])
def test_nearest_is_the_nearest_centre_in_the_shell(r, inner, use):
    rng = np.random.default_rng(r + 10 * inner)
    v = 0.01
    index = VoxelIndex()
    index.insert(pack_keys(voxel_coords(rng.uniform(-0.05, 0.05, (150, 3)), v)))
    points = rng.uniform(-0.06, 0.06, (200, 3))
    coords = voxel_coords(points, v)
    usable = rng.random(len(index)) > 0.4 if use else None
    found = index.nearest(points, coords, r, v, inner, usable)
    np.testing.assert_array_equal(found, _brute_nearest(index, points, coords, r, v, inner,
                                                        usable))
    assert (found >= 0).mean() > 0.3  # the example has both hits and misses
    assert (found < 0).any() or inner == 0


def test_nearest_at_the_ends_of_the_key_range():
    from panoptic_mapping.core.geometry import VOXEL_KEY_BIAS

    v = 1.0
    edge = VOXEL_KEY_BIAS - 1  # the last coordinate voxel_coords accepts
    voxels = np.array([[edge, 0, 0], [edge - 1, 5, 0]], np.int64)
    index = VoxelIndex()
    slots = index.insert(pack_keys(voxels))
    # each point one voxel off its neighbour (z + 1), next to the largest x there is
    points = np.array([[edge + 0.5, 0.5, 1.5], [edge - 0.5, 5.5, 1.2]])
    coords = np.floor(points).astype(np.int64)
    np.testing.assert_array_equal(index.nearest(points, coords, 1, v), slots)


def test_insert_with_known_slots_matches_a_plain_insert():
    rng = np.random.default_rng(3)
    plain, known = VoxelIndex(), VoxelIndex()
    for _ in range(4):
        keys = pack_keys(rng.integers(-6, 6, (300, 3)))
        before = known.lookup(keys)
        # voxels created in between (slots stay valid; absent ones are asked again)
        extra = pack_keys(rng.integers(-6, 6, (40, 3)))
        plain.insert(extra)
        known.insert(extra)
        np.testing.assert_array_equal(known.insert(keys, known=before), plain.insert(keys))
    np.testing.assert_array_equal(known.slot_keys(), plain.slot_keys())
    sorted_keys, slots = known.in_key_order()
    assert (np.diff(sorted_keys) > 0).all()
    np.testing.assert_array_equal(known.slot_keys()[slots], sorted_keys)


@pytest.mark.parametrize("r,inner", [(1, 0), (2, 1), (2, 0)])
def test_neighbour_slots_match_one_lookup_per_offset(r, inner):
    from panoptic_mapping.core.map.voxels import _offsets

    rng = np.random.default_rng(r + inner)
    index = VoxelIndex()
    # dense: whole runs of consecutive z keys exist, as on a surface seen edge on
    index.insert(pack_keys(rng.integers(-4, 4, (400, 3))))
    own = pack_keys(rng.integers(-6, 6, (500, 3)))
    _, packed = _offsets(r, inner)
    expected = index.lookup(own[:, None] + packed[None, :])
    assert (expected >= 0).mean() > 0.1 and (expected < 0).any()
    np.testing.assert_array_equal(index._neighbour_slots(own, r, inner), expected)
