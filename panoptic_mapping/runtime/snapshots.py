"""Snapshots of the map for its readers (publishers, services): built under the mapper's
lock, shared read-only, rebuilt only when the map changed."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from panoptic_mapping.core.io.export import InstanceRecord, LabeledCloud
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
    """

    key: tuple
    cloud: LabeledCloud
    records: dict[int, InstanceRecord]
    labels: dict[int, tuple[str, float]]
    built_s: float
    seconds: float


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

    @property
    def latest(self) -> MapSnapshot | None:
        """The last snapshot built (None before the first, and after :meth:`clear`)."""
        return self._latest

    def key(self, mapper: Mapper) -> tuple:
        """What a snapshot of ``mapper`` depends on."""
        st = mapper.stats()
        key = (id(mapper), st["frames"], st["keyframes"], st.get("instances_confirmed"),
               st.get("instances_merges"), st.get("instances_ids_created"))
        if self._rgb_only:
            key += (st["training_steps"] // 100,)
        return key

    def get(self, max_age_s: float | None = None) -> MapSnapshot:
        """The newest snapshot, rebuilt if the map changed and it is older than max_age_s."""
        with self._lock:
            mapper = self._current()
            snap = self._latest
            key = self.key(mapper)
            fresh = snap is not None and snap.key == key
            young = (snap is not None and max_age_s is not None
                     and time.monotonic() - snap.built_s < max_age_s
                     and snap.key[0] == key[0])
            if fresh or young:
                return snap
            t0 = time.perf_counter()
            cloud = mapper.labeled_cloud()
            records = {r.id: r for r in mapper.instance_table(cloud)}
            labels = mapper.instance_label_names()
            snap = MapSnapshot(key, cloud, records, labels, time.monotonic(),
                               time.perf_counter() - t0)
            if mapper is self._current():  # a map swapped in meanwhile makes it stale
                self._latest = snap
            return snap

    def clear(self) -> None:
        """Forget the snapshot (the map was replaced); waits for one being built."""
        with self._lock:
            self._latest = None
