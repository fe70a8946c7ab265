"""Where an InstanceLoc answer takes its instance records from: the latest snapshot while
it is recent (building one takes the map's lock: under a 100 Hz camera the answer's p95
was 580 ms), else a fresh one; instances newer than the snapshot from their voxels."""
from __future__ import annotations

import time

import pytest

from conftest import require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

from panoptic_mapping.config import PanopticMappingConfig  # noqa: E402
from panoptic_mapping.core.io.export import LabeledCloud  # noqa: E402
from panoptic_mapping.ros.services import MapServices  # noqa: E402
from panoptic_mapping.runtime.snapshots import MapSnapshot  # noqa: E402
from panoptic_mapping.runtime.workers import LatencyWindow  # noqa: E402


class FakeSnapshots:
    """The latest snapshot, and the rebuilds asked for."""

    def __init__(self, latest: MapSnapshot | None) -> None:
        self.latest = latest
        self.rebuilt = 0

    def get(self, max_age_s=None) -> MapSnapshot:
        self.rebuilt += 1
        return self.latest


class FakeMapper:
    """The ids whose records were asked of the voxels."""

    def __init__(self) -> None:
        self.from_voxels: list[int] = []

    def voxel_records(self, ids) -> dict:
        self.from_voxels += list(ids)
        return {i: f"voxels of {i}" for i in ids}


def services(mapper: object, snapshots: FakeSnapshots) -> MapServices:
    cfg = PanopticMappingConfig()
    cfg.output.cloud_period_s = 2.0
    return MapServices(config=cfg, logger=None, current_mapper=lambda: mapper, swap=None,
                       apply_vocabulary=None, segmenter=None, embedder=None,
                       embedding_dim=0, poses=None, snapshots=snapshots,
                       latency=LatencyWindow())


def snapshot(mapper: object, ids: set[int], age_s: float) -> MapSnapshot:
    return MapSnapshot((id(mapper),), LabeledCloud.empty(), {i: None for i in ids}, {},
                       time.monotonic() - age_s, 0.0)


@pytest.mark.parametrize("held, age_s, other_map, rebuilt, from_voxels", [
    ({3, 7}, 1.0, False, 0, []),   # recent, holds both: taken as it is
    ({3}, 1.0, False, 0, [7]),     # instance 7 is newer than it: from its voxels
    ({3, 7}, 5.0, False, 1, []),   # older than two cloud periods
    ({3, 7}, 1.0, True, 1, []),    # of a map since replaced (load, reset)
])
def test_localize_takes_records_from_the_latest_snapshot_and_new_instances_voxels(
        held, age_s, other_map, rebuilt, from_voxels):
    mapper = FakeMapper()
    snaps = FakeSnapshots(snapshot(object() if other_map else mapper, held, age_s))
    records = services(mapper, snaps)._records_of(mapper, {3: 0.9, 7: 0.8})
    assert snaps.rebuilt == rebuilt and mapper.from_voxels == from_voxels
    assert set(records) >= {3, 7}
    assert records[7] == ("voxels of 7" if from_voxels else None)


def test_without_a_snapshot_one_is_built():
    snaps, mapper = FakeSnapshots(None), FakeMapper()
    records = services(mapper, snaps)._records_of(mapper, {1: 1.0})
    assert snaps.rebuilt == 1 and records == {1: "voxels of 1"}
