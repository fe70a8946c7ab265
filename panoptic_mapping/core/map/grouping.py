"""Grouping of integer codes (voxel slots, (voxel, label) pairs) by sorting, the step
every per-frame fusion repeats over a frame's points.

torch sorts int64 on the CPU with a radix sort: ~7 ms for 300k codes against ~18 ms for
``np.argsort``, and ``torch.unique`` with inverse and counts ~10 ms against ~30 ms for
``np.unique`` (2-core CPU, one thread; a 640x480 frame fuses ~300k points). The results
are those of numpy's (sorted unique values, their inverse and counts); only the order of
equal codes within an argsort may differ, which no caller depends on.
"""
from __future__ import annotations

import numpy as np
import torch

from panoptic_mapping.core.device import numpy_tensor

__all__ = ["run_starts", "sort_order", "unique_inverse_counts"]


def _tensor(values: np.ndarray) -> torch.Tensor:
    return numpy_tensor(np.reshape(values, -1), np.int64)


def sort_order(values: np.ndarray) -> np.ndarray:
    """(N,) int64 indices that sort the integer codes ``values`` (N,) ascending (equal
    codes in any order)."""
    if np.size(values) == 0:
        return np.zeros(0, dtype=np.int64)
    return torch.sort(_tensor(values)).indices.numpy()


def unique_inverse_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True, return_counts=True)`` of integer codes
    (N,): the sorted distinct codes (U,), the index of each value's code (N,) and each
    code's count (U,), all int64."""
    if np.size(values) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    uniq, inverse, counts = torch.unique(_tensor(values), sorted=True, return_inverse=True,
                                         return_counts=True)
    return uniq.numpy(), inverse.numpy(), counts.numpy()


def run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """(N,) bool: where each run of equal values in a sorted (N,) array begins (none for
    an empty array)."""
    start = np.empty(sorted_values.size, dtype=bool)
    start[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=start[1:])
    return start
