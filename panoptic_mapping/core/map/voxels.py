"""A sparse, unbounded index of integer voxel coordinates (numpy).

Keys pack (x, y, z) voxel coordinates into one int64
(:func:`~panoptic_mapping.core.geometry.pack_voxel_keys`), kept sorted
so that lookups are one ``np.searchsorted`` and insertion is one merge. Slots are stable:
a voxel keeps its slot index for life, so per-voxel data can live in plain arrays indexed
by slot that only ever grow.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from panoptic_mapping.core.geometry import VOXEL_KEY_BIAS, pack_voxel_keys, unpack_voxel_keys

__all__ = ["VoxelIndex", "grown_rows"]


def grown_rows(array: np.ndarray, needed: int, limit: int | None = None) -> np.ndarray:
    """``array`` (R, ...) with at least ``needed`` rows, new ones zero. Grows by a quarter
    at least (never past ``limit`` rows unless ``needed`` is): a map adds voxels every
    frame, and a copy of every per-voxel array each time cost ~3 ms a frame per array at
    a million voxels; the spare rows stay zero (no votes, no weight) and cost at most a
    quarter more memory."""
    if needed <= array.shape[0]:
        return array
    rows = max(needed, array.shape[0] + array.shape[0] // 4 + 4096)
    if limit is not None:
        rows = max(needed, min(rows, limit))
    out = np.zeros((rows,) + array.shape[1:], dtype=array.dtype)
    out[:array.shape[0]] = array
    return out


@lru_cache(maxsize=16)
def _offsets(r: int, inner: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel offsets (O, 3) at a Chebyshev distance in (inner, r], and their key deltas
    (O,) (a key plus its delta is the key of the offset voxel, away from the key range's
    ends). Read-only: cached."""
    rng = np.arange(-r, r + 1)
    offsets = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[np.abs(offsets).max(1) > inner]
    packed = pack_voxel_keys(offsets) - pack_voxel_keys(np.zeros(3, np.int64))
    offsets.setflags(write=False)
    packed.setflags(write=False)
    return offsets, packed


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
        offsets, packed = _offsets(r, inner)
        coords = np.asarray(coords, dtype=np.int64)
        if np.abs(coords).max() < VOXEL_KEY_BIAS - r - 1:
            # packing is linear while no coordinate leaves its bit field
            cand = self.lookup(pack_voxel_keys(coords)[:, None] + packed[None, :])  # (M, O)
        else:
            cand = self.lookup(pack_voxel_keys(coords[:, None, :] + offsets[None]))
        ok = cand >= 0
        if usable is not None:
            ok[ok] = usable[cand[ok]]
        # the neighbour whose centre is nearest the point, not the first found: with rel
        # the point's offset from its own voxel's centre, |o v - rel|^2 ranks the offsets
        # o as v |o|^2 - 2 o . rel does (the |rel|^2 term is the same for all of them)
        rel = points - (coords + 0.5) * voxel_size
        o = offsets.astype(np.float64)
        score = voxel_size * (o * o).sum(1)[None, :] - 2.0 * (rel @ o.T)
        score[~ok] = np.inf
        best = np.argmin(score, axis=1)
        rows = np.arange(len(points))
        found = np.isfinite(score[rows, best])
        out[found] = cand[found, best[found]]
        return out

    def slot_keys(self) -> np.ndarray:
        """(n,) key of every slot, in slot order."""
        return self._slot_keys

    def in_key_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) keys in ascending order and (n,) the slot of each (read-only views):
        lookups of keys in ascending order run several times faster (each binary search
        starts where the last one ended)."""
        keys, slots = self._keys[:self._n].view(), self._slots[:self._n].view()
        keys.setflags(write=False)
        slots.setflags(write=False)
        return keys, slots

    def centers(self, voxel_size: float) -> np.ndarray:
        """(n, 3) float64 world centres of every slot's voxel, in slot order."""
        return (unpack_voxel_keys(self._slot_keys).astype(np.float64) + 0.5) * voxel_size

    def state(self) -> dict[str, np.ndarray]:
        return {"slot_keys": self._slot_keys.copy()}

    def copy(self) -> "VoxelIndex":
        """An independent copy (no re-sorting: :meth:`from_state` sorts)."""
        index = VoxelIndex()
        index._keys, index._slots = self._keys.copy(), self._slots.copy()
        index._slot_keys, index._n = self._slot_keys.copy(), self._n
        return index

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
