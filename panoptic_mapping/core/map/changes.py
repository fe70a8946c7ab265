"""Change detection: instances that left the place the map holds them at.

Nobody tells the map about everything that moves. A frame with measured depth looks at
the voxels each shown instance holds (where its votes are the voxel's best): a voxel the
frame **sees through** (the depth behind its pixel lies farther, along that ray and the
rays beside it) is empty now; a voxel on the measured surface is still there; a voxel
behind the measured surface is occluded and says nothing. A view says an instance is
*gone* when enough of its voxels are judged and most of them are seen through, and *there*
when a fair share of them lies on the surface. ``gone_views`` views saying gone, with none
saying there in between, remove the instance (through the same path as a
``remove_instance`` request, so outputs follow) and record an event.

An object that was moved, not taken away, shows up elsewhere as a new instance. A removal
keeps the removed instance's **shape** (:class:`Shape`: voxels shown, extents, mean
embedding) for a while; a new instance with the same shape (extents within a ratio,
embeddings alike: without an embedder there is no re-identification), the only one that
matches, is the object moved
(:func:`match_moved`): it takes the removed id back and a "moved" event is recorded, so a
manipulation stack keeps the id.

Why voxels the instance *shows*, not every voxel it has votes in: an object's boundary
voxels hold its neighbours' votes too, and the table under a mug must not vote the mug
away. Why the 3x3 nearest depth for seeing through: a voxel a pixel off an outline would
otherwise be seen through in every view (see :func:`~.views.depth_verdicts`).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.map.views import depth_verdicts

__all__ = ["ChangeEvent", "InstanceVerdict", "ChangeDetector", "Shape", "GoneInstance",
           "match_moved"]


@dataclass(frozen=True)
class InstanceVerdict:
    """What one view says about one instance: voxels judged, seen through, on the surface."""

    judged: int
    through: int
    present: int


@dataclass(frozen=True)
class ChangeEvent:
    """An instance the map removed, or found moved, on its own.

    Attributes:
        instance_id: the instance. kind: "removed" or "moved". frame: the map's frame count
            when it was decided. stamp: that frame's stamp [s]. centroid: (3,) where it is
            ("moved") or was ("removed"): the mean of the voxels it shows / showed. views:
            the views that said it was gone ("moved": 0). previous: "moved": (3,) where it
            was removed from; else None. seen_as: "moved": the new instance it was seen as
            at its new place (merged into instance_id now); else 0.
    """

    instance_id: int
    kind: str
    frame: int
    stamp: float
    centroid: tuple[float, float, float]
    views: int
    previous: tuple[float, float, float] | None = None
    seen_as: int = 0


@dataclass(frozen=True)
class Shape:
    """What an instance looks like in the map, to know it again elsewhere.

    Attributes:
        voxels: voxels it shows. extent: (3,) [m] its horizontal extents sorted (a turned
            object keeps them) and its vertical extent, of the voxel centres (10th to 90th
            percentile) plus a voxel.
        centroid: (3,). embedding: (D,) unit mean embedding, or None.
    """

    voxels: int
    extent: tuple[float, float, float]
    centroid: tuple[float, float, float]
    embedding: np.ndarray | None = None

    @classmethod
    def of(cls, centres: np.ndarray, voxel_size: float,
           embedding: np.ndarray | None = None) -> "Shape":
        """The shape of the voxel centres (V, 3) an instance shows (extents between the
        10th and 90th percentiles: a few stray voxels do not change them)."""
        lo, hi = np.percentile(centres, [10.0, 90.0], axis=0)
        span = hi - lo + voxel_size
        horizontal = sorted(span[:2].tolist(), reverse=True)
        return cls(int(len(centres)), (horizontal[0], horizontal[1], float(span[2])),
                   tuple(float(c) for c in centres.mean(0)), embedding)

    def matches(self, other: "Shape", size_ratio: float, min_cosine: float,
                mean_ratio: float | None = None) -> float | None:
        """How unlike the two shapes are (sum of |log ratio| of their extents), or None
        when a ratio exceeds ``size_ratio``, their geometric mean exceeds ``mean_ratio``,
        or the embeddings disagree or one is missing: extents alone do not tell one object
        from another of its size (on a static real sequence, segments of furniture
        'matched' removed ones a metre away). Not the voxel counts: how many voxels an
        object shows depends on how many views saw it."""
        logs = [abs(np.log(max(a, 1e-9) / max(b, 1e-9)))
                for a, b in zip(self.extent, other.extent)]
        if max(logs) > np.log(size_ratio):
            return None
        if mean_ratio is not None and np.mean(logs) > np.log(mean_ratio):
            return None
        if self.embedding is None or other.embedding is None:
            return None
        if float(self.embedding @ other.embedding) < min_cosine:
            return None
        return float(sum(logs))


@dataclass(frozen=True)
class GoneInstance:
    """An instance removed as gone, kept a while in case it shows up elsewhere.

    Attributes:
        frame: the frame count of the removal. last_present: the last frame a view found
            it where the map held it (an instance born before that is another object: the
            removed one was still at its old place then).
    """

    instance_id: int
    frame: int
    shape: Shape
    last_present: int = 0


def match_moved(gone: list[GoneInstance], new: dict[int, Shape], born: dict[int, int],
                size_ratio: float, min_cosine: float, mean_ratio: float | None = None
                ) -> list[tuple[GoneInstance, int]]:
    """Pairs (removed instance, new id) of one object each: only where the removed
    instance matches exactly one new id and that id no other removed instance (two
    candidates of one size are two guesses; a wrong one would carry an id across the
    room). ``born``: the frame each new id was born in; an id born before the removed
    instance was last found in its old place cannot be it."""
    pairs = [(g, i) for g in gone for i, shape in new.items()
             if born[i] >= g.last_present
             and g.shape.matches(shape, size_ratio, min_cosine, mean_ratio) is not None]
    per_gone = collections.Counter(g.instance_id for g, _ in pairs)
    per_new = collections.Counter(i for _, i in pairs)
    return [(g, i) for g, i in pairs if per_gone[g.instance_id] == 1 and per_new[i] == 1]


class ChangeDetector:
    """Counts, per instance, the views saying it is gone (see the module doc).

    Args:
        min_voxels, gone_share, present_share, gone_views, tol_rel, surface_tol_rel: see
            :class:`~panoptic_mapping.core.map.config.ChangeConfig`.
        margin_m: depth margin added to the relative tolerance (one voxel).
    """

    def __init__(self, min_voxels: int, gone_share: float, present_share: float,
                 gone_views: int, tol_rel: float, margin_m: float,
                 surface_tol_rel: float | None = None):
        self.min_voxels, self.gone_share = min_voxels, gone_share
        self.present_share, self.gone_views = present_share, gone_views
        self.tol_rel, self.margin_m = tol_rel, margin_m
        self.surface_tol_rel = tol_rel if surface_tol_rel is None else surface_tol_rel
        self.gone: dict[int, int] = {}
        self.total_events = 0  # removals decided (a removal found moved later included)
        self.moved_events = 0
        self.removed: list[GoneInstance] = []  # recent removals (bounded: see prune_removed)
        self.last_present: dict[int, int] = {}  # id -> last frame a view found it there
        # the voxels each instance showed at the last reading: centres (V, 3), ids (V,)
        self.candidates: tuple[np.ndarray, np.ndarray] | None = None
        self.candidates_frame = 0
        self.candidates_shown = np.zeros(0, np.int64)  # the ids shown at that reading

    def set_candidates(self, centres: np.ndarray, owner: np.ndarray, frame: int,
                       shown: np.ndarray) -> None:
        """The voxels to judge from now on (re-read by the map every few frames and when
        an instance became shown), the frame count and the shown ids at the reading."""
        self.candidates = (centres, owner)
        self.candidates_frame = frame
        self.candidates_shown = np.asarray(shown, np.int64)

    def judge(self, centres: np.ndarray, owner: np.ndarray, depth: np.ndarray, K: np.ndarray,
              camera_to_world: np.ndarray) -> dict[int, InstanceVerdict]:
        """Verdicts of one view on the instances whose voxels it sees.

        Args:
            centres: (V, 3) centres of the voxels the instances show; owner: (V,) their ids.
            depth: (H, W) measured depth, 0 = none. K: (3, 3). camera_to_world: (4, 4).
        """
        if len(centres) == 0:
            return {}
        through, present = depth_verdicts(centres, depth, K, camera_to_world, self.tol_rel,
                                          self.margin_m, self.surface_tol_rel)
        judged = through | present
        if not judged.any():
            return {}
        ids, inverse = np.unique(owner, return_inverse=True)
        n_judged = np.bincount(inverse, weights=judged, minlength=ids.size)
        n_through = np.bincount(inverse, weights=through, minlength=ids.size)
        n_present = np.bincount(inverse, weights=present, minlength=ids.size)
        return {int(i): InstanceVerdict(int(j), int(t), int(p))
                for i, j, t, p in zip(ids, n_judged, n_through, n_present) if j > 0}

    def update(self, verdicts: dict[int, InstanceVerdict], frame: int = 0) -> list[int]:
        """Count one view's verdicts (of the map's frame count ``frame``); returns the
        instances now gone for good."""
        out = []
        for i, v in verdicts.items():
            if v.judged < self.min_voxels:
                continue
            if v.present >= self.present_share * v.judged:
                self.gone.pop(i, None)  # seen where the map holds it
                self.last_present[i] = frame
            elif v.through >= self.gone_share * v.judged:
                self.gone[i] = self.gone.get(i, 0) + 1
                if self.gone[i] >= self.gone_views:
                    out.append(i)
        return out

    def record(self, instance_id: int, frame: int, stamp: float, shape: Shape,
               born: int = 0) -> ChangeEvent:
        """The event of a removal :meth:`update` decided (before the removal: it takes the
        instance's count of views); its shape is kept to know it again elsewhere.
        ``born``: the frame the instance was born in, where its masks found it: the last
        frame it was known present when no view judged it present (it became shown too
        late for a reading of the shown voxels before it went)."""
        views = self.gone.pop(instance_id, 0)
        self.total_events += 1
        self.removed.append(GoneInstance(int(instance_id), int(frame), shape,
                                         self.last_present.pop(instance_id, int(born))))
        return ChangeEvent(int(instance_id), "removed", int(frame), float(stamp),
                           shape.centroid, views)

    def prune_removed(self, frame: int, max_age: int, max_kept: int = 32) -> None:
        """Forget removals older than ``max_age`` frames (and all but the newest
        ``max_kept``)."""
        self.removed = [g for g in self.removed if frame - g.frame <= max_age][-max_kept:]

    def record_moved(self, gone: GoneInstance, seen_as: int, frame: int, stamp: float,
                     centroid: tuple[float, float, float]) -> ChangeEvent:
        """The event of a removed instance found elsewhere (it is no longer 'removed')."""
        self.removed = [g for g in self.removed if g is not gone]
        self.moved_events += 1
        return ChangeEvent(gone.instance_id, "moved", int(frame), float(stamp), centroid, 0,
                           previous=gone.shape.centroid, seen_as=int(seen_as))

    def forget(self, instance_id: int) -> None:
        """Drop the count of an instance (merged, removed or moved on request)."""
        self.gone.pop(instance_id, None)
        self.last_present.pop(instance_id, None)
