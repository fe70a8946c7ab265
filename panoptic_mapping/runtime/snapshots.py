"""Snapshots of the map for its readers (publishers, services): built under the mapper's
lock, shared read-only, rebuilt only when the map changed."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from panoptic_mapping.core.io.export import InstanceRecord, LabeledCloud
from panoptic_mapping.core.map.observations import IdObservations, LabelCounts, id_observations
from panoptic_mapping.core.mapper import Mapper

__all__ = ["MapSnapshot", "MapSnapshots"]


@dataclass
class MapSnapshot:
    """The map as publishers and services read it (taken under the mapper's lock).

    Attributes:
        key: what the map looked like (see :meth:`MapSnapshots.key`); equal keys, equal maps.
        cloud: the labeled cloud. records: instance id -> its table row.
        labels: instance id -> (label name, semantic confidence).
        built_s: ``time.monotonic()`` when built. seconds: how long building took.
        observations: per id, the keyframes showing it and the newest one's stamp.
        id_lut: (n,) int64 every id issued -> its id today (0: deleted).
        confirmed: the ids the map shows (confirmed, alive, not a pending part).
        checked_s: ``time.monotonic()`` when the map was last found to equal the snapshot.
    """

    key: tuple
    cloud: LabeledCloud
    records: dict[int, InstanceRecord]
    labels: dict[int, tuple[str, float]]
    built_s: float
    seconds: float
    observations: IdObservations = field(default_factory=IdObservations.empty)
    id_lut: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    confirmed: frozenset[int] = frozenset()
    checked_s: float = -np.inf

    def __post_init__(self) -> None:
        self.checked_s = max(self.checked_s, self.built_s)


class MapSnapshots:
    """The newest snapshot of whichever map is current; one lock.

    Args:
        current: returns the running map (it may be swapped by a load or reset).
        rgb_only: without depth the field's depth places keyframes, so training changes
            the map too: the key then includes the training progress.
    """

    def __init__(self, current: Callable[[], Mapper], rgb_only: bool) -> None:
        self._current = current
        self._rgb_only = rgb_only
        self._lock = threading.Lock()
        self._latest: MapSnapshot | None = None
        # label counts of the keyframes, cached per keyframe buffer (ids restart in a new one)
        self._counted: tuple[object, LabelCounts] | None = None

    @property
    def latest(self) -> MapSnapshot | None:
        """The last snapshot built (None before the first, and after :meth:`clear`)."""
        return self._latest

    def key(self, mapper: Mapper) -> tuple:
        """What a snapshot of ``mapper`` depends on."""
        st = mapper.stats()
        # frames mapped, not frames seen: a still camera's skipped frames change nothing
        key = (id(mapper), st["frames"] - st.get("frames_skipped_still", 0), st["keyframes"], st.get("instances_confirmed"),
               st.get("instances_merges"), st.get("instances_ids_created"), st.get("edits"))
        if self._rgb_only:
            key += (st["training_steps"] // 100,)
        return key

    def get(self, max_age_s: float | None = None) -> MapSnapshot:
        """The newest snapshot, rebuilt if the map changed and it was last found current
        more than max_age_s ago.

        A snapshot of the current map found current within ``max_age_s`` is returned at
        once, without asking the map (whose lock a training step may hold).
        """
        snap = self._latest
        if self._recent(snap, max_age_s):
            return snap
        with self._lock:
            mapper = self._current()
            snap = self._latest
            if self._recent(snap, max_age_s):
                return snap
            key = self.key(mapper)
            if snap is not None and snap.key == key:
                snap.checked_s = time.monotonic()
                return snap
            t0 = time.perf_counter()
            cloud = mapper.labeled_cloud()
            records = {r.id: r for r in mapper.instance_table(cloud)}
            labels = mapper.instance_label_names()
            observations, lut, confirmed = self._observations(mapper)
            snap = MapSnapshot(key, cloud, records, labels, time.monotonic(),
                               time.perf_counter() - t0, observations, lut, confirmed)
            if mapper is self._current():  # a map swapped in meanwhile makes it stale
                self._latest = snap
            return snap

    def _recent(self, snap: MapSnapshot | None, max_age_s: float | None) -> bool:
        """Whether ``snap`` is of the current map and was found current within max_age_s."""
        return (snap is not None and max_age_s is not None
                and time.monotonic() - snap.checked_s < max_age_s
                and snap.key[0] == id(self._current()))

    def _observations(self, mapper: Mapper
                      ) -> tuple[IdObservations, np.ndarray, frozenset[int]]:
        """Per-id keyframe observations, the id lookup table and the shown ids."""
        buffer = mapper.keyframes
        if self._counted is None or self._counted[0] is not buffer:
            self._counted = (buffer, LabelCounts())
        keyframes = buffer.snapshot()  # first: the table read next knows all their ids
        lut = mapper.instances.id_lut()
        confirmed = frozenset(int(i) for i in mapper.instances.confirmed_ids())
        counts = self._counted[1]((kf.id, kf.version, kf.labels) for kf in keyframes)
        observations = id_observations(counts, [kf.frame.stamp for kf in keyframes], lut,
                                       mapper.cfg.instances.min_pixels)
        return observations, lut, confirmed

    def clear(self) -> None:
        """Forget the snapshot (the map was replaced); waits for one being built."""
        with self._lock:
            self._latest = None
