"""Which keyframes show each instance, and when the newest of them was taken.

A keyframe's label image holds the map ids of its pixels as they were when it was labelled
(at ingest, and again at each re-association); ids merged or deleted since then are
resolved through the id table's lookup table (:meth:`IdTable.id_lut`), so every keyframe
counts for the id its pixels carry today. An id is *observed* by a keyframe when at least
``min_pixels`` of its pixels carry it (after resolution: the pixels of ids merged into it
add up).

Only the keyframes the map holds count: the buffer is bounded, so an evicted keyframe no
longer counts, and a frame that did not become a keyframe does not count either.

:class:`LabelCounts` counts each label image once per version (the counts are cached by
keyframe id and version); :func:`id_observations` resolves and tallies them. Plain numpy:
the caller hands in the keyframes' arrays (this module knows no keyframe buffer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["IdObservations", "LabelCounts", "label_counts", "id_observations"]


@dataclass(frozen=True)
class IdObservations:
    """Per-id keyframe observations, indexed by instance id (today's ids).

    Attributes:
        keyframes: (n,) int64 number of keyframes observing each id (0 for ids >= n).
        last_stamp: (n,) float64 stamp [s] of the newest of them, NaN when none.
    """

    keyframes: np.ndarray
    last_stamp: np.ndarray

    @classmethod
    def empty(cls) -> "IdObservations":
        return cls(np.zeros(1, np.int64), np.full(1, np.nan))

    def of(self, instance_id: int) -> tuple[int, float | None]:
        """(number of keyframes, newest stamp [s] or None) of one id."""
        if not 0 <= instance_id < len(self.keyframes):
            return 0, None
        stamp = float(self.last_stamp[instance_id])
        return int(self.keyframes[instance_id]), None if math.isnan(stamp) else stamp


def label_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids in a label image and their pixel counts.

    Args:
        labels: (H, W) non-negative integer map ids (0 = none).

    Returns:
        ids (K,) int64, ascending, without 0, and their pixel counts (K,) int64.
    """
    flat = np.asarray(labels).reshape(-1)
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if flat.min() < 0:
        raise ValueError("label images hold non-negative ids")
    counts = np.bincount(flat)
    ids = np.flatnonzero(counts[1:]) + 1
    return ids.astype(np.int64), counts[ids].astype(np.int64)


class LabelCounts:
    """:func:`label_counts` of keyframes, recomputed only for label images that changed.

    Keyframe ids must be unique within one buffer (they are never reused): use one
    instance per keyframe buffer.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def __call__(self, keyframes: Iterable[tuple[int, int, np.ndarray | None]]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Counts of each keyframe, in order; forgets the keyframes not passed.

        Args:
            keyframes: (keyframe id, labels version, (H, W) labels or None) per keyframe.

        Returns:
            (ids (K,), counts (K,)) per keyframe (both empty for unlabelled ones).
        """
        fresh: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        out = []
        for kf_id, version, labels in keyframes:
            hit = self._cache.get(kf_id)
            if hit is None or hit[0] != version:
                ids, counts = ((np.zeros(0, np.int64), np.zeros(0, np.int64))
                               if labels is None else label_counts(labels))
                hit = (version, ids, counts)
            fresh[kf_id] = hit
            out.append(hit[1:])
        self._cache = fresh
        return out


def id_observations(counts: Sequence[tuple[np.ndarray, np.ndarray]],
                    stamps: Sequence[float], lut: np.ndarray, min_pixels: int
                    ) -> IdObservations:
    """How many keyframes observe each id today, and the newest stamp among them.

    Args:
        counts: per keyframe, (ids (K,), pixel counts (K,)) of its label image.
        stamps: (F,) stamp [s] of each keyframe (same order as ``counts``).
        lut: (n,) int every id issued -> the id it is today (0: deleted). Ids a label
            image holds beyond the table (issued after it was read) count for nothing.
        min_pixels: pixels an id needs in a keyframe to be observed by it (>= 1).

    Returns:
        :class:`IdObservations` indexed like ``lut``.
    """
    if len(counts) != len(stamps):
        raise ValueError(f"{len(counts)} label counts for {len(stamps)} stamps")
    lut = np.asarray(lut, dtype=np.int64).reshape(-1)
    n = max(len(lut), 1)
    if not counts or len(lut) == 0:
        return IdObservations(np.zeros(n, np.int64), np.full(n, np.nan))
    frame = np.concatenate([np.full(len(ids), k, np.int64) for k, (ids, _) in enumerate(counts)])
    raw = np.concatenate([np.asarray(ids, np.int64) for ids, _ in counts])
    pixels = np.concatenate([np.asarray(c, np.float64) for _, c in counts])
    known = raw < len(lut)
    today = np.where(known, lut[np.where(known, raw, 0)], 0)
    keep = today > 0
    # one (keyframe, id today) pair per key: the pixels of merged ids add up
    pair, inv = np.unique(frame[keep] * n + today[keep], return_inverse=True)
    total = np.bincount(inv.reshape(-1), weights=pixels[keep], minlength=len(pair))
    seen = pair[total >= max(int(min_pixels), 1)]
    ids, frames = seen % n, seen // n
    keyframes = np.bincount(ids, minlength=n).astype(np.int64)
    last = np.full(n, np.nan)
    np.fmax.at(last, ids, np.asarray(stamps, np.float64)[frames])
    return IdObservations(keyframes, last)
