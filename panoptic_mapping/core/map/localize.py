"""InstanceLoc's vote: which map ids a frame's masks show, given the map's rendering."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.config import MaskVoteConfig

__all__ = ["vote_masks"]


def vote_masks(masks: np.ndarray, rendered: np.ndarray, valid: np.ndarray,
               cfg: MaskVoteConfig, min_pixels: int = 6,
               confidence: np.ndarray | None = None, map_boundaries: bool = True
               ) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Give each mask the majority non-zero id of ``rendered`` inside it.

    The masks decide which map instances the frame shows; where two of them meet, the
    boundary is the map's (rendered at measured depth, fused over many views), not the
    one frame's ragged mask edge. Inside a mask whose majority id is A, a rendered id B
    keeps its own pixels when
      * another mask of the frame answered B (a boundary between two present objects)
        and the map is sure of the pixel (``confidence`` >= ``cfg.boundary_confidence``:
        voxels on a boundary hold mixed votes, and there a clean mask knows better; never
        without ``map_boundaries``),
      * B holds ``cfg.split_share`` of the mask (a front-end merge of two objects), or
      * at least ``cfg.swallow_share`` of B's rendered pixels in the view lie in this mask
        (a small object the front-end missed and swallowed into its support).
    A mask whose majority id holds less than ``cfg.min_share`` of its valid pixels stays 0.

    Args:
        masks: (H, W) int mask ids; rendered: (H, W) int map ids; valid: (H, W) bool.
        min_pixels: a rendered id needs this many pixels in a mask to keep them.
        confidence: (H, W) confidence of ``rendered`` in [0, 1] (None: sure everywhere).
    Returns:
        (H, W) int32 ids and mask id -> (majority id, its share of the mask's valid pixels).
    """
    out = np.zeros(masks.shape, dtype=np.int32)
    answers: dict[int, tuple[int, float]] = {}
    sel = valid & (masks > 0)
    m, r = masks[sel].astype(np.int64), rendered[sel].astype(np.int64)
    n_m = np.bincount(m, minlength=int(masks.max(initial=0)) + 1)
    hit = r > 0
    if not hit.any():
        return out, answers
    base = int(r.max()) + 1
    pairs, counts = np.unique(m[hit] * base + r[hit], return_counts=True)
    pm, pi = np.divmod(pairs, base)
    visible = np.bincount(rendered[valid].astype(np.int64), minlength=base)
    for mask_id in np.unique(pm):
        rows = pm == mask_id
        ids, c = pi[rows], counts[rows]
        shares = c / max(n_m[mask_id], 1)
        best = int(np.argmax(shares))
        if shares[best] < cfg.min_share:
            continue
        answers[int(mask_id)] = (int(ids[best]), float(shares[best]))
    answered = list({i for i, _ in answers.values()})
    if not map_boundaries:
        sure = np.zeros_like(valid)
    elif confidence is None:
        sure = valid
    else:
        sure = valid & (confidence >= cfg.boundary_confidence)
    for mask_id, (best, _) in answers.items():
        rows = pm == mask_id
        ids, c = pi[rows], counts[rows]
        in_mask = masks == mask_id
        out[in_mask] = best
        big = (c >= min_pixels) & (ids != best)
        whole = big & ((c >= cfg.split_share * n_m[mask_id])
                       | (c >= cfg.swallow_share * visible[ids]))
        for i in ids[whole]:
            out[in_mask & (rendered == i) & valid] = i
        for i in ids[big & ~whole & np.isin(ids, answered)]:
            out[in_mask & (rendered == i) & sure] = i
    return out, answers
