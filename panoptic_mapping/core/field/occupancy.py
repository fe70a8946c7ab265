"""Where the scene has surface: a sparse, unbounded occupancy grid (int64 voxel keys in a
sorted tensor), marked from depth and refreshed from the field's density.

Keys share :func:`panoptic_mapping.core.geometry.pack_voxel_keys`' layout with the
instance map's voxels.
"""
from __future__ import annotations

import math
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
        # voxels some frames' points fell in, not yet marked (mark_confirmed): sorted
        # unique keys and how many frames put a point there
        self._pending = torch.zeros(0, dtype=torch.int64, device=device)
        self._pending_frames = torch.zeros(0, dtype=torch.int32, device=device)
        # cache of _block_keys(): (the keys it was made from, blocks); kept with the keys
        # it belongs to, so a reader on another thread never stores blocks of keys that a
        # writer (the mapping thread, beside training) replaced meanwhile as current
        self._blocks: tuple[torch.Tensor, torch.Tensor] | None = None

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
        self._pending = self._pending.to(device)
        self._pending_frames = self._pending_frames.to(device)
        return self

    def clear(self) -> None:
        self._set_keys(self._keys[:0])
        self._pending, self._pending_frames = self._pending[:0], self._pending_frames[:0]

    def _set_keys(self, keys: torch.Tensor) -> None:
        """Replace the sorted unique keys (one assignment: readers see the old keys or
        the new, never a mix); the block cache then no longer matches them."""
        self._keys = keys

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
        return self._merge(_dilate_keys(self._point_keys(points), self.dilation))

    def _point_keys(self, points: Any) -> torch.Tensor:
        """Sorted unique keys of the voxels points (N, 3), numpy or torch, fall in
        (deduplicated before any dilation: a frame's points hit far fewer voxels than
        pixels)."""
        points = as_tensor(points, device=self.device).reshape(-1, 3)
        coords, ok = self.voxel_coords(points)
        return torch.unique(pack_voxel_keys(coords[ok]))

    def mark_confirmed(self, points: Any, min_frames: int,
                       max_pending: int = 1 << 22) -> int:
        """Mark the voxels (and their dilation) that points of at least ``min_frames``
        calls, one call per frame, have fallen in.

        For depth that is an estimate (stereo): a wrong depth puts a point where no other
        frame puts one, and an occupied voxel it marked would be where the field is
        queried and grows a floater in front of the surface; a surface is where the
        points of several frames agree. Voxels seen by fewer frames wait, counted; at
        most ``max_pending`` of them (beyond it, those seen once are forgotten first,
        then the least seen).

        Args:
            points: (N, 3) one frame's world points, numpy or torch.
            min_frames: frames needed (1: as :meth:`mark_points`).

        Returns:
            The number of voxels newly marked.
        """
        if min_frames <= 1:
            return self.mark_points(points)
        keys = self._point_keys(points)
        keys = keys[~self._contains_keys(keys)]
        seen = _sorted_contains(self._pending, keys)
        frames = torch.ones(keys.shape, dtype=torch.int32, device=self.device)
        # the pending set without this frame's voxels, then with those still waiting
        keep = torch.ones(self._pending.shape, dtype=torch.bool, device=self.device)
        if bool(seen.any()):
            at = torch.searchsorted(self._pending, keys[seen])
            frames[seen] += self._pending_frames[at]
            keep[at] = False
        confirmed = frames >= min_frames
        pending = torch.cat([self._pending[keep], keys[~confirmed]])
        counts = torch.cat([self._pending_frames[keep], frames[~confirmed]])
        order = torch.argsort(pending)
        pending, counts = pending[order], counts[order]
        if pending.numel() > max_pending:
            twice = counts > 1
            pending, counts = pending[twice], counts[twice]
        if pending.numel() > max_pending:  # still: the most seen, in key order
            top = torch.sort(torch.topk(counts, max_pending).indices).values
            pending, counts = pending[top], counts[top]
        self._pending, self._pending_frames = pending, counts
        return self._merge(_dilate_keys(keys[confirmed], self.dilation))

    @property
    def num_pending(self) -> int:
        """Voxels :meth:`mark_confirmed` has seen points in but not marked yet."""
        return int(self._pending.numel())

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
        keys, cached = self._keys, self._blocks
        if cached is not None and cached[0] is keys:
            return cached[1]
        shift = self.BLOCK.bit_length() - 1
        blocks = _dilate_keys(torch.unique(pack_voxel_keys(unpack_voxel_keys(keys) >> shift)), 1)
        self._blocks = (keys, blocks)
        return blocks

    @torch.no_grad()
    def view_bounds(self, K: Any, camera_to_world: Any, shape: tuple[int, int],
                    tile_px: int = 16, max_entries: int = 1 << 22,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where along each pixel's ray of a view the occupied voxels can lie.

        Every occupied voxel is projected (its 8 corners: a pixel whose ray meets the cube
        lies inside their hull) onto tiles of ``tile_px`` x ``tile_px`` pixels; a tile's
        window runs from the nearest entry to the farthest exit of the voxels over it,
        bounded by the voxels' circumscribed spheres (|centre| -+ half the diagonal). The
        bound is conservative: a ray meets no occupied voxel outside its window, and one
        whose tile no voxel covers meets none at all (empty window: start > stop). A
        voxel reaching behind the camera covers every tile.

        Args:
            K: (3, 3) intrinsics. camera_to_world: (4, 4) pose (OpenCV optical frame).
            shape: (H, W) of the view.
            tile_px: tile edge in pixels (larger: a cheaper projection, looser windows).
            max_entries: voxel-tile pairs handled at once (bounds the memory).

        Returns:
            start, stop: (H * W,) float32 distances along the unit rays of the pixels
            (row-major, as :func:`~.sampling.all_pixel_coords`), on the grid's device.
        """
        h, w = shape
        nu, nv = -(-w // tile_px), -(-h // tile_px)
        start = torch.full((nv * nu,), float("inf"), device=self.device)
        stop = torch.full((nv * nu,), -float("inf"), device=self.device)
        if not self.is_empty:
            K_t = as_tensor(K, device=self.device, dtype=torch.float32)
            pose = as_tensor(camera_to_world, device=self.device, dtype=torch.float32)
            cam = (self.voxel_centers() - pose[:3, 3]) @ pose[:3, :3]  # (M, 3) camera frame
            box, t0, t1 = _voxel_tiles(cam, pose[:3, :3], self.voxel_m, K_t, (h, w),
                                       tile_px)
            _scatter_tiles(box, t0, t1, nu, start, stop, max_entries)
        # each pixel takes its tile's window
        rows = torch.arange(h, device=self.device) // tile_px
        cols = torch.arange(w, device=self.device) // tile_px
        tile_of = (rows[:, None] * nu + cols[None, :]).reshape(-1)
        return start[tile_of], stop[tile_of]

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
        # voxels waiting for confirmation are not saved: they start over
        self._pending, self._pending_frames = self._pending[:0], self._pending_frames[:0]


# corners of the unit cube around a voxel centre, in half voxel edges
_CORNERS = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
                        dtype=torch.float32)


def _voxel_tiles(cam: torch.Tensor, rotation: torch.Tensor, voxel_m: float, K: torch.Tensor,
                 shape: tuple[int, int], tile_px: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per voxel seen (N of the M camera-frame centres ``cam``; ``rotation`` (3, 3) the
    camera's in the world, whose axes the voxels follow): its tile box (N, 4) int64
    (first column, last column, first row, last row), and the distances (N,) at which a
    ray enters and leaves its circumscribed sphere."""
    h, w = shape
    nu, nv = -(-w // tile_px), -(-h // tile_px)
    radius = voxel_m * math.sqrt(3.0) / 2
    dist = torch.linalg.norm(cam, dim=1)
    offsets = (_CORNERS.to(cam.device) * (voxel_m / 2)) @ rotation  # world axes, camera frame
    corners = cam[:, None, :] + offsets  # (M, 8, 3)
    z = corners[..., 2]
    behind = (z <= 1e-6).all(1)
    straddles = (z <= 1e-6).any(1) & ~behind  # its projection is unbounded: every tile
    proj = corners @ K.T
    zc = z.clamp_min(1e-6)[..., None]
    uv = proj[..., :2] / zc  # (M, 8, 2)
    eps = 1e-3  # pixels: float error of the projection never drops a tile
    lo = torch.floor((uv.amin(1) - eps) / tile_px)
    hi = torch.floor((uv.amax(1) + eps) / tile_px)
    box = torch.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], 1)
    box[straddles] = torch.tensor([0.0, nu - 1, 0.0, nv - 1], device=cam.device)
    seen = (~behind & (box[:, 1] >= 0) & (box[:, 0] <= nu - 1)
            & (box[:, 3] >= 0) & (box[:, 2] <= nv - 1))
    box = box[seen]
    box[:, :2] = box[:, :2].clamp(0, nu - 1)
    box[:, 2:] = box[:, 2:].clamp(0, nv - 1)
    d = dist[seen]
    return box.long(), (d - radius).clamp_min(0.0), d + radius


def _scatter_tiles(box: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, nu: int,
                   start: torch.Tensor, stop: torch.Tensor, max_entries: int) -> None:
    """Lower ``start`` to ``t0`` and raise ``stop`` to ``t1`` over each voxel's tile box
    (N, 4) (flat tiles, ``nu`` a row), at most ``max_entries`` pairs at a time."""
    widths = box[:, 1] - box[:, 0] + 1
    counts = widths * (box[:, 3] - box[:, 2] + 1)
    ends = torch.cumsum(counts, 0)
    begin = 0
    while begin < box.shape[0]:
        # the voxels whose pairs fit (at least one, however many tiles it covers)
        done = int(ends[begin - 1]) if begin else 0
        end = max(begin + 1, int(torch.searchsorted(ends, done + max_entries, right=True)))
        n = counts[begin:end]
        vox = torch.repeat_interleave(torch.arange(begin, end, device=box.device), n)
        k = torch.arange(int(n.sum()), device=box.device) - torch.repeat_interleave(
            ends[begin:end] - n - done, n)
        col = box[vox, 0] + k % widths[vox]
        row = box[vox, 2] + k // widths[vox]
        tile = row * nu + col
        start.scatter_reduce_(0, tile, t0[vox], reduce="amin")
        stop.scatter_reduce_(0, tile, t1[vox], reduce="amax")
        begin = end


def _evaluate_chunked(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor,
                      chunk: int) -> torch.Tensor:
    """(M,) fn over points (M, 3) in chunks (bounded memory for big grids)."""
    if points.shape[0] == 0:
        return torch.zeros(0, device=points.device)
    out = [as_tensor(fn(points[i:i + chunk])).reshape(-1)
           for i in range(0, points.shape[0], chunk)]
    return torch.cat([o.to(out[0].device) for o in out])
