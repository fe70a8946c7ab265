"""Evaluation metrics of the benchmark: scene-level panoptic quality, semantic mIoU,
3DIML's matched-mask mIoU, instance-id stability, PSNR and depth errors.

Pure numpy (+ ``scipy.optimize.linear_sum_assignment``); ROS-free and independent of
``panoptic_mapping.bench``: every function takes plain arrays. A *sequence* argument is a
list (or any iterable) of (H, W) integer images, one per frame; frames may differ in size
but a prediction and its ground truth must have the same shape frame by frame.

Conventions shared by all functions:

* ``void_id`` (default 0) marks "no ground truth" in ground-truth images and "no
  prediction" in predicted images, for semantic and instance images alike.
* Everything is computed on whole sequences by flattening and concatenating the frames,
  then counting pixel pairs with ``np.unique`` / ``np.bincount`` on int64 keys: there is no
  Python loop over pixels, only over segments or classes.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "AGNOSTIC_CLASS",
    "panoptic_quality_scene",
    "mean_iou",
    "matched_mask_miou",
    "majority_mapping",
    "revealed_instances",
    "segmenter_ceiling",
    "semantic_ceiling",
    "id_stability",
    "psnr",
    "depth_errors",
]

#: Class key of the single "thing" class in the class-agnostic variant of PQ_scene.
AGNOSTIC_CLASS = -1

# Segment keys pack (class code, instance id) into one int64: class code in the high bits.
_INSTANCE_BITS = 32
_MAX_INSTANCE = (1 << _INSTANCE_BITS) - 1
# Above this many (gt x pred) cells the overlap table is built sparsely with np.unique.
_DENSE_CELLS = 4_000_000


# --------------------------------------------------------------------------- helpers


def _flatten(images: Iterable[np.ndarray], name: str) -> tuple[np.ndarray, list[tuple]]:
    """Concatenate a sequence of images into one flat int64 array.

    Returns:
        (N,) int64 values of all pixels of all frames, and the list of frame shapes.
    """
    arrays = [np.asarray(im) for im in images]
    if not arrays:
        raise ValueError(f"{name}: empty sequence")
    shapes = [a.shape for a in arrays]
    for a in arrays:
        if a.dtype.kind not in "iub":
            raise ValueError(f"{name}: expected integer images, got dtype {a.dtype}")
    flat = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.int64, copy=False)
    return flat, shapes


def _flatten_pair(pred: Iterable[np.ndarray], gt: Iterable[np.ndarray],
                  pred_name: str, gt_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a prediction sequence and its ground truth, checking shapes frame by frame."""
    p, p_shapes = _flatten(pred, pred_name)
    g, g_shapes = _flatten(gt, gt_name)
    if p_shapes != g_shapes:
        raise ValueError(f"{pred_name} and {gt_name} differ in frame count or shapes: "
                         f"{p_shapes[:3]}... vs {g_shapes[:3]}...")
    return p, g


def _overlap_table(a: np.ndarray, b: np.ndarray):
    """Pixel-pair counts between two labelings of the same pixels.

    Args:
        a: (N,) int64 labels (any values, e.g. -1 for "none").
        b: (N,) int64 labels.

    Returns:
        a_ids (A,), a_area (A,), b_ids (B,), b_area (B,): the distinct labels (sorted) and
        their pixel counts; ai (P,), bi (P,), count (P,): the non-empty cells of the
        overlap table as index pairs into a_ids / b_ids and their pixel counts.
    """
    a_ids, a_inv = np.unique(a, return_inverse=True)
    b_ids, b_inv = np.unique(b, return_inverse=True)
    n_a, n_b = len(a_ids), len(b_ids)
    a_area = np.bincount(a_inv, minlength=n_a)
    b_area = np.bincount(b_inv, minlength=n_b)
    pair = a_inv.astype(np.int64) * n_b + b_inv
    if n_a * n_b <= _DENSE_CELLS:
        table = np.bincount(pair, minlength=n_a * n_b)
        cells = np.flatnonzero(table)
        count = table[cells]
    else:
        cells, count = np.unique(pair, return_counts=True)
    return a_ids, a_area, b_ids, b_area, cells // n_b, cells % n_b, count


def _lookup(ids: np.ndarray, value: int) -> int:
    """Index of ``value`` in sorted ``ids``, or -1 when absent."""
    i = int(np.searchsorted(ids, value))
    return i if i < len(ids) and ids[i] == value else -1


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- PQ_scene


def _segment_keys(semantics: np.ndarray | None, instances: np.ndarray,
                  things: np.ndarray, void_id: int, class_agnostic: bool,
                  is_gt: bool) -> np.ndarray:
    """Segment key of every pixel (int64), -1 where the pixel belongs to no segment.

    Key = class_code << 32 | instance, with instance forced to 0 for stuff classes (one
    segment per stuff class) and class_code = class + 1 (0 in the class-agnostic variant).
    """
    if class_agnostic:
        if is_gt:
            assert semantics is not None
            valid = np.isin(semantics, things) & (instances != void_id)
        else:
            valid = instances != void_id
        cls_code = np.zeros_like(instances)
        inst = instances
    else:
        assert semantics is not None
        is_thing = np.isin(semantics, things)
        # A thing pixel without an instance id has no segment (GT: ignored like void).
        valid = (semantics != void_id) & ~(is_thing & (instances == void_id))
        if (semantics[valid] < 0).any():
            raise ValueError("semantic ids must be non-negative")
        cls_code = semantics + 1
        inst = np.where(is_thing, instances, 0)
    inst_valid = inst[valid]
    if inst_valid.size and (inst_valid.min() < 0 or inst_valid.max() > _MAX_INSTANCE):
        raise ValueError(f"instance ids must lie in [0, {_MAX_INSTANCE}]")
    keys = (cls_code << _INSTANCE_BITS) | inst
    return np.where(valid, keys, -1)


def _key_class(keys: np.ndarray, class_agnostic: bool) -> np.ndarray:
    """Class id of segment keys (AGNOSTIC_CLASS in the class-agnostic variant)."""
    if class_agnostic:
        return np.full(keys.shape, AGNOSTIC_CLASS, dtype=np.int64)
    return (keys >> _INSTANCE_BITS) - 1


def _pq_summary(rows: Sequence[dict]) -> tuple[float, float, float]:
    """COCO-style averages over classes: the mean of per-class PQ, SQ and RQ.

    Classes with TP + FP + FN == 0 are not in ``rows``; an empty list gives NaN.
    """
    if not rows:
        return float("nan"), float("nan"), float("nan")
    return (float(np.mean([r["PQ"] for r in rows])), float(np.mean([r["SQ"] for r in rows])),
            float(np.mean([r["RQ"] for r in rows])))


def panoptic_quality_scene(pred_instances: Sequence[np.ndarray],
                           pred_semantics: Sequence[np.ndarray] | None,
                           gt_instances: Sequence[np.ndarray],
                           gt_semantics: Sequence[np.ndarray],
                           thing_classes: Iterable[int],
                           void_id: int = 0,
                           class_agnostic: bool = False,
                           match_iou: float = 0.5) -> dict:
    """Scene-level panoptic quality PQ_scene (Panoptic Lifting, CVPR 2023, Sec. 4).

    Standard PQ (Kirillov et al.) evaluated on the whole sequence at once, i.e. on all
    frames "tiled together": a segment is the set of ALL pixels of ALL frames sharing a
    (class, instance id) pair, so a prediction only scores when it keeps an object's id
    consistent across views.

    Definition (COCO panoptic conventions):

    * GT segment: (gt class, gt instance) for thing classes; (gt class) for stuff classes
      (instance ids ignored, one segment per stuff class). GT void = ``gt_semantics ==
      void_id``, or a thing pixel with ``gt_instances == void_id``.
    * Predicted segment: (pred class, pred instance) for thing classes, (pred class) for
      stuff; pixels with ``pred_semantics == void_id`` (or a thing class and instance
      ``void_id``) belong to no predicted segment.
    * Per class c, a GT segment g and a predicted segment p of class c match when
      IoU(p, g) > match_iou (0.5 makes the matching unique), where GT void pixels are
      removed from p first: IoU = |p∩g| / (|p| - |p∩void| + |g| - |p∩g|).
    * TP = matched pairs; FN = unmatched GT segments; FP = unmatched predicted segments,
      except those with |p∩void| > 0.5 |p| (mostly on unannotated pixels; not counted).
    * Per class: PQ = ΣIoU(TP) / (TP + FP/2 + FN/2), SQ = ΣIoU(TP) / TP (0 if no TP),
      RQ = TP / (TP + FP/2 + FN/2). Overall / things / stuff values are the means over the
      classes with TP + FP + FN > 0 (NaN when there is none).

    Class-agnostic variant (``class_agnostic=True``; ``pred_semantics`` may be None and is
    then ignored): all thing classes become one class ``AGNOSTIC_CLASS``; GT pixels of
    stuff classes are treated as void; every non-zero predicted instance id is a segment.
    To score stuff as instances as well, pass all class ids as ``thing_classes``.

    Args:
        pred_instances: per frame (H, W) int predicted instance ids.
        pred_semantics: per frame (H, W) int predicted class ids, or None (agnostic only).
        gt_instances: per frame (H, W) int ground-truth instance ids.
        gt_semantics: per frame (H, W) int ground-truth class ids.
        thing_classes: class ids that are things; every other non-void class is stuff.
        void_id: the "no label" id of semantic and instance images.
        class_agnostic: see above.
        match_iou: IoU a match must exceed (0.5 in the definition).

    Returns:
        dict with PQ, SQ, RQ (all classes), PQ_th, SQ_th, RQ_th (things), PQ_st, SQ_st,
        RQ_st (stuff), TP, FP, FN (totals), n_gt_segments, n_pred_segments,
        per_class: {class id: {PQ, SQ, RQ, TP, FP, FN, iou_sum, is_thing}},
        matches: [{gt: (class, instance), pred: (class, instance), iou}], and the flag
        class_agnostic. Values are fractions in [0, 1].
    """
    things = np.asarray(sorted({int(c) for c in thing_classes}), dtype=np.int64)
    p_inst, g_inst = _flatten_pair(pred_instances, gt_instances, "pred_instances",
                                   "gt_instances")
    g_sem, _ = _flatten(gt_semantics, "gt_semantics")
    if g_sem.shape != g_inst.shape:
        raise ValueError("gt_semantics and gt_instances differ in size")
    if pred_semantics is None:
        if not class_agnostic:
            raise ValueError("pred_semantics is required unless class_agnostic=True")
        p_sem = None
    else:
        p_sem, _ = _flatten(pred_semantics, "pred_semantics")
        if p_sem.shape != p_inst.shape:
            raise ValueError("pred_semantics and pred_instances differ in size")

    g_key = _segment_keys(g_sem, g_inst, things, void_id, class_agnostic, is_gt=True)
    p_key = _segment_keys(p_sem, p_inst, things, void_id, class_agnostic, is_gt=False)
    g_ids, g_area, p_ids, p_area, gi, pj, inter = _overlap_table(g_key, p_key)

    # Area of each predicted segment lying on GT void (row of key -1 in the table).
    p_void = np.zeros(len(p_ids), dtype=np.int64)
    g_void_row = _lookup(g_ids, -1)
    if g_void_row >= 0:
        on_void = gi == g_void_row
        p_void[pj[on_void]] = inter[on_void]

    g_cls = _key_class(g_ids, class_agnostic)
    p_cls = _key_class(p_ids, class_agnostic)
    cand = (g_ids[gi] >= 0) & (p_ids[pj] >= 0) & (g_cls[gi] == p_cls[pj])
    gi_c, pj_c, inter_c = gi[cand], pj[cand], inter[cand]
    union = p_area[pj_c] - p_void[pj_c] + g_area[gi_c] - inter_c
    iou = inter_c / np.maximum(union, 1)
    hit = iou > match_iou
    gi_m, pj_m, iou_m = gi_c[hit], pj_c[hit], iou[hit]
    # IoU > 0.5 makes the matching unique; a lower threshold needs a guard.
    if match_iou < 0.5:
        gi_m, pj_m, iou_m = _unique_matching(gi_m, pj_m, iou_m)

    g_valid = g_ids >= 0
    p_valid = p_ids >= 0
    g_matched = np.zeros(len(g_ids), dtype=bool)
    g_matched[gi_m] = True
    p_matched = np.zeros(len(p_ids), dtype=bool)
    p_matched[pj_m] = True
    fn_seg = g_valid & ~g_matched
    fp_seg = p_valid & ~p_matched & ~(p_void > 0.5 * p_area)

    classes = np.union1d(g_cls[g_valid], p_cls[p_valid])
    per_class: dict[int, dict] = {}
    for c in classes.tolist():
        tp = int(np.count_nonzero(g_cls[gi_m] == c))
        fp = int(np.count_nonzero(fp_seg & (p_cls == c)))
        fn = int(np.count_nonzero(fn_seg & (g_cls == c)))
        if tp + fp + fn == 0:
            continue  # only mostly-void predictions of this class: the class is not scored
        iou_sum = float(iou_m[g_cls[gi_m] == c].sum())
        den = tp + 0.5 * fp + 0.5 * fn
        per_class[int(c)] = {
            "PQ": iou_sum / den, "SQ": iou_sum / tp if tp else 0.0, "RQ": tp / den,
            "TP": tp, "FP": fp, "FN": fn, "iou_sum": iou_sum,
            "is_thing": bool(class_agnostic or c in set(things.tolist())),
        }

    rows = list(per_class.values())
    pq, sq, rq = _pq_summary(rows)
    pq_th, sq_th, rq_th = _pq_summary([r for r in rows if r["is_thing"]])
    pq_st, sq_st, rq_st = _pq_summary([r for r in rows if not r["is_thing"]])

    def _pair(key: int) -> tuple[int, int]:
        cls = AGNOSTIC_CLASS if class_agnostic else (key >> _INSTANCE_BITS) - 1
        return int(cls), int(key & _MAX_INSTANCE)

    matches = [{"gt": _pair(int(g_ids[a])), "pred": _pair(int(p_ids[b])), "iou": float(v)}
               for a, b, v in zip(gi_m.tolist(), pj_m.tolist(), iou_m.tolist())]
    return {
        "PQ": pq, "SQ": sq, "RQ": rq,
        "PQ_th": pq_th, "SQ_th": sq_th, "RQ_th": rq_th,
        "PQ_st": pq_st, "SQ_st": sq_st, "RQ_st": rq_st,
        "TP": sum(r["TP"] for r in rows), "FP": sum(r["FP"] for r in rows),
        "FN": sum(r["FN"] for r in rows),
        "n_gt_segments": int(g_valid.sum()), "n_pred_segments": int(p_valid.sum()),
        "per_class": per_class, "matches": matches, "class_agnostic": class_agnostic,
    }


def _unique_matching(gi: np.ndarray, pj: np.ndarray, score: np.ndarray):
    """Best one-to-one subset of candidate pairs (Hungarian on the score, maximised).

    Args:
        gi, pj: (P,) row / column indices of candidate pairs; score: (P,) their scores.

    Returns:
        The kept (gi, pj, score), each (Q,), Q <= P.
    """
    if len(gi) == 0:
        return gi, pj, score
    rows, r_inv = np.unique(gi, return_inverse=True)
    cols, c_inv = np.unique(pj, return_inverse=True)
    mat = np.zeros((len(rows), len(cols)))
    mat[r_inv, c_inv] = score
    allowed = np.zeros_like(mat, dtype=bool)
    allowed[r_inv, c_inv] = True
    r, c = linear_sum_assignment(mat, maximize=True)
    keep = allowed[r, c]
    r, c = r[keep], c[keep]
    return rows[r], cols[c], mat[r, c]


# --------------------------------------------------------------------------- mIoU


def mean_iou(pred_semantics: Sequence[np.ndarray], gt_semantics: Sequence[np.ndarray],
             num_classes: int, void_id: int = 0) -> dict:
    """Semantic mean IoU over a sequence.

    For each class c != void_id: IoU_c = TP_c / (TP_c + FP_c + FN_c), with TP/FP/FN counted
    over all pixels of all frames whose GT is not void (pixels with GT void are ignored;
    a prediction of void_id or of an id outside [0, num_classes) on a labelled pixel is
    a miss for the GT class and a false positive for no class). mIoU is the mean over the
    classes present in the GT.

    Args:
        pred_semantics: per frame (H, W) int predicted class ids.
        gt_semantics: per frame (H, W) int GT class ids in [0, num_classes).
        num_classes: number of class ids (including void).
        void_id: the ignored GT id.

    Returns:
        dict: mIoU (NaN if the GT has no labelled pixel), per_class {class: IoU} (classes
        present in the GT), pixel_accuracy, n_pixels (labelled pixels counted).
    """
    p, g = _flatten_pair(pred_semantics, gt_semantics, "pred_semantics", "gt_semantics")
    valid = (g != void_id) & (g >= 0) & (g < num_classes)
    g, p = g[valid], p[valid]
    # Out-of-range and void predictions go to an extra column: wrong for every class.
    p = np.where((p >= 0) & (p < num_classes) & (p != void_id), p, num_classes)
    conf = np.bincount(g * (num_classes + 1) + p,
                       minlength=num_classes * (num_classes + 1))
    conf = conf.reshape(num_classes, num_classes + 1)
    tp = np.diag(conf[:, :num_classes])
    gt_count = conf.sum(axis=1)
    pred_count = conf[:, :num_classes].sum(axis=0)
    present = np.flatnonzero(gt_count > 0)
    per_class = {int(c): float(tp[c] / (gt_count[c] + pred_count[c] - tp[c])) for c in present}
    n = int(g.size)
    return {
        "mIoU": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class": per_class,
        "pixel_accuracy": float(tp.sum() / n) if n else float("nan"),
        "n_pixels": n,
    }


# --------------------------------------------------------------------------- 3DIML mIoU


def _matched_pairs(pred: np.ndarray, gt: np.ndarray, void_id: int, min_iou: float):
    """Hungarian matching of instance segments on IoU (GT void removed from predictions).

    Args:
        pred, gt: (N,) int64 instance ids of the same pixels.

    Returns:
        gt_ids (G,) of the GT segments, matched (M, 2) int64 [gt id, pred id] pairs and
        their (M,) IoUs (all > min_iou), and the number of predicted segments.
    """
    labelled = gt != void_id
    # Predicted pixels on GT void are removed from the predicted segments (COCO rule).
    g_ids, g_area, p_ids, p_area, gi, pj, inter = _overlap_table(
        gt[labelled], np.where(pred[labelled] == void_id, -1, pred[labelled]))
    n_pred = int(np.unique(pred[pred != void_id]).size)
    keep = p_ids[pj] >= 0
    gi, pj, inter = gi[keep], pj[keep], inter[keep]
    iou = inter / (g_area[gi] + p_area[pj] - inter)
    mg, mp, miou = _unique_matching(gi, pj, iou)
    ok = miou > min_iou
    pairs = np.stack([g_ids[mg[ok]], p_ids[mp[ok]]], axis=1) if ok.any() else \
        np.zeros((0, 2), dtype=np.int64)
    return g_ids, pairs, miou[ok], n_pred


def matched_mask_miou(pred_instances: Sequence[np.ndarray],
                      gt_instances: Sequence[np.ndarray],
                      void_id: int = 0, min_iou: float = 0.5,
                      scope: str = "sequence") -> dict:
    """3DIML's matched-mask mIoU (3DIML, Sec. IV-B), class-agnostic.

    3DIML reports "mIoU for predicted, reference masks that have IoU over all frames (TP in
    Scene Level Panoptic Quality) as well as the number of such matched masks and the total
    number of reference masks". Hence the default ``scope="sequence"``: a segment is an
    instance id pooled over ALL frames, predicted and GT segments are matched one-to-one by
    Hungarian assignment maximising IoU, and a pair counts when IoU > ``min_iou`` (0.5 =
    the TP rule of PQ_scene). ``scope="frame"`` does the same per frame (segments = masks of
    one frame) and pools the matched pairs of all frames: a 2D measure that ignores id
    consistency, useful to compare with per-frame mask quality.

    GT void pixels (``gt == void_id``) are ignored; predicted id ``void_id`` is "no mask".

    Args:
        pred_instances: per frame (H, W) int predicted instance ids.
        gt_instances: per frame (H, W) int GT instance ids.
        void_id: "no label" id of both.
        min_iou: a matched pair must exceed this IoU.
        scope: "sequence" (3DIML) or "frame".

    Returns:
        dict: mIoU (mean IoU of matched pairs, NaN if none), n_matched, n_gt (GT masks:
        objects for "sequence", masks summed over frames for "frame"), n_pred,
        recall_weighted_miou (sum of matched IoUs / n_gt: unmatched GT count as 0),
        matches: [(gt id, pred id, iou)] (frame scope: (frame, gt id, pred id, iou)).
    """
    if scope not in ("sequence", "frame"):
        raise ValueError(f"scope must be 'sequence' or 'frame', got {scope!r}")
    if scope == "sequence":
        p, g = _flatten_pair(pred_instances, gt_instances, "pred_instances", "gt_instances")
        g_ids, pairs, ious, n_pred = _matched_pairs(p, g, void_id, min_iou)
        n_gt = len(g_ids)
        matches = [(int(a), int(b), float(v)) for (a, b), v in zip(pairs.tolist(), ious)]
        all_ious = ious
    else:
        preds, gts = list(pred_instances), list(gt_instances)
        if len(preds) != len(gts):
            raise ValueError("pred_instances and gt_instances differ in frame count")
        n_gt, n_pred, matches, chunks = 0, 0, [], []
        for f, (pf, gf) in enumerate(zip(preds, gts)):
            p, g = _flatten_pair([pf], [gf], "pred_instances", "gt_instances")
            g_ids, pairs, ious, np_f = _matched_pairs(p, g, void_id, min_iou)
            n_gt += len(g_ids)
            n_pred += np_f
            chunks.append(ious)
            matches += [(f, int(a), int(b), float(v)) for (a, b), v in zip(pairs.tolist(), ious)]
        all_ious = np.concatenate(chunks) if chunks else np.zeros(0)
    n_matched = int(len(all_ious))
    return {
        "mIoU": float(all_ious.mean()) if n_matched else float("nan"),
        "n_matched": n_matched, "n_gt": int(n_gt), "n_pred": int(n_pred),
        "recall_weighted_miou": float(all_ious.sum() / n_gt) if n_gt else float("nan"),
        "matches": matches, "scope": scope,
    }


# --------------------------------------------------------------------------- segmenter ceiling


def revealed_instances(masks: Sequence[np.ndarray], gt_instances: Sequence[np.ndarray],
                       min_cover: float = 0.5, void_id: int = 0) -> set[int]:
    """GT instances a class-agnostic segmenter showed as an object in at least one view.

    In a view, the masks lying mostly on an instance (more than half of each mask's
    pixels) are its *own* masks; the instance is revealed when its own masks cover more
    than ``min_cover`` of its visible pixels in some view. A systematic split (two halves,
    each its own) reveals it; a view where it is missed, or glued into a larger mask that
    lies mostly elsewhere, does not.

    Args:
        masks: per frame (H, W) int mask ids (void_id = no mask).
        gt_instances: per frame (H, W) int GT instance ids (void_id = none).
        min_cover: share of the instance's pixels its own masks must cover.

    Returns:
        the revealed GT instance ids.
    """
    out: set[int] = set()
    for m, g in zip(masks, gt_instances):
        m, g = np.asarray(m).ravel(), np.asarray(g).ravel()
        if m.shape != g.shape:
            raise ValueError(f"masks {m.shape} and gt_instances {g.shape} differ in size")
        g_ids, g_area, m_ids, m_area, gi, mj, inter = _overlap_table(g, m)
        own = (g_ids[gi] != void_id) & (m_ids[mj] != void_id) & (2 * inter > m_area[mj])
        covered = np.bincount(gi[own], weights=inter[own], minlength=len(g_ids))
        out |= {int(i) for i in g_ids[(g_ids != void_id) & (covered > min_cover * g_area)]}
    return out


def segmenter_ceiling(masks: Sequence[np.ndarray], gt_instances: Sequence[np.ndarray],
                      gt_semantics: Sequence[np.ndarray], thing_classes: Iterable[int],
                      void_id: int = 0) -> dict:
    """PQ_scene of a perfect map built from these masks: the segmenter's share of the loss.

    The perfect map associates perfectly and fills every view from 3D, but cannot know an
    object the segmenter never showed: its prediction is the ground truth, except that
    the pixels of thing instances never revealed (:func:`revealed_instances`) carry no
    label. What a method loses below this figure, its association lost; what this
    figure loses below 1, the segmenter did.

    Returns:
        dict with PQ, PQ_th, PQ_st (as :func:`panoptic_quality_scene`), ``unrevealed``
        (sorted GT thing instance ids never revealed) and ``things`` (GT thing instances).
    """
    things = {int(c) for c in thing_classes}
    shown = revealed_instances(masks, gt_instances, void_id=void_id)
    thing_ids: set[int] = set()
    pred_i, pred_s = [], []
    for g, s in zip(gt_instances, gt_semantics):
        g, s = np.asarray(g), np.asarray(s)
        is_thing = np.isin(s, list(things)) & (g != void_id)
        thing_ids |= {int(i) for i in np.unique(g[is_thing])}
        hide = is_thing & ~np.isin(g, list(shown))
        pred_i.append(np.where(hide, void_id, g))
        pred_s.append(np.where(hide, void_id, s))
    pq = panoptic_quality_scene(pred_i, pred_s, gt_instances, gt_semantics, things, void_id)
    return {"PQ": pq["PQ"], "PQ_th": pq["PQ_th"], "PQ_st": pq["PQ_st"],
            "unrevealed": sorted(thing_ids - shown), "things": len(thing_ids)}


def semantic_ceiling(masks: Sequence[np.ndarray], embeddings: Sequence[np.ndarray | None],
                     gt_instances: Sequence[np.ndarray], gt_semantics: Sequence[np.ndarray],
                     text_embeddings: np.ndarray, num_classes: int, void_id: int = 0
                     ) -> dict:
    """Semantic mIoU of a perfect instance map labelled by the views' consensus.

    Each ground-truth instance takes the class (1..C, nearest text embedding) of the mean
    of the embeddings of every mask that overlaps it, each weighted by the share of the
    mask's pixels on it (as the map's own mean per id); an instance no mask overlaps is
    void. What averaging the views can reach with perfect instances: an error every view
    makes stays (a class confused in every view), an error some views make is outvoted.
    Map structure (:mod:`panoptic_mapping.core.labels`) can go beyond it.

    Args:
        masks: per frame (H, W) int mask ids; embeddings: per frame (M, D) or None.
        text_embeddings: (C, D) of classes 1..C.
    Returns:
        dict with mIoU and per_class (as :func:`mean_iou`).
    """
    acc: dict[int, np.ndarray] = {}
    for m, e, g in zip(masks, embeddings, gt_instances):
        if e is None or len(e) == 0:
            continue
        m, g = np.asarray(m, np.int64).ravel(), np.asarray(g, np.int64).ravel()
        sel = (m > 0) & (g != void_id)
        if not sel.any():
            continue
        base = int(g[sel].max()) + 1
        pairs, counts = np.unique(m[sel] * base + g[sel], return_counts=True)
        size = np.bincount(m[m > 0], minlength=int(m.max()) + 1)
        for mask, inst, c in zip(*np.divmod(pairs, base), counts):
            if mask <= len(e):
                acc[int(inst)] = acc.get(int(inst), 0.0) + (c / size[mask]) * e[mask - 1]
    text = np.asarray(text_embeddings, np.float64)
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    label = {i: int(np.argmax(text @ v)) + 1 for i, v in acc.items() if np.any(v)}
    pred = []
    for g in gt_instances:
        g = np.asarray(g)
        uniq, inv = np.unique(g, return_inverse=True)
        pred.append(np.array([label.get(int(u), void_id) for u in uniq])[inv].reshape(g.shape))
    return mean_iou(pred, gt_semantics, num_classes, void_id)


# --------------------------------------------------------------------------- id stability


def majority_mapping(pred_instance_images: Sequence[np.ndarray],
                     gt_instance_images: Sequence[np.ndarray],
                     void_id: int = 0) -> dict[int, int]:
    """For each GT object, the predicted id covering most of its pixels (pooled over frames).

    Args:
        pred_instance_images: per frame (H, W) int predicted instance ids (void_id = none).
        gt_instance_images: per frame (H, W) int GT instance ids (void_id = none).
        void_id: the "no label" id of both.

    Returns:
        {gt id: pred id} for every GT object that has at least one predicted (non-void)
        pixel; ties go to the smaller predicted id. GT objects not covered at all are left
        out (``id_stability`` treats them as unseen in that snapshot).
    """
    p, g = _flatten_pair(pred_instance_images, gt_instance_images, "pred_instance_images",
                         "gt_instance_images")
    keep = (g != void_id) & (p != void_id)
    g_ids, _, p_ids, _, gi, pj, count = _overlap_table(g[keep], p[keep])
    if len(count) == 0:
        return {}
    # Sort by GT, then count descending, then pred id ascending; the first row per GT wins.
    order = np.lexsort((p_ids[pj], -count, gi))
    gi_s, pj_s = gi[order], pj[order]
    first = np.ones(len(gi_s), dtype=bool)
    first[1:] = gi_s[1:] != gi_s[:-1]
    return {int(g_ids[a]): int(p_ids[b]) for a, b in zip(gi_s[first], pj_s[first])}


def id_stability(snapshots: Sequence[Mapping[int, int | None]], k: int = 5) -> dict:
    """How often GT objects change their predicted id over a sequence of map snapshots.

    Each snapshot maps GT object id -> the predicted id covering most of it then (e.g. from
    :func:`majority_mapping`). An object is *seen* in a snapshot when it is a key with a
    predicted id that is not None or 0. A *change* is a seen snapshot whose predicted id
    differs from the one at the object's previous sighting (snapshots where it is unseen
    are skipped, not counted as changes). A change at the object's j-th sighting counts as
    *late* when the object had been seen in >= k snapshots before it (j - 1 >= k): early
    changes are expected while a map is young, late ones are id churn of settled objects.

    Args:
        snapshots: sequence of {gt id: predicted id or None}.
        k: sightings before a change counts as late.

    Returns:
        dict: n_objects (seen at least once), total_changes, changes_per_object {gt: n},
        mean_changes_per_object, stable_share (share of objects that never changed after
        first seen; NaN if none), k, late_changes (changes after >= k sightings),
        late_changes_per_object {gt: n}, n_objects_seen_k (objects seen >= k times),
        late_stable_share (share of those with no late change; NaN if none),
        sightings {gt: number of snapshots it was seen in}.
    """
    last: dict[int, int] = {}
    sightings: dict[int, int] = {}
    changes: dict[int, int] = {}
    late: dict[int, int] = {}
    for snap in snapshots:
        for gt, pred in snap.items():
            if pred is None or pred == 0:
                continue
            gt, pred = int(gt), int(pred)
            seen_before = sightings.get(gt, 0)
            if seen_before == 0:
                changes[gt], late[gt] = 0, 0
            elif pred != last[gt]:
                changes[gt] += 1
                if seen_before >= k:
                    late[gt] += 1
            last[gt] = pred
            sightings[gt] = seen_before + 1
    n = len(sightings)
    seen_k = [g for g, s in sightings.items() if s >= k]
    return {
        "n_objects": n,
        "total_changes": int(sum(changes.values())),
        "changes_per_object": changes,
        "mean_changes_per_object": _ratio(sum(changes.values()), n),
        "stable_share": _ratio(sum(1 for c in changes.values() if c == 0), n),
        "k": k,
        "late_changes": int(sum(late.values())),
        "late_changes_per_object": late,
        "n_objects_seen_k": len(seen_k),
        "late_stable_share": _ratio(sum(1 for g in seen_k if late[g] == 0), len(seen_k)),
        "sightings": sightings,
    }


# --------------------------------------------------------------------------- images


def psnr(pred_rgb: np.ndarray, gt_rgb: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB.

    Args:
        pred_rgb, gt_rgb: (H, W, C) or (H, W) images of the same shape.
        mask: optional (H, W) bool; only these pixels (all channels) count.
        data_range: peak value; default 255 for uint8 input, else 1.0.

    Returns:
        PSNR in dB; inf for identical images; NaN for an empty mask.
    """
    pred = np.asarray(pred_rgb)
    gt = np.asarray(gt_rgb)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch {pred.shape} vs {gt.shape}")
    if data_range is None:
        data_range = 255.0 if gt.dtype == np.uint8 else 1.0
    diff = pred.astype(np.float64) - gt.astype(np.float64)
    if mask is not None:
        diff = diff[np.asarray(mask, dtype=bool)]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def depth_errors(pred_depth: np.ndarray, gt_depth: np.ndarray,
                 valid: np.ndarray | None = None) -> dict:
    """Depth error statistics over valid pixels.

    Args:
        pred_depth, gt_depth: (H, W) metric depth (any shape, same for both).
        valid: optional bool mask; default: GT > 0 and both finite. It is always
            intersected with GT > 0 and finiteness (abs_rel divides by the GT).

    Returns:
        dict: abs_rel = mean |p - g| / g, rmse = sqrt(mean (p - g)^2), mae = mean |p - g|,
        median = median |p - g|, delta1 = share with max(p/g, g/p) < 1.25, n = pixels
        counted. Errors are NaN when no pixel is valid.
    """
    p = np.asarray(pred_depth, dtype=np.float64)
    g = np.asarray(gt_depth, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch {p.shape} vs {g.shape}")
    ok = np.isfinite(p) & np.isfinite(g) & (g > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    p, g = p[ok], g[ok]
    if p.size == 0:
        nan = float("nan")
        return {"abs_rel": nan, "rmse": nan, "mae": nan, "median": nan, "delta1": nan, "n": 0}
    err = np.abs(p - g)
    with np.errstate(divide="ignore"):
        ratio = np.maximum(p / g, np.where(p > 0, g / np.maximum(p, 1e-12), np.inf))
    return {
        "abs_rel": float(np.mean(err / g)),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "mae": float(np.mean(err)),
        "median": float(np.median(err)),
        "delta1": float(np.mean(ratio < 1.25)),
        "n": int(p.size),
    }
