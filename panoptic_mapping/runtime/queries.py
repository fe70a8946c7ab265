"""The decisions behind the node's services, ROS-free: when there is no map to ask, which
localized instances are sure enough, which instances a text names, which map points a
text matches, where an instance lies in an image, and what the map knows about one
instance (or why it has none)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.io.export import InstanceRecord, LabeledCloud, instance_points
from panoptic_mapping.core.mapper import Localization, Mapper
from panoptic_mapping.runtime.snapshots import MapSnapshot

__all__ = ["NO_TEXT_ENCODER", "NO_VOXEL_FEATURES", "no_map_reason", "localized_instances",
           "matching_instances", "rank_instances", "PointMatches", "relevance_threshold",
           "matching_points", "pixel_roi", "InstanceDetails", "UnknownInstance",
           "instance_details", "missing_instance_reason"]

NO_TEXT_ENCODER = "no text encoder: configure frontend.embedder.checkpoint"
NO_VOXEL_FEATURES = ("the map keeps no voxel features (instances.voxel_features is off or "
                     "no embedder)")


def no_map_reason(stats: dict) -> str | None:
    """Why a map with these :meth:`Mapper.stats` cannot answer yet; None when it can."""
    if stats["keyframes"] == 0:
        return "no map yet: no keyframe has been mapped"
    if not stats.get("instances_confirmed"):
        return (f"no map yet: {stats['keyframes']} keyframes but no instance has been "
                "confirmed")
    return None


def localized_instances(loc: Localization, min_confidence: float,
                        allowed: set[int] | None = None
                        ) -> tuple[np.ndarray, dict[int, float]]:
    """The localized instances sure enough to report.

    An instance's confidence is its best mask's vote share; ids below ``min_confidence``
    (and, when ``allowed`` is given, ids outside it) are cleared from the id image.

    Returns:
        (H, W) int32 ids (0 = none) and kept id -> confidence.
    """
    share: dict[int, float] = {}
    for _, map_id, s in loc.matches:
        share[map_id] = max(share.get(map_id, 0.0), float(s))
    keep = {i for i, s in share.items() if s >= min_confidence and i > 0}
    if allowed is not None:
        keep &= allowed
    ids = np.where(np.isin(loc.ids, list(keep)), loc.ids, 0).astype(np.int32)
    return ids, {i: share[i] for i in sorted(keep)}


def matching_instances(mapper: Mapper, queries: list[str], query_text: np.ndarray
                       ) -> set[int]:
    """Instances for which one of ``queries`` is the closest text among the queries and
    the vocabulary (and at least ``mapping.semantics.min_similarity`` similar).

    Args:
        queries: unique query strings (Q,); query_text: their text embeddings (Q, D).
    """
    texts = [query_text]
    vocab = mapper.vocabulary.prompts
    others = [k for k, p in enumerate(vocab) if p not in queries]
    if others:
        texts.append(mapper.vocabulary.text_embeddings()[others])
    best: dict[int, tuple[float, int]] = {}
    for k, t in enumerate(np.concatenate(texts)):
        for i, sim in mapper.query(t):
            if i not in best or sim > best[i][0]:
                best[i] = (sim, k)
    return {i for i, (sim, k) in best.items()
            if k < len(queries) and sim >= mapper.vocabulary.cfg.min_similarity}


def rank_instances(mapper: Mapper, text: np.ndarray, min_score: float, max_results: int
                   ) -> list[tuple[int, float]]:
    """Instances ranked by similarity to a text embedding (D,), as scores in [0, 1]
    (cosine mapped from [-1, 1]), those below ``min_score`` left out, at most
    ``max_results`` (0 = all)."""
    ranked = [(i, (sim + 1.0) / 2.0) for i, sim in mapper.query(text)]
    ranked = [(i, s) for i, s in ranked if s >= min_score]
    return ranked[:max_results] if max_results > 0 else ranked


# --------------------------------------------------------------------------- query_points


def relevance_threshold(min_relevance: float, default: float) -> float:
    """The relevance threshold of a per-point query: ``min_relevance``, or ``default`` (the
    node's ``mapping.semantics.query_threshold``) when it is 0.

    Raises:
        ValueError: ``min_relevance`` outside [0, 1] (NaN included).
    """
    if not (0.0 <= min_relevance <= 1.0):
        raise ValueError(f"min_relevance must be in [0, 1] (0 = the node's "
                         f"mapping.semantics.query_threshold), got {min_relevance}")
    return float(default) if min_relevance == 0.0 else float(min_relevance)


@dataclass
class PointMatches:
    """The points of a cloud that match a phrase.

    Attributes:
        index: (M,) int64 indices of the matching points into the cloud, most relevant
            first (ties in cloud order), at most ``max_points`` of them.
        relevance: (M,) float32 their relevance.
        instance_ids: instances (> 0) holding matching points, most matching points first
            (ties: the larger share, then the smaller id); counted over every point that
            passes, not only the ``max_points`` returned.
        instance_shares: per instance, its matching points / its points in the cloud.
        matched: how many points pass the threshold (before ``max_points``).
        threshold: the threshold applied.
    """

    index: np.ndarray
    relevance: np.ndarray
    instance_ids: list[int]
    instance_shares: list[float]
    matched: int
    threshold: float


def matching_points(relevance: np.ndarray, instance: np.ndarray, threshold: float,
                    max_points: int = 0) -> PointMatches:
    """The points whose relevance is at least ``threshold``, most relevant first.

    Args:
        relevance: (N,) relevance in [0, 1] of each point of a cloud.
        instance: (N,) the points' instance ids (0 = none).
        threshold: least relevance a point needs.
        max_points: at most this many points are returned (0 = all that pass).
    """
    rel = np.asarray(relevance, np.float32).reshape(-1)
    ids = np.asarray(instance).reshape(-1).astype(np.int64)
    if rel.shape != ids.shape:
        raise ValueError(f"{rel.size} relevances for {ids.size} points")
    passing = np.flatnonzero(rel >= threshold)
    order = passing[np.argsort(-rel[passing], kind="stable")]
    if max_points > 0:
        order = order[:max_points]
    hits = ids[passing]
    hits = hits[hits > 0]
    found, matching = np.unique(hits, return_counts=True)
    totals = np.bincount(ids[ids > 0], minlength=int(found.max(initial=0)) + 1)
    shares = matching / np.maximum(totals[found], 1)
    rank = sorted(range(len(found)), key=lambda k: (-matching[k], -shares[k], found[k]))
    return PointMatches(index=order.astype(np.int64), relevance=rel[order],
                        instance_ids=[int(found[k]) for k in rank],
                        instance_shares=[float(shares[k]) for k in rank],
                        matched=int(passing.size), threshold=float(threshold))


def pixel_roi(mask: np.ndarray) -> tuple[int, int, int, int, int] | None:
    """(pixel count, x offset, y offset, width, height) of a (H, W) bool mask; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return (int(rows.size), int(cols.min()), int(rows.min()),
            int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))


# --------------------------------------------------------------------------- get_instance


class UnknownInstance(LookupError):
    """The snapshot holds no instance of that id; the message says why."""


@dataclass
class InstanceDetails:
    """What the map knows about one instance.

    Attributes:
        record: its row of the instance table (box, centroid, confidence, point count).
        label: (label name, semantic confidence), or None without a label.
        points: its points of the labeled cloud (downsampled when asked).
        keyframes: keyframes showing it. last_stamp: the newest one's stamp [s] (None: none).
    """

    record: InstanceRecord
    label: tuple[str, float] | None
    points: LabeledCloud
    keyframes: int
    last_stamp: float | None


def instance_details(snap: MapSnapshot, instance_id: int, voxel_size: float,
                     cloud_voxel_size: float, confirm_frames: int, min_points: int
                     ) -> InstanceDetails:
    """One instance of a snapshot: its record, label, points and keyframe observations.

    Args:
        instance_id: the instance asked for (>= 1).
        voxel_size: voxel edge [m] to downsample its points to; values up to
            ``cloud_voxel_size`` (the labeled cloud's own resolution, 0 included) keep
            the cloud's points.
        confirm_frames, min_points: the map's rules (for the reason an id is missing).

    Raises:
        ValueError: a bad request (id 0, a negative or non-finite voxel size).
        UnknownInstance: the snapshot shows no such instance (the message says why).
    """
    if instance_id == 0:
        raise ValueError("instance_id 0 means 'no instance'; ask for an id >= 1")
    if not (math.isfinite(voxel_size) and voxel_size >= 0):
        raise ValueError(f"voxel_size must be >= 0 (0 = the labeled cloud's resolution), "
                         f"got {voxel_size}")
    record = snap.records.get(instance_id)
    if record is None:
        raise UnknownInstance(missing_instance_reason(snap, instance_id, confirm_frames,
                                                      min_points))
    coarser = voxel_size if voxel_size > cloud_voxel_size else 0.0
    keyframes, last = snap.observations.of(instance_id)
    return InstanceDetails(record, snap.labels.get(instance_id),
                           instance_points(snap.cloud, instance_id, coarser), keyframes, last)


def missing_instance_reason(snap: MapSnapshot, instance_id: int, confirm_frames: int,
                            min_points: int) -> str:
    """Why the snapshot has no record of ``instance_id`` (>= 1)."""
    lut = snap.id_lut
    if instance_id >= len(lut):
        issued = (f"ids 1 to {len(lut) - 1} have been issued" if len(lut) > 1
                  else "no id has been issued yet")
        return f"unknown instance id {instance_id}: {issued}"
    today = int(lut[instance_id])
    if today == 0:
        return f"instance {instance_id} was deleted (ids are never reused)"
    if today != instance_id:
        return (f"instance {instance_id} was merged into instance {today}: ask for "
                f"{today}")
    if instance_id not in snap.confirmed:
        return (f"instance {instance_id} is not confirmed yet (masks join an id, and "
                f"the map shows it, in {confirm_frames} frames close together before it "
                f"counts), other instances hold its place in the map where "
                f"it is seen (mapping.instances.min_shown_share), or it is a part still "
                f"shown as another instance")
    n = int(np.count_nonzero(snap.cloud.instance == instance_id))
    return (f"instance {instance_id} has {n} points in the labeled cloud, fewer than the "
            f"{min_points} an instance needs (mapping.export.min_points_per_instance)")
