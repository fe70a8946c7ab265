"""How fast a map follows an object moved half-way through a stream (``--move-at``).

Scored on the map's labeled cloud (what RViz and ``get_instance`` show), after every frame
from the move on, on the object's surface before and after the move: the 1 cm voxels of
its ground-truth points in the frames before the move, and the same voxels shifted by the
move (the lowest centimetre left out: that is the table top it stood on):

* **cleared**: the old place holds at most ``CLEAR_SHARE`` of the points it held just
  before the move (the keyframes taken before still see the object there unless the map
  noticed it left);
* **shown**: the new place holds points carrying an instance id on at least ``SHOW_SHARE``
  of the object's surface voxels that the frames since the move have seen (the camera
  shows the new place gradually; what it has not seen yet the map cannot know);
* ``frames_to_follow`` = frames after the move until both hold (and keep holding to the end
  of the stream); -1 when never.

``id_kept``: the new place's majority id is the id the old place had before the move.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_mapping.bench.types import SceneFrame
from panoptic_mapping.core.geometry import (
    backproject,
    pack_voxel_keys,
    unpack_voxel_keys,
    voxel_coords,
)

__all__ = ["MoveTracker", "CLEAR_SHARE", "SHOW_SHARE"]

CLEAR_SHARE = 0.1
SHOW_SHARE = 0.5
_ABOVE_M = 0.01  # points lower than this above the object's bottom are the table's
VOXEL_M = 0.01


def _keys(xyz: np.ndarray) -> np.ndarray:
    return pack_voxel_keys(voxel_coords(np.asarray(xyz, np.float64), VOXEL_M))


def object_keys(moved: dict, frames: list[SceneFrame]) -> np.ndarray:
    """Sorted voxel keys of the moved object's surface in ``frames`` (ground truth)."""
    pts = []
    for f in frames:
        xyz, flat = backproject(f.depth, f.K, f.camera_to_world)
        pts.append(xyz[np.asarray(f.instance).reshape(-1)[flat] == moved["instance"]])
    pts = np.concatenate(pts) if pts else np.zeros((0, 3))
    pts = pts[pts[:, 2] > moved["aabb_before"][0][2] + _ABOVE_M]
    return np.unique(_keys(pts))


def surface_keys(moved: dict, frames: list[SceneFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted voxel keys of the moved object's surface before and after the move (the
    surface the frames before the move saw, and the same surface shifted)."""
    keys = object_keys(moved, frames[:moved["at_frame"]])
    shifted = unpack_voxel_keys(keys) * VOXEL_M + VOXEL_M / 2 + np.asarray(moved["shift"])
    return keys, np.unique(_keys(shifted))


@dataclass
class MoveTracker:
    """Feed it the cloud after every frame (:meth:`observe`); :meth:`result` scores it.

    Args:
        moved: ``Scene.config["moved"]`` (instance, at_frame, shift, aabb_before).
        frames: the scene's training frames (ground truth of the object's surface).
    """

    moved: dict
    frames: list[SceneFrame]
    before: int = 0  # points on the object's surface just before the move
    before_id: int = 0
    # frame, points at the old place, labelled points on the new surface seen so far, their
    # majority id, voxels of the new surface seen so far
    history: list[tuple[int, int, int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.old_keys, self.new_keys = surface_keys(self.moved, self.frames)
        self.seen_new = np.zeros(0, np.int64)  # its surface seen at the new place so far

    def wants(self, frame: int) -> bool:
        """Whether the cloud after ``frame`` is needed (the frame before the move on)."""
        return frame >= self.moved["at_frame"] - 1

    def observe(self, frame: int, xyz: np.ndarray, instance: np.ndarray) -> None:
        """The map's cloud (xyz (N, 3), instance ids (N,)) after ingesting ``frame``."""
        keys = _keys(xyz)
        old = np.isin(keys, self.old_keys) & ~np.isin(keys, self.new_keys)
        if frame < self.moved["at_frame"]:
            self.before = int(old.sum())
            ids = instance[old & (instance > 0)]
            self.before_id = int(np.bincount(ids).argmax()) if ids.size else 0
            return
        self.seen_new = np.union1d(self.seen_new, object_keys(self.moved,
                                                              self.frames[frame:frame + 1]))
        # labelled cloud points on the surface seen so far
        shown = np.isin(keys, self.seen_new) & (instance > 0)
        ids = instance[shown]
        majority = int(np.bincount(ids).argmax()) if ids.size else 0
        self.history.append((frame, int(old.sum()), int(shown.sum()), majority,
                             int(self.seen_new.size)))

    def result(self) -> dict:
        at = self.moved["at_frame"]
        ok = [old <= CLEAR_SHARE * self.before and new >= SHOW_SHARE * seen
              for _, old, new, _, seen in self.history]
        follow = -1
        for k in range(len(ok)):  # the first frame from which on it holds to the end
            if all(ok[k:]):
                follow = self.history[k][0] - at + 1
                break
        last = self.history[-1] if self.history else (at, 0, 0, 0, 0)
        return {"move_frames_to_follow": follow,
                "move_points_before": self.before,
                "move_old_place_points_end": last[1], "move_new_place_points_end": last[2],
                "move_new_surface_seen_voxels_end": last[4],
                "move_id_kept": bool(self.before_id and last[3] == self.before_id),
                "move_history": [list(h) for h in self.history]}
