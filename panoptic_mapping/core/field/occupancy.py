"""Where the scene has surface: a sparse, unbounded occupancy grid (int64 voxel keys in a
sorted tensor), marked from depth and refreshed from the field's density.

Keys share :func:`panoptic_mapping.core.geometry.pack_voxel_keys`' layout with the
instance map's voxels.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from panoptic_mapping.core.field.tensors import as_tensor
from panoptic_mapping.core.geometry import (
    VOXEL_KEY_BIAS,
    VOXEL_KEY_BITS,
    VOXEL_KEY_MASK,
    pack_voxel_keys,
    unpack_voxel_keys,
)

__all__ = ["OccupancyGrid"]


def _floor_coords(points: torch.Tensor, cell_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) int64 cell coordinates of points (N, 3) and (N,) bool: finite, in key range."""
    if not points.is_floating_point() or torch.finfo(points.dtype).bits < 32:
        points = points.to(torch.float32)  # integers and half precision
    c = torch.floor(points / cell_m)
    # NaN fails both comparisons, +-inf and far points one: all flagged, none wrapped.
    ok = ((c >= -VOXEL_KEY_BIAS) & (c < VOXEL_KEY_BIAS)).all(dim=1)
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
    for shift in (2 * VOXEL_KEY_BITS, VOXEL_KEY_BITS, 0):
        field = (keys >> shift) & VOXEL_KEY_MASK
        parts = [keys]
        for off in range(-radius, radius + 1):
            if off != 0:
                inside = (field + off >= 0) & (field + off <= VOXEL_KEY_MASK)
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
    def from_config(cls, cfg: Any, device: torch.device | str = "cpu",
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
        points = as_tensor(points, device=self.device).reshape(-1, 3)
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
            points = as_tensor(extra_points, device=self.device).reshape(-1, 3)
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
        points = as_tensor(points, device=self.device).reshape(-1, 3)
        coords, ok = self.voxel_coords(points)
        return ok & self._contains_keys(pack_voxel_keys(coords))

    def near_occupied(self, points: Any) -> torch.Tensor:
        """(N,) bool, conservative: an occupied voxel may lie within one block of points.

        True for every point of an occupied voxel, and for every point less than
        ``block_m`` (per axis) from one; a cheap pre-filter for :meth:`is_occupied`.
        """
        points = as_tensor(points, device=self.device).reshape(-1, 3)
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
        keys = as_tensor(state["keys"], device=self.device, dtype=torch.int64).reshape(-1)
        self._set_keys(torch.unique(keys))  # sorted + unique whatever was stored


def _evaluate_chunked(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor,
                      chunk: int) -> torch.Tensor:
    """(M,) fn over points (M, 3) in chunks (bounded memory for big grids)."""
    if points.shape[0] == 0:
        return torch.zeros(0, device=points.device)
    out = [as_tensor(fn(points[i:i + chunk])).reshape(-1)
           for i in range(0, points.shape[0], chunk)]
    return torch.cat([o.to(out[0].device) for o in out])
