"""Where along camera rays the field is queried, so that empty space costs nothing.

Two pieces, none with hard-coded scene bounds (the scene's extent and its occupancy
live in :mod:`~panoptic_mapping.core.field.extent` and
:mod:`~panoptic_mapping.core.field.occupancy`):

* ray helpers (:func:`pixel_rays`, :func:`all_pixel_coords`): unit rays of pixels in the
  world frame and the factor converting distance along a ray into depth along the
  optical axis;
* stateless samplers returning intervals ``[t_starts, t_ends]`` along unit rays plus a
  validity mask: :func:`sample_depth_guided` (rays with a measured depth),
  :func:`sample_occupied` (RGB-only rays, occupied voxels only), :func:`sample_uniform`
  (the first RGB-only frames, before the grid has content) and the dispatcher
  :func:`sample_rays`.

Conventions
-----------
* Pixel coordinates are (u, v) = (column, row) with integer values at pixel centres (the
  convention of ``K`` in ROS ``camera_info`` and of :mod:`panoptic_mapping.bench.scenes`);
  flat pixel index = ``v * W + u``.
* ``t`` is metric distance along a *unit* ray from the camera centre; optical-axis depth
  is ``t * z_scale``.
* Sample interval ``i`` of a ray is ``[t_starts[:, i], t_ends[:, i]]``: the field is
  queried at its midpoint and ``t_ends - t_starts`` is its length in volume rendering.
  Intervals of a ray are sorted and never overlap. Invalid samples are zero-length
  intervals placed so that the order stays sorted; a renderer that forgets ``valid``
  therefore still gets opacity 0 from them (it only wastes the queries).

Everything takes and returns torch tensors and runs on the device of its inputs (CPU or
CUDA); numpy arrays are accepted wherever a tensor is and converted. Pure Python, numpy
and torch: no ROS (``test/test_layers.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import torch

from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.tensors import as_tensor, float_dtype
from panoptic_mapping.params import ConfigError, param

__all__ = [
    "SamplingConfig",
    "RaySamples",
    "pixel_rays",
    "all_pixel_coords",
    "sample_depth_guided",
    "sample_occupied",
    "sample_uniform",
    "sample_rays",
]

Range = Union[float, torch.Tensor]  # a scalar, or one value per ray (R,)


# --------------------------------------------------------------------------- config


@dataclass
class SamplingConfig:
    """Where along camera rays the neural field is queried."""

    occupancy_voxel_m: float = param(
        0.04, "Edge length, in metres, of the voxels of the sparse occupancy grid that "
        "decides where RGB-only rays are sampled.", minimum=0.001)
    occupancy_dilation: int = param(
        1, "Voxels marked around each voxel hit by a depth point (a cube of half-width "
        "this many voxels), a safety margin for pose and depth noise.", minimum=0, maximum=4)
    occupancy_alpha_threshold: float = param(
        0.01, "A voxel stays occupied when the field's opacity across one voxel at its "
        "centre, 1 - exp(-density * voxel), exceeds this (grid refresh from the field).",
        minimum=1e-6, maximum=0.99)
    near_m: float = param(
        0.05, "Distance, in metres along the ray, where sampling starts (closer is never "
        "queried).", minimum=0.0)
    far_m: float = param(
        8.0, "Longest distance, in metres along the ray, considered when a ray has no "
        "measured depth.", minimum=0.1)
    samples_per_ray_depth: int = param(
        12, "Samples per ray when the pixel has a measured depth (free-space samples "
        "included).", minimum=2)
    surface_band_m: float = param(
        0.04, "Half-width, in metres along the ray, of the band around the measured depth "
        "that receives the depth-guided samples not spent on free space.", minimum=0.001)
    free_space_samples: int = param(
        4, "Depth-guided samples placed between near_m and the surface band, to teach the "
        "field that space in front of a surface is empty.", minimum=0)
    free_space_occupied_samples: int = param(
        8, "On rays whose depth is an estimate (stereo, or the map's surfaces), the "
        "free-space samples are placed instead in the first occupied voxels in front of "
        "the surface band, up to this many: where a rendered view looks first and a floater "
        "would show (0: stratified as on rays with measured depth).", minimum=0)
    samples_per_ray_rgb: int = param(
        32, "Samples per ray without depth, placed in occupied voxels only (the first ones "
        "along the ray).", minimum=1)
    march_step_ratio: float = param(
        0.5, "Step between candidate positions of the occupancy ray march, as a fraction of "
        "occupancy_voxel_m.", minimum=0.05, maximum=1.0)
    max_march_steps: int = param(
        1024, "Most candidate positions per ray in the occupancy march (bounds the cost); "
        "longer rays march with a proportionally longer step, which may step over thin "
        "occupied stretches.", minimum=16)

    def __post_init__(self) -> None:
        # Cross-field rules that param() bounds cannot express.
        if self.free_space_samples >= self.samples_per_ray_depth:
            raise ConfigError(
                f"parameter 'free_space_samples' ({self.free_space_samples}) must be smaller "
                f"than 'samples_per_ray_depth' ({self.samples_per_ray_depth}): the surface "
                "band needs at least one sample")
        if self.near_m >= self.far_m:
            raise ConfigError(f"parameter 'near_m' ({self.near_m}) must be smaller than "
                              f"'far_m' ({self.far_m})")

    @property
    def density_threshold(self) -> float:
        """Density (1/m) matching ``occupancy_alpha_threshold`` over one voxel."""
        return -math.log1p(-self.occupancy_alpha_threshold) / self.occupancy_voxel_m

    @property
    def march_step_m(self) -> float:
        """Nominal step (m) of the occupancy ray march."""
        return self.occupancy_voxel_m * self.march_step_ratio


@dataclass
class RaySamples:
    """Intervals along R unit rays, S per ray (see the module docstring).

    Attributes:
        t_starts, t_ends: (R, S) distances along the unit rays, sorted per ray.
        valid: (R, S) bool; invalid entries are zero-length intervals.
    """

    t_starts: torch.Tensor
    t_ends: torch.Tensor
    valid: torch.Tensor

    def __iter__(self):
        # Unpack like a tuple: t_starts, t_ends, valid = sample_...(...)
        return iter((self.t_starts, self.t_ends, self.valid))

    @property
    def midpoints(self) -> torch.Tensor:
        """(R, S) where the field is queried."""
        return 0.5 * (self.t_starts + self.t_ends)

    def points(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """(R, S, 3) world positions of the midpoints of rays ``origins + t * dirs``."""
        return origins[:, None, :] + dirs[:, None, :] * self.midpoints[..., None]


# --------------------------------------------------------------------------- tensors


def _per_ray(value: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (n,) range bound as an (n,) tensor with ``like``'s device and dtype."""
    t = as_tensor(value, device=like.device, dtype=like.dtype)
    return t.expand(n).clone() if t.ndim == 0 else t.reshape(n)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None,
          like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) on ``like``'s device; the generator must live on that device."""
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- rays


def all_pixel_coords(h: int, w: int, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h * w, 2) pixel centres (u, v) = (column, row), row-major (index = v * w + u)."""
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                          torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


def pixel_rays(K: Any, camera_to_world: Any, pixels: Any,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World-frame unit rays through pixel coordinates.

    Args:
        K: (3, 3) intrinsics, or (N, 3, 3) one per pixel.
        camera_to_world: (4, 4) pose (OpenCV optical frame), or (N, 4, 4) one per pixel
            (rays of several keyframes in one batch).
        pixels: (N, 2) float (u, v); integer values are pixel centres.

    Returns:
        origins (N, 3), directions (N, 3) unit, z_scale (N,): optical-axis depth of the
        point at distance t along the ray is ``t * z_scale`` (= cos of the angle to the
        optical axis), so a measured depth d lies at ``t = d / z_scale``. On ``pixels``'
        device, in its float dtype (float32 for integer pixels).
    """
    pixels = as_tensor(pixels)
    dtype, device = float_dtype(pixels), pixels.device
    pixels = pixels.to(dtype)
    # Invert K in float64: cheap (3x3) and keeps skewed/odd intrinsics exact.
    K_inv = torch.linalg.inv(as_tensor(K, device=device, dtype=torch.float64)).to(dtype)
    pose = as_tensor(camera_to_world, device=device, dtype=dtype)
    ones = torch.ones_like(pixels[:, :1])
    d_cam = (K_inv @ torch.cat([pixels, ones], dim=1)[..., None])[..., 0]  # (N, 3), z = 1
    norm = torch.linalg.norm(d_cam, dim=1)
    z_scale = d_cam[:, 2] / norm
    dirs = (pose[..., :3, :3] @ (d_cam / norm[:, None])[..., None])[..., 0]
    origins = pose[..., :3, 3].expand(pixels.shape[0], 3)
    return origins.contiguous(), dirs, z_scale


# --------------------------------------------------------------------------- samplers


def _stratified_intervals(lo: torch.Tensor, hi: torch.Tensor, n: int,
                          generator: torch.Generator | None, stratified: bool,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """n contiguous intervals partitioning [lo, hi] per ray, with jittered edges.

    Edge i sits at ``lo + (i + j_i) / n * (hi - lo)`` with ``j_i`` uniform in [-1/2, 1/2)
    for interior edges (0 at both ends), so the intervals stay sorted, cover [lo, hi]
    exactly (volume rendering integrates the whole range) and the midpoint of interval i
    falls inside the i-th of n equal bins: stratified sampling. Without ``stratified``
    the intervals are the equal bins (deterministic, for evaluation).

    Args:
        lo, hi: (R,) bounds; where hi < lo the intervals are empty at lo.

    Returns:
        starts, ends: (R, n).
    """
    r = lo.shape[0]
    hi = torch.maximum(hi, lo)
    frac = torch.arange(n + 1, device=lo.device, dtype=lo.dtype).expand(r, n + 1)
    if stratified and n > 1:
        jitter = _rand((r, n - 1), generator, lo) - 0.5
        frac = torch.cat([frac[:, :1], frac[:, 1:-1] + jitter, frac[:, -1:]], dim=1)
    edges = lo[:, None] + (frac / n) * (hi - lo)[:, None]
    return edges[:, :-1], edges[:, 1:]


def _empty_samples(n_rays: int, n_samples: int, fill: torch.Tensor) -> RaySamples:
    """All-invalid samples: zero-length intervals at ``fill`` (R,)."""
    t = fill[:, None].expand(n_rays, n_samples).clone()
    return RaySamples(t, t.clone(), torch.zeros_like(t, dtype=torch.bool))


def sample_uniform(origins: torch.Tensor, near: Range, far: Range, n_samples: int,
                   generator: torch.Generator | None = None, stratified: bool = True,
                   ) -> RaySamples:
    """Stratified intervals over [near, far] (the first RGB-only frames, empty grid).

    Args:
        origins: (R, 3) ray origins (give the ray count, device and dtype).
        near, far: scalars or (R,) distances along the unit rays.

    Returns:
        :class:`RaySamples` (R, n_samples); all valid where far > near.
    """
    n = origins.shape[0]
    lo, hi = _per_ray(near, n, origins), _per_ray(far, n, origins)
    starts, ends = _stratified_intervals(lo, hi, n_samples, generator, stratified)
    return RaySamples(starts, ends, ends > starts)


def sample_depth_guided(origins: torch.Tensor, dirs: torch.Tensor, z_scale: torch.Tensor,
                        depth: torch.Tensor, cfg: SamplingConfig,
                        generator: torch.Generator | None = None,
                        grid: OccupancyGrid | None = None, stratified: bool = True,
                        occupied_free: torch.Tensor | None = None,
                        ) -> RaySamples:
    """Samples for rays with a measured depth: mostly around the surface.

    Per ray, with ``t_d = depth / z_scale`` and b = ``surface_band_m`` (along the ray):
    ``free_space_samples`` intervals partition [near_m, t_d - b] (space the depth says is
    empty) and the other ``samples_per_ray_depth - free_space_samples`` partition
    [t_d - b, t_d + b], both stratified; together they cover [near_m, t_d + b] without
    gaps. Bounds are clamped at near_m; a surface closer than near_m + b leaves the
    free-space intervals empty (invalid), one closer than near_m - b leaves all invalid.

    Rays with depth 0 (unknown) or non-finite depth fall back to
    :func:`sample_occupied` over [near_m, far_m] with ``samples_per_ray_depth`` samples
    when ``grid`` has content, else to :func:`sample_uniform`.

    Rays flagged in ``occupied_free`` (depth that is an estimate) whose march meets
    occupied voxels in front of the band take up to ``free_space_occupied_samples`` of
    those instead of the stratified free-space intervals: the voxels a view rendered later
    queries first (:func:`sample_occupied`), where the field must learn that nothing is.
    The rest of such a ray's free space is not sampled.

    Args:
        origins, dirs: (R, 3) rays, dirs unit. z_scale: (R,) from :func:`pixel_rays`.
        depth: (R,) optical-axis depth, metres; 0 = unknown.
        occupied_free: (R,) bool, or None (no ray).

    Returns:
        :class:`RaySamples` (R, S), sorted per ray: S = samples_per_ray_depth, plus
        ``free_space_occupied_samples - free_space_samples`` when ``occupied_free`` flags a
        ray and that is positive (padding: zero-length, invalid).
    """
    n_rays, n_free = origins.shape[0], cfg.free_space_samples
    n_band = cfg.samples_per_ray_depth - n_free
    depth = as_tensor(depth, device=origins.device, dtype=origins.dtype).reshape(n_rays)
    known = torch.isfinite(depth) & (depth > 0)
    t_d = torch.where(known, depth, torch.zeros_like(depth)) / z_scale
    near = torch.full_like(t_d, cfg.near_m)
    band_lo = torch.maximum(t_d - cfg.surface_band_m, near)
    band_hi = torch.maximum(t_d + cfg.surface_band_m, near)
    free_s, free_e = _stratified_intervals(near, band_lo, n_free, generator, stratified)
    if occupied_free is not None and cfg.free_space_occupied_samples > 0 \
            and grid is not None and not grid.is_empty:
        free_s, free_e = _occupied_free_space(origins, dirs, grid, cfg, near, band_lo,
                                              free_s, free_e,
                                              known & occupied_free.to(known.device),
                                              generator, stratified)
    band_s, band_e = _stratified_intervals(band_lo, band_hi, n_band, generator, stratified)
    t_starts, t_ends = torch.cat([free_s, band_s], 1), torch.cat([free_e, band_e], 1)
    out = RaySamples(t_starts, t_ends, t_ends > t_starts)
    if not bool(known.all()):
        unknown = torch.nonzero(~known).reshape(-1)
        fb = _sample_without_depth(origins[unknown], dirs[unknown], grid, cfg,
                                   cfg.samples_per_ray_depth, generator, stratified)
        fb = _pad_samples(fb, t_starts.shape[1])
        out.t_starts[unknown], out.t_ends[unknown], out.valid[unknown] = fb
    return out


def _pad_samples(samples: RaySamples, n: int) -> RaySamples:
    """(R, n) samples: ``samples`` followed by zero-length invalid intervals at the end."""
    if n <= samples.t_starts.shape[1]:
        return samples
    s, e = _pad_intervals(samples.t_starts, samples.t_ends, n, samples.t_ends[:, -1:])
    valid = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    valid[:, :samples.valid.shape[1]] = samples.valid
    return RaySamples(s, e, valid)


def _occupied_free_space(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid,
                         cfg: SamplingConfig, near: torch.Tensor, band_lo: torch.Tensor,
                         free_s: torch.Tensor, free_e: torch.Tensor, rays: torch.Tensor,
                         generator: torch.Generator | None, stratified: bool,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, max(free, occupied)) free-space intervals: on ``rays`` (R,) bool whose march
    meets occupied voxels before ``band_lo``, those voxels' samples (clipped to end at
    the band); elsewhere the stratified ``free_s, free_e`` (R, free). Padding is
    zero-length at ``band_lo``, so each ray stays sorted and without overlap."""
    n = max(cfg.free_space_occupied_samples, free_s.shape[1])
    out_s, out_e = _pad_intervals(free_s, free_e, n, band_lo[:, None])
    out_s, out_e = out_s.clone(), out_e.clone()  # rows are replaced below
    idx = torch.nonzero(rays).reshape(-1)
    if idx.numel() == 0:
        return out_s, out_e
    lo = band_lo[idx]
    occ = sample_occupied(origins[idx], dirs[idx], grid, near[idx], lo,
                          cfg.free_space_occupied_samples, generator,
                          step_ratio=cfg.march_step_ratio, max_steps=cfg.max_march_steps,
                          stratified=stratified)
    hit = occ.valid.any(1)
    lo_col = lo[:, None]
    s = torch.where(occ.valid, occ.t_starts.clamp(max=lo_col), lo_col)
    e = torch.where(occ.valid, occ.t_ends.clamp(max=lo_col), lo_col)
    s, e = _pad_intervals(s, e, n, lo_col)
    rows = idx[hit]
    out_s[rows], out_e[rows] = s[hit], e[hit]
    return out_s, out_e


def _pad_intervals(s: torch.Tensor, e: torch.Tensor, n: int, at: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, n) intervals: (R, k <= n) ``s, e`` followed by zero-length ones at ``at`` (R, 1)."""
    extra = n - s.shape[1]
    if extra <= 0:
        return s, e
    pad = at.expand(-1, extra)
    return torch.cat([s, pad], 1), torch.cat([e, pad], 1)


def _sample_without_depth(origins: torch.Tensor, dirs: torch.Tensor,
                          grid: OccupancyGrid | None, cfg: SamplingConfig, n_samples: int,
                          generator: torch.Generator | None, stratified: bool,
                          ) -> RaySamples:
    """Occupied-space samples if the grid has content, uniform ones otherwise."""
    if grid is None or grid.is_empty:
        return sample_uniform(origins, cfg.near_m, cfg.far_m, n_samples, generator, stratified)
    return sample_occupied(origins, dirs, grid, cfg.near_m, cfg.far_m, n_samples, generator,
                           step_ratio=cfg.march_step_ratio, max_steps=cfg.max_march_steps,
                           stratified=stratified)


def sample_occupied(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid,
                    near: Range, far: Range, n_samples: int,
                    generator: torch.Generator | None = None, *, step_ratio: float = 0.5,
                    max_steps: int = 1024, stratified: bool = True,
                    max_points_per_pass: int = 1 << 20,
                    window: tuple[Range, Range] | None = None) -> RaySamples:
    """Samples in occupied voxels only: the first ``n_samples`` along each ray.

    Marches contiguous candidate intervals of length ``step_ratio * grid.voxel_m`` from
    near to far (a ray longer than ``max_steps`` steps marches with a longer step, so the
    cost per ray is bounded), with one random offset per ray (stratified), and keeps the
    intervals whose midpoint lies in an occupied voxel, in order, up to ``n_samples``: the
    first occupied stretches along the ray, where the visible surface is. The march runs
    in passes of a few dozen steps over the rays still short of samples, so rays that
    fill up early stop costing (and memory stays below ~``max_points_per_pass`` points).

    A ray that crosses no occupied voxel gets no valid sample: it renders as empty space
    (zero opacity, background colour). Invalid entries are zero-length intervals at far.

    ``window`` skips the empty space a caller already knows of: only the candidates of the
    same march (same step, same offset) that overlap ``[window[0], window[1]]`` are
    tested. When every occupied voxel on a ray lies inside its window (e.g.
    :meth:`OccupancyGrid.view_bounds`), the samples are those of the whole march; a
    window that resumes after earlier samples (early ray termination) continues it.

    Args:
        origins, dirs: (R, 3) rays, dirs unit.
        grid: the occupancy grid (on the rays' device).
        near, far: scalars or (R,) distances along the rays (e.g. clipped to
            :meth:`SceneExtent.ray_intersect`).
        window: optional (start, stop), scalars or (R,) distances along the rays; a ray
            whose window is empty (stop < start) gets no sample.

    Returns:
        :class:`RaySamples` (R, n_samples), sorted per ray.
    """
    n_rays = origins.shape[0]
    lo, hi = _per_ray(near, n_rays, origins), _per_ray(far, n_rays, origins)
    hi = torch.maximum(hi, lo)
    out = _empty_samples(n_rays, n_samples, hi)
    if grid.is_empty or n_rays == 0:
        return out
    step = torch.clamp_min((hi - lo) / max_steps, grid.voxel_m * step_ratio)  # (R,)
    n_steps = torch.ceil((hi - lo) / step).long() + 1  # edges near + (k - u) step reach far
    offset = _rand((n_rays,), generator, lo) if stratified else torch.full_like(lo, 0.5)
    first = torch.zeros_like(n_steps)  # the ray's first candidate
    if window is not None:
        first, n_steps = _window_steps(lo, step, offset, n_steps, window)
    count = torch.zeros(n_rays, dtype=torch.long, device=origins.device)
    total = int(n_steps.max())
    per_pass = int(min(max(max_points_per_pass // n_rays, 16), 128))
    if window is not None:  # windows start near the surface: a few steps fill most rays
        per_pass = min(per_pass, max(16, 2 * n_samples))
    active = torch.arange(n_rays, device=origins.device)
    for k0 in range(0, total, per_pass):
        active = active[(count[active] < n_samples) & (n_steps[active] > k0)]
        if active.numel() == 0:
            break
        _march_pass(origins, dirs, grid, lo, hi, step, offset, first, active, k0,
                    min(per_pass, total - k0), count, out)
    out.valid = torch.arange(n_samples, device=origins.device)[None, :] < count[:, None]
    return out


def _window_steps(lo: torch.Tensor, step: torch.Tensor, offset: torch.Tensor,
                  n_steps: torch.Tensor, window: tuple[Range, Range]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(first candidate (R,), candidates from it (R,)) of the march that overlap the
    window: candidate k spans [lo + (k - offset) step, lo + (k + 1 - offset) step]."""
    n_rays = lo.shape[0]
    start, stop = _per_ray(window[0], n_rays, lo), _per_ray(window[1], n_rays, lo)
    # inside the march's own range (an empty window may be +-inf)
    start = torch.minimum(torch.maximum(start, lo), lo + n_steps * step)
    stop = torch.maximum(torch.minimum(stop, lo + n_steps * step), lo - 2 * step)
    k_first = torch.floor((start - lo) / step + offset).clamp_min(0)
    k_last = torch.floor((stop - lo) / step + offset).clamp_min(-1)  # the one holding stop
    first = torch.minimum(k_first.long(), n_steps)
    last = torch.minimum(k_last.long(), n_steps - 1)
    return first, (last - first + 1).clamp_min(0)


def _march_pass(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid,
                lo: torch.Tensor, hi: torch.Tensor, step: torch.Tensor, offset: torch.Tensor,
                first: torch.Tensor, active: torch.Tensor, k0: int, n_k: int,
                count: torch.Tensor, out: RaySamples) -> None:
    """Steps k0 .. k0 + n_k - 1 after each ``active`` ray's ``first`` candidate; fills
    ``out``.

    Candidate k of ray r is [e_k, e_{k+1}] with e_k = clamp(lo + (k - offset) step, lo,
    hi): contiguous, starting exactly at near and ending exactly at far. Steps past the
    ray's end are zero-length and never kept, so ``n_k`` need not fit the ray.
    """
    n_samples = out.t_starts.shape[1]
    a_lo, a_hi, a_step = lo[active, None], hi[active, None], step[active, None]
    k = (torch.arange(k0, k0 + n_k + 1, device=lo.device, dtype=lo.dtype)
         + first[active, None].to(lo.dtype))
    edges = torch.minimum(torch.maximum(a_lo + (k - offset[active, None]) * a_step, a_lo),
                          a_hi)  # (A, n_k + 1)
    starts, ends = edges[:, :-1], edges[:, 1:]
    occ = _occupied_candidates(origins[active], dirs[active], grid, starts, ends,
                               a_step[:, 0])
    rank = count[active, None] + torch.cumsum(occ, dim=1) - 1  # slot of each hit
    ri, ci = torch.nonzero(occ & (rank < n_samples), as_tuple=True)
    rows, cols = active[ri], rank[ri, ci]
    out.t_starts[rows, cols] = starts[ri, ci]
    out.t_ends[rows, cols] = ends[ri, ci]
    count[active] = torch.clamp_max(count[active] + occ.sum(dim=1), n_samples)


_COARSE = 4  # fine candidates per coarse candidate of the block pre-filter


def _occupied_candidates(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid,
                         starts: torch.Tensor, ends: torch.Tensor, step: torch.Tensor,
                         ) -> torch.Tensor:
    """(A, K) bool: candidate intervals (A, K) of rays (A, 3) with an occupied midpoint.

    Two levels: groups of ``_COARSE`` consecutive candidates are first tested once, at the
    group's midpoint, against the block set (:meth:`OccupancyGrid.near_occupied`); only
    candidates of groups that pass get the exact voxel lookup. The test is conservative
    when every midpoint of a group is within one block of the group's midpoint, i.e. when
    ``_COARSE / 2 * step <= block_m``; rays with longer steps skip the pre-filter.
    """
    n_rays, n_k = starts.shape
    n_groups = -(-n_k // _COARSE)
    pad = n_groups * _COARSE - n_k
    g_starts = starts[:, ::_COARSE]
    g_ends = torch.cat([ends, ends[:, -1:].expand(n_rays, pad)], 1)[:, _COARSE - 1::_COARSE]
    g_mid = 0.5 * (g_starts + g_ends)
    g_pts = origins[:, None, :] + dirs[:, None, :] * g_mid[..., None]
    maybe = grid.near_occupied(g_pts.reshape(-1, 3)).view(n_rays, n_groups)
    maybe |= (step * (_COARSE / 2) > grid.block_m)[:, None]
    maybe = maybe.repeat_interleave(_COARSE, dim=1)[:, :n_k] & (ends > starts)
    ri, ci = torch.nonzero(maybe, as_tuple=True)
    mid = 0.5 * (starts[ri, ci] + ends[ri, ci])
    occ = torch.zeros_like(maybe)
    occ[ri, ci] = grid.is_occupied(origins[ri] + dirs[ri] * mid[:, None])
    return occ


def sample_rays(origins: torch.Tensor, dirs: torch.Tensor, z_scale: torch.Tensor,
                depth: torch.Tensor | None, grid: OccupancyGrid | None, cfg: SamplingConfig,
                generator: torch.Generator | None = None, stratified: bool = True,
                occupied_free: torch.Tensor | None = None) -> RaySamples:
    """Pick the sampler for a batch of rays.

    * ``depth`` given: :func:`sample_depth_guided` (S = samples_per_ray_depth; rays with
      depth 0 fall back to the grid);
    * no depth, grid with content: :func:`sample_occupied` over [near_m, far_m]
      (S = samples_per_ray_rgb);
    * no depth, empty grid: :func:`sample_uniform` (S = samples_per_ray_rgb).
    """
    if depth is not None:
        return sample_depth_guided(origins, dirs, z_scale, depth, cfg, generator, grid,
                                   stratified, occupied_free)
    return _sample_without_depth(origins, dirs, grid, cfg, cfg.samples_per_ray_rgb,
                                 generator, stratified)
