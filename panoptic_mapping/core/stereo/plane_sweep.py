"""Multi-view plane-sweep stereo and a multi-view consistency filter.

The first step from "posed RGB in" to "a usable map out": each reference frame gets a
depth map and a per-pixel confidence from a few nearby posed frames, so the depth-based
mapper can run on RGB-only input with the unreliable pixels left out.

Conventions: poses are (4, 4) camera_to_world, OpenCV camera axes (x right, y down,
z forward); pixel centres at integer (u, v); depth is along the optical axis, 0 = none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_mapping.core.device import numpy_tensor
from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.params import param

__all__ = ["StereoConfig", "SweepResult", "plane_sweep", "plane_sweep_depth",
           "consistency_filter", "photometric_residual"]

# Cost of a plane no source sees: above the worst ZNCC cost (2), so it never wins.
_NO_SOURCE_COST = 3.0
# Projections closer than this to a source's image plane are treated as behind it.
_MIN_SOURCE_Z = 1e-6


@dataclass
class StereoConfig:
    """Multi-view plane-sweep stereo and its consistency filter."""

    min_depth_m: float = param(0.2, "Nearest depth hypothesis [m].", minimum=0.01)
    max_depth_m: float = param(10.0, "Farthest depth hypothesis [m].", minimum=0.02)
    num_planes: int = param(64, "Fronto-parallel depth planes, uniform in inverse depth "
                            "(uniform in disparity, so near and far get the same pixel "
                            "resolution).", minimum=3, maximum=1024)
    patch_radius: int = param(2, "ZNCC window is (2r+1)^2 pixels.", minimum=1, maximum=7)
    max_sources: int = param(4, "Source views matched against each reference view.",
                             minimum=1, maximum=16)
    planes_per_chunk: int = param(8, "Planes warped at once (bounds memory to this many "
                                  "planes x sources x pixels).", minimum=1)
    min_texture_std: float = param(0.01, "Grey-level std (of [0, 1] intensities) below "
                                   "which a patch counts as textureless: added to both "
                                   "variances, so flat patches score ZNCC ~ 0 instead of "
                                   "amplifying noise.", minimum=0.0)
    margin_scale: float = param(0.3, "Cost margin (1 - ZNCC units) between the best and the "
                                "second-best local minimum at which the match counts as "
                                "unambiguous (confidence factor 1).", minimum=1e-6)
    min_confidence: float = param(0.3, "Pixels below this confidence are not used as depth.",
                                  minimum=0.0, maximum=1.0)
    consistency_rel_tol: float = param(0.02, "Two views agree on a point when their depths "
                                       "differ by at most this share of the depth.",
                                       minimum=0.0, maximum=1.0)
    consistency_min_views: int = param(1, "Other views that must agree with a reference "
                                       "depth for it to be kept.", minimum=1)
    max_pixel_residual: float = param(
        0.1, "Mean absolute RGB difference (of [0, 1] intensities) between a reference pixel "
        "and where its depth puts it in the sources, beyond which the depth is dropped: a "
        "window straddling an object's outline matches the nearer surface, so the "
        "background beside it gets the object's depth in every view alike (the multi-view "
        "check cannot catch it), but its own colour is not the object's.", minimum=0.0)
    mask_windows: bool = param(
        True, "Where the frame has segmenter masks, a pixel's ZNCC window holds only the "
        "pixels of its own mask: a window straddling an object's outline otherwise matches "
        "the object's texture and gives the flat surface beside it the object's depth "
        "(fattening, in every view alike); the flat pixels' own window has no texture, so "
        "they get no confidence instead.")
    min_window_pixels: int = param(
        6, "With mask windows, a pixel whose mask holds fewer pixels of its window than "
        "this gets no depth (too little to correlate).", minimum=2)
    complete_in_masks: bool = param(
        True, "Fill each segmenter mask's pixels without stereo depth from a robust plane "
        "fit (in inverse depth) to its confident pixels, when they agree with one plane "
        "(panoptic_mapping.core.stereo.completion).")
    completion_min_support: int = param(20, "Fewest confident pixels a mask needs to be "
                                        "filled.", minimum=3)
    completion_min_support_share: float = param(0.02, "And at least this share of the "
                                                "mask's pixels.", minimum=0.0, maximum=1.0)
    completion_tol_rel: float = param(0.05, "A confident pixel agrees with the mask's plane "
                                      "within this relative depth error.", minimum=1e-4)
    completion_min_inlier_share: float = param(0.7, "Share of the mask's confident pixels "
                                               "that must agree with its plane.",
                                               minimum=0.0, maximum=1.0)
    completion_max_error_share: float = param(
        0.5, "A mask's pixel is filled only where the plane fit's relative standard error "
        "there (the inliers' scatter through the fit's covariance) is at most this share of "
        "completion_tol_rel: pixels along one edge of a large mask leave its tilt free, "
        "and the fit far from them is a guess.", minimum=0.0)
    completion_borrow: bool = param(
        True, "With mask_windows, a mask whose own pixels give too little depth to fill it "
        "is fitted to the depth its pixels' whole windows found: their neighbours' texture, "
        "right along a crease where the mask meets them, the nearer occluder's along an "
        "outline (an outline moves with the surface in front). So borrowed depth nearer "
        "than the fit does not contradict it, and it is never kept by itself: only the "
        "accepted plane fills the mask.")
    completion_border_px: int = param(
        2, "Depth within this many pixels of another mask counts like borrowed depth in the "
        "mask's plane fit (nearer than the fit, it does not contradict it): a mask's edge "
        "is a pixel or two off, and a window there holds the neighbour's outline.",
        minimum=0, maximum=16)
    completion_borrowed_on_share: float = param(
        0.5, "A mask fitted to borrowed depth needs at least this share of it on the plane.",
        minimum=0.0, maximum=1.0)
    depth_range_ratio: float = param(
        4.0, "Streamed frames sweep from the scene depth (median of recent estimates) "
        "divided by this to it multiplied by this, within [min_depth_m, max_depth_m]: the "
        "planes are spent where the scene is (64 planes over 0.2-5 m left a surface at 4 m "
        "between planes 40 cm apart). 0 = always the whole range.", minimum=0.0)
    # Which views a streamed frame is matched against (panoptic_mapping.core.stereo.stream)
    enabled: bool = param(True, "Frames without depth get depth by plane-sweep stereo "
                          "against earlier posed frames (recent ones and keyframes); its "
                          "confident, multi-view consistent pixels are used as measured "
                          "depth (mask fusion, occupancy, the field's depth supervision).")
    history: int = param(12, "Recent frames kept as stereo sources (their images, poses and "
                         "confident depth), besides the keyframes.", minimum=1, maximum=64)
    min_sources: int = param(2, "Fewest usable source views for a frame to get stereo "
                             "depth; with fewer it stays RGB-only.", minimum=1, maximum=16)
    min_baseline_m: float = param(0.02, "A source closer than this to the reference camera "
                                  "gives too little parallax to match against [m].",
                                  minimum=0.0)
    target_disparity_px: float = param(
        20.0, "Preferred disparity of the scene depth between a reference and its sources, "
        "in pixels (focal length x baseline / scene depth, the scene depth the median of "
        "recent stereo depths): sources whose baseline gives the disparity nearest this are "
        "matched first. A match is good to about half a pixel after the sub-plane "
        "refinement; at 20 px that is a depth step of 2.5 %, about consistency_rel_tol (at "
        "10 px, 5 %: the whole tolerance of the masks' plane fits); a longer baseline brings "
        "occlusions and distortion. In pixels, not as a share of the depth, so a camera of "
        "any resolution gets the same depth precision: 20 px is a baseline of a fifth of the "
        "depth at 160x120 (fx 104), a twentieth at 640x480.",
        minimum=0.1)
    max_baseline_ratio: float = param(0.5, "Sources farther than this share of the scene "
                                      "depth are not used.", minimum=0.001)
    max_view_angle_deg: float = param(30.0, "Sources whose optical axis turns more than "
                                      "this from the reference's are not used [deg].",
                                      minimum=0.0, maximum=180.0)


def _grey(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 1, H, W) float32 in [0, 1]."""
    t = numpy_tensor(rgb, np.float32, device) / 255.0
    g = t[..., 0] * 0.299 + t[..., 1] * 0.587 + t[..., 2] * 0.114
    return g[None, None]


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window of (N, 1, H, W); at the border over the in-image part.

    The window's pixels are added as shifted copies of the zero-padded image, row by row
    in the order ``F.avg_pool2d`` adds them (so the same float sums: tested), which on the
    CPU runs ~4x faster than its per-pixel loop (the box filter was a third of a stereo
    frame's time)."""
    shifts = _window_shifts(F.pad(x, (r, r, r, r)), r)
    acc = shifts[0].clone()
    for s in shifts[1:]:
        acc += s
    h, w = x.shape[-2:]
    return acc / _window_counts(h, w, r, x.device)


def _all_in_window(mask: torch.Tensor, r: int) -> torch.Tensor:
    """(N, 1, H, W) bool: whether every in-image pixel of each pixel's (2r+1)^2 window is
    set in ``mask`` (N, 1, H, W) bool (a box mean of 1; a logical and of shifted copies
    costs a sixth of the mean)."""
    # off the image: no objection
    shifts = _window_shifts(F.pad(mask, (r, r, r, r), value=True), r)
    out = shifts[0].clone()
    for s in shifts[1:]:
        out &= s
    return out


def _window_shifts(padded: torch.Tensor, r: int) -> list[torch.Tensor]:
    """The (2r+1)^2 views (..., H, W) of an image padded by ``r`` on each side, shifted by
    every offset of the window, row by row (the order ``F.avg_pool2d`` adds them in)."""
    h, w = padded.shape[-2] - 2 * r, padded.shape[-1] - 2 * r
    k = 2 * r + 1
    return [padded[..., dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)]


@lru_cache(maxsize=16)
def _window_counts(h: int, w: int, r: int, device: torch.device) -> torch.Tensor:
    """(H, W) float32: how many pixels of each pixel's (2r+1)^2 window lie in the image
    (a few shapes per run: cached; read-only by use)."""
    rows = (torch.clamp(torch.arange(h) + r, max=h - 1)
            - torch.clamp(torch.arange(h) - r, min=0) + 1)
    cols = (torch.clamp(torch.arange(w) + r, max=w - 1)
            - torch.clamp(torch.arange(w) - r, min=0) + 1)
    return (rows[:, None] * cols[None, :]).float().to(device)


class _Window:
    """Means over each pixel's (2r+1)^2 window, plain or restricted to the pixel's segment.

    Restricted means are weighted sums over the window's offsets, the weight 1 where the
    offset pixel lies in the image and in the centre's segment (a centre of no segment,
    id 0, keeps its whole window).
    """

    def __init__(self, r: int, segments: torch.Tensor | None):
        """segments: (H, W) int64 ids, 0 = none; None: plain box windows."""
        self.r = r
        self.weights: list[tuple[int, int, torch.Tensor]] | None = None
        self.count: torch.Tensor | None = None
        if segments is None:
            return
        h, w = segments.shape
        padded = F.pad(segments[None, None], (r, r, r, r), value=-1)[0, 0]
        plain = segments == 0
        self.weights = []
        self.count = torch.zeros((h, w), device=segments.device)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                other = padded[dy:dy + h, dx:dx + w]
                wgt = ((other == segments) | (plain & (other >= 0))).float()
                self.weights.append((dy, dx, wgt))
                self.count += wgt

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 1, H, W) window means (over the in-image part at borders)."""
        if self.weights is None:
            return _box(x, self.r)
        h, w = x.shape[-2:]
        r = self.r
        padded = F.pad(x, (r, r, r, r))
        acc = torch.zeros_like(x)
        for dy, dx, wgt in self.weights:
            # weights are 0 or 1, so the product is exact and a fused multiply-add the
            # same sum as a multiply then an add (one pass over the chunk instead of two)
            acc.addcmul_(wgt, padded[..., dy:dy + h, dx:dx + w])
        return acc / self.count.clamp_min(1.0)


def _as_tensor(a, device: torch.device) -> torch.Tensor:
    return numpy_tensor(a, np.float64, device)


def _warp(src_grey: torch.Tensor, A: torch.Tensor, b: torch.Tensor,
          inv_depths: torch.Tensor, shape: tuple[int, int],
          src_seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One source warped into the reference on a chunk of planes.

    Args:
        src_grey: (1, 1, Hs, Ws) source intensities.
        src_seen: (1, 1, Hs, Ws) float32, 1 where the source camera saw the pixel (an
            undistorted image's canvas beyond its raw view is 0), or None (all).
        A: (3, H*W) and b: (3,): source pixel (homogeneous) of reference pixel p on the
            plane at depth d is d * A[:, p] + b (float64, so far planes stay exact).
        inv_depths: (C,) inverse depths of the chunk's planes.

    Returns:
        (C, 1, H, W) float32 warped intensities and (C, 1, H, W) bool: the point lands
        inside the source, in front of it.
    """
    h, w = shape
    hs, ws = src_grey.shape[-2:]
    depths = 1.0 / inv_depths
    p = depths[:, None, None] * A[None] + b[None, :, None]           # (C, 3, H*W)
    z = p[:, 2]
    zs = torch.where(z > _MIN_SOURCE_Z, z, torch.ones_like(z))
    u, v = p[:, 0] / zs, p[:, 1] / zs
    inside = (z > _MIN_SOURCE_Z) & (u >= 0) & (u <= ws - 1) & (v >= 0) & (v <= hs - 1)
    # align_corners=True maps -1/+1 to the centres of the outer pixels.
    gx = (2.0 * u / max(ws - 1, 1) - 1.0).float()
    gy = (2.0 * v / max(hs - 1, 1) - 1.0).float()
    gx = torch.where(inside, gx, torch.full_like(gx, -2.0))
    gy = torch.where(inside, gy, torch.full_like(gy, -2.0))
    c = inv_depths.shape[0]
    grid = torch.stack([gx, gy], dim=-1).reshape(1, c * h, w, 2)
    warped = F.grid_sample(src_grey, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True).reshape(c, 1, h, w)
    inside = inside.reshape(c, 1, h, w)
    if src_seen is not None:  # the canvas's unseen part is no texture, and fixed in the
        # image: matched, it would give every window along its edge the farthest plane
        seen = F.grid_sample(src_seen, grid, mode="nearest", padding_mode="zeros",
                             align_corners=True).reshape(c, 1, h, w)
        inside = inside & (seen > 0.5)
    return warped, inside


def _zncc_cost(warped: torch.Tensor, full: torch.Tensor, ref_stats, window: _Window,
               cfg: StereoConfig) -> torch.Tensor:
    """(C, H, W) float32 cost 1 - ZNCC in [0, 2] of a warped source over ``window``;
    +inf where ``full`` (C, 1, H, W) is False.

    Args:
        ref_stats: (mean, var, grey) of the reference over the same windows, (1, 1, H, W).
    """
    mean_r, var_r, ref = ref_stats
    # One pass over the windows for the three sums.
    c = warped.shape[0]
    sums = window.mean(torch.cat([warped, warped * warped, warped * ref]))
    mean_s, sq_s, cross = sums[:c], sums[c:2 * c], sums[2 * c:]
    var_s = (sq_s - mean_s * mean_s).clamp_min(0.0)
    cov = cross - mean_s * mean_r
    eps = cfg.min_texture_std ** 2
    zncc = cov / torch.sqrt((var_r + eps) * (var_s + eps))
    cost = (1.0 - zncc.clamp(-1.0, 1.0)).squeeze(1)
    return torch.where(full.squeeze(1), cost, torch.full_like(cost, math.inf))


def _robust_mean(costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the best half (rounded up) of the finite costs over sources.

    An occluder in one source makes that source's cost high at the true plane; taking the
    best half keeps the others' agreement.

    Args:
        costs: (S, C, H, W), +inf = source does not see the window.

    Returns:
        (C, H, W) aggregated cost (_NO_SOURCE_COST where no source sees it) and
        (C, H, W) int64 count of valid sources.
    """
    valid = torch.isfinite(costs)
    n = valid.sum(0)
    k = ((n + 1) // 2).clamp_min(1)
    if costs.shape[0] <= 4:
        # the best half of at most 4 is one or two costs: the two smallest by running
        # minima (exact), instead of a sort along the short source axis (~3x the time)
        first = torch.full_like(costs[0], math.inf)
        second = first.clone()
        for c in costs:
            second = torch.minimum(second, torch.maximum(first, c))
            first = torch.minimum(first, c)
        agg = torch.where(k > 1, first + second, first) / k
    else:
        srt = torch.sort(costs, dim=0).values
        csum = torch.cumsum(torch.where(torch.isfinite(srt), srt, torch.zeros_like(srt)),
                            dim=0)
        agg = csum.gather(0, (k - 1)[None]).squeeze(0) / k
    return torch.where(n > 0, agg, torch.full_like(agg, _NO_SOURCE_COST)), n


@dataclass
class SweepResult:
    """A plane sweep's answer for one reference view.

    Attributes:
        depth: (H, W) float32 [m], 0 where no source sees any plane.
        confidence: (H, W) float32 in [0, 1]: best ZNCC times how clearly the best minimum
            of the cost curve beats the second-best local minimum (textureless and
            repetitive regions have flat or multi-minimum curves and score low); 0 where
            no source sees the window. With segments, over each pixel's own segment.
        window_depth, window_confidence: with segments, the same over the whole windows
            (None without): where a pixel's own segment has no texture, what its
            neighbours' texture says; right across a crease (a wall meeting the floor),
            the nearer surface's depth across an outline.
    """

    depth: np.ndarray
    confidence: np.ndarray
    window_depth: np.ndarray | None = None
    window_confidence: np.ndarray | None = None


@torch.no_grad()
def plane_sweep(ref_rgb: np.ndarray, ref_K: np.ndarray, ref_T: np.ndarray,
                src: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                cfg: StereoConfig | None = None, device: str | torch.device = "cpu",
                segments: np.ndarray | None = None, ref_seen: np.ndarray | None = None,
                src_seen: Sequence[np.ndarray | None] | None = None) -> SweepResult:
    """Depth of a reference view by a plane sweep over posed source views.

    Each fronto-parallel plane of the reference camera warps every source into the
    reference; the ZNCC of (2r+1)^2 grey windows scores the plane per pixel and source,
    the best half of the sources that see a window are averaged, the best plane wins and
    a parabola through its cost and its neighbours' refines it in inverse depth.

    Args:
        ref_rgb: (H, W, 3) uint8. ref_K: (3, 3). ref_T: (4, 4) camera_to_world.
        src: up to ``cfg.max_sources`` are used (the first ones) of (rgb (Hs, Ws, 3) uint8,
            K (3, 3), T (4, 4) camera_to_world).
        cfg: stereo configuration (defaults if None).
        device: torch device for the sweep.
        segments: (H, W) int segment ids of the reference (0 = none) or None: with
            ``cfg.mask_windows``, a pixel's window is the part of it in its own segment
            (pixels of no segment keep the whole window), pixels with fewer than
            ``cfg.min_window_pixels`` there get confidence 0, and the whole windows' answer
            comes beside it (one warp serves both).
        ref_seen: (H, W) bool, the reference pixels its camera saw (an undistorted
            image's canvas reaches beyond its raw view), or None (all): a window with an
            unseen pixel gets confidence 0.
        src_seen: per source, the same (Hs, Ws) bool or None: a window that lands on a
            source's unseen pixels counts as not seen by that source.
    """
    cfg = cfg or StereoConfig()
    if not 0.0 < cfg.min_depth_m < cfg.max_depth_m:
        raise ValueError(f"stereo depth range [{cfg.min_depth_m}, {cfg.max_depth_m}] m is empty")
    dev = torch.device(device)
    h, w = ref_rgb.shape[:2]
    sources = list(src)[:cfg.max_sources]
    if not sources:
        zero = np.zeros((h, w), np.float32)
        return SweepResult(zero, zero.copy())
    r = cfg.patch_radius
    ref = _grey(ref_rgb, dev)
    windows = [_Window(r, None)]
    if segments is not None and cfg.mask_windows:
        if segments.shape != (h, w):
            raise ValueError(f"segments are {segments.shape[1]}x{segments.shape[0]}, the "
                             f"image {w}x{h}")
        seg = numpy_tensor(segments, np.int64, dev).clamp_min(0)
        windows.insert(0, _Window(r, seg))
    ref_stats = []
    for window in windows:
        mean_r = window.mean(ref)
        var_r = (window.mean(ref * ref) - mean_r * mean_r).clamp_min(0.0)
        ref_stats.append((mean_r, var_r, ref))

    # Reference rays with z = 1, so a point on plane d is d * ray.
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                          torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    Kr_inv = torch.linalg.inv(_as_tensor(ref_K, dev))
    rays = Kr_inv @ torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])
    Tr = _as_tensor(ref_T, dev)
    warps = []
    seen_of = list(src_seen or [])[:len(sources)]
    seen_of += [None] * (len(sources) - len(seen_of))
    for (rgb_s, K_s, T_s), seen_s in zip(sources, seen_of):
        Ks = _as_tensor(K_s, dev)
        rel = torch.linalg.inv(_as_tensor(T_s, dev)) @ Tr        # reference -> source camera
        seen_t = (None if seen_s is None
                  else numpy_tensor(seen_s, np.float32, dev)[None, None])
        warps.append((_grey(rgb_s, dev), Ks @ rel[:3, :3] @ rays, Ks @ rel[:3, 3], seen_t))

    inv = torch.linspace(1.0 / cfg.min_depth_m, 1.0 / cfg.max_depth_m, cfg.num_planes,
                         device=dev, dtype=torch.float64)
    volumes = [torch.empty((cfg.num_planes, h, w), dtype=torch.float32, device=dev)
               for _ in windows]
    seen = torch.zeros((cfg.num_planes, h, w), dtype=torch.bool, device=dev)
    for start in range(0, cfg.num_planes, cfg.planes_per_chunk):
        chunk = inv[start:start + cfg.planes_per_chunk]
        stop = start + chunk.shape[0]
        costs = [[] for _ in windows]
        for g, A, b, seen_t in warps:
            warped, inside = _warp(g, A, b, chunk, (h, w), seen_t)
            # A window is only comparable when all of it was seen by the source.
            full = _all_in_window(inside, r)
            for k, window in enumerate(windows):
                costs[k].append(_zncc_cost(warped, full, ref_stats[k], window, cfg))
        for k in range(len(windows)):
            agg, n = _robust_mean(torch.stack(costs[k]))
            volumes[k][start:stop] = agg
            if k == 0:
                seen[start:stop] = n > 0
        del costs

    answers = [_winner(volume, seen, inv, cfg) for volume in volumes]
    if ref_seen is not None:
        if ref_seen.shape != (h, w):
            raise ValueError(f"ref_seen is {ref_seen.shape[1]}x{ref_seen.shape[0]}, the "
                             f"image {w}x{h}")
        whole = _all_in_window(numpy_tensor(ref_seen, np.bool_, dev)[None, None], r)[0, 0]
        answers = [(d, torch.where(whole, c, torch.zeros_like(c))) for d, c in answers]
    depth, conf = answers[0]
    if windows[0].count is not None:
        conf = torch.where(windows[0].count >= cfg.min_window_pixels, conf,
                           torch.zeros_like(conf))
    out = [t.cpu().numpy().astype(np.float32) for t in (depth, conf)]
    if len(answers) == 1:
        return SweepResult(*out)
    return SweepResult(*out, *[t.cpu().numpy().astype(np.float32) for t in answers[1]])


def plane_sweep_depth(ref_rgb: np.ndarray, ref_K: np.ndarray, ref_T: np.ndarray,
                      src: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      cfg: StereoConfig | None = None, device: str | torch.device = "cpu",
                      segments: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(depth, confidence) of :func:`plane_sweep` (each (H, W) float32)."""
    result = plane_sweep(ref_rgb, ref_K, ref_T, src, cfg, device, segments)
    return result.depth, result.confidence


def _winner(volume: torch.Tensor, seen: torch.Tensor, inv: torch.Tensor, cfg: StereoConfig
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best plane per pixel of a (D, H, W) cost volume, refined; (depth, confidence)."""
    dev = volume.device
    best_cost, best = volume.min(0)
    # Sub-plane refinement: vertex of the parabola through the best plane and its two
    # neighbours (not at the ends of the range nor next to an unseen plane).
    d = cfg.num_planes
    lo = volume.gather(0, (best - 1).clamp_min(0)[None]).squeeze(0)
    hi = volume.gather(0, (best + 1).clamp_max(d - 1)[None]).squeeze(0)
    curv = lo - 2.0 * best_cost + hi
    ok = (best > 0) & (best < d - 1) & (lo < _NO_SOURCE_COST) & (hi < _NO_SOURCE_COST) \
        & (curv > 1e-9)
    offset = torch.where(ok, 0.5 * (lo - hi) / torch.where(ok, curv, torch.ones_like(curv)),
                         torch.zeros_like(curv)).clamp(-0.5, 0.5)
    step = (inv[-1] - inv[0]) / (d - 1)
    inv_best = inv[best] + offset.double() * step
    depth = (1.0 / inv_best).float()

    # Second-best local minimum of the cost curve (ends count when below their neighbour);
    # a wide basin around the best plane is one minimum, not a rival.
    left = torch.cat([volume[:1] + 1.0, volume[:-1]])
    right = torch.cat([volume[1:], volume[-1:] + 1.0])
    is_min = (volume < left) & (volume <= right)
    # Within two planes of the best, a minimum is a wiggle of the same basin.
    near = (torch.arange(d, device=dev)[:, None, None] - best[None]).abs() <= 2
    is_min &= ~near
    rival = torch.where(is_min, volume, torch.full_like(volume, math.inf)).min(0).values
    # No rival minimum: the curve's own range is the margin.
    rival = torch.where(torch.isfinite(rival), rival,
                        torch.where(seen, volume, torch.zeros_like(volume)).max(0).values)
    margin = (rival - best_cost).clamp_min(0.0)
    conf = (1.0 - best_cost).clamp(0.0, 1.0) * (margin / cfg.margin_scale).clamp(0.0, 1.0)
    any_seen = seen.gather(0, best[None]).squeeze(0)
    conf = torch.where(any_seen, conf, torch.zeros_like(conf))
    depth = torch.where(seen.any(0), depth, torch.zeros_like(depth))
    return depth, conf


def consistency_filter(depths: Sequence[np.ndarray], confidences: Sequence[np.ndarray],
                       Ks: Sequence[np.ndarray], Ts: Sequence[np.ndarray], ref_index: int,
                       cfg: StereoConfig | None = None) -> np.ndarray:
    """Confidence of the reference view with depths the other views do not confirm zeroed.

    A reference pixel (depth > 0, confidence >= ``cfg.min_confidence``) is projected into
    each other view; that view agrees when its own confident depth at the nearest pixel is
    within ``cfg.consistency_rel_tol`` (relative) of the projected point's depth. Pixels
    with fewer than ``cfg.consistency_min_views`` agreeing views get confidence 0: a wrong
    depth lands on a point no other view saw at that distance.

    Args:
        depths: N arrays (H_i, W_i) float, 0 = none. confidences: N arrays like depths.
        Ks: N (3, 3) intrinsics. Ts: N (4, 4) camera_to_world.
        ref_index: which view to filter.
        cfg: stereo configuration (defaults if None).

    Returns:
        (H, W) float32 confidence of the reference view.
    """
    cfg = cfg or StereoConfig()
    ref_d = np.asarray(depths[ref_index], np.float64)
    conf = np.asarray(confidences[ref_index], np.float32).copy()
    h, w = ref_d.shape
    use = np.where(conf >= cfg.min_confidence, ref_d, 0.0)
    pts, pix = backproject(use, np.asarray(Ks[ref_index]), np.asarray(Ts[ref_index]))
    agree = np.zeros(pix.shape[0], np.int64)
    for j in range(len(depths)):
        if j == ref_index:
            continue
        d_j = np.asarray(depths[j], np.float64)
        c_j = np.asarray(confidences[j])
        hj, wj = d_j.shape
        world_to_cam = np.linalg.inv(np.asarray(Ts[j], np.float64))
        cam = pts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        z = cam[:, 2]
        front = z > _MIN_SOURCE_Z
        zs = np.where(front, z, 1.0)
        uv = cam[:, :2] / zs[:, None] @ np.asarray(Ks[j], np.float64)[:2, :2].T \
            + np.asarray(Ks[j], np.float64)[:2, 2]
        ui, vi = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
        inside = front & (ui >= 0) & (ui < wj) & (vi >= 0) & (vi < hj)
        ui, vi = np.where(inside, ui, 0), np.where(inside, vi, 0)
        other = d_j[vi, ui]
        ok = inside & (other > 0) & (c_j[vi, ui] >= cfg.min_confidence) \
            & (np.abs(other - z) <= cfg.consistency_rel_tol * other)
        agree += ok
    keep = np.zeros(h * w, bool)
    keep[pix[agree >= cfg.consistency_min_views]] = True
    conf[~keep.reshape(h, w)] = 0.0
    return conf



def photometric_residual(ref_rgb: np.ndarray, ref_K: np.ndarray, ref_T: np.ndarray,
                         depth: np.ndarray,
                         src: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         device: str | torch.device = "cpu",
                         src_seen: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Per source, how far each reference pixel's colour is from where its depth puts it.

    Args:
        ref_rgb: (H, W, 3) uint8. ref_K: (3, 3). ref_T: (4, 4) camera_to_world.
        depth: (H, W) depth of the reference view, 0 = none.
        src: (rgb (Hs, Ws, 3) uint8, K (3, 3), T (4, 4) camera_to_world) per source.
        src_seen: per source, (Hs, Ws) bool of the pixels its camera saw, or None (all);
            a pixel landing on an unseen one is not compared (NaN).

    Returns:
        (S, H, W) float32 mean absolute RGB difference in [0, 1]; NaN where the pixel has
        no depth or lands outside the source (or behind it).
    """
    dev = torch.device(device)
    h, w = depth.shape
    ref = numpy_tensor(ref_rgb, np.float32, dev).permute(2, 0, 1) / 255.0
    d = _as_tensor(depth, dev).reshape(-1)
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                          torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    rays = torch.linalg.inv(_as_tensor(ref_K, dev)) @ torch.stack(
        [u.reshape(-1), v.reshape(-1), torch.ones(h * w, device=dev, dtype=torch.float64)])
    Tr = _as_tensor(ref_T, dev)
    out = torch.full((len(src), h, w), float("nan"), device=dev)
    seen_of = list(src_seen or [])
    for k, (rgb_s, K_s, T_s) in enumerate(src):
        hs, ws = rgb_s.shape[:2]
        rel = torch.linalg.inv(_as_tensor(T_s, dev)) @ Tr
        p = _as_tensor(K_s, dev) @ (rel[:3, :3] @ (rays * d) + rel[:3, 3:4])
        z = p[2]
        zs = torch.where(z > _MIN_SOURCE_Z, z, torch.ones_like(z))
        us, vs = p[0] / zs, p[1] / zs
        ok = (d > 0) & (z > _MIN_SOURCE_Z) & (us >= 0) & (us <= ws - 1) & (vs >= 0) \
            & (vs <= hs - 1)
        grid = torch.stack([(2.0 * us / max(ws - 1, 1) - 1.0), (2.0 * vs / max(hs - 1, 1) - 1.0)],
                           -1).float().reshape(1, h, w, 2)
        img = numpy_tensor(rgb_s, np.float32, dev).permute(2, 0, 1)
        warped = F.grid_sample(img[None] / 255.0, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=True)[0]
        diff = (warped - ref).abs().mean(0)
        if k < len(seen_of) and seen_of[k] is not None:
            seen = F.grid_sample(numpy_tensor(seen_of[k], np.float32, dev)[None, None],
                                 grid, mode="nearest", padding_mode="zeros",
                                 align_corners=True)[0, 0].reshape(-1)
            ok = ok & (seen > 0.5)
        out[k] = torch.where(ok.reshape(h, w), diff, torch.full_like(diff, float("nan")))
    return out.cpu().numpy().astype(np.float32)
