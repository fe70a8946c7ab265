"""Keyframe observations per instance: label counts, resolution of merged and deleted ids,
the min-pixels rule, the newest stamp, the per-version cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_mapping.core.map.observations import (
    IdObservations,
    LabelCounts,
    id_observations,
    label_counts,
)


def labels_of(counts: dict[int, int], shape=(4, 5)) -> np.ndarray:
    """An (H, W) int32 label image with ``counts[id]`` pixels of each id, the rest 0."""
    flat = np.concatenate([np.full(n, i) for i, n in counts.items()])
    out = np.zeros(shape[0] * shape[1], np.int32)
    out[:len(flat)] = flat
    return out.reshape(shape)


def test_label_counts_of_a_small_image():
    ids, counts = label_counts(np.array([[0, 3, 3], [7, 3, 0]], np.int32))
    assert ids.tolist() == [3, 7] and counts.tolist() == [3, 1]
    ids, counts = label_counts(np.zeros((2, 2), np.int32))
    assert ids.size == 0 and counts.size == 0
    with pytest.raises(ValueError, match="non-negative"):
        label_counts(np.array([[-1, 2]]))


def test_id_observations_worked_example():
    """Three keyframes, stamps 10, 30, 20; id 3 merged into 2, id 4 deleted, id 7 issued
    after the lookup table was read; 3 pixels make an observation."""
    lut = np.array([0, 1, 2, 2, 0, 5])
    frames = [labels_of({1: 4, 2: 2, 3: 2}),   # 1 seen; 2 + 3 = 4 pixels of 2 today: seen
              labels_of({1: 2, 4: 5, 5: 3}),   # 1 below 3 pixels; 4 deleted; 5 seen
              labels_of({1: 3, 7: 10})]        # 1 seen; 7 unknown to the table
    obs = id_observations([label_counts(f) for f in frames], [10.0, 30.0, 20.0], lut, 3)
    assert obs.keyframes.tolist() == [0, 2, 1, 0, 0, 1]
    assert obs.of(1) == (2, 20.0)   # the newest stamp, not the last keyframe's
    assert obs.of(2) == (1, 10.0)
    assert obs.of(5) == (1, 30.0)
    assert obs.of(3) == (0, None) and obs.of(4) == (0, None)   # they live on as 2 / not
    assert obs.of(7) == (0, None) and obs.of(-1) == (0, None)
    # with 2 pixels enough, id 1 is seen in all three, the newest at 30
    assert id_observations([label_counts(f) for f in frames], [10.0, 30.0, 20.0], lut,
                           2).of(1) == (3, 30.0)


def test_id_observations_without_keyframes_or_ids():
    obs = id_observations([], [], np.array([0, 1, 2]), 1)
    assert obs.keyframes.tolist() == [0, 0, 0] and np.isnan(obs.last_stamp).all()
    assert IdObservations.empty().of(1) == (0, None)
    with pytest.raises(ValueError, match="2 label counts for 1 stamps"):
        id_observations([label_counts(labels_of({1: 1}))] * 2, [0.0], np.arange(2), 1)


def test_label_counts_are_cached_per_keyframe_version():
    a, b = labels_of({1: 5}), labels_of({2: 6})
    counts = LabelCounts()
    [(ids, n)] = counts([(0, 1, a)])
    assert ids.tolist() == [1] and n.tolist() == [5]
    [(ids, _)] = counts([(0, 1, b)])  # same version: the cached counts, not recounted
    assert ids.tolist() == [1]
    [(ids, n)] = counts([(0, 2, b)])  # relabelled: counted again
    assert ids.tolist() == [2] and n.tolist() == [6]
    out = counts([(1, 1, a), (2, 0, None)])  # keyframe 0 evicted, 2 unlabelled
    assert [i.tolist() for i, _ in out] == [[1], []]
    [(ids, _)] = counts([(0, 2, a)])  # keyframe 0 was forgotten: counted afresh
    assert ids.tolist() == [1]


def test_many_keyframes_match_a_per_id_loop():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 30, (12, 16)) for _ in range(25)]
    stamps = rng.uniform(0, 100, 25)
    lut = np.arange(40)
    lut[[5, 6]] = 4          # merged into 4
    lut[[9, 20]] = 0         # deleted
    obs = id_observations([label_counts(f) for f in frames], stamps, lut, 8)
    for i in range(1, 40):
        seen = [k for k, f in enumerate(frames) if ((lut[f] == i).sum() >= 8)]
        expect = (len(seen), max(stamps[seen]) if seen else None)
        got = obs.of(i)
        assert got[0] == expect[0], i
        assert (got[1] is None) == (expect[1] is None), i
        if got[1] is not None:
            assert math.isclose(got[1], expect[1]), i
