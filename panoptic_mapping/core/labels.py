"""Instance labels from the map.

Two things a single view cannot know decide a label here:

* **what every view saw of the instance's surface**: the mask embeddings fused per voxel
  (:mod:`~panoptic_mapping.core.map.features`) and pooled over the voxels the instance
  holds, or, as the fallback and the alternative, the mean of the masks that joined it;
* **what it rests on**: a crop of a small object is mostly its support, so open-vocabulary
  masks call a mug on a table "table" from every side, and no fusion of views undoes an
  error every view makes. The map knows the two are separate instances and that one
  rests on or in the other (the other's voxels right under its own); such an instance is
  not given its support's label (:func:`resting_on`): the support's text direction is
  taken out of its embedding (:func:`without_directions`) and the rest is labelled, where
  the rest fits a prompt of its own (a piece of the floor the segmenter cut out rests on
  the floor too, and what is left of it is noise: it stays "floor"). Parts attached
  sideways (a handle on a drawer front) are not found this way.
"""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.features import VoxelFeatures, unit_rows
from panoptic_mapping.core.semantics import SemanticConfig, Vocabulary

__all__ = ["resting_on", "label_instances", "without_directions", "voxel_relevance",
           "support_explains"]


def resting_on(contacts: dict[int, dict[int, int]], sizes: dict[int, float],
               max_size_ratio: float = 0.5, min_contact_share: float = 0.25,
               min_contacts: int = 3, totals: dict[int, int] | None = None
               ) -> dict[int, list[int]]:
    """Instance id -> ids of the larger instances it rests on or in.

    T rests on S when S's voxels lie under at least ``min_contacts`` of T's voxels and at
    least ``min_contact_share`` of all T's voxels that have another instance under them
    (:meth:`~panoptic_mapping.core.map.instances.InstanceMap.contacts_below`), more than
    have T under them (two fragments interleaved lie beside each other, not on one
    another), and T's size (the caller's measure: the mapper takes the extent across the
    up axis) is at most ``max_size_ratio`` of S's. Contact, not boxes: a piece of a table
    top that a segmenter cut out has nothing of the table under it (only its unseen
    inside), objects side by side touch sideways, and the few stray voxels that stretch
    an instance's box across the room touch little.

    Args:
        contacts: T -> {S: voxels of T with S under them}; sizes: id -> extent [m].
        totals: T -> voxels of T with any other instance under them, where ``contacts``
            lists only some of them (default: the sum of T's contacts).
    """
    out: dict[int, list[int]] = {}
    for t, below in contacts.items():
        total = sum(below.values()) if totals is None else totals.get(t, 0)
        on = [s for s, n in sorted(below.items())
              if n >= min_contacts and n >= min_contact_share * total
              and n > contacts.get(s, {}).get(t, 0)
              and t in sizes and s in sizes and sizes[t] <= max_size_ratio * sizes[s]]
        if on:
            out[t] = on
    return out


def without_directions(embeddings: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """The unit part of each row of ``embeddings`` ((D,) or (N, D)) orthogonal to every
    row of ``directions`` (K, D): what is left of a crop's embedding once its support's
    share is taken out (zero where nothing is left), float32 of the input's shape."""
    e = np.array(embeddings, dtype=np.float64, ndmin=2)
    if len(directions):
        q, _ = np.linalg.qr(np.asarray(directions, dtype=np.float64).T)  # (D, K) orthonormal
        e = e - (e @ q) @ q.T
    n = np.linalg.norm(e, axis=1, keepdims=True)
    out = np.where(n > 1e-9, e / np.maximum(n, 1e-12), 0.0).astype(np.float32)
    return out.reshape(np.shape(embeddings))


def label_instances(vocabulary: Vocabulary, cfg: SemanticConfig,
                    embeddings: dict[int, np.ndarray],
                    supports: dict[int, list[int]] | None = None,
                    corrected: dict[int, list[int]] | None = None
                    ) -> dict[int, tuple[int, float]]:
    """Instance id -> (label id, confidence).

    Args:
        embeddings: id -> unit embedding (D,) of the chosen source.
        supports: id -> the ids it rests on (:func:`resting_on`), for
            ``cfg.exclude_support_label`` (None: rule off).
        corrected: filled with id -> the label ids whose text directions were taken out
            of that instance's embedding (its supports'), for per-point queries.
    """
    if not embeddings:
        return {}
    ids = list(embeddings)
    emb = np.stack([embeddings[i] for i in ids])
    labels, conf = vocabulary.classify(emb)
    out = {i: (int(l), float(c)) for i, l, c in zip(ids, labels, conf)}
    if not (cfg.exclude_support_label and supports):
        return out
    supports = {t: [s for s in ss if s in out] for t, ss in supports.items() if t in out}
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
        kept = _residual_fits(embeddings, text, redo, out, residual, l2,
                              cfg.support_min_residual)
        if corrected is not None:
            corrected.update({t: ex for t, ex, k in zip(redo, excluded, kept) if ex and k})
        out.update({t: (int(l), float(c))
                    for t, l, c, k in zip(redo, l2, c2, kept) if k})
    return out


def _residual_fits(embeddings: dict[int, np.ndarray], text: np.ndarray, redo: list[int],
                   out: dict[int, tuple[int, float]], residual: np.ndarray,
                   new_labels: np.ndarray, min_share: float) -> list[bool]:
    """For each instance in ``redo``: whether its residual (N, D) fits its new label at
    least ``min_share`` as well as its whole embedding fitted the label it had (cosines;
    a residual that fits no prompt, 'other', does not fit). What a support bias hides is
    a direction of its own; what is left of a piece of the support itself is noise, which
    fits some prompt best but none well. ``min_share`` 0: every residual fits."""
    if min_share <= 0:
        return [True] * len(redo)
    return [_fits(embeddings[t], r, out[t][0], int(l), text, min_share)
            for t, r, l in zip(redo, residual, new_labels)]


def _fits(embedding: np.ndarray, residual: np.ndarray, before: int, after: int,
          text: np.ndarray, min_share: float) -> bool:
    """Whether ``residual`` (D,) fits label ``after`` at least ``min_share`` as well as
    ``embedding`` (D,) fits label ``before`` (label ids 1..len(text); any other: no)."""
    n = len(text)
    if not (1 <= before <= n and 1 <= after <= n) or not residual.any():
        return False
    e = np.asarray(embedding, np.float64)
    was = float(e @ text[before - 1]) / max(float(np.linalg.norm(e)), 1e-12)
    return float(residual @ text[after - 1]) >= min_share * max(was, 0.0)


def support_explains(vocabulary: Vocabulary, cfg: SemanticConfig, embedding: np.ndarray,
                     support_embedding: np.ndarray) -> bool:
    """Whether an instance's embedding (D,) is its support's label and nothing else: once
    the direction of the label the support's embedding (D,) takes is out of it, what is
    left fits no other prompt ``cfg.support_min_residual`` as well (see
    :func:`label_instances`). A piece of the floor on the floor, of a mug on the mug: yes;
    a mug biased toward its table: no. False without prompts, with the rule off, or
    where the support is 'other'."""
    text = vocabulary.text_embeddings()
    if cfg.support_min_residual <= 0 or not len(text):
        return False
    (label,), _ = vocabulary.classify(np.asarray(support_embedding)[None])
    if not 1 <= int(label) <= len(text):
        return False
    residual = without_directions(embedding, text[[int(label) - 1]])
    (after,), _ = vocabulary.classify(residual[None], exclude=[[int(label)]])
    return not _fits(embedding, residual, int(label), int(after), text,
                     cfg.support_min_residual)


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
        # the slots used, without sorting the points' (slots index a dense table)
        used = np.zeros(len(features), bool)
        used[slots[hit]] = True
        uniq = np.flatnonzero(used)
        inv = (np.cumsum(used) - 1)[slots[hit]]
        directions = vocabulary.query_directions(text_embedding, negatives)
        cos = features.cosines(uniq, directions)  # (U, 1 + J)
        empty = ~cos.any(1)  # no features there (cosines() gives a zero row)
        if corrected and owners is not None:
            text = vocabulary.text_embeddings()
            own = owners[uniq]
            for t, ex in corrected.items():
                rows = np.flatnonzero(own == t)
                if rows.size and ex:
                    feats = without_directions(unit_rows(features.mean[uniq[rows]]),
                                               text[[l - 1 for l in ex]])
                    cos[rows] = feats @ directions.T
                    empty[rows] = ~feats.any(1)
        rel = np.where(empty, 0.0, vocabulary.relevance_from_cosines(cos))
        out[hit] = rel[inv.reshape(-1)]
    return out
