"""Grouping of integer codes by torch's sort agrees with numpy's."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.grouping import run_starts, sort_order, unique_inverse_counts


def test_unique_inverse_counts_equal_numpy():
    rng = np.random.default_rng(0)
    values = rng.integers(-50, 10**12, 5000)
    values[::7] = values[3]  # repeats
    got = unique_inverse_counts(values)
    want = np.unique(values, return_inverse=True, return_counts=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # a read-only array (a recording's frame) is copied, not shared
    frozen = values.copy()
    frozen.setflags(write=False)
    np.testing.assert_array_equal(unique_inverse_counts(frozen)[0], want[0])
    assert all(a.size == 0 for a in unique_inverse_counts(np.zeros(0, np.int64)))


def test_sort_order_sorts():
    values = np.array([5, -1, 5, 3, 10**15, -1], np.int64)
    order = sort_order(values)
    assert sorted(order.tolist()) == list(range(values.size))
    assert (np.diff(values[order]) >= 0).all()
    assert sort_order(np.zeros(0, np.int64)).size == 0


def test_run_starts_mark_where_equal_values_begin():
    assert run_starts(np.array([2, 2, 3, 7, 7, 7])).tolist() == [True, False, True, True,
                                                                  False, False]
    assert run_starts(np.array([4])).tolist() == [True]
    assert run_starts(np.zeros(0, np.int64)).size == 0  # no run, not one empty run
