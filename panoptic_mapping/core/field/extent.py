"""The scene's extent: an axis-aligned box grown from the data (depth points, camera
frusta), with no hard-coded bounds; it bounds ray marches, it never rejects data."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from panoptic_mapping.core.field.tensors import to_numpy

__all__ = ["SceneExtent"]


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
    if p.shape[0] and np.isfinite(p).all():
        # column by column: numpy reduces an (N, 3) array along axis 0 ~25x slower
        return (np.array([p[:, d].min() for d in range(3)]),
                np.array([p[:, d].max() for d in range(3)]))
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
        K = np.asarray(to_numpy(K), dtype=np.float64)
        pose = np.asarray(to_numpy(camera_to_world), dtype=np.float64)
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
