"""Where along camera rays the field is queried, so that empty space costs nothing.

Three pieces, none with hard-coded scene bounds:

* ray helpers (:func:`pixel_rays`, :func:`all_pixel_coords`, :func:`backproject_depth`):
  unit rays of pixels in the world frame and the factor converting distance along a ray
  into depth along the optical axis;
* :class:`SceneExtent`, an axis-aligned box grown from the data (depth points, camera
  frusta), and :class:`OccupancyGrid`, a sparse, unbounded set of occupied voxels (int64
  keys in a sorted tensor) marked from depth and refreshed from the field's density;
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
and torch: no ROS (``test/test_import_boundary.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import torch

from panoptic_mapping.core.config import ConfigError, param

__all__ = [
    "SamplingConfig",
    "RaySamples",
    "pixel_rays",
    "all_pixel_coords",
    "backproject_depth",
    "SceneExtent",
    "OccupancyGrid",
    "pack_voxel_keys",
    "unpack_voxel_keys",
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


def _as_tensor(x: Any, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a tensor on ``device`` (default: where it is) with ``dtype``."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device,
                    dtype=dtype if dtype is not None else x.dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def _per_ray(value: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (n,) range bound as an (n,) tensor with ``like``'s device and dtype."""
    t = _as_tensor(value, device=like.device, dtype=like.dtype)
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
    pixels = _as_tensor(pixels)
    dtype, device = _float_dtype(pixels), pixels.device
    pixels = pixels.to(dtype)
    # Invert K in float64: cheap (3x3) and keeps skewed/odd intrinsics exact.
    K_inv = torch.linalg.inv(_as_tensor(K, device=device, dtype=torch.float64)).to(dtype)
    pose = _as_tensor(camera_to_world, device=device, dtype=dtype)
    ones = torch.ones_like(pixels[:, :1])
    d_cam = (K_inv @ torch.cat([pixels, ones], dim=1)[..., None])[..., 0]  # (N, 3), z = 1
    norm = torch.linalg.norm(d_cam, dim=1)
    z_scale = d_cam[:, 2] / norm
    dirs = (pose[..., :3, :3] @ (d_cam / norm[:, None])[..., None])[..., 0]
    origins = pose[..., :3, 3].expand(pixels.shape[0], 3)
    return origins.contiguous(), dirs, z_scale


def backproject_depth(depth: Any, K: Any, camera_to_world: Any,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of the pixels with a measured depth.

    Args:
        depth: (H, W) depth along the optical axis, metres; 0 (or non-finite) = unknown.
        K: (3, 3). camera_to_world: (4, 4).

    Returns:
        points (P, 3) on ``depth``'s device (float32 unless depth is float64) and pix (P,)
        int64 row-major flat indices of their pixels.
    """
    depth = _as_tensor(depth)
    depth = depth.to(_float_dtype(depth))
    h, w = depth.shape
    flat = depth.reshape(-1)
    pix = torch.nonzero(torch.isfinite(flat) & (flat > 0)).reshape(-1)
    uv = torch.stack([pix % w, torch.div(pix, w, rounding_mode="floor")], 1).to(depth.dtype)
    origins, dirs, z_scale = pixel_rays(K, camera_to_world, uv)
    t = flat[pix] / z_scale
    return origins + dirs * t[:, None], pix


# --------------------------------------------------------------------------- extent


def _minmax(points: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(3,) min and max of the finite rows of points (N, 3); None if there are none.

    Reduced on the points' device, so CUDA tensors cost one 6-number transfer.
    """
    if isinstance(points, torch.Tensor):
        p = points.detach().reshape(-1, 3)
        p = p[torch.isfinite(p).all(dim=1)]
        if p.shape[0] == 0:
            return None
        return (p.amin(0).double().cpu().numpy(), p.amax(0).double().cpu().numpy())
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if p.shape[0] == 0:
        return None
    return p.min(axis=0), p.max(axis=0)


class SceneExtent:
    """Axis-aligned box around everything seen so far, grown from the data.

    Starts empty and only grows: depth back-projections and camera frusta of the frames
    that arrive. Nothing assumes where the scene is, so a camera that moves beyond the
    first frames' box simply grows it. Used to bound ray marches
    (:meth:`ray_intersect`), never to reject data.
    """

    def __init__(self) -> None:
        self._lo: np.ndarray | None = None  # (3,) float64
        self._hi: np.ndarray | None = None

    @property
    def is_empty(self) -> bool:
        return self._lo is None

    def _grow(self, lo: np.ndarray, hi: np.ndarray) -> None:
        if self._lo is None:
            self._lo, self._hi = lo.copy(), hi.copy()
        else:
            self._lo, self._hi = np.minimum(self._lo, lo), np.maximum(self._hi, hi)

    def update_from_points(self, points: Any) -> None:
        """Grow to contain points (N, 3) (numpy or torch; non-finite rows ignored)."""
        mm = _minmax(points)
        if mm is not None:
            self._grow(*mm)

    def update_from_frustum(self, K: Any, camera_to_world: Any, shape: tuple[int, int],
                            depth_range: tuple[float, float]) -> None:
        """Grow to contain the camera centre and the frustum between two depths.

        Args:
            K: (3, 3). camera_to_world: (4, 4). shape: image (H, W).
            depth_range: (near, far) optical-axis depths, metres: typically (near_m, the
                frame's largest measured depth), or (near_m, far_m) without depth.
        """
        K = np.asarray(_to_numpy(K), dtype=np.float64)
        pose = np.asarray(_to_numpy(camera_to_world), dtype=np.float64)
        h, w = shape
        # Image corners at the pixel edges (centres are integers, edges at -0.5, W - 0.5).
        corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1],
                            [w - 0.5, h - 0.5, 1]], dtype=np.float64)
        rays = corners @ np.linalg.inv(K).T  # (4, 3), z = 1
        cam = np.concatenate([rays * d for d in depth_range] + [np.zeros((1, 3))])
        self.update_from_points(cam @ pose[:3, :3].T + pose[:3, 3])

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo (3,), hi (3,)) float64 copies, or None while empty."""
        return None if self._lo is None else (self._lo.copy(), self._hi.copy())

    def center(self) -> np.ndarray | None:
        """(3,) float64 centre of the box, or None while empty."""
        return None if self._lo is None else 0.5 * (self._lo + self._hi)

    def size(self) -> np.ndarray | None:
        """(3,) float64 edge lengths, or None while empty."""
        return None if self._lo is None else self._hi - self._lo

    def contains(self, points: Any, margin: float = 0.0) -> Any:
        """(N,) bool: points (N, 3) inside the box grown by ``margin`` (same array type)."""
        if isinstance(points, torch.Tensor):
            if self._lo is None:
                return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
            lo = torch.as_tensor(self._lo - margin, device=points.device, dtype=points.dtype)
            hi = torch.as_tensor(self._hi + margin, device=points.device, dtype=points.dtype)
            return ((points >= lo) & (points <= hi)).all(dim=1)
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if self._lo is None:
            return np.zeros(p.shape[0], dtype=bool)
        return ((p >= self._lo - margin) & (p <= self._hi + margin)).all(axis=1)

    def ray_intersect(self, origins: torch.Tensor, dirs: torch.Tensor, margin: float = 0.0,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Entry and exit distances of rays through the box (slab method).

        Args:
            origins, dirs: (R, 3) rays (dirs need not be unit; t is in units of |dir|).
            margin: grow the box by this many metres first.

        Returns:
            t_enter (R,) >= 0 and t_exit (R,); a ray misses when t_exit <= t_enter (also
            every ray while the extent is empty). Clip a march's [near, far] with them.
        """
        n = origins.shape[0]
        if self._lo is None:
            zero = torch.zeros(n, device=origins.device, dtype=origins.dtype)
            return zero, zero.clone()
        lo = torch.as_tensor(self._lo - margin, device=origins.device, dtype=origins.dtype)
        hi = torch.as_tensor(self._hi + margin, device=origins.device, dtype=origins.dtype)
        # Replace 0 components by a tiny signed value so 1/d stays finite (no NaN at 0*inf).
        tiny = torch.finfo(dirs.dtype).tiny ** 0.5
        safe = torch.where(dirs.abs() < tiny, torch.full_like(dirs, tiny), dirs)
        t0, t1 = (lo - origins) / safe, (hi - origins) / safe
        t_enter = torch.minimum(t0, t1).amax(dim=1).clamp_min(0.0)
        t_exit = torch.maximum(t0, t1).amin(dim=1)
        return t_enter, t_exit

    def random_points(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, 3) float32 points uniform in the box ((0, 3) while empty), e.g. candidate
        positions for :meth:`OccupancyGrid.update_from_density` in RGB-only mapping."""
        if self._lo is None:
            return torch.zeros(0, 3, device=device)
        lo = torch.as_tensor(self._lo, device=device, dtype=torch.float32)
        hi = torch.as_tensor(self._hi, device=device, dtype=torch.float32)
        u = torch.rand(n, 3, generator=generator, device=device)
        return lo + u * (hi - lo)

    def state_dict(self) -> dict[str, Any]:
        return {"lo": None if self._lo is None else self._lo.tolist(),
                "hi": None if self._hi is None else self._hi.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("lo") is None:
            self._lo = self._hi = None
        else:
            self._lo = np.asarray(state["lo"], dtype=np.float64).reshape(3)
            self._hi = np.asarray(state["hi"], dtype=np.float64).reshape(3)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------- voxel keys

# Same layout as panoptic_mapping.core.voxels: 21 bits per axis, biased by 2^20, so one
# int64 holds a voxel and keys sort like (x, y, z). Range: +-2^20 voxels (+-42 km at 4 cm).
_BITS = 21
_BIAS = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def pack_voxel_keys(coords: torch.Tensor) -> torch.Tensor:
    """(N,) int64 keys of (N, 3) int64 voxel coordinates within +-2^20."""
    b = coords + _BIAS
    return (b[:, 0] << (2 * _BITS)) | (b[:, 1] << _BITS) | b[:, 2]


def unpack_voxel_keys(keys: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 voxel coordinates of (N,) keys."""
    return torch.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK,
                        keys & _MASK], dim=1) - _BIAS


def _floor_coords(points: torch.Tensor, cell_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) int64 cell coordinates of points (N, 3) and (N,) bool: finite, in key range."""
    if not points.is_floating_point() or torch.finfo(points.dtype).bits < 32:
        points = points.to(torch.float32)  # integers and half precision
    c = torch.floor(points / cell_m)
    # NaN fails both comparisons, +-inf and far points one: all flagged, none wrapped.
    ok = ((c >= -_BIAS) & (c < _BIAS)).all(dim=1)
    return torch.where(ok[:, None], c, torch.zeros_like(c)).to(torch.int64), ok


def _sorted_contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(N,) bool: keys (N,) present in the sorted unique ``sorted_keys`` (M,)."""
    if sorted_keys.numel() == 0:
        return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    idx = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[idx] == keys


def _dilate_keys(keys: torch.Tensor, radius: int) -> torch.Tensor:
    """Sorted unique keys within a cube of half-width ``radius`` cells of sorted ``keys``.

    The cube is the sum of three axis segments, so it dilates one axis at a time by
    adding offsets straight to the packed keys: 3 (2r+1) N keys to sort instead of
    (2r+1)^3 N. An offset that would leave the key range on its axis (and carry into the
    next field) is dropped.
    """
    if radius == 0 or keys.numel() == 0:
        return keys
    for shift in (2 * _BITS, _BITS, 0):
        field = (keys >> shift) & _MASK
        parts = [keys]
        for off in range(-radius, radius + 1):
            if off != 0:
                inside = (field + off >= 0) & (field + off <= _MASK)
                parts.append(keys[inside] + (off << shift))
        keys = torch.unique(torch.cat(parts))
    return keys


# --------------------------------------------------------------------------- occupancy


class OccupancyGrid:
    """Sparse, unbounded set of occupied voxels: a sorted int64 key tensor.

    There is no dense volume and no bound: memory is 8 bytes per occupied voxel and
    coordinates may be anywhere within +-2^20 voxels of the origin (points beyond, and
    non-finite points, are ignored when marking and never occupied). Lookups are one
    ``torch.searchsorted``; insertion is a merge. The tensor lives on ``device``.

    A second, much smaller sorted key set of *blocks* (``BLOCK`` ^ 3 voxels), dilated by
    one block, is derived lazily; the ray march tests it first so that empty space costs
    one cheap lookup per block-sized step instead of one per voxel-sized step.

    Voxels are marked from depth (:meth:`mark_points`) and periodically re-evaluated
    with the field's density (:meth:`update_from_density`), as instant-NGP does.
    """

    def __init__(self, voxel_m: float = 0.04, dilation: int = 1,
                 device: torch.device | str = "cpu") -> None:
        if not voxel_m > 0:
            raise ValueError(f"voxel_m must be > 0, got {voxel_m}")
        if dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {dilation}")
        self.voxel_m = float(voxel_m)
        self.dilation = int(dilation)
        self._keys = torch.zeros(0, dtype=torch.int64, device=device)  # sorted, unique
        self._blocks: torch.Tensor | None = None  # cache of _block_keys(); None = stale

    BLOCK = 4  # voxels per block edge of the coarse pre-filter (a power of two)

    @classmethod
    def from_config(cls, cfg: SamplingConfig, device: torch.device | str = "cpu",
                    ) -> "OccupancyGrid":
        return cls(cfg.occupancy_voxel_m, cfg.occupancy_dilation, device)

    # ------------------------------------------------------------------ basics

    @property
    def device(self) -> torch.device:
        return self._keys.device

    @property
    def keys(self) -> torch.Tensor:
        """(M,) sorted int64 keys of the occupied voxels (do not modify)."""
        return self._keys

    @property
    def num_occupied(self) -> int:
        return int(self._keys.numel())

    def __len__(self) -> int:
        return self.num_occupied

    @property
    def is_empty(self) -> bool:
        return self._keys.numel() == 0

    def to(self, device: torch.device | str) -> "OccupancyGrid":
        """Move the keys to ``device`` (in place); returns self."""
        self._set_keys(self._keys.to(device))
        return self

    def clear(self) -> None:
        self._set_keys(self._keys[:0])

    def _set_keys(self, keys: torch.Tensor) -> None:
        """Replace the sorted unique keys; the block cache goes stale."""
        self._keys = keys
        self._blocks = None

    @property
    def block_m(self) -> float:
        """Edge (m) of the coarse blocks."""
        return self.voxel_m * self.BLOCK

    def voxel_coords(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) int64 voxel coordinates of points (N, 3) and (N,) bool: representable.

        Computed in the points' float dtype (half precision is promoted to float32):
        float32 rounding is at most 4 mm even 40 km out, so it only decides points within
        that of a voxel face, and it is several times faster than float64 on CPU.
        """
        return _floor_coords(points, self.voxel_m)

    def voxel_centers(self) -> torch.Tensor:
        """(M, 3) float32 world centres of the occupied voxels, in key order."""
        return self._centers_of(self._keys)

    def _centers_of(self, keys: torch.Tensor) -> torch.Tensor:
        return ((unpack_voxel_keys(keys).to(torch.float64) + 0.5) * self.voxel_m).float()

    # ------------------------------------------------------------------ updates

    def _merge(self, keys: torch.Tensor) -> int:
        """Add sorted unique ``keys``; returns how many were new."""
        new = keys[~self._contains_keys(keys)]
        if new.numel():
            self._set_keys(torch.sort(torch.cat([self._keys, new])).values)
        return int(new.numel())

    def mark_points(self, points: Any) -> int:
        """Mark the voxels containing points (N, 3) and their dilation neighbours.

        Args:
            points: (N, 3) world points (depth back-projections), numpy or torch.

        Returns:
            The number of voxels newly marked.
        """
        points = _as_tensor(points, device=self.device).reshape(-1, 3)
        coords, ok = self.voxel_coords(points)
        # Deduplicate before dilating: a frame's points hit far fewer voxels than pixels.
        keys = torch.unique(pack_voxel_keys(coords[ok]))
        return self._merge(_dilate_keys(keys, self.dilation))

    def _contains_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return _sorted_contains(self._keys, keys)

    @torch.no_grad()
    def update_from_density(self, density_fn: Callable[[torch.Tensor], torch.Tensor],
                            threshold: float, extra_points: Any = None,
                            chunk: int = 1 << 18, dilate: bool = True) -> dict[str, int]:
        """Re-evaluate the grid with the field: keep voxels whose density is high.

        The occupied voxels and their 26 neighbours (so occupancy can grow where the field
        has learnt surface the depth did not mark), plus the voxels of ``extra_points``,
        are evaluated at their centres; those with ``density > threshold`` are kept, then
        dilated again by ``dilation`` (the margin :meth:`mark_points` gives), everything
        else is dropped.

        ``extra_points`` is how an RGB-only map gets its first voxels (nothing marks them
        from depth): while the grid is empty, the trainer samples rays uniformly
        (:func:`sample_uniform`) and passes e.g. :meth:`SceneExtent.random_points` or the
        midpoints of recent samples here, so the voxels where the field has grown density
        become occupied.

        Call it once the field has trained for a while: an untrained field (density ~0
        everywhere) empties the grid (RGB-only rays then fall back to uniform samples).

        Args:
            density_fn: points (M, 3) float32 tensor on the grid's device -> (M,) density
                (1/m); called in chunks of ``chunk`` points under ``torch.no_grad``.
            threshold: density (1/m) a voxel must exceed, e.g.
                :attr:`SamplingConfig.density_threshold`.
            extra_points: optional (P, 3) points whose voxels are candidates too.
            dilate: re-apply the dilation margin around the voxels kept.

        Returns:
            {"evaluated": candidates, "before": voxels before, "after": voxels after}.
        """
        before = self.num_occupied
        candidates = _dilate_keys(self._keys, 1)
        if extra_points is not None:
            points = _as_tensor(extra_points, device=self.device).reshape(-1, 3)
            coords, ok = self.voxel_coords(points)
            candidates = torch.unique(torch.cat([candidates, pack_voxel_keys(coords[ok])]))
        density = _evaluate_chunked(density_fn, self._centers_of(candidates), chunk)
        kept = candidates[density.to(self.device) > threshold]
        self._set_keys(_dilate_keys(kept, self.dilation) if dilate else kept)
        return {"evaluated": int(candidates.numel()), "before": before,
                "after": self.num_occupied}

    # ------------------------------------------------------------------ queries

    def is_occupied(self, points: Any) -> torch.Tensor:
        """(N,) bool on the grid's device: points (N, 3) lie in occupied voxels."""
        points = _as_tensor(points, device=self.device).reshape(-1, 3)
        coords, ok = self.voxel_coords(points)
        return ok & self._contains_keys(pack_voxel_keys(coords))

    def near_occupied(self, points: Any) -> torch.Tensor:
        """(N,) bool, conservative: an occupied voxel may lie within one block of points.

        True for every point of an occupied voxel, and for every point less than
        ``block_m`` (per axis) from one; a cheap pre-filter for :meth:`is_occupied`.
        """
        points = _as_tensor(points, device=self.device).reshape(-1, 3)
        coords, ok = _floor_coords(points, self.block_m)
        return ok & _sorted_contains(self._block_keys(), pack_voxel_keys(coords))

    def _block_keys(self) -> torch.Tensor:
        """Sorted keys of the blocks holding an occupied voxel, dilated by one block."""
        if self._blocks is None:
            shift = self.BLOCK.bit_length() - 1
            blocks = torch.unique(pack_voxel_keys(unpack_voxel_keys(self._keys) >> shift))
            self._blocks = _dilate_keys(blocks, 1)
        return self._blocks

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Plain, CPU-only state (``torch.save``-able)."""
        return {"voxel_m": self.voxel_m, "dilation": self.dilation,
                "keys": self._keys.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (keys go to this grid's device)."""
        self.voxel_m = float(state["voxel_m"])
        self.dilation = int(state["dilation"])
        keys = _as_tensor(state["keys"], device=self.device, dtype=torch.int64).reshape(-1)
        self._set_keys(torch.unique(keys))  # sorted + unique whatever was stored


def _evaluate_chunked(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor,
                      chunk: int) -> torch.Tensor:
    """(M,) fn over points (M, 3) in chunks (bounded memory for big grids)."""
    if points.shape[0] == 0:
        return torch.zeros(0, device=points.device)
    out = [_as_tensor(fn(points[i:i + chunk])).reshape(-1)
           for i in range(0, points.shape[0], chunk)]
    return torch.cat([o.to(out[0].device) for o in out])


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

    Args:
        origins, dirs: (R, 3) rays, dirs unit. z_scale: (R,) from :func:`pixel_rays`.
        depth: (R,) optical-axis depth, metres; 0 = unknown.

    Returns:
        :class:`RaySamples` (R, samples_per_ray_depth), sorted per ray.
    """
    n_rays, n_free = origins.shape[0], cfg.free_space_samples
    n_band = cfg.samples_per_ray_depth - n_free
    depth = _as_tensor(depth, device=origins.device, dtype=origins.dtype).reshape(n_rays)
    known = torch.isfinite(depth) & (depth > 0)
    t_d = torch.where(known, depth, torch.zeros_like(depth)) / z_scale
    near = torch.full_like(t_d, cfg.near_m)
    band_lo = torch.maximum(t_d - cfg.surface_band_m, near)
    band_hi = torch.maximum(t_d + cfg.surface_band_m, near)
    free_s, free_e = _stratified_intervals(near, band_lo, n_free, generator, stratified)
    band_s, band_e = _stratified_intervals(band_lo, band_hi, n_band, generator, stratified)
    t_starts, t_ends = torch.cat([free_s, band_s], 1), torch.cat([free_e, band_e], 1)
    out = RaySamples(t_starts, t_ends, t_ends > t_starts)
    if not bool(known.all()):
        unknown = torch.nonzero(~known).reshape(-1)
        fb = _sample_without_depth(origins[unknown], dirs[unknown], grid, cfg,
                                   cfg.samples_per_ray_depth, generator, stratified)
        out.t_starts[unknown], out.t_ends[unknown], out.valid[unknown] = fb
    return out


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
                    max_points_per_pass: int = 1 << 20) -> RaySamples:
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

    Args:
        origins, dirs: (R, 3) rays, dirs unit.
        grid: the occupancy grid (on the rays' device).
        near, far: scalars or (R,) distances along the rays (e.g. clipped to
            :meth:`SceneExtent.ray_intersect`).

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
    count = torch.zeros(n_rays, dtype=torch.long, device=origins.device)
    total = int(n_steps.max())
    per_pass = int(min(max(max_points_per_pass // n_rays, 16), 128))
    active = torch.arange(n_rays, device=origins.device)
    for k0 in range(0, total, per_pass):
        active = active[(count[active] < n_samples) & (n_steps[active] > k0)]
        if active.numel() == 0:
            break
        _march_pass(origins, dirs, grid, lo, hi, step, offset, active, k0,
                    min(per_pass, total - k0), count, out)
    out.valid = torch.arange(n_samples, device=origins.device)[None, :] < count[:, None]
    return out


def _march_pass(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid,
                lo: torch.Tensor, hi: torch.Tensor, step: torch.Tensor, offset: torch.Tensor,
                active: torch.Tensor, k0: int, n_k: int, count: torch.Tensor,
                out: RaySamples) -> None:
    """Steps k0 .. k0 + n_k - 1 of the march for the ``active`` rays; fills ``out``.

    Candidate k of ray r is [e_k, e_{k+1}] with e_k = clamp(lo + (k - offset) step, lo,
    hi): contiguous, starting exactly at near and ending exactly at far. Steps past the
    ray's end are zero-length and never kept, so ``n_k`` need not fit the ray.
    """
    n_samples = out.t_starts.shape[1]
    a_lo, a_hi, a_step = lo[active, None], hi[active, None], step[active, None]
    k = torch.arange(k0, k0 + n_k + 1, device=lo.device, dtype=lo.dtype)
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
                ) -> RaySamples:
    """Pick the sampler for a batch of rays.

    * ``depth`` given: :func:`sample_depth_guided` (S = samples_per_ray_depth; rays with
      depth 0 fall back to the grid);
    * no depth, grid with content: :func:`sample_occupied` over [near_m, far_m]
      (S = samples_per_ray_rgb);
    * no depth, empty grid: :func:`sample_uniform` (S = samples_per_ray_rgb).
    """
    if depth is not None:
        return sample_depth_guided(origins, dirs, z_scale, depth, cfg, generator, grid,
                                   stratified)
    return _sample_without_depth(origins, dirs, grid, cfg, cfg.samples_per_ray_rgb,
                                 generator, stratified)
