"""Worked examples of instance labels from the map (core/labels.py) and per-point
relevance (Vocabulary.relevance)."""
import numpy as np

from panoptic_mapping.core.labels import (label_instances, resting_on, up_rotation,
                                          voxel_relevance, without_directions)
from panoptic_mapping.core.map.features import VoxelFeatures
from panoptic_mapping.core.semantics import SemanticConfig, Vocabulary

TABLE = (np.array([0.0, 0.0, 0.0]), np.array([2.0, 1.0, 0.8]))
MUG = (np.array([0.5, 0.5, 0.79]), np.array([0.6, 0.6, 0.9]))
CUP = (np.array([0.8, 0.5, 0.79]), np.array([0.9, 0.6, 0.9]))
TRAY = (np.array([1.0, 0.2, 0.79]), np.array([1.6, 0.8, 0.83]))
BALL = (np.array([1.2, 0.4, 0.80]), np.array([1.3, 0.5, 0.9]))


def test_resting_on_worked_example():
    boxes = {1: TABLE, 2: MUG, 3: CUP, 4: TRAY, 5: BALL}
    on = resting_on(boxes, "z", gap_m=0.03, max_size_ratio=0.5)
    # the mug and cup rest on the table (side by side: not on each other); the ball lies
    # in the tray (whose floor starts below the ball's base) and on the table; the tray
    # (3 cm high) on the table; the table rests on nothing
    assert on == {2: [1], 3: [1], 4: [1], 5: [1, 4]}
    # asked to stand out by 4 cm, the 3 cm tray is part of the table top
    assert 4 not in resting_on(boxes, "z", 0.03, 0.5, stand_out_m=0.04)
    # a piece of the table top (a segmenter's tile) is part of it, not on it
    tile = (np.array([0.2, 0.2, 0.78]), np.array([0.5, 0.5, 0.8]))
    assert resting_on({1: TABLE, 2: tile}) == {}
    # a box as large as the table is not "on" it
    assert 2 not in resting_on({1: TABLE, 2: (np.array([0.0, 0.0, 0.8]),
                                             np.array([2.0, 1.0, 1.6]))})


def test_up_axis_y():
    R = up_rotation("y")
    np.testing.assert_allclose(R @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    assert np.isclose(np.linalg.det(R), 1.0) and np.isclose(np.linalg.det(up_rotation("-x")), 1)
    swap = lambda b: (b[0][[0, 2, 1]], b[1][[0, 2, 1]])  # the same scene with y up
    assert resting_on({1: swap(TABLE), 2: swap(MUG)}, "y") == {2: [1]}


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
    boxes = {1: TABLE, 2: MUG}
    cfg = SemanticConfig()
    corrected = {}
    out = label_instances(v, cfg, emb, boxes, corrected)
    assert out[1][0] == 1 and out[2][0] == 3 and out[2][1] > 0.9
    assert corrected == {2: [1]}
    cfg.exclude_support_label = False
    assert label_instances(v, cfg, emb, boxes)[2][0] == 1
    # a real mug on the table keeps its label
    assert label_instances(v, SemanticConfig(), {1: text[0], 2: text[2]}, boxes)[2][0] == 3


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
