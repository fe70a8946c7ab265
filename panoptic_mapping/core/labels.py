"""Instance labels from the map.

Two things a single view cannot know decide a label here:

* **what every view saw of the instance's surface**: the mask embeddings fused per voxel
  (:mod:`~panoptic_mapping.core.map.features`) and pooled over the voxels the instance
  holds, or, as the fallback and the alternative, the mean of the masks that joined it;
* **what it rests on**: a crop of a small object is mostly its support, so open-vocabulary
  masks call a mug on a table "table" and a handle on a drawer "drawer" from every side,
  and no fusion of views undoes an error every view makes. The map knows the two are
  separate instances and that one rests on or in the other; such an instance is not given
  its support's label (:func:`resting_on`): the support's text direction is taken out of
  its embedding (:func:`without_directions`) and the rest is labelled.
"""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.features import VoxelFeatures
from panoptic_mapping.core.semantics import SemanticConfig, Vocabulary

__all__ = ["resting_on", "label_instances", "up_rotation", "without_directions",
           "voxel_relevance"]

Box = tuple[np.ndarray, np.ndarray]


def up_rotation(up_axis: str) -> np.ndarray:
    """(3, 3) rotation taking map coordinates to a frame whose z is ``up_axis``."""
    sign = -1.0 if up_axis.startswith("-") else 1.0
    axis = "xyz".index(up_axis[-1])
    rows = {2: (0, 1, 2), 1: (2, 0, 1), 0: (1, 2, 0)}[axis]  # cyclic: right-handed
    R = np.eye(3)[list(rows)]
    if sign < 0:
        R = np.diag([1.0, -1.0, -1.0]) @ R  # turned over about the first axis
    return R


def resting_on(boxes: dict[int, Box], up_axis: str = "z", gap_m: float = 0.03,
               max_size_ratio: float = 0.5, stand_out_m: float = 0.015
               ) -> dict[int, list[int]]:
    """Instance id -> ids of the larger instances it rests on or in.

    T rests on S when T's footprint centre (across the up axis) lies inside S's footprint,
    S's top reaches T's base (no lower than ``gap_m`` under it), S's bottom does not start
    above T's base (by more than ``gap_m``: a tray's floor and the object in it touch), T
    stands out above S's top (by more than ``stand_out_m``: a piece of the table top that
    a segmenter cut out is part of the surface, not on it), and T's longest box edge is at
    most ``max_size_ratio`` of S's. Objects side by side on one surface are not on each
    other: neither footprint holds the other's centre.

    Args:
        boxes: id -> (lo (3,), hi (3,)) world bounds.
    """
    if not boxes:
        return {}
    R = up_rotation(up_axis)
    ids = list(boxes)
    lo, hi = [], []
    for i in ids:
        corners = np.array(np.meshgrid(*zip(boxes[i][0], boxes[i][1]), indexing="ij")
                           ).reshape(3, -1).T @ R.T
        lo.append(corners.min(0))
        hi.append(corners.max(0))
    lo, hi = np.array(lo), np.array(hi)
    size = (hi - lo).max(1)
    centre = (lo[:, :2] + hi[:, :2]) / 2
    # [t, s]: t's centre in s's footprint, s reaches t's base from below, s is larger
    inside = np.all((lo[None, :, :2] <= centre[:, None]) & (centre[:, None] <= hi[None, :, :2]),
                    axis=-1)
    reaches = (hi[None, :, 2] >= lo[:, None, 2] - gap_m) & \
        (lo[None, :, 2] <= lo[:, None, 2] + gap_m) & \
        (hi[:, None, 2] > hi[None, :, 2] + stand_out_m)
    larger = size[:, None] <= max_size_ratio * size[None, :]
    on = inside & reaches & larger
    np.fill_diagonal(on, False)
    return {ids[t]: [ids[s] for s in np.flatnonzero(on[t])] for t in range(len(ids))
            if on[t].any()}


def without_directions(embedding: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """The unit part of ``embedding`` (D,) orthogonal to every row of ``directions``
    (K, D): what is left of a crop's embedding once its support's share is taken out."""
    e = np.asarray(embedding, dtype=np.float64).copy()
    if len(directions):
        q, _ = np.linalg.qr(np.asarray(directions, dtype=np.float64).T)  # (D, K) orthonormal
        e = e - q @ (q.T @ e)
    n = np.linalg.norm(e)
    return (e / n if n > 1e-9 else np.zeros_like(e)).astype(np.float32)


def label_instances(vocabulary: Vocabulary, cfg: SemanticConfig,
                    embeddings: dict[int, np.ndarray],
                    boxes: dict[int, Box] | None = None,
                    corrected: dict[int, list[int]] | None = None
                    ) -> dict[int, tuple[int, float]]:
    """Instance id -> (label id, confidence).

    Args:
        embeddings: id -> unit embedding (D,) of the chosen source.
        boxes: id -> world bounds, for ``cfg.exclude_support_label`` (None: rule off).
        corrected: filled with id -> the label ids whose text directions were taken out
            of that instance's embedding (its supports'), for per-point queries.
    """
    if not embeddings:
        return {}
    ids = list(embeddings)
    emb = np.stack([embeddings[i] for i in ids])
    labels, conf = vocabulary.classify(emb)
    out = {i: (int(l), float(c)) for i, l, c in zip(ids, labels, conf)}
    if not (cfg.exclude_support_label and boxes):
        return out
    supports = resting_on({i: b for i, b in boxes.items() if i in out}, cfg.up_axis,
                          cfg.support_gap_m, cfg.support_max_size_ratio,
                          cfg.support_stand_out_m)
    # an instance's label against its supports' labels as the map first gives them (not
    # chained); the labels of all its supports are excluded at once (an object in a tray
    # on a table is neither)
    redo = [t for t, ss in supports.items()
            if out[t][0] != vocabulary.other_id and any(out[s][0] == out[t][0] for s in ss)]
    if redo:
        text = vocabulary.text_embeddings()
        excluded = [sorted({out[s][0] for s in supports[t]} - {vocabulary.other_id})
                    for t in redo]
        residual = np.stack([without_directions(embeddings[t], text[[l - 1 for l in ex]])
                             for t, ex in zip(redo, excluded)])
        l2, c2 = vocabulary.classify(residual, exclude=excluded)
        if corrected is not None:
            corrected.update({t: ex for t, ex in zip(redo, excluded) if ex})
        out.update({t: (int(l), float(c)) for t, l, c in zip(redo, l2, c2)})
    return out


def voxel_relevance(features: VoxelFeatures, vocabulary: Vocabulary, points: np.ndarray,
                    text_embedding: np.ndarray, negatives: np.ndarray | None = None,
                    search_radius: int = 1, owners: np.ndarray | None = None,
                    corrected: dict[int, list[int]] | None = None) -> np.ndarray:
    """Relevance (N,) of world points (N, 3) to a phrase: the relevance of the voxel
    features nearest each point (0 where none), computed once per voxel that a point
    reaches, not per point.

    Args:
        owners: (V,) instance id holding each feature slot (0: none).
        corrected: instance id -> label ids whose text directions are taken out of its
            voxels' features (:func:`label_instances`): a voxel of a mug that every view
            called "table" is asked about once the table's direction is gone, as its
            instance's label was decided.
    """
    slots = features.slots_at(points, search_radius)
    out = np.zeros(len(slots), np.float32)
    hit = slots >= 0
    if hit.any():
        uniq, inv = np.unique(slots[hit], return_inverse=True)
        feats = unit_rows_of(features, uniq)
        if corrected and owners is not None:
            text = vocabulary.text_embeddings()
            own = owners[uniq]
            for t, ex in corrected.items():
                rows = np.flatnonzero(own == t)
                if rows.size and ex:
                    q, _ = np.linalg.qr(text[[l - 1 for l in ex]].T.astype(np.float64))
                    f = feats[rows] - (feats[rows] @ q) @ q.T
                    n = np.linalg.norm(f, axis=1, keepdims=True)
                    feats[rows] = np.where(n > 1e-9, f / np.maximum(n, 1e-12), 0.0)
        out[hit] = vocabulary.relevance(feats, text_embedding, negatives)[inv.reshape(-1)]
    return out


def unit_rows_of(features: VoxelFeatures, slots: np.ndarray) -> np.ndarray:
    """(K, D) float32 unit features of ``slots``."""
    f = features.mean[slots].astype(np.float32)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    return np.where(n > 0, f / np.maximum(n, 1e-12), 0.0).astype(np.float32)
