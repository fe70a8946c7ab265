"""The decisions behind the node's services, ROS-free: when there is no map to ask, which
localized instances are sure enough, which instances a text names, and where an instance
lies in an image."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.mapper import Localization, Mapper

__all__ = ["NO_TEXT_ENCODER", "no_map_reason", "localized_instances", "matching_instances",
           "rank_instances", "pixel_roi"]

NO_TEXT_ENCODER = "no text encoder: configure frontend.embedder.checkpoint"


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


def pixel_roi(mask: np.ndarray) -> tuple[int, int, int, int, int] | None:
    """(pixel count, x offset, y offset, width, height) of a (H, W) bool mask; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return (int(rows.size), int(cols.min()), int(rows.min()),
            int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))
