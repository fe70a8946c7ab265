"""Per-view image measures the association reads: which mask owns which reference id,
where labels meet and whether that boundary is a depth edge, mask interiors, pixel
footprints, which points a view's depth sees through. Pure functions of (H, W) images."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from panoptic_mapping.core.geometry import project_points

__all__ = ["owners", "boundaries", "boundary_shares", "interior", "pixel_footprint",
           "seen_through", "depth_verdicts"]


def owners(pm: np.ndarray, pi: np.ndarray, o: np.ndarray, r_vis: np.ndarray,
           least: np.ndarray | int, share: float) -> dict[int, int]:
    """id -> the mask covering at least ``share`` of its visible pixels, largest overlap
    first (at most one owner per id).

    Args:
        pm, pi, o: (K,) mask, reference id and pixel overlap of each (mask, id) pair.
        r_vis: (n_ids,) visible pixels per reference id.
        least: (K,) or one number: overlaps smaller than this are ignored.
    """
    owner: dict[int, int] = {}
    ok = (o >= least) & (o >= share * r_vis[pi])
    for m, i, c in sorted(zip(pm[ok], pi[ok], o[ok]), key=lambda t: -t[2]):
        owner.setdefault(int(i), int(m))
    return owner


def pixel_footprint(depth: np.ndarray, K: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """(N,) size [m] of the pixels ``flat`` (indices into the (H, W) depth) on the surface."""
    return depth.reshape(-1)[flat] / float(min(K[0, 0], K[1, 1]))


def interior(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose four neighbours carry the same label (image edges count)."""
    inner = np.ones(labels.shape, dtype=bool)
    same_h = labels[:, 1:] == labels[:, :-1]
    same_v = labels[1:] == labels[:-1]
    inner[:, 1:] &= same_h
    inner[:, :-1] &= same_h
    inner[1:] &= same_v
    inner[:-1] &= same_v
    return inner


def _across_pixel_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values on the two sides of every horizontal and vertical pixel edge of an
    (H, W) image: two flat arrays of equal length."""
    return (np.concatenate([image[:, :-1].ravel(), image[:-1, :].ravel()]),
            np.concatenate([image[:, 1:].ravel(), image[1:, :].ravel()]))


def _edge_ends(ids: np.ndarray, a: np.ndarray, b: np.ndarray, reach: int,
               edges: np.ndarray) -> np.ndarray:
    """For pixel edges ``edges`` (E,) (indices in :func:`_across_pixel_edges` order, whose
    two sides carry the labels ``a``, ``b`` (E,)): whether a third label lies within
    ``reach`` pixels along the edge, beside either of its two pixels (the edge is an end
    of the boundary between its two labels, where a third region meets them). Looked at
    only on the edges asked for: a frame's boundaries are a few hundredths of its edges.

    The silhouette of the two regions is a depth edge, marked ``reach`` pixels wide: on a
    boundary a few pixels long (small objects at 160x120) its ends alone would otherwise
    make a cut across one object look like a depth edge between two.
    """
    h, w = ids.shape
    n_h = h * (w - 1)
    across = edges < n_h  # edges between columns (the pixels left and right of them)
    e = np.where(across, edges, edges - n_h)
    row = np.where(across, e // max(w - 1, 1), e // w)
    col = np.where(across, e % max(w - 1, 1), e % w)
    # (2 sides, 2 reach offsets, E): the pixel on either side of the edge, and its
    # neighbours above and below an edge between columns, left and right otherwise
    side = np.array([0, 1])[:, None, None]
    d = np.array([k for r in range(1, reach + 1) for k in (-r, r)])[None, :, None]
    r = np.where(across, row + d, row + side)
    c = np.where(across, col + side, col + d)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    v = ids[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
    return (inside & (v != a) & (v != b)).any(axis=(0, 1))


def boundary_shares(ids: np.ndarray, edge_maps: Sequence[np.ndarray | None],
                    end_px: int = 2) -> dict[tuple[int, int], tuple[int, list[float]]]:
    """Touching non-zero ids: (i, j) with i < j -> (number of pixel edges they share,
    per map of ``edge_maps`` the share of those touching one of its pixels ((H, W) bool;
    1.0 for a None map)). One pass over the boundaries serves every map.

    The share is taken along the boundary's inner part, more than ``end_px`` pixels from
    where a third region meets it (:func:`_edge_ends`), when it has one (0: the whole
    boundary)."""
    a, b = (x.astype(np.int64) for x in _across_pixel_edges(ids))
    sel = (a != b) & (a > 0) & (b > 0)
    if not sel.any():
        return {}
    lo, hi = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
    base = int(hi.max()) + 1
    keys, inverse, counts = np.unique(lo * base + hi, return_inverse=True,
                                      return_counts=True)
    inner = n_inner = None
    shares = []
    for edges in edge_maps:
        if edges is None:
            shares.append(np.ones(keys.size))
            continue
        if inner is None:
            at = np.flatnonzero(sel)
            inner = (~_edge_ends(ids, a[at], b[at], end_px, at) if end_px > 0
                     else np.ones(at.size, dtype=bool))
            n_inner = np.bincount(inverse, weights=inner, minlength=keys.size)
        on_edge = np.logical_or(*_across_pixel_edges(edges))[sel]
        share_inner = np.bincount(inverse, weights=on_edge & inner,
                                  minlength=keys.size) / np.maximum(n_inner, 1)
        shares.append(np.where(n_inner > 0, share_inner,
                               np.bincount(inverse, weights=on_edge) / counts))
    return {(int(k // base), int(k % base)): (int(c), [float(x[n]) for x in shares])
            for n, (k, c) in enumerate(zip(keys, counts))}


def boundaries(ids: np.ndarray, edges: np.ndarray | None = None, end_px: int = 2
               ) -> dict[tuple[int, int], tuple[int, float]]:
    """Touching non-zero ids: (i, j) with i < j -> (number of pixel edges they share,
    share of those touching a pixel of ``edges``): :func:`boundary_shares` of one map."""
    return {k: (c, e[0]) for k, (c, e) in boundary_shares(ids, [edges], end_px).items()}


def boundary_between(part: np.ndarray, rest: np.ndarray, edges: np.ndarray | None,
                     end_px: int = 2) -> tuple[int, float]:
    """(pixel edges shared, share of them on a depth edge) between two disjoint (H, W)
    bool regions; (0, 1.0) where they do not touch.

    Computed in the window of the two regions, widened by ``end_px`` + 1 pixels so that
    every pixel the test for a boundary's ends looks at is inside it or off the image, as
    in the whole image (the association asks this once per divided mask)."""
    rows = np.flatnonzero((part | rest).any(1))
    if rows.size == 0:
        return 0, 1.0
    cols = np.flatnonzero((part | rest).any(0))
    h, w = part.shape
    margin = max(end_px, 0) + 1
    win = (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
           slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)))
    two = np.where(part[win], 2, np.where(rest[win], 1, 0))
    return boundaries(two, None if edges is None else edges[win], end_px).get((1, 2), (0, 1.0))


def seen_through(points: np.ndarray, depth: np.ndarray, K: np.ndarray,
                 camera_to_world: np.ndarray, tol_rel: float, margin_m: float) -> np.ndarray:
    """(N,) bool: points in the free space a view's depth observed.

    A point is seen through when it projects onto a pixel whose 3x3 neighbourhood has depth
    everywhere, the nearest of it d, and lies nearer than ``d * (1 - tol_rel) - margin_m``:
    the camera saw a surface behind it along that ray and the rays beside it.

    Args:
        points: (N, 3) world points. depth: (H, W) depth, 0 = none.
        K: (3, 3). camera_to_world: (4, 4).
    """
    return depth_verdicts(points, depth, K, camera_to_world, tol_rel, margin_m)[0]


def depth_verdicts(points: np.ndarray, depth: np.ndarray, K: np.ndarray,
                   camera_to_world: np.ndarray, tol_rel: float, margin_m: float,
                   surface_tol_rel: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What a view's depth says of world points: (through, on_surface), (N,) bool each.

    ``through``: see :func:`seen_through`. ``on_surface``: the point projects onto a pixel
    with depth d0 and lies within ``d0 * surface_tol_rel + margin_m`` of it (default
    ``tol_rel``). A point neither is unseen by the view (outside it, no depth there,
    behind the measured surface, or too near it to tell).

    Args:
        points: (N, 3) world points. depth: (H, W) depth, 0 = none.
        K: (3, 3). camera_to_world: (4, 4).
    """
    h, w = depth.shape
    u, v, z, front = project_points(points, K, camera_to_world)
    inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    # the nearest depth around the pixel (unknown counts as 0): a point beside an outline,
    # a pixel off, is not seen through
    known = np.where(depth > 0, depth, 0.0)
    padded = np.pad(known, 1)
    nearest = np.min([padded[1 + dv:1 + dv + h, 1 + du:1 + du + w]
                      for dv in (-1, 0, 1) for du in (-1, 0, 1)], axis=0)
    d = np.zeros(points.shape[0])
    d0 = np.zeros(points.shape[0])
    d[inside] = nearest[v[inside], u[inside]]
    d0[inside] = known[v[inside], u[inside]]
    through = inside & (d > 0) & (z < d * (1.0 - tol_rel) - margin_m)
    surface_tol_rel = tol_rel if surface_tol_rel is None else surface_tol_rel
    on_surface = inside & (d0 > 0) & (np.abs(z - d0) <= d0 * surface_tol_rel + margin_m)
    return through, on_surface
