"""query_points' decisions (ROS-free): the relevance threshold of a request and which
points (and instances) match, on worked examples with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.runtime.queries import matching_points, relevance_threshold


def test_threshold_defaults_to_the_nodes_and_refuses_values_outside_0_1():
    assert relevance_threshold(0.0, 0.5) == 0.5  # 0 = the node's query_threshold
    assert relevance_threshold(0.3, 0.5) == pytest.approx(0.3)
    assert relevance_threshold(1.0, 0.5) == 1.0
    for bad in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_relevance must be in"):
            relevance_threshold(bad, 0.5)


def test_matching_points_worked_example():
    # point:       0    1    2    3    4     5
    relevance = [0.9, 0.2, 0.6, 0.7, 0.55, 0.1]
    instance = [1, 1, 2, 2, 0, 3]
    m = matching_points(np.array(relevance), np.array(instance, np.uint32), 0.5)
    # points 0, 2, 3, 4 pass; most relevant first: 0 (0.9), 3 (0.7), 2 (0.6), 4 (0.55)
    assert m.index.tolist() == [0, 3, 2, 4]
    np.testing.assert_allclose(m.relevance, [0.9, 0.7, 0.6, 0.55], rtol=1e-6)
    assert m.relevance.dtype == np.float32
    assert m.matched == 4 and m.threshold == 0.5
    # instance 2: both of its 2 points match; instance 1: 1 of 2; 0 is no instance; 3 none
    assert m.instance_ids == [2, 1]
    assert m.instance_shares == pytest.approx([1.0, 0.5])

    # max_points keeps the most relevant; the instance summary counts every passing point
    top = matching_points(np.array(relevance), np.array(instance), 0.5, max_points=2)
    assert top.index.tolist() == [0, 3] and top.matched == 4
    assert top.instance_ids == [2, 1] and top.instance_shares == pytest.approx([1.0, 0.5])

    # the threshold is inclusive
    assert matching_points(np.array(relevance), np.array(instance), 0.7).index.tolist() == [0, 3]


def test_ties_and_nothing_matching():
    # equal relevance: cloud order; equal matching counts: the larger share, then the id
    m = matching_points(np.array([0.8, 0.8, 0.8, 0.1, 0.8]), np.array([7, 5, 4, 4, 9]), 0.5)
    assert m.index.tolist() == [0, 1, 2, 4]
    assert m.instance_ids == [5, 7, 9, 4]  # 5, 7, 9: 1 of 1; 4: 1 of 2
    assert m.instance_shares == pytest.approx([1.0, 1.0, 1.0, 0.5])
    none = matching_points(np.array([0.1, 0.2]), np.array([1, 0]), 0.5)
    assert none.index.size == 0 and none.matched == 0
    assert none.instance_ids == [] and none.instance_shares == []
    empty = matching_points(np.zeros(0), np.zeros(0, np.uint32), 0.5)
    assert empty.index.size == 0 and empty.instance_ids == []
    with pytest.raises(ValueError, match="3 relevances for 2 points"):
        matching_points(np.zeros(3), np.zeros(2), 0.5)
