"""A thread-safe, memory-bounded keyframe buffer for incremental training of a neural field.

The mapper offers every incoming :class:`~panoptic_mapping.core.frames.Frame` to a
:class:`KeyframeBuffer`; the buffer keeps the frames that add something (new content or a
new viewpoint), stays under a memory budget by evicting the keyframe whose content the
others cover best, and hands training threads keyframe ids drawn from a recent-favoured
mixture so that new parts of the scene are learnt quickly and old ones are never forgotten.

Geometry conventions are those of :class:`Frame`: ``camera_to_world`` is a (4, 4) rigid
transform in the OpenCV optical convention (x right, y down, z forward) and ``depth`` is
metric depth along the optical axis, 0 = unknown. Pixel (row r, column c) has its centre at
image coordinates (u, v) = (c, r), so a projected point falls in pixel
(round(v), round(u)).

Overlap
    A frame is summarised by a fixed subsample of at most ``overlap_samples`` pixels with
    valid depth (a seeded random choice among the valid pixels, so the same depth mask always
    gives the same pixels), back-projected to world points. A point is *seen* by a keyframe
    when it projects in front of the keyframe's camera (z > 1 mm), inside its image, and --
    when the point was measured and the keyframe has depth at that pixel -- is not occluded
    and not in the keyframe's free space: ``|z - depth| < max(occlusion_tolerance_m,
    occlusion_tolerance_rel * depth)``. A keyframe pixel with unknown depth (0) does not see
    a measured point: the keyframe holds no geometry there, so the new frame adds some.
    The overlap of a frame with the buffer is the fraction of its points seen by at least
    one keyframe (coverage by the union, not the best single keyframe: a frame whose left
    half is in one keyframe and right half in another adds nothing new).

    RGB-only fallback: a frame without depth (or with no valid depth pixel) is sampled the
    same way at a nominal depth -- the median of the per-keyframe median depths of the
    keyframes in the buffer, or ``nominal_depth_m`` when none has depth -- which turns the
    test into a frustum-overlap proxy; such nominal points are never occlusion-tested.

Keyframe selection (:meth:`KeyframeBuffer.consider`), in this order:
    1. the buffer is empty -> accept, ``"first frame"``;
    2. overlap < ``max_overlap`` -> accept, ``"low overlap (0.42)"``;
    3. the pose is novel -> accept, ``"novel pose (0.12 m, 3.0 deg)"``. A pose is novel
       when no keyframe is within *both* ``min_translation_m`` (camera centre distance)
       and ``min_rotation_deg`` (angle of the relative rotation) of it;
    4. otherwise reject, ``"redundant (overlap 0.95, moved 0.01 m, turned 0.5 deg)"``,
       where moved/turned are measured to the nearest keyframe (smallest
       ``max(distance / min_translation_m, angle / min_rotation_deg)``).

Replacement policy (when the budget is exceeded)
    Evict the keyframe with the highest *redundancy*: the fraction of its sampled points
    covered by at least one other keyframe. The ``recent_window`` newest keyframes are
    protected unless nothing else is left; ties go to the oldest. The keyframe being
    inserted or relabelled is never evicted by its own insertion.

    "Covered" is stricter than "seen": the other keyframe must see the point (same
    visibility and occlusion test as above) at least as far inside its image as the point
    lies in the keyframe's own image, up to ``eviction_margin`` (distances to the nearest
    border as a fraction of the image width or height). An identical view therefore covers
    everything, an overlapping one covers its interior, and a point on a keyframe's border
    is only covered by a view that extends beyond that border. Why: with a plain "in the
    image" test (which tolerates half a pixel at the borders), a camera creeping along in
    sub-pixel steps makes every keyframe look fully covered by its newer neighbour, and
    evicting them one after the other silently erodes the covered region (in the corridor
    test, a 10 m walk kept only its last 0.2 m). With this test a fully covered keyframe
    lies inside the union of the others' views, so chains of evictions do not drift; when
    no keyframe is fully covered, the one whose eviction loses the fewest points goes.

    Each keyframe caches its world points and, per point, the number of *other* keyframes
    covering it. Adding or removing a keyframe updates those counts with one vectorised
    projection of all cached points into that keyframe plus one projection of its points
    into each other keyframe, so an insertion or an eviction costs O(K * samples) and
    choosing the victim O(K): with K = 100 keyframes of 256 samples, one CPU core takes
    about 1.5 ms per eviction (victim choice 0.05 ms), 2 ms per ``consider`` and 4 ms per
    ``add`` that evicts.

Memory accounting: :meth:`KeyframeBuffer.nbytes` is the sum of :meth:`Keyframe.nbytes`
(frame arrays + labels) plus the overlap cache (69 bytes per sample and 256 per keyframe:
about 18 kB per keyframe at 256 samples); the budget is ``budget_mb * 1e6`` bytes.

Thread safety: one :class:`threading.RLock` guards all state and every public method of
:class:`KeyframeBuffer` takes it, so all of them may be called from any thread. Keyframes
handed out (by ``add``, ``get``, ``snapshot``) are shallow copies: their ``labels`` and
``version`` never change under the reader, while the arrays are shared with the buffer and
must be treated as read-only (labels arrays are marked read-only; a frame must not be
modified after it is added).

Pure numpy; ROS-free.
"""
from __future__ import annotations

import copy
import functools
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from panoptic_mapping.params import param, validate_fields
from panoptic_mapping.core.frames import Frame

__all__ = ["BYTES_PER_MB", "KeyframeConfig", "Keyframe", "KeyframeBuffer"]

#: The budget's megabyte: 10^6 bytes.
BYTES_PER_MB = 1_000_000

# Points closer than this to a camera's image plane count as behind it (and would make the
# projection blow up).
_MIN_Z = 1e-3
# Seed of the fixed pixel subsample: the same depth mask always yields the same pixels, so
# overlap estimates are repeatable and a re-projection of a removed keyframe is exact.
_SAMPLE_SEED = 0x5EED
# Per cached sample: a float64 world point (24 bytes), its float64 required border distance
# (8 bytes) and an int32 cover count (4 bytes) in the entry, plus the point, distance and a
# bool flag again in the buffer's concatenated copy (33 bytes).
_CACHE_BYTES_PER_SAMPLE = (3 * 8 + 8 + 4) + (3 * 8 + 8 + 1)
# Round-off allowance of border-distance comparisons (an identical view must cover).
_BORDER_EPS = 1e-9
# Python object overhead of one cache entry, counted so the budget is not optimistic.
_CACHE_BYTES_PER_ENTRY = 256


# --------------------------------------------------------------------------- configuration


@dataclass
class KeyframeConfig:
    """Keyframe selection, memory budget and training-ray sampling."""

    budget_mb: float = param(
        256.0, "Memory budget of the keyframe buffer in MB (10^6 bytes): frames, labels and "
        "overlap caches; when an insertion exceeds it the most redundant keyframe is evicted.",
        minimum=0.001)
    min_translation_m: float = param(
        0.05, "A frame whose camera centre is at least this far (m) from every keyframe whose "
        "orientation is within min_rotation_deg has a novel pose and becomes a keyframe even "
        "when its content is already covered.", minimum=0.0)
    min_rotation_deg: float = param(
        5.0, "A frame turned by at least this angle (deg) from every keyframe closer than "
        "min_translation_m has a novel pose and becomes a keyframe even when its content is "
        "already covered.", minimum=0.0, maximum=180.0)
    max_overlap: float = param(
        0.9, "A frame becomes a keyframe when less than this fraction of its sampled pixels "
        "is seen by at least one keyframe (in view, in front, not occluded); a frame covered "
        "at least this much is only added if its pose is novel.", minimum=0.0, maximum=1.0)
    overlap_samples: int = param(
        256, "Number of pixels with valid depth subsampled per frame to estimate overlap and "
        "redundancy (cost and cache memory grow linearly with it).", minimum=1)
    recent_window: int = param(
        8, "Number of newest keyframes that form the recent window: favoured when sampling "
        "training rays and protected from eviction unless nothing else is left.", minimum=0)
    recent_fraction: float = param(
        0.5, "Share of training keyframe draws taken uniformly from the recent window; the "
        "rest are uniform over all keyframes so old ones are never forgotten.",
        minimum=0.0, maximum=1.0)
    eviction_margin: float = param(
        0.1, "For eviction, a keyframe's point counts as covered by another keyframe only if it "
        "lies as far inside that keyframe's image as inside its own, up to this fraction of "
        "the image width/height; this stops chains of small moves from eroding coverage.",
        minimum=0.0, maximum=0.5)
    nominal_depth_m: float = param(
        2.0, "Depth (m) at which RGB-only frames are sampled for the frustum-overlap proxy "
        "when no keyframe with depth gives a median depth to use instead.", minimum=0.01)
    occlusion_tolerance_m: float = param(
        0.05, "A point is seen by a keyframe with depth when its depth there differs from the "
        "keyframe's depth by less than this (m) or than occlusion_tolerance_rel of it.",
        minimum=0.0)
    occlusion_tolerance_rel: float = param(
        0.05, "Relative depth tolerance of the occlusion test (fraction of the keyframe's "
        "depth); the larger of the two tolerances applies.", minimum=0.0)

    def __post_init__(self) -> None:
        # Direct construction gets the same type and range checks as a loaded config.
        validate_fields(self, "keyframes")

    @property
    def budget_bytes(self) -> int:
        return int(self.budget_mb * BYTES_PER_MB)


# --------------------------------------------------------------------------- keyframe


@dataclass
class Keyframe:
    """One frame kept for training, with the map instance ids associated to its pixels.

    Attributes:
        id: unique, monotonically increasing over the buffer's lifetime (never reused).
        frame: the frame (treat as read-only).
        labels: (H, W) int32 map instance ids of the frame's pixels, written by the mapper's
            association step through :meth:`KeyframeBuffer.set_labels`; None until then.
        version: incremented every time ``labels`` change (0 = never labelled), so a trainer
            can tell whether its cached supervision is stale.
        added_at: insertion counter (age): larger = newer. Ids are allocated in insertion
            order, so today it equals ``id``; eviction and sampling use ``added_at``.
    """

    id: int
    frame: Frame
    labels: np.ndarray | None = None
    version: int = 0
    added_at: int = 0

    def nbytes(self) -> int:
        """Memory of the frame's arrays plus the labels."""
        return self.frame.nbytes() + (0 if self.labels is None else self.labels.nbytes)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _View:
    """What is needed to project world points into one camera.

    Attributes:
        rotation: (3, 3) camera-to-world rotation R (columns = camera axes in the world).
        center: (3,) camera centre in the world.
        K: (3, 3) intrinsics.
        height, width: image size in pixels.
        depth: (H, W) float32 depth (0 = unknown) or None.
    """

    rotation: np.ndarray
    center: np.ndarray
    K: np.ndarray
    height: int
    width: int
    depth: np.ndarray | None

    @staticmethod
    def of(frame: Frame) -> _View:
        pose = np.asarray(frame.camera_to_world, dtype=np.float64)
        h, w = frame.shape
        depth = None if frame.depth is None else np.asarray(frame.depth, dtype=np.float32)
        return _View(pose[:3, :3].copy(), pose[:3, 3].copy(),
                     np.asarray(frame.K, dtype=np.float64), int(h), int(w), depth)


def _project(points: np.ndarray, measured: np.ndarray, views: list[_View], tol_m: float,
             tol_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """Which world points each camera sees, and how far inside its image.

    Args:
        points: (N, 3) world points.
        measured: (N,) bool, True where the point comes from measured depth (only those are
            occlusion-tested; nominal-depth points are a frustum proxy).
        views: K cameras.
        tol_m, tol_rel: absolute and relative depth tolerance of the occlusion test.

    Returns:
        seen: (K, N) bool: in front of camera k, inside its image and, for measured points
            when the view has depth, within tolerance of its depth at that pixel.
        border: (K, N) :func:`_border_distance` of the projections (meaningful where seen).
    """
    # Per-view parameters as (K, 1) columns that broadcast against (K, N) point arrays.
    rot = np.stack([vw.rotation for vw in views])[:, :, :, None]  # (K, 3, 3, 1)
    cen = np.stack([vw.center for vw in views])[:, :, None]  # (K, 3, 1)
    kmat = np.stack([vw.K for vw in views])[:, :, :, None]  # (K, 3, 3, 1)
    width = np.array([vw.width for vw in views], dtype=np.float64)[:, None]  # (K, 1)
    height = np.array([vw.height for vw in views], dtype=np.float64)[:, None]
    dx, dy, dz = (points[:, i] - cen[:, i] for i in range(3))  # (K, N) each
    # Camera coordinates R^T (p - c), written out element-wise rather than with matmul:
    # the result is then bit-identical however points and views are batched, which the
    # cover counts rely on (a count added at insertion is subtracted exactly at removal).
    x, y, z = (dx * rot[:, 0, i] + dy * rot[:, 1, i] + dz * rot[:, 2, i] for i in range(3))
    front = z > _MIN_Z
    zs = np.where(front, z, 1.0)  # avoids inf/NaN for points behind; they are masked anyway
    u = (kmat[:, 0, 0] * x + kmat[:, 0, 1] * y) / zs + kmat[:, 0, 2]
    v = kmat[:, 1, 1] * y / zs + kmat[:, 1, 2]
    # Pixel c spans [c - 0.5, c + 0.5): the image spans [-0.5, W - 0.5).
    seen = front & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    with_depth = [k for k, vw in enumerate(views) if vw.depth is not None]
    if with_depth:
        # Depth at each projection (pixel = rounded position, clipped for unseen points):
        # one gather per view, the comparison vectorised over all views.
        cols = np.clip(np.floor(u + 0.5), 0, width - 1).astype(np.intp)
        rows = np.clip(np.floor(v + 0.5), 0, height - 1).astype(np.intp)
        dep = np.zeros(u.shape, dtype=np.float64)
        for k in with_depth:
            dep[k] = views[k].depth[rows[k], cols[k]]
        test = seen & measured[None]
        if len(with_depth) < len(views):
            test[[k for k, vw in enumerate(views) if vw.depth is None]] = False
        ok = (dep > 0) & (np.abs(z - dep) < np.maximum(tol_m, tol_rel * dep))
        seen = np.where(test, ok, seen)
    return seen, _border_distance(u, v, width, height)


def _border_distance(u: np.ndarray, v: np.ndarray, width: Any, height: Any) -> np.ndarray:
    """Distance of image points (u, v) to the nearest image border, as a fraction of the
    image width (left/right) or height (top/bottom): 0 on the border, 0.5 at the centre.
    Arrays broadcast (e.g. (K, N) points with (K, 1) sizes)."""
    du = np.minimum(u + 0.5, width - 0.5 - u) / width
    dv = np.minimum(v + 0.5, height - 0.5 - v) / height
    return np.minimum(du, dv)


def _sample_pixels(valid: np.ndarray, n: int) -> np.ndarray:
    """Fixed subsample of at most ``n`` flat pixel indices where ``valid`` (H, W) is True.

    A seeded random choice rather than a stride: a stride over the raster aliases with the
    image width (it can pick a single column). Returns sorted (S,) int64 indices.
    """
    flat = np.flatnonzero(valid)
    if flat.size <= n:
        return flat
    return flat[_subsample(flat.size, n)]


@functools.lru_cache(maxsize=64)
def _subsample(size: int, n: int) -> np.ndarray:
    """Sorted (n,) seeded random positions in range(size); cached (frames repeat sizes)."""
    pick = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(size, size=n, replace=False))
    pick.setflags(write=False)
    return pick


def _frame_points(frame: Frame, n: int, nominal_depth: float
                  ) -> tuple[np.ndarray, np.ndarray, bool, float | None]:
    """Back-project the frame's fixed pixel subsample to world points.

    Returns:
        points: (S, 3) float64 world points, 1 <= S <= n.
        border: (S,) :func:`_border_distance` of the sampled pixels in this frame.
        measured: True if they come from measured depth, False if from ``nominal_depth``
            (no depth image, or no valid depth pixel).
        median_depth: median depth (m) of the samples when measured, else None.
    """
    h, w = frame.shape
    depth = frame.depth
    valid = None if depth is None else np.asarray(depth) > 0
    measured = valid is not None and bool(valid.any())
    unmeasured = np.ones((h, w), bool) if frame.seen is None else frame.seen
    flat = _sample_pixels(valid if measured else unmeasured, n)
    rows, cols = np.divmod(flat, w)
    z = (np.asarray(depth, dtype=np.float64)[rows, cols] if measured
         else np.full(flat.size, float(nominal_depth)))
    pix = np.stack([cols, rows, np.ones_like(cols)], axis=1).astype(np.float64)
    rays = np.linalg.solve(np.asarray(frame.K, dtype=np.float64), pix.T).T  # z = 1 rays
    cam = rays * (z / rays[:, 2])[:, None]
    pose = np.asarray(frame.camera_to_world, dtype=np.float64)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    border = _border_distance(cols.astype(np.float64), rows.astype(np.float64), w, h)
    return world, border, measured, (float(np.median(z)) if measured else None)


def _rotation_angle_deg(rotations: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Angles (K,) in degrees of the relative rotations between (K, 3, 3) and (3, 3)."""
    # trace(R_k^T R) = sum of the element-wise product.
    cos = (np.einsum("kij,ij->k", rotations, rotation) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# --------------------------------------------------------------------------- buffer


@dataclass
class _Entry:
    """A keyframe with its overlap cache (internal; guarded by the buffer's lock).

    Attributes:
        points: (S, 3) world points of the keyframe's pixel subsample.
        need: (S,) border distance another keyframe must give a point to cover it:
            ``min(border distance here, eviction_margin)``.
        measured: whether ``points`` come from measured depth.
        cover: (S,) int32 number of *other* keyframes in the buffer that cover each point.
        median_depth: median sampled depth (m), None for nominal points.
    """

    kf: Keyframe
    view: _View
    points: np.ndarray
    need: np.ndarray
    measured: bool
    cover: np.ndarray
    median_depth: float | None

    def cache_nbytes(self) -> int:
        return _CACHE_BYTES_PER_SAMPLE * len(self.points) + _CACHE_BYTES_PER_ENTRY

    def nbytes(self) -> int:
        return self.kf.nbytes() + self.cache_nbytes()

    def redundancy(self) -> float:
        """Fraction of this keyframe's points covered by at least one other keyframe."""
        return np.count_nonzero(self.cover) / len(self.cover)


@dataclass
class _Candidate:
    """A frame prepared for a decision: its samples and what the buffer already sees.

    Attributes:
        points, need, measured, median_depth: as in :class:`_Entry`.
        seen_by: (K, S) bool, row k = which of the frame's points keyframe k sees, rows in
            the buffer's insertion order.
        cover: (S,) int32 number of keyframes that cover each point (the eviction test).
    """

    frame: Frame
    view: _View
    points: np.ndarray
    need: np.ndarray
    measured: bool
    median_depth: float | None
    seen_by: np.ndarray
    cover: np.ndarray

    @property
    def overlap(self) -> float:
        if self.seen_by.shape[0] == 0:
            return 0.0
        return float(self.seen_by.any(axis=0).mean())


class KeyframeBuffer:
    """Keyframes under a memory budget, with coverage-keeping eviction; thread-safe.

    See the module docstring for the selection, overlap and eviction rules. All public
    methods are safe to call concurrently from any thread.
    """

    def __init__(self, cfg: KeyframeConfig | None = None) -> None:
        self.cfg = KeyframeConfig() if cfg is None else cfg
        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}  # insertion order = age order
        # Points (N, 3), need (N,) and measured flags (N,) of all entries concatenated in
        # insertion order, kept in step with _entries, so that updating every cover count
        # is one projection.
        self._concat = _empty_concat()
        self._bytes = 0
        self._next_id = 0
        self._added = 0
        self._evictions = 0
        self._removed = 0
        self._accepted: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()

    # ------------------------------------------------------------------ queries

    @property
    def budget_bytes(self) -> int:
        """The memory budget in bytes (``budget_mb * 1e6``)."""
        return self.cfg.budget_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def next_id(self) -> int:
        """The id the next keyframe will get (ids only grow)."""
        with self._lock:
            return self._next_id

    def ids(self) -> list[int]:
        """Ids of the keyframes, oldest first."""
        with self._lock:
            return list(self._entries)

    def get(self, id: int) -> Keyframe | None:
        """A shallow copy of keyframe ``id``, or None if it was evicted or never existed.

        None rather than KeyError because eviction by another thread is a normal event.
        """
        with self._lock:
            entry = self._entries.get(id)
            return None if entry is None else copy.copy(entry.kf)

    def snapshot(self) -> list[Keyframe]:
        """Shallow copies of all keyframes, oldest first, taken atomically under the lock."""
        with self._lock:
            return [copy.copy(e.kf) for e in self._entries.values()]

    def nbytes(self) -> int:
        """Bytes held: keyframes (frames + labels) plus their overlap caches."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, Any]:
        """Counters for status reports.

        Returns keys ``count``, ``mb_used``, ``budget_mb``, ``added``, ``evictions``,
        ``removed`` (explicit removals), ``accepted`` (reason category -> count: "first
        frame", "low overlap", "novel pose", "forced") and ``rejections`` (reason category
        -> count: "redundant", "oversize"). Counters cover the buffer's lifetime (``clear``
        does not reset them).
        """
        with self._lock:
            return {
                "count": len(self._entries),
                "mb_used": self._bytes / BYTES_PER_MB,
                "budget_mb": self.cfg.budget_mb,
                "added": self._added,
                "evictions": self._evictions,
                "removed": self._removed,
                "accepted": dict(self._accepted),
                "rejections": dict(self._rejections),
            }

    def overlap(self, frame: Frame) -> float:
        """Fraction of the frame's sampled points seen by at least one keyframe (0 if none)."""
        with self._lock:
            return self._prepare(frame).overlap

    def consider(self, frame: Frame) -> tuple[bool, str]:
        """Would ``frame`` become a keyframe, and why (see the module docstring's rules).

        Changes nothing (not even the statistics).
        """
        with self._lock:
            accept, reason = self._decide(self._prepare(frame))
            return accept, reason

    def sample_keyframes(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Draw ``n`` keyframe ids for training rays.

        Each draw comes, with probability ``recent_fraction``, uniformly from the
        ``recent_window`` newest keyframes, otherwise uniformly from all keyframes.

        Returns:
            (n,) int64 ids; (0,) when the buffer is empty (a trainer may race the first add).
        """
        rng = np.random.default_rng() if rng is None else rng
        with self._lock:
            ids = np.fromiter(self._entries, dtype=np.int64, count=len(self._entries))
        if ids.size == 0 or n <= 0:
            return np.empty(0, dtype=np.int64)
        window = min(self.cfg.recent_window, ids.size)
        recent = rng.random(n) < self.cfg.recent_fraction if window else np.zeros(n, bool)
        out = np.empty(n, dtype=np.int64)
        k = int(recent.sum())
        out[recent] = ids[ids.size - window:][rng.integers(0, window, size=k)] if k else []
        out[~recent] = ids[rng.integers(0, ids.size, size=n - k)]
        return out

    # ------------------------------------------------------------------ mutation

    def add(self, frame: Frame, force: bool = False) -> Keyframe | None:
        """Insert ``frame`` as a keyframe if :meth:`consider` accepts it (or ``force``).

        Evicts keyframes by the replacement policy until the buffer fits its budget again.

        Returns:
            A shallow copy of the new keyframe, or None if the frame was rejected.

        Raises:
            ValueError: the frame alone (with its cache) is larger than the budget; the
                message names both sizes. Nothing is changed.
        """
        with self._lock:
            cand = self._prepare(frame)
            cost = frame.nbytes() + _CACHE_BYTES_PER_SAMPLE * len(cand.points) \
                + _CACHE_BYTES_PER_ENTRY
            if cost > self.budget_bytes:
                self._rejections["oversize"] += 1
                raise ValueError(
                    f"frame needs {cost} bytes ({cost / BYTES_PER_MB:.3f} MB with its overlap "
                    f"cache), more than the whole keyframe budget of {self.budget_bytes} bytes "
                    f"({self.cfg.budget_mb} MB)")
            if force:
                reason = "forced"
            else:
                accept, reason = self._decide(cand)
                if not accept:
                    self._rejections[_category(reason)] += 1
                    return None
            entry = self._insert(cand)
            self._accepted[_category(reason)] += 1
            self._evict_to_budget(protect=entry.kf.id)
            return copy.copy(entry.kf)

    def remove(self, id: int) -> bool:
        """Remove keyframe ``id``; False if it is not in the buffer (e.g. already evicted)."""
        with self._lock:
            if id not in self._entries:
                return False
            self._remove_entry(id)
            self._removed += 1
            return True

    def set_labels(self, id: int, labels: np.ndarray | None) -> int | None:
        """Replace the labels of keyframe ``id`` and bump its version.

        Args:
            labels: (H, W) integer map instance ids (copied to a read-only int32 array), or
                None to drop them.

        Returns:
            The new version, or None if the keyframe is gone (evicted meanwhile).

        Raises:
            ValueError: wrong shape or dtype, or the labelled keyframe alone exceeds the
                budget. Larger labels may evict other keyframes to stay within budget.
        """
        with self._lock:
            entry = self._entries.get(id)
            if entry is None:
                return None
            arr = None if labels is None else _as_labels(labels, entry.kf.frame.shape)
            old_bytes = entry.nbytes()
            new_bytes = old_bytes - _labels_nbytes(entry.kf.labels) + _labels_nbytes(arr)
            if new_bytes > self.budget_bytes:
                raise ValueError(f"keyframe {id} with labels needs {new_bytes} bytes, more "
                                 f"than the keyframe budget of {self.budget_bytes} bytes")
            entry.kf.labels = arr
            entry.kf.version += 1
            self._bytes += new_bytes - old_bytes
            self._evict_to_budget(protect=id)
            return entry.kf.version

    def clear(self) -> None:
        """Drop every keyframe (ids keep increasing; lifetime counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._concat = _empty_concat()
            self._bytes = 0

    # ------------------------------------------------------------------ internals (locked)

    def _nominal_depth(self) -> float:
        """Median of the keyframes' median depths, or the configured nominal depth."""
        depths = [e.median_depth for e in self._entries.values() if e.median_depth is not None]
        return float(np.median(depths)) if depths else self.cfg.nominal_depth_m

    def _prepare(self, frame: Frame) -> _Candidate:
        """Sample ``frame`` and test its points against every keyframe."""
        points, border, measured, median = _frame_points(frame, self.cfg.overlap_samples,
                                                         self._nominal_depth())
        need = np.minimum(border, self.cfg.eviction_margin)
        seen, covered = self._test(points, need, measured,
                                   [e.view for e in self._entries.values()])
        return _Candidate(frame, _View.of(frame), points, need, measured, median, seen,
                          covered.sum(axis=0, dtype=np.int32))

    def _test(self, points: np.ndarray, need: np.ndarray, measured: np.ndarray | bool,
              views: list[_View]) -> tuple[np.ndarray, np.ndarray]:
        """Visibility and coverage of ``points`` (N, 3) in each of K ``views``.

        Returns (K, N) bool ``seen`` (overlap test) and ``covered`` (eviction test: seen at
        least ``need`` (N,) inside the image).
        """
        if not views:
            empty = np.zeros((0, len(points)), dtype=bool)
            return empty, empty
        flags = np.broadcast_to(np.asarray(measured, dtype=bool), (len(points),))
        seen, border = _project(points, flags, views, self.cfg.occlusion_tolerance_m,
                                self.cfg.occlusion_tolerance_rel)
        return seen, seen & (border >= need - _BORDER_EPS)

    def _pose_novelty(self, view: _View) -> tuple[bool, float, float]:
        """(novel, distance m, angle deg) with respect to the nearest keyframe."""
        entries = list(self._entries.values())
        centers = np.stack([e.view.center for e in entries])
        rotations = np.stack([e.view.rotation for e in entries])
        dist = np.linalg.norm(centers - view.center, axis=1)
        angle = _rotation_angle_deg(rotations, view.rotation)
        # A keyframe is "near" when within both thresholds: normalised distance < 1.
        score = np.maximum(_safe_ratio(dist, self.cfg.min_translation_m),
                           _safe_ratio(angle, self.cfg.min_rotation_deg))
        k = int(np.argmin(score))
        return bool(score[k] >= 1.0), float(dist[k]), float(angle[k])

    def _decide(self, cand: _Candidate) -> tuple[bool, str]:
        if not self._entries:
            return True, "first frame"
        overlap = cand.overlap
        if overlap < self.cfg.max_overlap:
            return True, f"low overlap ({overlap:.2f})"
        novel, moved, turned = self._pose_novelty(cand.view)
        if novel:
            return True, f"novel pose ({moved:.2f} m, {turned:.1f} deg)"
        return False, f"redundant (overlap {overlap:.2f}, moved {moved:.2f} m, " \
                      f"turned {turned:.1f} deg)"

    def _update_covers(self, view: _View, sign: int) -> None:
        """Add ``sign`` to the cover count of every cached point that ``view`` covers.

        One projection of all cached points (concatenated in insertion order) into ``view``.
        """
        if not self._entries:
            return
        covered = self._test(*self._concat, [view])[1][0]
        start = 0
        for entry in self._entries.values():
            stop = start + len(entry.points)
            entry.cover += sign * covered[start:stop]
            start = stop

    def _insert(self, cand: _Candidate) -> _Entry:
        # Existing keyframes' points covered by the newcomer: their counts go up.
        self._update_covers(cand.view, +1)
        kf = Keyframe(id=self._next_id, frame=cand.frame, added_at=self._next_id)
        self._next_id += 1
        entry = _Entry(kf, cand.view, cand.points, cand.need, cand.measured,
                       cand.cover.copy(), cand.median_depth)
        self._entries[kf.id] = entry
        flags = np.full(len(entry.points), entry.measured)
        self._concat = tuple(np.concatenate([old, new]) for old, new in
                             zip(self._concat, (entry.points, entry.need, flags)))
        self._bytes += entry.nbytes()
        self._added += 1
        return entry

    def _remove_entry(self, id: int) -> None:
        start = 0
        for i, other in self._entries.items():
            if i == id:
                break
            start += len(other.points)
        entry = self._entries.pop(id)
        stop = start + len(entry.points)
        self._concat = tuple(np.concatenate([a[:start], a[stop:]]) for a in self._concat)
        self._bytes -= entry.nbytes()
        # The same bit-exact test as at insertion, so the counts return exactly.
        self._update_covers(entry.view, -1)

    def _choose_victim(self, protect: int) -> int | None:
        """Id of the most redundant keyframe outside the recent window (oldest on ties)."""
        ids = [i for i in self._entries if i != protect]
        window = self.cfg.recent_window
        recent = set(list(self._entries)[-window:]) if window else set()
        candidates = [i for i in ids if i not in recent] or ids
        if not candidates:
            return None
        # Entries are in age order, so max() keeps the oldest of equally redundant ones.
        return max(candidates, key=lambda i: (self._entries[i].redundancy(),
                                              -self._entries[i].kf.added_at))

    def _evict_to_budget(self, protect: int) -> None:
        while self._bytes > self.budget_bytes:
            victim = self._choose_victim(protect)
            if victim is None:  # unreachable: a single keyframe always fits (checked)
                raise RuntimeError("keyframe budget exceeded by a single keyframe")
            self._remove_entry(victim)
            self._evictions += 1

    def _check_invariants(self) -> None:
        """Recompute the byte total and every cover count from scratch (for tests)."""
        with self._lock:
            assert self._bytes == sum(e.nbytes() for e in self._entries.values())
            entries = list(self._entries.values())
            if entries:
                expected_concat = (
                    np.concatenate([e.points for e in entries]),
                    np.concatenate([e.need for e in entries]),
                    np.concatenate([np.full(len(e.points), e.measured) for e in entries]))
                assert all(np.array_equal(a, b) for a, b in zip(self._concat, expected_concat))
            else:
                assert len(self._concat[0]) == 0
            for i, entry in self._entries.items():
                views = [o.view for j, o in self._entries.items() if j != i]
                expected = self._test(entry.points, entry.need, entry.measured,
                                      views)[1].sum(axis=0, dtype=np.int32)
                assert np.array_equal(entry.cover, expected), f"stale cover of keyframe {i}"


# --------------------------------------------------------------------------- helpers


def _empty_concat() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(0, 3) points, (0,) need, (0,) flags: the concatenated cache of an empty buffer."""
    return np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=bool)


def _category(reason: str) -> str:
    """Reason without its numbers: "low overlap (0.42)" -> "low overlap"."""
    return reason.split(" (", 1)[0]


def _safe_ratio(value: np.ndarray, threshold: float) -> np.ndarray:
    """value / threshold, with a zero threshold meaning "any difference is novel"."""
    if threshold > 0:
        return value / threshold
    return np.where(value > 0, np.inf, 0.0)


def _labels_nbytes(labels: np.ndarray | None) -> int:
    return 0 if labels is None else labels.nbytes


def _as_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Validated read-only (H, W) int32 copy of ``labels``."""
    arr = np.asarray(labels)
    if arr.shape != tuple(shape) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be an {tuple(shape)} integer image, got "
                         f"{arr.shape} {arr.dtype}")
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError("labels do not fit in int32")
    arr = arr.astype(np.int32, copy=True)
    arr.setflags(write=False)
    return arr
