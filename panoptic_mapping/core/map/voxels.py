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
from panoptic_mapping.core.map.grouping import sort_order, unique_inverse_counts

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

    def insert(self, keys: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """Slots of ``keys``, creating slots for the absent ones (numbered in key order).

        Args:
            known: (N,) slots of ``keys`` from an earlier :meth:`lookup` of this index
                (-1 where absent then), or None. Slots never change, so only the keys
                absent then are looked up again: a frame's points are looked up once.
        """
        shape = np.shape(keys)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if known is None:
            slots = self.lookup(keys)
        else:
            slots = np.array(known, dtype=np.int64).reshape(-1)
            ask = np.flatnonzero(slots < 0)
            slots[ask] = self.lookup(keys[ask])
        absent = np.flatnonzero(slots < 0)
        if absent.size:
            missing, which, _ = unique_inverse_counts(keys[absent])
            new_slots = np.arange(self._n, self._n + missing.size, dtype=np.int64)
            # merged in place of a re-sort: the new keys' places in the sorted keys
            at = np.searchsorted(self._keys, missing)
            self._keys = np.insert(self._keys, at, missing)
            self._slots = np.insert(self._slots, at, new_slots)
            self._slot_keys = np.concatenate([self._slot_keys, missing])
            self._n += missing.size
            slots[absent] = new_slots[which.reshape(-1)]
        return slots.reshape(shape)

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
            cand = self._neighbour_slots(pack_voxel_keys(coords), r, inner)  # (M, O)
        else:
            cand = self.lookup(pack_voxel_keys(coords[:, None, :] + offsets[None]))
        ok = cand >= 0
        if usable is not None:
            ok[ok] = usable[cand[ok]]
        # the neighbour whose centre is nearest the point, not the first found: with rel
        # the point's offset from its own voxel's centre, |o v - rel|^2 ranks the offsets
        # o as v |o|^2 - 2 o . rel does (the |rel|^2 term is the same for all of them)
        rows = np.flatnonzero(ok.any(1))  # points with a neighbour at all
        if rows.size == 0:
            return out
        ok, cand = ok[rows], cand[rows]
        rel = points[rows] - (coords[rows] + 0.5) * voxel_size
        o = offsets.astype(np.float64)
        score = voxel_size * (o * o).sum(1)[None, :] - 2.0 * (rel @ o.T)
        score[~ok] = np.inf
        best = np.argmin(score, axis=1)
        out[rows] = cand[np.arange(rows.size), best]
        return out

    def _neighbour_slots(self, own: np.ndarray, r: int, inner: int) -> np.ndarray:
        """(M, O) slots of the voxels at the offsets ``_offsets(r, inner)`` (O) from the
        voxels of keys ``own`` (M,); -1 where absent. Needs every coordinate at least r + 1
        inside its key field (packing linear).

        z is the packed key's lowest field, so the 2r + 1 keys of one (dx, dy) column are
        consecutive integers and lie, where they exist, among the 2r + 1 sorted keys from
        the first one's place: one binary search per column, (2r + 1)^2 instead of
        (2r + 1)^3 (at 640x480 the search for points in empty voxels took ~50 ms a frame).
        The keys are searched in ascending order, which runs several times faster (each
        binary search starts where the last one ended)."""
        w = 2 * r + 1
        full, full_packed = _offsets(r, -1)  # every offset, in the same order
        wanted = np.flatnonzero(np.abs(full).max(1) > inner)
        order = sort_order(own)
        ascending = own[order]
        last = self._n - 1
        out = np.empty((own.size, wanted.size), dtype=np.int64)
        column_of = {int(c): k for k, c in enumerate(wanted)}
        for col in np.unique(wanted // w):
            first = ascending + full_packed[col * w]  # dz = -r
            at = np.searchsorted(self._keys, first)
            near = [np.minimum(at + i, last) for i in range(w)]
            near_keys = [self._keys[i] for i in near]
            near_slots = [self._slots[i] for i in near]
            for j in range(w):
                k = column_of.get(int(col * w + j))
                if k is None:
                    continue
                target = first + j
                found = np.full(own.size, -1, dtype=np.int64)
                for i in range(j + 1):  # key j of the column is at most j places on
                    found = np.where(near_keys[i] == target, near_slots[i], found)
                out[:, k] = found
        cand = np.empty_like(out)
        cand[order] = out
        return cand

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
