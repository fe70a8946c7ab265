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

Why voxels the instance *shows*, not every voxel it has votes in: an object's boundary
voxels hold its neighbours' votes too, and the table under a mug must not vote the mug
away. Why the 3x3 nearest depth for seeing through: a voxel a pixel off an outline would
otherwise be seen through in every view (see :func:`~.views.depth_verdicts`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.map.views import depth_verdicts

__all__ = ["ChangeEvent", "InstanceVerdict", "ChangeDetector"]


@dataclass(frozen=True)
class InstanceVerdict:
    """What one view says about one instance: voxels judged, seen through, on the surface."""

    judged: int
    through: int
    present: int


@dataclass(frozen=True)
class ChangeEvent:
    """An instance the map removed on its own.

    Attributes:
        instance_id: the instance. kind: "removed". frame: the map's frame count when it
            was decided. stamp: that frame's stamp [s]. centroid: (3,) where it was (mean of
            the voxels it showed). views: the views that said it was gone.
    """

    instance_id: int
    kind: str
    frame: int
    stamp: float
    centroid: tuple[float, float, float]
    views: int


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
        self.total_events = 0
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

    def update(self, verdicts: dict[int, InstanceVerdict]) -> list[int]:
        """Count one view's verdicts; returns the instances now gone for good."""
        out = []
        for i, v in verdicts.items():
            if v.judged < self.min_voxels:
                continue
            if v.present >= self.present_share * v.judged:
                self.gone.pop(i, None)  # seen where the map holds it
            elif v.through >= self.gone_share * v.judged:
                self.gone[i] = self.gone.get(i, 0) + 1
                if self.gone[i] >= self.gone_views:
                    out.append(i)
        return out

    def record(self, instance_id: int, frame: int, stamp: float, centroid: np.ndarray
               ) -> ChangeEvent:
        """The event of a removal :meth:`update` decided (before the removal: it takes the
        instance's count of views)."""
        views = self.gone.pop(instance_id, 0)
        self.total_events += 1
        return ChangeEvent(int(instance_id), "removed", int(frame), float(stamp),
                           tuple(float(c) for c in centroid), views)

    def forget(self, instance_id: int) -> None:
        """Drop the count of an instance (merged, removed or moved on request)."""
        self.gone.pop(instance_id, None)
