"""Surface geometry of one depth image: normals, geometric boundaries, support planes,
and depth-edge refinement of any segmenter's masks.

The building blocks of the weights-free geometric front-end
(:class:`panoptic_mapping.frontends.geometric.GeometricSegmenter`) and of the mask
refinement every segmenter can switch on (``SegmenterConfig.refine_depth_edges``). The
boundary criteria follow the geometric segmentation of voxblox++ (Furrer et al. 2018),
itself after Tateno et al. 2015: a pixel is on a boundary where a neighbouring point lies
far off its tangent plane (a depth discontinuity) or where the surface folds *inwards*
between neighbours (a concave crease: the neighbour lies in front of the tangent plane and
the normals differ by more than an angle). Convex edges (a box's top and front face) are
not boundaries: objects are the convex pieces between concave creases and depth jumps.

Everything is in the camera frame (OpenCV optical convention: x right, y down, z forward);
numpy and scipy only. Imports nothing of the segmenters (they import this module).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from panoptic_mapping.frontends.postprocess import neighbour_pairs

__all__ = [
    "Plane",
    "point_map",
    "depth_noise",
    "smoothing_radius",
    "smooth_depth",
    "surface_normals",
    "geometric_boundaries",
    "jump_boundaries",
    "detect_planes",
    "split_regions",
    "grow_labels",
    "refine_masks",
    "refine_with_ids",
    "postprocess_ids",
]

# 4-connectivity (masks touch when they share an edge).
_CROSS = ndimage.generate_binary_structure(2, 1)
# A crease needs a point at least sin(~6 deg) in front of the other's tangent plane: a
# normal blended across a convex edge leaves the neighbour about on its plane.
_FRONT_MIN = 0.1


# --------------------------------------------------------------------------- points, normals


def point_map(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame point of every pixel (:func:`panoptic_mapping.core.geometry.backproject`
    with the identity pose, kept in the image's layout).

    Args:
        depth: (H, W) depth along the optical axis; <= 0 or non-finite = none.
        K: (3, 3) pinhole intrinsics.

    Returns:
        (H, W, 3) float64 points (0 where there is no depth) and (H, W) bool valid.
    """
    d = np.asarray(depth, np.float64)
    valid = np.isfinite(d) & (d > 0)
    d = np.where(valid, d, 0.0)
    h, w = d.shape
    K = np.asarray(K, np.float64)
    # Elementwise (no matrix product: BLAS threads cost more than they save here).
    x = (np.arange(w) - K[0, 2]) / K[0, 0]
    y = (np.arange(h) - K[1, 2]) / K[1, 1]
    pts = np.empty((h, w, 3))
    pts[..., 0] = x[None, :] * d
    pts[..., 1] = y[:, None] * d
    pts[..., 2] = d
    return pts, valid


def depth_noise(depth: np.ndarray, max_rel: float) -> float:
    """Relative noise of a depth image: the standard deviation of depth / depth per pixel.

    On a plane inverse depth is affine in the pixel coordinates, so its second difference
    along a row or column vanishes; what remains is noise (and the few creases and jumps,
    left out above ``max_rel``). For Gaussian noise of relative deviation s the second
    difference of inverse depth, relative to it, has deviation sqrt(6) s and mean absolute
    value sqrt(2 / pi) sqrt(6) s; the mean is robust to a sensor's quantisation, where most
    second differences are exactly 0 and the median says nothing.

    Args:
        depth: (H, W) depth; <= 0 or non-finite = none.
        max_rel: second differences above this (relative) are edges, not noise.

    Returns:
        The estimated s (0.0 when there are no three valid pixels in a row).
    """
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    z = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
    found = []
    for zz, vv in ((z, valid), (z.T, valid.T)):
        e = np.abs(zz[:, 2:] - 2.0 * zz[:, 1:-1] + zz[:, :-2]) / np.where(
            vv[:, 1:-1], zz[:, 1:-1], 1.0)
        found.append(e[vv[:, 2:] & vv[:, 1:-1] & vv[:, :-2] & (e < max_rel)])
    e = np.concatenate(found)
    if e.size == 0:
        return 0.0
    return float(e.mean() / (math.sqrt(2.0 / math.pi) * math.sqrt(6.0)))


def _smoothing_kernel(radius: int) -> np.ndarray:
    """(2r+1,) 1-D weights of ``radius`` passes of a 3-tap mean (:func:`smooth_depth` on a
    plane, one image axis)."""
    k = np.ones(1)
    for _ in range(max(int(radius), 0)):
        k = np.convolve(k, np.ones(3) / 3.0)
    return k


def _tilt_factor(radius: int) -> float:
    """How much :func:`smooth_depth` of ``radius`` shrinks the noise of a one-pixel
    tangent (1 for no smoothing)."""
    k = _smoothing_kernel(radius)
    step = np.concatenate([k, [0.0]]) - np.concatenate([[0.0], k])
    return math.sqrt(float(np.sum(step ** 2) * np.sum(k ** 2)) / 2.0)


def smoothing_radius(noise_rel: float, focal_px: float, max_angle_deg: float,
                     max_radius: int) -> int:
    """The smallest radius of :func:`smooth_depth` that keeps the normals' noise under
    ``max_angle_deg`` (at most ``max_radius``).

    A tangent from two neighbouring points z / f apart, each off by ``noise_rel`` * z, tilts
    by about tan(a) = sqrt(2) * noise_rel * f. After smoothing, the two points are weighted
    sums of their neighbourhoods (the separable kernel k of :func:`smooth_depth`): the
    difference has the deviation sqrt(sum((k - k shifted by one)^2) * sum(k^2)) of one
    pixel's noise instead of sqrt(2).
    """
    tilt = math.sqrt(2.0) * noise_rel * focal_px
    limit = math.tan(math.radians(max_angle_deg))
    r = 0
    while r < max_radius and tilt * _tilt_factor(r) > limit:
        r += 1
    return r


def smooth_depth(depth: np.ndarray, radius: int, max_rel: float) -> np.ndarray:
    """Depth smoothed within its own surface: ``radius`` passes of the mean of inverse depth
    over each pixel and those of its 8 neighbours within ``max_rel`` of its depth (a depth
    jump is not averaged across; neighbours, not a wider window, are compared, so a steep
    surface whose depth changes by more than ``max_rel`` over the window is still averaged
    symmetrically).

    Why: a structured-light or stereo sensor's depth at 2 m is noisy and quantised by about
    a centimetre, more than the spacing of neighbouring pixels' points there, so normals from
    one-pixel differences are noise (planes are not found, noise creases everywhere).
    Inverse depth is affine in the pixel coordinates on a plane, so a symmetric mean leaves
    a plane where it is.

    Args:
        depth: (H, W) depth; <= 0 or non-finite = none (stays none).
        radius: passes (the result's support radius in pixels; 0: the depth unchanged).
        max_rel: neighbours differing by more than this times the pixel's depth are left out.

    Returns:
        (H, W) float64 depth, 0 where the input has none.
    """
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    h, w = d.shape
    for _ in range(max(int(radius), 0)):
        pad = np.pad(d, 1)
        total = np.zeros_like(d)
        count = np.zeros_like(d)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                s = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                take = (s > 0) & (np.abs(s - d) <= max_rel * d)
                total += np.where(take, 1.0 / np.where(take, s, 1.0), 0.0)
                count += take
        d = np.where(valid & (count > 0), count / np.maximum(total, 1e-300), 0.0)
    return d


def _shift(a: np.ndarray, offset: int, axis: int, fill=0) -> np.ndarray:
    """``out[i] = a[i + offset]`` along ``axis`` (image axes 0 or 1), ``fill`` outside."""
    out = np.full_like(a, fill)
    n = a.shape[axis]
    if abs(offset) >= n:
        return out
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if offset >= 0:
        src[axis], dst[axis] = slice(offset, None), slice(0, n - offset)
    else:
        src[axis], dst[axis] = slice(0, n + offset), slice(-offset, None)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (..., 3) arrays."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of the angle between (..., 3) vectors (0 for a zero vector)."""
    return _dot(a, b) / np.maximum(np.sqrt(_dot(a, a) * _dot(b, b)), 1e-24)


def surface_normals(points: np.ndarray, valid: np.ndarray, step: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Unit surface normals of a point map, facing the camera.

    The tangent along each image axis is the one-sided difference to the neighbour
    ``step`` pixels away on the side where the surface runs on straight (the two
    successive differences on that side are the most parallel; where the second one is
    missing, the side with the smaller depth change). So a normal next to a depth jump or
    a crease comes from its own surface, not from a mix of the two.

    Args:
        points: (H, W, 3) camera-frame points. valid: (H, W) bool.
        step: pixels between the differenced points (larger smooths sensor noise).

    Returns:
        (H, W, 3) float64 unit normals with ``n . p < 0`` (towards the camera), and
        (H, W) bool where a normal could be computed.
    """
    step = max(int(step), 1)
    z = points[..., 2]
    tangents, ok = [], valid.copy()
    for axis in (1, 0):  # along u (columns), then along v (rows)
        p1f, p2f = _shift(points, step, axis), _shift(points, 2 * step, axis)
        p1b, p2b = _shift(points, -step, axis), _shift(points, -2 * step, axis)
        v1f, v2f = _shift(valid, step, axis, False), _shift(valid, 2 * step, axis, False)
        v1b, v2b = _shift(valid, -step, axis, False), _shift(valid, -2 * step, axis, False)
        fwd, bwd = p1f - points, points - p1b
        vf, vb = valid & v1f, valid & v1b
        # Straightness: cosine between the first and the second difference on each side.
        sf = np.where(vf & v2f, _cos(fwd, p2f - p1f), -2.0)
        sb = np.where(vb & v2b, _cos(bwd, p1b - p2b), -2.0)
        dzf = np.abs(p1f[..., 2] - z)
        dzb = np.abs(z - p1b[..., 2])
        by_shape = (sf > -2.0) | (sb > -2.0)
        prefer_f = np.where(by_shape & (np.abs(sf - sb) > 1e-9), sf > sb, dzf <= dzb)
        use_f = vf & (~vb | prefer_f)
        tangents.append(np.where(use_f[..., None], fwd, bwd))
        ok &= vf | vb
    n = np.cross(tangents[0], tangents[1])
    norm = np.sqrt(_dot(n, n))
    ok &= norm > 1e-12
    n = n / np.where(ok, norm, 1.0)[..., None]
    flip = _dot(n, points) > 0
    n[flip] *= -1.0
    n[~ok] = 0.0
    return n, ok


# --------------------------------------------------------------------------- boundaries


def _pairs(shape: tuple[int, int], axis: int, s: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices (a, b) of all pixel pairs ``s`` apart along ``axis`` (b = a + s)."""
    if axis == 1:
        return (slice(None), slice(None, -s)), (slice(None), slice(s, None))
    return (slice(None, -s), slice(None)), (slice(s, None), slice(None))


def _mark_span(out: np.ndarray, edge: np.ndarray, axis: int, s: int) -> None:
    """Mark both pixels of every edge pair ``s`` apart along ``axis``, and those between."""
    a, _ = _pairs(out.shape, axis, s)
    for k in range(s + 1):
        sl = list(a)
        n = out.shape[axis]
        sl[axis] = slice(k, n - s + k)
        out[tuple(sl)] |= edge


def geometric_boundaries(points: np.ndarray, normals: np.ndarray, valid: np.ndarray,
                         normal_ok: np.ndarray, *, jump_rel: float = 0.03,
                         concave_angle_deg: float = 75.0, concave: bool = True,
                         concave_steps: tuple[int, ...] = (1,)) -> np.ndarray:
    """(H, W) bool: pixels on a depth discontinuity or a concave crease.

    * Depth discontinuity between 4-neighbours i, j: the depth step and the larger of the
      two point-to-tangent-plane distances, ``max(|(p_j - p_i) . n_i|,
      |(p_i - p_j) . n_j|)``, both exceed ``jump_rel * depth`` (on a slanted plane the
      distances stay ~0 however large the depth step; one bad normal at a silhouette
      corner cannot hide a jump); where a normal is missing the depth step alone decides.
    * Crease between pixels ``s`` apart (s in ``concave_steps``): the normals differ by
      more than ``concave_angle_deg`` and one point lies clearly in front of the other's
      tangent plane (``(p_j - p_i) . n_i`` or ``(p_i - p_j) . n_j`` above 0.1 of their
      distance): a concave crease (both in front) or a fold where one surface passes
      behind the other. Convex edges (both behind) are not boundaries.

    Both pixels of an edge pair (and those between) are marked; pixels without depth are
    not (they have no label anyway).
    """
    out = np.zeros(valid.shape, bool)
    z = points[..., 2]
    cos_t = np.cos(np.deg2rad(concave_angle_deg))
    for axis in (0, 1):
        a, b = _pairs(valid.shape, axis, 1)
        both = valid[a] & valid[b]
        v = points[b] - points[a]
        zmin = np.minimum(z[a], z[b])
        nok = normal_ok[a] & normal_ok[b]
        dz = np.abs(z[b] - z[a])
        dist = np.maximum(np.abs(_dot(v, normals[a])), np.abs(_dot(v, normals[b])))
        dist = np.where(nok, np.minimum(dist, dz), dz)
        _mark_span(out, both & (dist > jump_rel * zmin), axis, 1)
        if not concave:
            continue
        for s in concave_steps:
            a, b = _pairs(valid.shape, axis, s)
            v = points[b] - points[a]
            ok = valid[a] & valid[b] & normal_ok[a] & normal_ok[b]
            na, nb = normals[a], normals[b]
            # How far each point lies in front of the other's tangent plane (per unit
            # distance). Convex edges have both behind (or on) it; cut where one is clearly
            # in front and the normals differ sharply: a concave crease (both in front) or
            # a fold where one surface passes behind the other (a box's side against the
            # floor just beside its foot, where the depth step is still too small).
            length = np.maximum(np.sqrt(_dot(v, v)), 1e-12)
            front = np.maximum(_dot(v, na), -_dot(v, nb)) / length
            crease = ok & (front > _FRONT_MIN) & (_dot(na, nb) < cos_t)
            _mark_span(out, crease, axis, s)
    return out


def jump_boundaries(depth: np.ndarray, jump_rel: float) -> np.ndarray:
    """(H, W) bool: pixels next to a plain depth step ``|d_i - d_j| > jump_rel * min``
    (without intrinsics; slanted surfaces need a larger ``jump_rel`` than with them)."""
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    out = np.zeros(d.shape, bool)
    for axis in (0, 1):
        a, b = _pairs(d.shape, axis, 1)
        edge = (valid[a] & valid[b]
                & (np.abs(d[a] - d[b]) > jump_rel * np.minimum(d[a], d[b])))
        _mark_span(out, edge, axis, 1)
    return out


# --------------------------------------------------------------------------- planes


@dataclass
class Plane:
    """A plane ``n . p + d = 0`` in the camera frame, the camera on its positive side.

    Attributes:
        normal: (3,) unit normal pointing towards the camera's side.
        offset: d > 0 (the camera's distance to the plane).
        inliers: (H, W) bool pixels on the plane (distance and normal agree).
    """

    normal: np.ndarray
    offset: float
    inliers: np.ndarray

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance of (..., 3) points to the plane, positive on the camera's side."""
        n = self.normal
        return points[..., 0] * n[0] + points[..., 1] * n[1] + points[..., 2] * n[2] + self.offset


class PlaneOutline:
    """Where a plane's own points lie, seen along its normal: the box of their feet in the
    plane, along their principal axes, from their 1st to 99th percentile (a few stray
    inliers do not widen it), widened by a twentieth of its size on each side (a plane's
    edge pixels are often boundary pixels, not inliers, so a leg under a table's edge
    would otherwise fall just outside).

    Args:
        plane: the plane; points: (N, 3) its inlier points (fewer than 3: an empty outline).
    """

    def __init__(self, plane: Plane, points: np.ndarray):
        n = plane.normal
        # any two axes in the plane, then the principal ones of the plane's points
        a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
        a /= np.linalg.norm(a)
        self.axes = np.stack([a, np.cross(n, a)], 1)        # (3, 2)
        self.empty = len(points) < 3
        if self.empty:
            return
        uv = points @ self.axes
        self.center = uv.mean(0)
        _, _, vt = np.linalg.svd(uv - self.center, full_matrices=False)
        self.rotation = vt.T
        own = (uv - self.center) @ self.rotation
        lo, hi = np.percentile(own, 1, axis=0), np.percentile(own, 99, axis=0)
        pad = (hi - lo) / 20.0
        self.lo, self.hi = lo - pad, hi + pad

    def share_inside(self, points: np.ndarray) -> float:
        """The share of (M, 3) ``points`` whose foot on the plane lies inside the outline
        (0 for none, or an empty outline)."""
        if self.empty or not len(points):
            return 0.0
        q = (points @ self.axes - self.center) @ self.rotation
        return float(np.all((q >= self.lo) & (q <= self.hi), axis=1).mean())


def _plane_inliers(points: np.ndarray, normals: np.ndarray, n: np.ndarray, d: float,
                   dist_rel: float, cos_a: float) -> np.ndarray:
    """(N,) bool: points within ``dist_rel * depth`` of the plane, normals within angle."""
    dist = np.abs(points[:, 0] * n[0] + points[:, 1] * n[1] + points[:, 2] * n[2] + d)
    cos = normals[:, 0] * n[0] + normals[:, 1] * n[1] + normals[:, 2] * n[2]
    return (dist < dist_rel * points[:, 2]) & (np.abs(cos) > cos_a)


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane (unit normal, offset) of (N, 3) points, camera on + side."""
    c = points.mean(0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    n = vt[-1]
    d = -float(n @ c)
    if d < 0:
        n, d = -n, -d
    return n, d


def detect_planes(points: np.ndarray, normals: np.ndarray, candidates: np.ndarray, *,
                  min_inliers: int, dist_rel: float = 0.01, angle_deg: float = 15.0,
                  max_planes: int = 6, hypotheses: int = 64, max_samples: int = 4096,
                  min_piece: int = 1, seed: int = 0) -> list[Plane]:
    """Large planes by one-point RANSAC on the normals, largest first.

    Each hypothesis is the tangent plane of a random candidate pixel (its point and
    normal); it is scored on at most ``max_samples`` candidates, the best is refitted by
    least squares on its inliers (twice), and accepted when at least ``min_inliers``
    not-yet-claimed candidates agree (distance under ``dist_rel * depth`` and normal within
    ``angle_deg``). Inlier pieces (4-connected) under ``min_piece`` pixels are released:
    a curved object touching the plane keeps its pixels. Deterministic for a ``seed``.

    Args:
        points, normals: (H, W, 3) from :func:`point_map` and :func:`surface_normals`.
        candidates: (H, W) bool pixels that may belong to a plane (valid, with a normal,
            off any boundary).

    Returns:
        Planes in the order found; their ``inliers`` do not overlap.
    """
    rng = np.random.default_rng(seed)
    cos_a = float(np.cos(np.deg2rad(angle_deg)))
    free = candidates.copy()
    planes: list[Plane] = []
    for _ in range(max_planes):
        idx = np.flatnonzero(free.ravel())
        if len(idx) < max(min_inliers, 3):
            break
        sample = idx if len(idx) <= max_samples else rng.choice(idx, max_samples, replace=False)
        P = points.reshape(-1, 3)[sample]
        N = normals.reshape(-1, 3)[sample]
        picks = rng.choice(len(sample), min(hypotheses, len(sample)), replace=False)
        hn = N[picks]                                   # (Hy, 3)
        hd = -(hn * P[picks]).sum(1)                    # (Hy,)
        # (S, Hy) products without BLAS (its threads cost more than they save here).
        dist = np.abs(np.einsum("sk,hk->sh", P, hn) + hd)
        agree = (dist < dist_rel * P[:, 2:3]) & (np.abs(np.einsum("sk,hk->sh", N, hn)) > cos_a)
        best = int(np.argmax(agree.sum(0)))
        if agree[:, best].sum() * len(idx) / len(sample) < min_inliers:
            break
        n, d = hn[best], float(hd[best])
        Pf, Nf = points.reshape(-1, 3)[idx], normals.reshape(-1, 3)[idx]
        inl = _plane_inliers(Pf, Nf, n, d, dist_rel, cos_a)
        for _refit in range(2):
            if inl.sum() < 3:
                break
            n, d = _fit_plane(Pf[inl])
            inl = _plane_inliers(Pf, Nf, n, d, dist_rel, cos_a)
        mask = np.zeros(free.size, bool)
        mask[idx[inl]] = True
        mask = mask.reshape(free.shape)
        if min_piece > 1:
            pieces, _ = ndimage.label(mask, _CROSS)
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            mask = sizes[pieces] >= min_piece
        if mask.sum() < min_inliers:
            # The best plane left is too small (or scattered): no larger one follows.
            break
        if d < 0:
            n, d = -n, -d
        planes.append(Plane(np.asarray(n, np.float64), float(d), mask))
        free &= ~mask
    return planes


# --------------------------------------------------------------------------- regions


def split_regions(regions: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Connected pieces (4-connectivity) of each region's pixels where ``keep`` is True.

    Args:
        regions: (H, W) non-negative int region ids (0 = none, never kept).
        keep: (H, W) bool.

    Returns:
        (H, W) int64 piece ids 1..N (0 elsewhere); pieces never span two regions.
    """
    h, w = regions.shape
    node = keep & (regions > 0)
    idx = np.arange(h * w).reshape(h, w)
    rows, cols = [], []
    for axis in (0, 1):
        a, b = _pairs(regions.shape, axis, 1)
        link = node[a] & node[b] & (regions[a] == regions[b])
        rows.append(idx[a][link])
        cols.append(idx[b][link])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(h * w, h * w))
    _, comp = connected_components(graph, directed=False)
    comp = comp.reshape(h, w)
    out = np.zeros((h, w), np.int64)
    if node.any():
        _, inv = np.unique(comp[node], return_inverse=True)
        out[node] = inv.reshape(-1) + 1
    return out


def grow_labels(labels: np.ndarray, depth: np.ndarray, fill: np.ndarray, *,
                max_rel: float | None = None, groups: np.ndarray | None = None,
                points: np.ndarray | None = None, normals: np.ndarray | None = None,
                max_iter: int = 64) -> np.ndarray:
    """Give unlabelled pixels of ``fill`` the label of the 4-neighbour closest in depth.

    Grows one pixel layer per iteration, so a pixel between two segments joins the one on
    its own surface. With ``points`` and ``normals`` "closest" is the distance to the
    neighbour's tangent plane (a pixel at a crease joins the surface it lies on, though
    both sides have the same depth there), else the depth difference. A neighbour is a
    candidate only if that distance is within ``max_rel * depth`` (when given; pixels
    without depth take any neighbour) and, with ``groups``, if both pixels are in the same
    group (e.g. the same input mask).

    Args:
        labels: (H, W) int labels, 0 = unlabelled (not modified).
        depth: (H, W) depth (<= 0 = none).
        fill: (H, W) bool pixels that may be labelled.
        points, normals: (H, W, 3) from :func:`point_map` / :func:`surface_normals`
            (zero normals: the depth difference is used for that neighbour).

    Returns:
        (H, W) labels (a copy).
    """
    shape = labels.shape
    h, w = shape
    lab = np.array(labels, copy=True).reshape(-1)
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64).reshape(-1)
    grp = None if groups is None else np.asarray(groups).reshape(-1)
    geo = points is not None and normals is not None
    if geo:
        P, N = points.reshape(-1, 3), normals.reshape(-1, 3)
        n_ok = np.any(N != 0, axis=1)
    todo = np.flatnonzero(np.asarray(fill).reshape(-1) & (lab == 0))
    for _ in range(max_iter):
        if not len(todo):
            break
        r, c = np.divmod(todo, w)
        dt = d[todo]
        best = np.full(len(todo), np.inf)
        best_lab = np.zeros(len(todo), lab.dtype)
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            inside = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w)
            nb = np.where(inside, todo + dr * w + dc, todo)
            nl = np.where(inside, lab[nb], 0)
            nd = d[nb]
            both = (dt > 0) & (nd > 0)
            diff = np.abs(nd - dt)
            if geo:
                plane = np.abs(_dot(P[todo] - P[nb], N[nb]))
                diff = np.where(n_ok[nb], plane, diff)
            diff = np.where(both, diff, 0.0)
            cand = nl > 0
            if max_rel is not None:
                cand &= ~both | (diff <= max_rel * np.minimum(dt, nd))
            if grp is not None:
                cand &= grp[nb] == grp[todo]
            better = cand & (diff < best)
            best[better] = diff[better]
            best_lab[better] = nl[better]
        take = best_lab > 0
        if not take.any():
            break
        lab[todo[take]] = best_lab[take]
        todo = todo[~take]
    return lab.reshape(shape)


def _boundaries_for_refinement(depth: np.ndarray, K: np.ndarray | None, jump_rel: float,
                               creases: bool, concave_angle_deg: float, normal_step: int
                               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(boundary pixels, crease pixels, grow_labels' geometry) for refine_with_ids."""
    if K is None:
        return jump_boundaries(depth, jump_rel), np.zeros(depth.shape, bool), {}
    pts, valid = point_map(depth, K)
    normals, ok = surface_normals(pts, valid, normal_step)
    geometry = {"points": pts, "normals": normals}
    jumps = geometric_boundaries(pts, normals, valid, ok, jump_rel=jump_rel, concave=False)
    if not creases:
        return jumps, np.zeros(depth.shape, bool), geometry
    both = geometric_boundaries(pts, normals, valid, ok, jump_rel=jump_rel,
                                concave_angle_deg=concave_angle_deg, concave=True)
    return both, both & ~jumps, geometry


def refine_with_ids(labels: np.ndarray, depth: np.ndarray, K: np.ndarray | None = None,
                    jump_rel: float = 0.03, *, min_area: int = 1, creases: bool = False,
                    concave_angle_deg: float = 75.0, normal_step: int = 1,
                    split_fraction: float = 0.35, bleed_share: float = 0.25
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_masks` that also returns which input mask each output mask came from.

    Returns:
        (H, W) int32 labels with compact ids 1..M and (M,) int64 ``parent`` where
        ``parent[i]`` is the input id of output mask ``i + 1``.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    depth = np.asarray(depth, np.float64)
    if labels.shape != depth.shape:
        raise ValueError(f"labels {labels.shape} and depth {depth.shape} differ in shape")
    d = np.where(np.isfinite(depth), depth, 0.0)
    valid = d > 0
    n_masks = int(labels.max(initial=0))
    edge, crease, geometry = _boundaries_for_refinement(d, K, jump_rel, creases,
                                                        concave_angle_deg, normal_step)
    # 1. Pieces of each mask off the boundaries; the mask's boundary pixels go back to the
    #    piece of the same mask on their own surface; pixels without depth follow along.
    parts = split_regions(labels, valid & ~edge)
    parts = grow_labels(parts, d, (labels > 0) & valid, max_rel=jump_rel, groups=labels,
                        **geometry)
    parts = grow_labels(parts, d, (labels > 0) & ~valid, groups=labels)
    n = int(parts.max(initial=0))
    if n == 0:
        out, old = postprocess_ids(labels)
        return out, old
    parent = np.zeros(n + 1, np.int64)
    parent[parts.ravel()] = labels.ravel()          # each piece lies inside one mask
    parent[0] = 0
    size = np.bincount(parts.ravel(), minlength=n + 1)
    size[0] = 0
    # The mask's own connected pieces (before any cut): only pieces a boundary separated
    # from the rest of their piece are candidates to leave their mask.
    whole = split_regions(labels, labels > 0)
    comp = np.zeros(n + 1, np.int64)
    comp[parts.ravel()] = whole.ravel()
    comp[0] = 0
    comp_size = np.bincount(comp, weights=size, minlength=int(whole.max()) + 1)
    main = np.zeros(len(comp_size), np.int64)       # largest piece of each component
    order = np.lexsort((-size[1:], comp[1:])) + 1
    first = np.ones(len(order), bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    main[comp[order][first]] = order[first]
    is_main = np.zeros(n + 1, bool)
    is_main[main[main > 0]] = True
    # 2. Contacts between pieces: "smooth" where there is neither a depth step nor a
    #    crease between the two pixels.
    a, b = neighbour_pairs(parts)
    da, db = neighbour_pairs(d)
    ca, cb = neighbour_pairs(crease)
    differ = a != b
    outline = (np.bincount(a[differ], minlength=n + 1)
               + np.bincount(b[differ], minlength=n + 1))
    touch = differ & (a > 0) & (b > 0)
    smooth_px = ((da > 0) & (db > 0) & (np.abs(da - db) <= jump_rel * np.minimum(da, db))
                 & ~(ca & cb))
    # A piece leaves its mask only if a real cut separates it from the rest of its mask
    # (not, e.g., a floor mask's two sides joined by a thin strip next to a table edge).
    same = touch & (parent[a] == parent[b])
    same_all = (np.bincount(a[same], minlength=n + 1) + np.bincount(b[same], minlength=n + 1))
    same_smooth = (np.bincount(a[same & smooth_px], minlength=n + 1)
                   + np.bincount(b[same & smooth_px], minlength=n + 1))
    really_cut = (same_all == 0) | (2 * same_smooth < same_all)
    smooth = touch & (parent[a] != parent[b]) & smooth_px
    src = np.concatenate([a[smooth], b[smooth]])
    dst = np.concatenate([b[smooth], a[smooth]])
    best_dst = np.zeros(n + 1, np.int64)
    best_cnt = np.zeros(n + 1, np.int64)
    if len(src):
        key, cnt = np.unique(src * (n + 1) + dst, return_counts=True)
        k_src, k_dst = key // (n + 1), key % (n + 1)
        o = np.lexsort((-cnt, k_src))
        f = np.ones(len(o), bool)
        f[1:] = k_src[o][1:] != k_src[o][:-1]
        best_dst[k_src[o][f]], best_cnt[k_src[o][f]] = k_dst[o][f], cnt[o][f]
    # 3. Decide per piece: its mask's id (main pieces, pieces no boundary cut off, and
    #    cut-off pieces that are neither large nor on another mask's surface - a table's
    #    legs, a mug's handle), an id of its own (a large cut-off piece: a second object),
    #    or the mask whose surface it continues (a bleed: mostly smooth contact with it).
    ids = np.arange(n + 1)
    cut = (ids > 0) & ~is_main & (comp_size[comp] > size) & really_cut
    own = cut & (size >= max(int(min_area), 1)) & (size >= split_fraction * comp_size[comp])
    bleed = cut & ~own & (best_dst > 0) & (best_cnt >= bleed_share * np.maximum(outline, 1))
    key = parent.copy()                              # output keys: masks 1..L, pieces L+p
    key[own] = n_masks + ids[own]
    target = best_dst[bleed]
    # A bleed goes to the key of the piece it continues (that piece's mask when the
    # piece is itself a bleed: no chains).
    key[bleed] = np.where(bleed[target], parent[target], key[target])
    out = key[parts]
    out[parts == 0] = labels[parts == 0]            # pixels no piece could take stay
    return postprocess_ids(out, n_masks, parent)


def postprocess_ids(keys: np.ndarray, n_masks: int | None = None,
                    piece_parent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Compact output keys (masks 1..n_masks, cut-off pieces n_masks + piece) into ids
    1..M ordered by input mask, larger first; returns labels and each id's input mask."""
    keys = np.asarray(keys, np.int64)
    uniq, inv, cnt = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    if n_masks is None:
        par = uniq.copy()
    else:
        par = np.where(uniq <= n_masks, uniq, piece_parent[np.maximum(uniq - n_masks, 0)])
    keep = uniq > 0
    order = np.lexsort((-cnt[keep], par[keep]))
    new = np.zeros(len(uniq), np.int32)
    new[np.flatnonzero(keep)[order]] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return new[inv].reshape(keys.shape), par[keep][order]


def refine_masks(labels: np.ndarray, depth: np.ndarray, K: np.ndarray | None = None,
                 jump_rel: float = 0.03, *, min_area: int = 1, creases: bool = False,
                 concave_angle_deg: float = 75.0, normal_step: int = 1,
                 split_fraction: float = 0.35, bleed_share: float = 0.25) -> np.ndarray:
    """Cut masks across depth discontinuities (and, optionally, concave creases).

    Masks of image-only segmenters (FastSAM, SAM) bleed over object boundaries onto the
    surface behind, or join two objects at different depths. Each mask is cut into pieces
    along boundary pixels (:func:`geometric_boundaries` with ``K``; plain relative depth
    steps, :func:`jump_boundaries`, without); boundary pixels go back to the piece of their
    mask closest in depth. Then, of the pieces a boundary cut off from the largest piece
    of their (connected) mask:

    * a piece of at least ``split_fraction`` of it (and ``min_area`` pixels) becomes a
      mask of its own (a second object);
    * a smaller piece that continues another mask's surface (at least ``bleed_share`` of
      its outline in contact with that mask without a depth step) goes to that mask (the
      surface the mask bled onto);
    * any other piece stays (a table's legs, a mug's handle: parts of one object that
      depth separates in the image).

    A mask on one surface comes out unchanged; pixels without depth stay with their mask.

    Args:
        labels: (H, W) non-negative int non-overlapping masks, 0 = none.
        depth: (H, W) metric depth, <= 0 = none.
        K: (3, 3) intrinsics, or None (plain depth steps only).
        jump_rel: depth discontinuity threshold relative to the depth (with ``K``: a
            neighbour's distance to the tangent plane).
        min_area: smallest piece that becomes a mask of its own, in pixels.
        creases: with ``K``, also cut along concave creases (a mask spilling from an
            object onto the surface it stands on).
        concave_angle_deg, normal_step: the crease test's angle and the normals' step.
        split_fraction, bleed_share: see above.

    Returns:
        (H, W) int32 labels with compact ids 1..M (the pieces of one input mask are
        consecutive, larger first, in the input masks' order).
    """
    return refine_with_ids(labels, depth, K, jump_rel, min_area=min_area, creases=creases,
                           concave_angle_deg=concave_angle_deg, normal_step=normal_step,
                           split_fraction=split_fraction, bleed_share=bleed_share)[0]
