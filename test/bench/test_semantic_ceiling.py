"""Worked example of the semantic ceiling (bench.metrics.semantic_ceiling)."""
import numpy as np

from panoptic_mapping.bench.metrics import semantic_ceiling


def test_semantic_ceiling_worked_example():
    # classes: 0 void, 1 table, 2 mug; GT: instance 1 (table, left), 2 (mug, right)
    gt_i = np.array([[1, 1, 2, 2]])
    gt_s = np.array([[1, 1, 2, 2]])
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    # view 1: one mask over both, embedded "table"; view 2: the mug alone, "mug"
    masks = [np.array([[1, 1, 1, 1]]), np.array([[0, 0, 1, 1]])]
    emb = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])]
    # the mug: 0.5 * table (half of view 1's mask) + 1.0 * mug -> mug; table: table
    out = semantic_ceiling(masks, emb, [gt_i, gt_i], [gt_s, gt_s], text, 3)
    assert out["mIoU"] == 1.0
    # the mug embedded "table" in every view: the consensus is wrong and stays wrong
    emb = [np.array([[1.0, 0.0]]), np.array([[0.9, 0.1]])]
    out = semantic_ceiling(masks, emb, [gt_i, gt_i], [gt_s, gt_s], text, 3)
    assert out["per_class"][2] == 0.0 and out["per_class"][1] == 0.5
    # no mask ever overlaps the mug: void, a miss
    out = semantic_ceiling([np.array([[1, 1, 0, 0]])], [np.array([[1.0, 0.0]])], [gt_i],
                           [gt_s], text, 3)
    assert out["per_class"] == {1: 1.0, 2: 0.0}
