"""The working resolution: frames fused into the instance map no finer than its voxels.

A 640x480 camera samples a 1 cm voxel 4-5 pixels across at a tabletop's distance: every
per-pixel step of the instance map (voxel search, votes, association, evidence) then does
16-25 times the work for the same voxels. The map takes a frame at an integer decimation
``s`` (every s-th pixel of every s-th row, the one nearest the block's centre) chosen from
the voxel size: the coarsest at which a pixel still spans no more than
``1 / pixels_per_voxel`` voxel edges at the frame's median depth. Masks, depth and
intrinsics are decimated together, so a working pixel is exactly one full-resolution
pixel, and answers go back at full resolution with the masks' own boundaries
(:func:`labels_at_full_resolution`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.geometry import count_pairs

__all__ = ["working_factor", "median_depth", "decimate_intrinsics", "decimate_frame",
           "upsample_nearest", "labels_at_full_resolution", "MIN_WORKING_PIXELS"]

# the working image keeps at least this many pixels along its shorter side
MIN_WORKING_PIXELS = 32
# a median over every this-many-th valid pixel (the factor is an integer: a few
# thousand samples decide it as well as all)
_MEDIAN_STRIDE = 17


def working_factor(depth_m: float, K: np.ndarray, shape: tuple[int, int], voxel_size_m: float,
                   pixels_per_voxel: float) -> int:
    """Integer decimation at which a pixel spans ``1 / pixels_per_voxel`` voxel edges or
    less at depth ``depth_m`` (a pixel at depth z spans z / f metres).

    Args:
        depth_m: a representative depth of the view (the median of its valid depth).
        K: (3, 3) intrinsics (the smaller focal length counts); shape: (H, W).
        pixels_per_voxel: 0 or less: always 1 (full resolution).
    Returns:
        s >= 1, also keeping at least :data:`MIN_WORKING_PIXELS` along the shorter side.
    """
    if pixels_per_voxel <= 0 or not np.isfinite(depth_m) or depth_m <= 0:
        return 1
    f = float(min(K[0, 0], K[1, 1]))
    sampled = voxel_size_m * f / depth_m  # full-resolution pixels across one voxel edge
    s = int(np.floor(sampled / pixels_per_voxel))
    return max(1, min(s, min(shape) // MIN_WORKING_PIXELS))


def median_depth(depth: np.ndarray) -> float:
    """Median (m) of a subsample of the valid depth (H, W); NaN without any."""
    d = depth.reshape(-1)[::_MEDIAN_STRIDE]
    d = d[d > 0]
    if d.size == 0:
        d = depth[depth > 0]
    return float(np.median(d)) if d.size else float("nan")


def decimate_intrinsics(K: np.ndarray, s: int) -> np.ndarray:
    """Intrinsics (3, 3) of the decimated image whose pixel (u', v') is the full image's
    (s u' + s // 2, s v' + s // 2); pixel centres at integer coordinates."""
    if s == 1:
        return K
    o = s // 2
    Kw = np.array(K, dtype=np.float64, copy=True)
    Kw[0, 0] /= s
    Kw[1, 1] /= s
    Kw[0, 1] /= s
    Kw[0, 2] = (K[0, 2] - o) / s
    Kw[1, 2] = (K[1, 2] - o) / s
    return Kw


def _take(image: np.ndarray | None, s: int) -> np.ndarray | None:
    if image is None:
        return None
    o = s // 2
    return np.ascontiguousarray(image[o::s, o::s])


def decimate_frame(frame: Frame, s: int) -> Frame:
    """The frame at decimation ``s``: images (rgb, depth, masks, depth confidence) keep
    every s-th pixel, intrinsics follow; mask ids, embeddings and scores are unchanged
    (a mask too small to keep a pixel simply has none)."""
    if s == 1:
        return frame
    return dataclasses.replace(frame, rgb=_take(frame.rgb, s), depth=_take(frame.depth, s),
                               masks=_take(frame.masks, s),
                               depth_confidence=_take(frame.depth_confidence, s),
                               seen=_take(frame.seen, s), K=decimate_intrinsics(frame.K, s))


def upsample_nearest(image: np.ndarray, s: int, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) image of ``shape`` from its decimation (h, w) by ``s``: each full pixel
    takes the working pixel whose block holds it (the last row/column blocks extend to
    the border)."""
    if s == 1:
        return image
    h, w = shape
    rows = np.minimum(np.arange(h) // s, image.shape[0] - 1)
    cols = np.minimum(np.arange(w) // s, image.shape[1] - 1)
    return image[rows[:, None], cols[None, :]]


def labels_at_full_resolution(labels: np.ndarray, masks: np.ndarray, s: int) -> np.ndarray:
    """Per-pixel ids (h, w) found at decimation ``s`` back at full resolution, on the
    masks' own boundaries.

    Args:
        labels: (h, w) int ids at the working resolution (0 = none).
        masks: (H, W) int full-resolution mask ids (0 = none), whose decimation by ``s``
            the labels were found on.
    Returns:
        (H, W) int32: inside a mask, the id its nearest working pixel carries where that
        pixel lies in the same mask (a mask the association divided keeps its division),
        elsewhere in the mask the id most of its working pixels carry; 0 outside masks
        and in masks no working pixel sampled.
    """
    if s == 1:
        return labels.astype(np.int32, copy=False)
    work_masks = _take(masks, s)
    inside = masks > 0
    # where a pixel's block was sampled in its own mask
    same = upsample_nearest(work_masks, s, masks.shape) == masks
    out = np.where(same & inside, upsample_nearest(labels, s, masks.shape), 0).astype(np.int32)
    # the id most of each mask's working pixels carry, for its pixels whose block
    # belongs to another mask (its boundary at full resolution)
    wm = work_masks.reshape(-1).astype(np.int64)
    wl = labels.reshape(-1).astype(np.int64)
    keep = (wm > 0) & (wl > 0)
    majority = np.zeros(int(masks.max(initial=0)) + 1, dtype=np.int32)
    if keep.any():
        m, lab, counts = count_pairs(wm[keep], wl[keep])
        order = np.lexsort((counts, m))  # by mask, most pixels last
        m, lab = m[order], lab[order]
        last = np.r_[m[1:] != m[:-1], True]
        majority[m[last]] = lab[last]
    fix = ~same & inside
    out[fix] = majority[masks[fix]]
    return out
