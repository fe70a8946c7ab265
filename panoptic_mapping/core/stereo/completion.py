"""Stereo depth completed inside the segmenter's masks.

Stereo is confident on a few textured pixels (a tenth of a flat-shaded view); a mask is
one surface or object, so its confident pixels tell where the rest of it lies. Per mask,
inverse depth is fitted as a plane in the image (on a 3D plane, 1/d is affine in the pixel
coordinates: ``1/d = a u + b v + c``) by iteratively reweighted least squares; when enough
of the mask's confident pixels agree with the fit, the mask's pixels without depth get the
fit's. Masks whose depth is not one plane (a mask across two objects, a strongly curved
object) fail the agreement test and stay as they are. A fit is only extrapolated where it
is determined: confident pixels along one edge of a large mask (a table top's front edge)
leave its tilt across the mask free, so a pixel is filled only where the fit's standard
error there, from the inliers' scatter and the design's leverage, is within a fraction of
the agreement tolerance.
"""
from __future__ import annotations

import numpy as np

__all__ = ["complete_in_masks"]

# IRLS iterations of the robust plane fit.
_IRLS_ITERATIONS = 4
# Floor of the inliers' relative scatter: stereo depth is never exact to better than this,
# and a few perfectly collinear pixels would otherwise claim a certain fit.
_MIN_SCATTER_REL = 0.005
# Weight factor of borrowed depth nearer than the fit: an occluder's outline says only
# that the surface lies behind it.
_IN_FRONT_WEIGHT = 0.05


def _fit_inverse_plane(u: np.ndarray, v: np.ndarray, inv: np.ndarray, tol: float,
                       in_front: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust fit of 1/d = a u + b v + c.

    The fit is in relative units (each row divided by its 1/d), so the residuals are
    relative depth errors.

    Args:
        in_front: (N,) bool or None: points that may lie in front of the surface and not
            on it (depth borrowed across an occluder's outline is the occluder's); such a
            point nearer than the fit weighs little and does not contradict it.

    Returns:
        coefficients (3,), flags of the points on the fit (within ``tol``), flags of the
        points that do not contradict it (on it, or ``in_front`` points nearer).
    """
    A = np.stack([u, v, np.ones_like(u)], 1) / inv[:, None]
    w = np.ones_like(inv)
    coef = np.zeros(3)
    for _ in range(_IRLS_ITERATIONS):
        sw = np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(A * sw, sw[:, 0], rcond=None)
        signed = A @ coef - 1.0  # relative error of inverse depth ~ of depth; < 0: nearer
        w = 1.0 / (1.0 + (signed / tol) ** 2)  # Cauchy weights
        if in_front is not None:
            w = np.where(in_front & (signed < -tol), _IN_FRONT_WEIGHT * w, w)
    signed = A @ coef - 1.0
    on = np.abs(signed) <= tol
    fits = on if in_front is None else on | (in_front & (signed < 0))
    return coef, on, fits


def _relative_standard_error(u: np.ndarray, v: np.ndarray, inv: np.ndarray,
                             inlier: np.ndarray, coef: np.ndarray, ue: np.ndarray,
                             ve: np.ndarray) -> np.ndarray:
    """Relative standard error of the fitted depth at pixels (ue, ve), from the inliers'
    scatter and the fit's covariance (relative units, as :func:`_fit_inverse_plane`)."""
    A = np.stack([u[inlier], v[inlier], np.ones(int(inlier.sum()))], 1) / inv[inlier, None]
    resid = A @ coef - 1.0
    dof = max(int(inlier.sum()) - 3, 1)
    scatter2 = max(float(resid @ resid) / dof, _MIN_SCATTER_REL ** 2)
    normal = A.T @ A
    try:
        cov = np.linalg.inv(normal) * scatter2
    except np.linalg.LinAlgError:
        return np.full(ue.shape, np.inf)
    x = np.stack([ue, ve, np.ones_like(ue)], 1).astype(np.float64)
    pred = x @ coef
    var = np.einsum("ij,jk,ik->i", x, cov, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pred > 0, np.sqrt(np.maximum(var, 0.0)) / pred, np.inf)


def _near_other_mask(masks: np.ndarray, r: int) -> np.ndarray:
    """(H, W) bool: pixels with another mask id within ``r`` pixels (Chebyshev)."""
    h, w = masks.shape
    padded = np.pad(masks, r, mode="edge")
    near = np.zeros((h, w), bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            near |= padded[dy:dy + h, dx:dx + w] != masks
    return near


def _enough(known: int, count: int, min_support: int, min_support_share: float) -> bool:
    return known >= max(min_support, 3) and known >= min_support_share * count


def complete_in_masks(depth: np.ndarray, masks: np.ndarray, min_support: int,
                      min_support_share: float, tol_rel: float, min_inlier_share: float,
                      depth_range: tuple[float, float], max_error_share: float = 0.5,
                      support: np.ndarray | None = None, borrowed_on_share: float = 0.5,
                      border_px: int = 0) -> np.ndarray:
    """Depth with each planar-enough mask filled from its confident pixels.

    Args:
        depth: (H, W) float32 confident depth, 0 = none.
        masks: (H, W) int mask ids, 0 = no mask.
        min_support: fewest confident pixels a mask needs to be filled.
        min_support_share: and at least this share of its pixels.
        tol_rel: a confident pixel agrees with the fit within this relative depth error.
        min_inlier_share: share of the confident pixels that must agree.
        depth_range: (near, far) [m]; fitted depths outside it are left empty.
        max_error_share: a pixel is filled where the fit's relative standard error there
            is at most this share of ``tol_rel`` (inf: wherever the fit is accepted).
        support: (H, W) depth, 0 = none, that counts in a mask's fit and its agreement
            test beside ``depth`` but is not kept as depth where ``depth`` has none: the
            depth a textureless pixel borrowed from its neighbours' texture, right at a
            crease and wrong across an outline; where its mask's plane is accepted, the
            plane's depth fills it like any empty pixel. Borrowed depth nearer than the
            fit does not contradict it (it may be an occluder's).
        borrowed_on_share: a fit to borrowed depth needs this share of it on the plane
            (what lies in front of it explains no more than that the surface is behind).
        border_px: depth within this many pixels of another mask is treated as borrowed
            in the fit (it may be the neighbour's in front: a mask's edge is a pixel or two
            off, and a window there holds the neighbour's outline).

    Returns:
        (H, W) float32 depth: the input's, plus the fits inside accepted masks.
    """
    out = depth.astype(np.float32, copy=True)
    h, w = depth.shape
    flat_m = masks.reshape(-1)
    flat_d = depth.reshape(-1)
    flat_fit = flat_d if support is None else np.where(flat_d > 0, flat_d, support.reshape(-1))
    border = _near_other_mask(masks, border_px).reshape(-1) if border_px > 0 else None
    order = np.argsort(flat_m, kind="stable")
    ids, starts, counts = np.unique(flat_m[order], return_index=True, return_counts=True)
    for mid, start, count in zip(ids, starts, counts):
        if mid == 0:
            continue
        pix = order[start:start + count]
        if (flat_d[pix] > 0).all():
            continue
        known = pix[flat_d[pix] > 0]
        in_front = None
        if not _enough(known.size, count, min_support, min_support_share):
            known = pix[flat_fit[pix] > 0]  # its own pixels say too little: borrowed too
            in_front = flat_d[known] <= 0
            if not _enough(known.size, count, min_support, min_support_share):
                continue
        if border is not None:
            edge = border[known]
            in_front = edge if in_front is None else in_front | edge
            if not in_front.any():
                in_front = None
        v, u = (c.astype(np.float64) for c in np.divmod(known, w))
        inv_known = 1.0 / flat_fit[known].astype(np.float64)
        coef, inlier, fits = _fit_inverse_plane(u, v, inv_known, tol_rel, in_front)
        if fits.mean() < min_inlier_share or inlier.sum() < max(min_support, 3) \
                or (in_front is not None and inlier.mean() < borrowed_on_share):
            continue
        empty = pix[flat_d[pix] <= 0]
        ve, ue = np.divmod(empty, w)
        inv = coef[0] * ue + coef[1] * ve + coef[2]
        with np.errstate(divide="ignore"):
            d = np.where(inv > 0, 1.0 / inv, 0.0)
        d[(d < depth_range[0]) | (d > depth_range[1])] = 0.0
        if np.isfinite(max_error_share):
            err = _relative_standard_error(u, v, inv_known, inlier, coef,
                                           ue.astype(np.float64), ve.astype(np.float64))
            d[err > max_error_share * tol_rel] = 0.0
        out.reshape(-1)[empty] = d
    return out
