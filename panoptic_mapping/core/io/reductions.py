"""The labeled cloud's per-keyframe reductions, kept under a memory bound.

A keyframe with measured depth is reduced once to one point per cloud voxel
(:func:`~panoptic_mapping.core.io.export.voxel_means`); the next cloud reuses it unless
the keyframe's frame or pose changed. At 640x480 a reduction holds ~130k points (about 2
MB), half a keyframe again, so the reductions get their own budget
(``export.cloud_cache_mb``): the least recently used go first, and are recomputed when a
cloud asks for them again. Thread-safe: every method takes one lock, never held across
the caller's work.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["ReductionCache"]


class ReductionCache:
    """Keyframe id -> (frame, pose (4, 4), points (M, 3) float32, colours (M, 3) uint8),
    at most ``budget_bytes`` of points and colours in all (least recently used evicted)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[int, tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = \
            OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(entry: tuple[Any, np.ndarray, np.ndarray, np.ndarray]) -> int:
        return entry[2].nbytes + entry[3].nbytes

    def get(self, kf_id: int, frame: Any, pose: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray] | None:
        """(points, colours) kept for ``kf_id`` when they were made from this very frame
        object at this pose; None otherwise."""
        with self._lock:
            entry = self._entries.get(kf_id)
            if entry is None or entry[0] is not frame or not np.array_equal(entry[1], pose):
                return None
            self._entries.move_to_end(kf_id)
            return entry[2], entry[3]

    def put(self, kf_id: int, frame: Any, pose: np.ndarray, points: np.ndarray,
            colours: np.ndarray) -> bool:
        """Keep a reduction (replacing the keyframe's old one); False when it alone is
        larger than the budget (nothing kept for it)."""
        entry = (frame, np.array(pose, copy=True), points, colours)
        size = self._size(entry)
        with self._lock:
            self._drop(kf_id)
            if size > self.budget_bytes:
                return False
            while self._entries and self._bytes + size > self.budget_bytes:
                self._drop(next(iter(self._entries)))
                self.evictions += 1
            self._entries[kf_id] = entry
            self._bytes += size
            return True

    def keep_only(self, kf_ids: set[int]) -> None:
        """Forget the reductions of keyframes no longer in the buffer."""
        with self._lock:
            for stale in [k for k in self._entries if k not in kf_ids]:
                self._drop(stale)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _drop(self, kf_id: int) -> None:
        entry = self._entries.pop(kf_id, None)
        if entry is not None:
            self._bytes -= self._size(entry)

    def points(self, kf_id: int) -> np.ndarray | None:
        """The kept (M, 3) points of ``kf_id`` (None: none kept), for inspection."""
        with self._lock:
            entry = self._entries.get(kf_id)
            return None if entry is None else entry[2]

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
