"""Stereo depth completed inside the segmenter's masks.

Stereo is confident on a few textured pixels (a tenth of a flat-shaded view); a mask is
one surface or object, so its confident pixels tell where the rest of it lies. Per mask,
inverse depth is fitted as a plane in the image (on a 3D plane, 1/d is affine in the pixel
coordinates: ``1/d = a u + b v + c``) by iteratively reweighted least squares; when enough
of the mask's confident pixels agree with the fit, the mask's pixels without depth get the
fit's. Masks whose depth is not one plane (a mask across two objects, a strongly curved
object) fail the agreement test and stay as they are.
"""
from __future__ import annotations

import numpy as np

__all__ = ["complete_in_masks"]

# IRLS iterations of the robust plane fit.
_IRLS_ITERATIONS = 4


def _fit_inverse_plane(u: np.ndarray, v: np.ndarray, inv: np.ndarray, tol: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Robust fit of 1/d = a u + b v + c; returns (coefficients (3,), inlier flags)."""
    A = np.stack([u, v, np.ones_like(u)], 1)
    w = np.ones_like(inv)
    coef = np.zeros(3)
    for _ in range(_IRLS_ITERATIONS):
        sw = np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(A * sw, inv * sw[:, 0], rcond=None)
        rel = np.abs(A @ coef - inv) / inv  # relative error of inverse depth ~ of depth
        w = 1.0 / (1.0 + (rel / tol) ** 2)  # Cauchy weights
    rel = np.abs(A @ coef - inv) / inv
    return coef, rel <= tol


def complete_in_masks(depth: np.ndarray, masks: np.ndarray, min_support: int,
                      min_support_share: float, tol_rel: float, min_inlier_share: float,
                      depth_range: tuple[float, float]) -> np.ndarray:
    """Depth with each planar-enough mask filled from its confident pixels.

    Args:
        depth: (H, W) float32 confident depth, 0 = none.
        masks: (H, W) int mask ids, 0 = no mask.
        min_support: fewest confident pixels a mask needs to be filled.
        min_support_share: and at least this share of its pixels.
        tol_rel: a confident pixel agrees with the fit within this relative depth error.
        min_inlier_share: share of the confident pixels that must agree.
        depth_range: (near, far) [m]; fitted depths outside it are left empty.

    Returns:
        (H, W) float32 depth: the input's, plus the fits inside accepted masks.
    """
    out = depth.astype(np.float32, copy=True)
    h, w = depth.shape
    flat_m = masks.reshape(-1)
    flat_d = depth.reshape(-1)
    order = np.argsort(flat_m, kind="stable")
    ids, starts, counts = np.unique(flat_m[order], return_index=True, return_counts=True)
    for mid, start, count in zip(ids, starts, counts):
        if mid == 0:
            continue
        pix = order[start:start + count]
        known = pix[flat_d[pix] > 0]
        if known.size < max(min_support, 3) or known.size < min_support_share * count \
                or known.size == count:
            continue
        v, u = np.divmod(known, w)
        coef, inlier = _fit_inverse_plane(u.astype(np.float64), v.astype(np.float64),
                                          1.0 / flat_d[known].astype(np.float64), tol_rel)
        if inlier.mean() < min_inlier_share:
            continue
        empty = pix[flat_d[pix] <= 0]
        ve, ue = np.divmod(empty, w)
        inv = coef[0] * ue + coef[1] * ve + coef[2]
        with np.errstate(divide="ignore"):
            d = np.where(inv > 0, 1.0 / inv, 0.0)
        d[(d < depth_range[0]) | (d > depth_range[1])] = 0.0
        out.reshape(-1)[empty] = d
    return out
