"""What the map was told about the world: instances removed or moved by someone who knows
(a manipulation stack after a pick-and-place), and what that means for the geometry older
keyframes still show.

The instance map forgets or carries an instance's votes at once (:class:`InstanceMap`
``remove_instance`` / ``move_instance``). The keyframes taken before the edit still hold
depth of the surface where the instance was; their points there are **vacated**: outputs
built from keyframes (the labeled cloud) leave them out, because what those frames saw
is gone. Keyframes taken after the edit are believed again, so a place the world fills
anew reappears as soon as a new keyframe sees it. A moved instance has no keyframe at its
new place yet: its points, carried by the same transform, stand in for it
(:class:`MovedPoints`) until a keyframe taken after the move shows it.

Everything here is bounded by the keyframe buffer: a vacancy no kept keyframe predates
is dropped (:meth:`WorldEdits.prune`), and so is a stand-in once the instance is seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.geometry import pack_voxel_keys, voxel_coords

__all__ = ["InstanceEditError", "Vacancy", "MovedPoints", "WorldEdits"]


class InstanceEditError(ValueError):
    """An edit names an instance the map does not show (the message says why)."""


@dataclass
class Vacancy:
    """Voxels an edit emptied.

    Attributes:
        before_keyframe: keyframes with a smaller id were taken before the edit.
        keys: (K,) int64 sorted packed voxel keys (instance voxel size) of the surface the
            instance showed.
    """

    before_keyframe: int
    keys: np.ndarray

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: packed voxel keys (N,) of vacated voxels."""
        if self.keys.size == 0:
            return np.zeros(len(keys), dtype=bool)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, self.keys.size - 1)
        return self.keys[pos] == keys


@dataclass
class MovedPoints:
    """A moved instance's points at its new place, until a keyframe sees it there.

    Attributes:
        instance_id: the instance. after_keyframe: keyframes with at least this id were
            taken after the move. xyz: (N, 3) float32 map frame. rgb: (N, 3) uint8.
        confidence: (N,) float32 the points' confidences before the move.
    """

    instance_id: int
    after_keyframe: int
    xyz: np.ndarray
    rgb: np.ndarray
    confidence: np.ndarray


class WorldEdits:
    """The vacancies and stand-in points of the edits the map was told about.

    Attributes:
        vacancies: oldest first. moved: instance id -> its stand-in points.
        count: edits applied since the map began (outputs key their caches on it).
    """

    def __init__(self) -> None:
        self.vacancies: list[Vacancy] = []
        self.moved: dict[int, MovedPoints] = {}
        self.count = 0

    def copy(self) -> "WorldEdits":
        """A copy whose lists a later edit or prune leaves alone (the vacancies and
        stand-ins themselves are never changed, only replaced)."""
        out = WorldEdits()
        out.vacancies = list(self.vacancies)
        out.moved = dict(self.moved)
        out.count = self.count
        return out

    def record(self, vacancy: Vacancy, moved: MovedPoints | None = None) -> None:
        """One edit: its vacancy and, for a move, the instance's stand-in points."""
        self.vacancies.append(vacancy)
        if moved is not None:
            self.moved[moved.instance_id] = moved
        self.count += 1

    def vacated(self, points: np.ndarray, voxel_size: float,
                keyframe_id: int | None = None) -> np.ndarray:
        """(N,) bool: points (N, 3) in a voxel that an edit made after keyframe
        ``keyframe_id`` vacated (None: any kept edit; what the field learnt there
        predates it)."""
        out = np.zeros(len(points), dtype=bool)
        relevant = [v for v in self.vacancies
                    if keyframe_id is None or keyframe_id < v.before_keyframe]
        if relevant and len(points):
            keys = pack_voxel_keys(voxel_coords(points, voxel_size))
            for v in relevant:
                out |= v.holds(keys)
        return out

    def forget_instance(self, instance_id: int) -> None:
        """Drop the stand-in points of an instance (removed, or moved again)."""
        self.moved.pop(instance_id, None)

    def prune(self, oldest_keyframe: int | None, seen_since: dict[int, int],
              alive: np.ndarray) -> None:
        """Drop what no longer matters.

        Args:
            oldest_keyframe: id of the oldest keyframe kept (None: none kept): vacancies no
                kept keyframe predates go.
            seen_since: instance id -> the newest keyframe id showing it; a stand-in goes
                once a keyframe taken after its move shows the instance.
            alive: (n_ids,) bool: stand-ins of instances no longer alive go.
        """
        self.vacancies = [v for v in self.vacancies
                          if oldest_keyframe is not None and oldest_keyframe < v.before_keyframe]
        for i, m in list(self.moved.items()):
            if (i >= alive.size or not alive[i]
                    or seen_since.get(i, -1) >= m.after_keyframe):
                del self.moved[i]

    # ------------------------------------------------------------------ persistence

    def state(self, keyframe_ids: list[int]) -> dict:
        """Saved with keyframe positions, not ids (a loaded map numbers its keyframes
        anew): ``before``/``after`` count the saved keyframes taken earlier."""
        rank = lambda k: int(np.searchsorted(np.asarray(keyframe_ids, np.int64), k))  # noqa: E731
        return {"count": self.count,
                "vacancies": [{"before": rank(v.before_keyframe), "keys": v.keys}
                              for v in self.vacancies],
                "moved": [{"id": m.instance_id, "after": rank(m.after_keyframe),
                           "xyz": m.xyz, "rgb": m.rgb, "confidence": m.confidence}
                          for m in self.moved.values()]}

    @classmethod
    def from_state(cls, state: dict | None, keyframe_ids: list[int], next_keyframe: int
                   ) -> "WorldEdits":
        """Rebuild from :meth:`state` given the loaded keyframes' ids (oldest first)."""
        edits = cls()
        if not state:
            return edits
        ids = list(keyframe_ids) + [next_keyframe]
        at = lambda r: ids[min(int(r), len(ids) - 1)]  # noqa: E731
        edits.count = int(state["count"])
        edits.vacancies = [Vacancy(at(v["before"]), np.asarray(v["keys"], np.int64))
                           for v in state["vacancies"]]
        for m in state["moved"]:
            edits.moved[int(m["id"])] = MovedPoints(
                int(m["id"]), at(m["after"]), np.asarray(m["xyz"], np.float32),
                np.asarray(m["rgb"], np.uint8), np.asarray(m["confidence"], np.float32))
        return edits
