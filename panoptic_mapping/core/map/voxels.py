"""A sparse, unbounded index of integer voxel coordinates (numpy).

Keys pack (x, y, z) voxel coordinates into one int64
(:func:`~panoptic_mapping.core.geometry.pack_voxel_keys`), kept sorted
so that lookups are one ``np.searchsorted`` and insertion is one merge. Slots are stable:
a voxel keeps its slot index for life, so per-voxel data can live in plain arrays indexed
by slot that only ever grow.
"""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import pack_voxel_keys, unpack_voxel_keys

__all__ = ["VoxelIndex"]

class VoxelIndex:
    """Maps voxel keys to stable slot numbers 0..n-1."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.int64)  # sorted
        self._slots = np.zeros(0, dtype=np.int64)  # slot of _keys[i]
        self._slot_keys = np.zeros(0, dtype=np.int64)  # key of slot s
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N,) slots of ``keys``; -1 where a key is absent."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._n == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos_c = np.minimum(pos, self._n - 1)
        found = self._keys[pos_c] == keys
        return np.where(found, self._slots[pos_c], -1)

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys``, creating slots for the absent ones (numbered in key order)."""
        keys = np.asarray(keys, dtype=np.int64)
        slots = self.lookup(keys)
        missing = np.unique(keys[slots < 0])
        if missing.size:
            new_slots = np.arange(self._n, self._n + missing.size, dtype=np.int64)
            merged = np.concatenate([self._keys, missing])
            order = np.argsort(merged, kind="stable")
            self._keys = merged[order]
            self._slots = np.concatenate([self._slots, new_slots])[order]
            self._slot_keys = np.concatenate([self._slot_keys, missing])
            self._n += missing.size
            slots = self.lookup(keys)
        return slots

    def nearest(self, points: np.ndarray, coords: np.ndarray, r: int, voxel_size: float,
                inner: int = 0, usable: np.ndarray | None = None) -> np.ndarray:
        """(M,) slot of the existing voxel nearest each point (M, 3) among those at a
        Chebyshev distance in (``inner``, ``r``] voxels of its voxel ``coords`` (M, 3);
        only slots flagged in ``usable`` ((n,) bool) when given; -1 where none."""
        out = np.full(len(points), -1, dtype=np.int64)
        if r <= 0 or not len(points) or self._n == 0:
            return out
        rng = np.arange(-r, r + 1)
        offsets = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3)
        offsets = offsets[np.abs(offsets).max(1) > inner]
        cand_coords = coords[:, None, :] + offsets[None]  # (M, O, 3)
        cand = self.lookup(pack_voxel_keys(cand_coords))
        ok = cand >= 0
        if usable is not None:
            ok[ok] = usable[cand[ok]]
        # the neighbour whose centre is nearest the point, not the first found
        dist = np.linalg.norm((cand_coords + 0.5) * voxel_size - points[:, None, :], axis=-1)
        dist[~ok] = np.inf
        best = np.argmin(dist, axis=1)
        found = np.isfinite(dist[np.arange(len(points)), best])
        out[found] = cand[found, best[found]]
        return out

    def slot_keys(self) -> np.ndarray:
        """(n,) key of every slot, in slot order."""
        return self._slot_keys

    def centers(self, voxel_size: float) -> np.ndarray:
        """(n, 3) float64 world centres of every slot's voxel, in slot order."""
        return (unpack_voxel_keys(self._slot_keys).astype(np.float64) + 0.5) * voxel_size

    def state(self) -> dict[str, np.ndarray]:
        return {"slot_keys": self._slot_keys.copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "VoxelIndex":
        index = cls()
        slot_keys = np.asarray(state["slot_keys"], dtype=np.int64)
        order = np.argsort(slot_keys, kind="stable")
        index._keys = slot_keys[order]
        index._slots = np.arange(slot_keys.size, dtype=np.int64)[order]
        index._slot_keys = slot_keys.copy()
        index._n = slot_keys.size
        return index
