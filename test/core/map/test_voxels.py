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
