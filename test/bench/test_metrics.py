"""Worked examples for panoptic_mapping.bench.metrics: every expected value is derived by
hand in the comments next to it."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from panoptic_mapping.bench import metrics
from panoptic_mapping.bench.metrics import (
    AGNOSTIC_CLASS,
    depth_errors,
    id_stability,
    majority_mapping,
    matched_mask_miou,
    mean_iou,
    panoptic_quality_scene,
    psnr,
)

THING, STUFF = 1, 2  # class ids used by the small examples; 0 is void


def img(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int32)


# ------------------------------------------------------------------ PQ_scene


def _two_frames_object_left_floor_right():
    """Two 4x4 frames: a thing (class 1, id 7) in the left half, stuff class 2 on the right."""
    inst = img([[7, 7, 50, 50]] * 4)
    sem = img([[THING, THING, STUFF, STUFF]] * 4)
    return [inst, inst.copy()], [sem, sem.copy()]


def test_pq_id_switch_between_frames_gives_exactly_half():
    gt_inst, gt_sem = _two_frames_object_left_floor_right()
    # The object is predicted perfectly in each frame but with id 3 in frame 0 and id 4 in
    # frame 1. Scene level: GT object = 16 px; pred (1, 3) = 8 px inside it -> IoU 8/16 =
    # 0.5, not > 0.5; same for (1, 4). Things: TP 0, FP 2, FN 1 -> PQ_th = 0.
    # Stuff: one segment per class, perfect -> PQ_st = 1. PQ = mean(0, 1) = 0.5 (per-frame
    # PQ would be 1: only the scene-level metric sees the id switch).
    pred_inst = [img([[3, 3, 0, 0]] * 4), img([[4, 4, 0, 0]] * 4)]
    r = panoptic_quality_scene(pred_inst, gt_sem, gt_inst, gt_sem, {THING})
    assert r["PQ"] == pytest.approx(0.5)
    assert r["PQ_th"] == 0.0 and r["PQ_st"] == 1.0
    assert (r["TP"], r["FP"], r["FN"]) == (1, 2, 1)
    assert r["per_class"][THING]["RQ"] == 0.0           # 0 / (0 + 2/2 + 1/2)
    assert r["SQ"] == pytest.approx(0.5) and r["RQ"] == pytest.approx(0.5)

    # Same prediction with a consistent id -> everything perfect.
    pred_inst = [img([[3, 3, 0, 0]] * 4)] * 2
    r = panoptic_quality_scene(pred_inst, gt_sem, gt_inst, gt_sem, {THING})
    assert (r["PQ"], r["SQ"], r["RQ"]) == (1.0, 1.0, 1.0)


def test_pq_sq_rq_with_partial_match_fp_and_fn():
    # One 4x4 frame, all class 1. GT A (id 1) = rows 0-1 (8 px), GT B (id 2) = rows 2-3.
    gt_inst = img([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    gt_sem = np.full((4, 4), THING, np.int32)
    # Pred id 9 = 6 px of A -> IoU 6/8 = 0.75 (TP). Pred id 10 = the other 2 px of A ->
    # IoU 2/8, unmatched, not on void -> FP. B not predicted (semantic void) -> FN.
    pred_inst = img([[9, 9, 9, 9], [9, 9, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]])
    pred_sem = np.where(pred_inst > 0, THING, 0).astype(np.int32)
    r = panoptic_quality_scene([pred_inst], [pred_sem], [gt_inst], [gt_sem], {THING})
    # SQ = 0.75; RQ = 1 / (1 + 0.5 + 0.5) = 0.5; PQ = 0.375.
    assert r["SQ"] == pytest.approx(0.75)
    assert r["RQ"] == pytest.approx(0.5)
    assert r["PQ"] == pytest.approx(0.375)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 1, 1)
    assert math.isnan(r["PQ_st"])  # no stuff class in this scene
    assert r["matches"] == [{"gt": (THING, 1), "pred": (THING, 9), "iou": 0.75}]


def test_pq_stuff_is_one_segment_per_class_instance_ids_ignored():
    gt_inst, gt_sem = _two_frames_object_left_floor_right()
    gt_inst[1] = np.where(gt_sem[1] == STUFF, 51, gt_inst[1])  # GT stuff id changes: ignored
    # Predicted floor carries different instance ids per frame (5, then 6): still one
    # stuff segment (class 2) over both frames -> IoU 1 -> PQ_st = 1.
    pred_inst = [img([[7, 7, 5, 5]] * 4), img([[7, 7, 6, 6]] * 4)]
    r = panoptic_quality_scene(pred_inst, gt_sem, gt_inst, gt_sem, {THING})
    assert r["PQ_st"] == 1.0 and r["PQ"] == 1.0
    assert r["n_gt_segments"] == 2 and r["n_pred_segments"] == 2
    # Half of the GT floor predicted as void: stuff IoU = 16 / 32 = 0.5 -> not a match.
    pred_sem = [gt_sem[0], np.where(gt_sem[1] == STUFF, 0, gt_sem[1]).astype(np.int32)]
    r = panoptic_quality_scene(pred_inst, pred_sem, gt_inst, gt_sem, {THING})
    assert r["per_class"][STUFF] == pytest.approx(
        {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 1, "FN": 1, "iou_sum": 0.0,
         "is_thing": False})


def test_pq_void_pixels_are_removed_from_predictions():
    # GT: object (id 1) on row 0 (4 px), everything else void.
    gt_inst = img([[1, 1, 1, 1], [0] * 4, [0] * 4, [0] * 4])
    gt_sem = np.where(gt_inst > 0, THING, 0).astype(np.int32)
    # Pred id 3 on rows 0-1 (8 px, 4 on void). Without void removal IoU = 4/8 = 0.5 (no
    # match); with it IoU = 4 / (8 - 4 + 4 - 4) = 1 -> TP, PQ = 1.
    pred_inst = img([[3] * 4, [3] * 4, [0] * 4, [0] * 4])
    pred_sem = np.where(pred_inst > 0, THING, 0).astype(np.int32)
    r = panoptic_quality_scene([pred_inst], [pred_sem], [gt_inst], [gt_sem], {THING})
    assert r["PQ"] == 1.0 and r["TP"] == 1 and r["FP"] == 0


def test_pq_unmatched_prediction_mostly_on_void_is_not_a_false_positive():
    # GT object A (id 1) = row 0 + (3,2), (3,3): 6 px; the rest is void.
    gt_inst = img([[1, 1, 1, 1], [0] * 4, [0] * 4, [0, 0, 1, 1]])
    gt_sem = np.where(gt_inst > 0, THING, 0).astype(np.int32)
    # Pred 3 = row 0: IoU(3, A) = 4 / (4 + 6 - 4) = 2/3 -> TP.
    # Pred 4 = rows 2-3 (8 px): 6 on void (75 % > 50 %) and 2 on A -> unmatched but
    # mostly void -> not counted. PQ = 2/3, RQ = 1.
    pred_inst = img([[3] * 4, [0] * 4, [4] * 4, [4] * 4])
    pred_sem = np.where(pred_inst > 0, THING, 0).astype(np.int32)
    r = panoptic_quality_scene([pred_inst], [pred_sem], [gt_inst], [gt_sem], {THING})
    assert r["FP"] == 0 and r["RQ"] == 1.0
    assert r["PQ"] == pytest.approx(2 / 3)
    # Pred 4 = row 3 only (4 px): void share 2/4 = 50 %, not > 50 % -> a FP.
    # RQ = 1 / (1 + 0.5) = 2/3; PQ = (2/3) * (2/3) = 4/9.
    pred_inst = img([[3] * 4, [0] * 4, [0] * 4, [4] * 4])
    pred_sem = np.where(pred_inst > 0, THING, 0).astype(np.int32)
    r = panoptic_quality_scene([pred_inst], [pred_sem], [gt_inst], [gt_sem], {THING})
    assert r["FP"] == 1
    assert r["PQ"] == pytest.approx(4 / 9)


def test_pq_thing_without_instance_id_is_void_in_gt():
    # GT row 1 says "class 1" but has no instance id: ignored like void, so pred 3
    # spilling onto it still has IoU 1 with the object on row 0.
    gt_inst = img([[1] * 4, [0] * 4])
    gt_sem = img([[THING] * 4, [THING] * 4])
    pred_inst = img([[3] * 4, [3] * 4])
    r = panoptic_quality_scene([pred_inst], [gt_sem], [gt_inst], [gt_sem], {THING})
    assert r["PQ"] == 1.0


def test_pq_wrong_class_vs_class_agnostic():
    # GT: thing class 1 (id 1) left, thing class 3 (id 2) right, one 2x4 frame.
    gt_inst = img([[1, 1, 2, 2], [1, 1, 2, 2]])
    gt_sem = img([[1, 1, 3, 3], [1, 1, 3, 3]])
    pred_inst = img([[5, 5, 6, 6], [5, 5, 6, 6]])
    wrong_sem = img([[1, 1, 1, 1], [1, 1, 1, 1]])  # the right object gets class 1
    # Class-aware: class 1: TP (5 <-> 1), FP (6); class 3: FN (2).
    # PQ_1 = 1 / (1 + 0.5) = 2/3, PQ_3 = 0 -> PQ = 1/3.
    r = panoptic_quality_scene([pred_inst], [wrong_sem], [gt_inst], [gt_sem], {1, 3})
    assert r["PQ"] == pytest.approx(1 / 3)
    # Class-agnostic: both are "thing", both match -> 1. Semantics may be omitted.
    r = panoptic_quality_scene([pred_inst], None, [gt_inst], [gt_sem], {1, 3},
                               class_agnostic=True)
    assert r["PQ"] == 1.0 and list(r["per_class"]) == [AGNOSTIC_CLASS]


def test_pq_class_agnostic_ignores_stuff_unless_listed_as_things():
    gt_inst, gt_sem = _two_frames_object_left_floor_right()
    # Pred: object id 3 (consistent), floor id 8 in frame 0 and id 9 in frame 1.
    pred_inst = [img([[3, 3, 8, 8]] * 4), img([[3, 3, 9, 9]] * 4)]
    # Stuff is void in the agnostic variant: ids 8 and 9 lie 100 % on void -> not FP.
    r = panoptic_quality_scene(pred_inst, None, gt_inst, gt_sem, {THING}, class_agnostic=True)
    assert (r["PQ"], r["TP"], r["FP"], r["FN"]) == (1.0, 1, 0, 0)
    # Counting the floor (GT id 50) as an instance too: pred 8 and 9 each cover half of it
    # (IoU 0.5, no match) -> TP 1 (object), FP 2, FN 1 -> RQ = 1 / (1 + 1 + 0.5) = 0.4.
    r = panoptic_quality_scene(pred_inst, None, gt_inst, gt_sem, {THING, STUFF},
                               class_agnostic=True)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 2, 1)
    assert r["PQ"] == pytest.approx(0.4)


def _random_scene(rng: np.random.Generator, frames: int = 5, h: int = 24, w: int = 32):
    """GT with 3 things (classes 1, 3) on a stuff floor (class 2), plus some void."""
    gt_i, gt_s = [], []
    for _ in range(frames):
        inst = np.full((h, w), 100, np.int32)
        sem = np.full((h, w), STUFF, np.int32)
        for obj, cls in ((1, 1), (2, 1), (3, 3)):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            inst[y:y + 8, x:x + 8] = obj
            sem[y:y + 8, x:x + 8] = cls
        inst[:2] = 0
        sem[:2] = 0
        gt_i.append(inst)
        gt_s.append(sem)
    return gt_i, gt_s


def test_pq_perfect_prediction_and_id_permutation_invariance():
    rng = np.random.default_rng(0)
    gt_i, gt_s = _random_scene(rng)
    r = panoptic_quality_scene(gt_i, gt_s, gt_i, gt_s, {1, 3})
    assert (r["PQ"], r["SQ"], r["RQ"]) == (1.0, 1.0, 1.0)
    assert (r["PQ_th"], r["PQ_st"]) == (1.0, 1.0)

    # A noisy prediction: each frame 10 % of the pixels get a random instance id.
    pred_i = [np.where(rng.random(g.shape) < 0.1, rng.integers(1, 4, g.shape), g)
              .astype(np.int32) for g in gt_i]
    base = panoptic_quality_scene(pred_i, gt_s, gt_i, gt_s, {1, 3})
    assert 0.0 < base["PQ"] < 1.0
    # Renaming predicted ids consistently over the scene changes nothing.
    perm = {0: 0, 1: 77, 2: 5, 3: 1000, 100: 42}
    lut = np.zeros(101, np.int32)
    for a, b in perm.items():
        lut[a] = b
    renamed = panoptic_quality_scene([lut[p] for p in pred_i], gt_s, gt_i, gt_s, {1, 3})
    for key in ("PQ", "SQ", "RQ", "TP", "FP", "FN"):
        assert renamed[key] == pytest.approx(base[key])


# ------------------------------------------------------------------ mIoU


def test_mean_iou_worked_example_with_void_and_extra_class():
    gt = [img([[1, 1], [2, 2]]), img([[0, 0], [0, 0]])]
    pred = [img([[1, 2], [2, 2]]), img([[1, 3], [3, 3]])]  # frame 1 is all void in GT
    # Class 1: TP 1, GT 2, pred 1 -> 1 / (2 + 1 - 1) = 0.5.
    # Class 2: TP 2, GT 2, pred 3 -> 2 / (2 + 3 - 2) = 2/3.
    # Class 3 only predicted on void pixels: ignored. mIoU = (0.5 + 2/3) / 2 = 7/12.
    r = mean_iou(pred, gt, num_classes=4)
    assert r["per_class"] == pytest.approx({1: 0.5, 2: 2 / 3})
    assert r["mIoU"] == pytest.approx(7 / 12)
    assert r["pixel_accuracy"] == pytest.approx(3 / 4) and r["n_pixels"] == 4


def test_mean_iou_perfect_and_void_prediction():
    gt = [img([[1, 1], [2, 2]])]
    assert mean_iou(gt, gt, num_classes=3)["mIoU"] == 1.0
    # Predicting void on a labelled pixel is a miss: class 1 IoU = 1/2, class 2 = 1.
    r = mean_iou([img([[1, 0], [2, 2]])], gt, num_classes=3)
    assert r["mIoU"] == pytest.approx(0.75)


# ------------------------------------------------------------------ 3DIML matched mIoU


def test_matched_mask_miou_exact_point_six():
    # One 2x5 frame: GT object 1 covers all 10 px; pred id 7 covers the first 6 -> 0.6.
    gt = [np.ones((2, 5), np.int32)]
    pred = [img([[7, 7, 7, 7, 7], [7, 0, 0, 0, 0]])]
    r = matched_mask_miou(pred, gt)
    assert r["mIoU"] == pytest.approx(0.6)
    assert (r["n_matched"], r["n_gt"], r["n_pred"]) == (1, 1, 1)


def test_matched_mask_miou_sequence_vs_frame_scope():
    # Frame 0: GT A (id 1, 10 px), pred 7 on 6 of them (IoU 0.6).
    # Frame 1: GT B (id 2, 10 px), pred 8 on 9 of them (IoU 0.9).
    # Frame 2: GT A again, predicted perfectly but with a new id 9.
    gt = [np.full((2, 5), 1, np.int32), np.full((2, 5), 2, np.int32),
          np.full((2, 5), 1, np.int32)]
    pred = [img([[7] * 5, [7, 0, 0, 0, 0]]), img([[8] * 5, [8, 8, 8, 8, 0]]),
            np.full((2, 5), 9, np.int32)]
    # Sequence scope: A = 20 px; IoU(9, A) = 10/20 = 0.5 (not > 0.5), IoU(7, A) = 6/20.
    # Only B <-> 8 matches: mIoU 0.9, 1 of 2 GT objects; recall-weighted 0.9 / 2.
    r = matched_mask_miou(pred, gt)
    assert r["mIoU"] == pytest.approx(0.9)
    assert (r["n_matched"], r["n_gt"], r["n_pred"]) == (1, 2, 3)
    assert r["recall_weighted_miou"] == pytest.approx(0.45)
    # Frame scope: 3 matches (0.6, 0.9, 1.0) -> mIoU = 2.5 / 3.
    r = matched_mask_miou(pred, gt, scope="frame")
    assert r["mIoU"] == pytest.approx(2.5 / 3)
    assert (r["n_matched"], r["n_gt"]) == (3, 3)


def test_matched_mask_miou_ignores_gt_void():
    # Pred 4 spills onto GT void: removed first, IoU = 4 / 4 = 1.
    gt = [img([[1, 1, 1, 1], [0, 0, 0, 0]])]
    pred = [img([[4, 4, 4, 4], [4, 4, 0, 0]])]
    assert matched_mask_miou(pred, gt)["mIoU"] == 1.0


# ------------------------------------------------------------------ id stability


def test_majority_mapping_pools_frames_and_breaks_ties_low():
    gt = [img([[1, 1, 2, 2]]), img([[1, 1, 2, 2]])]
    pred = [img([[5, 5, 8, 9]]), img([[5, 6, 0, 0]])]
    # GT 1: pred 5 x3, pred 6 x1 -> 5.  GT 2: pred 8 x1, pred 9 x1 (void ignored) -> 8.
    assert majority_mapping(pred, gt) == {1: 5, 2: 8}
    # A GT object without any predicted pixel is left out.
    assert majority_mapping([img([[0, 0, 3, 3]])], [img([[1, 1, 2, 2]])]) == {2: 3}


def test_id_stability_worked_example():
    snapshots = [
        {1: 10, 2: 20, 4: 40},
        {1: 10, 2: 20, 3: 30, 4: None},   # object 3 first seen; 4 unseen (None): skipped
        {1: 11, 2: 20, 4: 40},            # object 1 changes after 2 sightings
        {1: 11, 2: 20},
        {1: 11, 2: 20},
    ]
    r = id_stability(snapshots, k=2)
    # Changes: object 1 once (at its 3rd sighting); 2, 3, 4 never.
    assert r["total_changes"] == 1 and r["changes_per_object"] == {1: 1, 2: 0, 3: 0, 4: 0}
    assert r["n_objects"] == 4 and r["stable_share"] == pytest.approx(3 / 4)
    assert r["mean_changes_per_object"] == pytest.approx(1 / 4)
    # k = 2: the change came after 2 sightings -> late. Objects seen >= 2 times: 1, 2, 4.
    assert r["late_changes"] == 1 and r["n_objects_seen_k"] == 3
    assert r["late_stable_share"] == pytest.approx(2 / 3)
    # k = 5 (default): the same change is early (after 2 < 5 sightings).
    r5 = id_stability(snapshots)
    assert r5["late_changes"] == 0 and r5["total_changes"] == 1
    assert r5["n_objects_seen_k"] == 2  # objects 1 and 2 are seen in all 5 snapshots


def test_id_stability_late_change_after_five_sightings():
    snaps = [{1: 7}] * 5 + [{1: 8}, {1: 7}]
    r = id_stability(snaps, k=5)
    # Two changes (7 -> 8 -> 7), both after >= 5 sightings.
    assert r["total_changes"] == 2 and r["late_changes"] == 2
    assert r["stable_share"] == 0.0 and r["late_stable_share"] == 0.0


# ------------------------------------------------------------------ images


def test_psnr_worked_example():
    gt = np.zeros((2, 2, 3), np.uint8)
    pred = np.full((2, 2, 3), 10, np.uint8)
    # MSE = 100 -> 10 log10(255^2 / 100) = 28.1308 dB.
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert psnr(gt, gt) == math.inf
    # Float images use data range 1. Masked: only pixel (0, 0), error 0.5, counts ->
    # MSE 0.25 -> 10 log10(1 / 0.25) = 6.02 dB (pixel (1, 1), error 0.9, is masked out).
    a = np.zeros((2, 2), np.float32)
    b = a.copy()
    b[0, 0] = 0.5
    b[1, 1] = 0.9
    mask = np.array([[True, False], [False, False]])
    assert psnr(b, a, mask=mask) == pytest.approx(10 * math.log10(1 / 0.25))


def test_depth_errors_worked_example():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.5, 2.0], [3.0, 9.0]])
    # GT 0 is invalid -> 3 pixels, |err| = 0.5, 0, 1.
    r = depth_errors(pred, gt)
    assert r["n"] == 3
    assert r["mae"] == pytest.approx(0.5)
    assert r["rmse"] == pytest.approx(math.sqrt(1.25 / 3))
    assert r["abs_rel"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert r["median"] == pytest.approx(0.5)
    # delta1: ratios 1.5, 1, 4/3 -> only the exact pixel is below 1.25.
    assert r["delta1"] == pytest.approx(1 / 3)
    r = depth_errors(pred, gt, valid=np.array([[False, True], [False, True]]))
    assert r["n"] == 1 and r["mae"] == 0.0


def test_metrics_module_is_ros_free():
    code = ("import sys, panoptic_mapping.bench.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'pybullet') "
            "or (m.startswith('panoptic_mapping.bench') and m not in "
            "('panoptic_mapping.bench', 'panoptic_mapping.bench.metrics')) "
            "or m.endswith('_msgs')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_revealed_instances_split_counts_glued_and_missed_do_not():
    # one frame, 4 objects of 4 px each in a 4x4 image:
    # obj 1 split into two masks (each lies on it): revealed;
    # obj 2 glued with obj 3 in one mask (half on each, so lying mostly on neither): not;
    # obj 4 missed: not.
    gt = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 2],
                   [3, 3, 4, 4],
                   [3, 3, 4, 4]])
    masks = np.array([[5, 6, 7, 7],
                      [5, 6, 7, 7],
                      [7, 7, 0, 0],
                      [7, 7, 0, 0]])
    assert metrics.revealed_instances([masks], [gt]) == {1}
    # a second view shows obj 2 alone (its mask is 3 of its 4 px): revealed from then on
    masks2 = np.array([[0, 0, 9, 9],
                       [0, 0, 9, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]])
    assert metrics.revealed_instances([masks, masks2], [gt, gt]) == {1, 2}


def test_segmenter_ceiling_hides_only_unrevealed_things():
    # floor (stuff class 1, instance 9) and two things of class 2; thing 2 never segmented.
    gt = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 2],
                   [9, 9, 9, 9],
                   [9, 9, 9, 9]])
    sem = np.where(gt == 9, 1, 2)
    masks = np.array([[3, 3, 4, 4],
                      [3, 3, 4, 4],
                      [4, 4, 4, 4],
                      [4, 4, 4, 4]])  # thing 2 glued to the floor's mask
    out = metrics.segmenter_ceiling([masks], [gt], [sem], thing_classes=[2])
    assert out["unrevealed"] == [2] and out["things"] == 2
    # class 2: TP 1 (IoU 1), FN 1 -> 1 / 1.5; the floor is perfect -> PQ = (2/3 + 1) / 2
    assert out["PQ_th"] == pytest.approx(2 / 3)
    assert out["PQ_st"] == pytest.approx(1.0)
    assert out["PQ"] == pytest.approx(5 / 6)
