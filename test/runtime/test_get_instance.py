"""get_instance's decisions (ROS-free): one instance of a map snapshot, why an id has none,
and the snapshot's keyframe observations on a real map (also after save and load)."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.io.export import ExportConfig, LabeledCloud, instance_table
from panoptic_mapping.core.map.observations import IdObservations
from panoptic_mapping.runtime.queries import (
    UnknownInstance,
    instance_details,
    missing_instance_reason,
)
from panoptic_mapping.runtime.snapshots import MapSnapshot, MapSnapshots


def snapshot() -> MapSnapshot:
    """Instances 2 (30 points on a 1 cm grid, labelled "mug"), 5 (3 points: too few for
    a record); id 3 merged into 2, id 4 deleted, id 6 unconfirmed; ids 1..6 issued."""
    g = np.stack(np.meshgrid(np.arange(5), np.arange(3), np.arange(2), indexing="ij"),
                 -1).reshape(-1, 3) * 0.01 + 0.0025
    xyz = np.concatenate([g, [[1, 1, 1], [1.01, 1, 1], [1.02, 1, 1]]])
    inst = np.r_[np.full(30, 2), np.full(3, 5)]
    cloud = LabeledCloud(xyz, np.full((33, 3), 9), inst, np.zeros(33), np.full(33, 0.8))
    records = {r.id: r for r in instance_table(cloud, {2: ("mug", 1, 0.7)}, {},
                                               ExportConfig(min_points_per_instance=20))}
    obs = IdObservations(np.array([0, 0, 4, 0, 0, 1, 0]),
                         np.array([np.nan, np.nan, 12.5, np.nan, np.nan, 3.0, np.nan]))
    return MapSnapshot(("k",), cloud, records, {2: ("mug", 0.7)}, 0.0, 0.0, obs,
                       np.array([0, 1, 2, 2, 0, 5, 6]), frozenset({1, 2, 5}))


def details(snap, instance_id, voxel_size=0.0):
    return instance_details(snap, instance_id, voxel_size, 0.01, 2, 20)


def test_a_known_instance_with_its_points_box_label_and_observations():
    snap = snapshot()
    d = details(snap, 2)
    assert d.record.id == 2 and d.record.num_points == 30
    np.testing.assert_allclose(d.record.box_size, [0.04, 0.02, 0.01], atol=1e-6)
    assert d.label == ("mug", 0.7)
    assert len(d.points) == 30 and (d.points.instance == 2).all()
    assert (d.keyframes, d.last_stamp) == (4, 12.5)
    # up to the cloud's own resolution: its points; coarser: one per 2 cm voxel
    assert len(details(snap, 2, 0.005).points) == 30
    coarse = details(snap, 2, 0.02).points
    assert len(coarse) == 3 * 2 * 1  # x: 0-1, 2-3, 4; y: 0-1, 2; z: 0-1
    np.testing.assert_allclose(coarse.xyz.mean(0), d.points.xyz.mean(0), atol=0.01)


@pytest.mark.parametrize("instance_id,reason", [
    (9, "unknown instance id 9: ids 1 to 6 have been issued"),
    (3, "instance 3 was merged into instance 2: ask for 2"),
    (4, "instance 4 was deleted"),
    (6, "instance 6 is not confirmed yet"),
    (5, "instance 5 has 3 points in the labeled cloud, fewer than the 20"),
])
def test_an_id_without_a_record_says_why(instance_id, reason):
    with pytest.raises(UnknownInstance, match=reason):
        details(snapshot(), instance_id)


def test_bad_requests():
    with pytest.raises(ValueError, match="instance_id 0 means 'no instance'"):
        details(snapshot(), 0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="voxel_size must be >= 0"):
            details(snapshot(), 2, bad)
    empty = MapSnapshot(("k",), LabeledCloud.empty(), {}, {}, 0.0, 0.0)
    assert missing_instance_reason(empty, 1, 2, 20) == (
        "unknown instance id 1: no id has been issued yet")


# --------------------------------------------------------------------------- a real map


@pytest.fixture(scope="module")
def mapped(tabletop_scene):
    from helpers import map_scene

    return map_scene(tabletop_scene)


def recount(mapper, instance_id: int) -> tuple[int, float | None]:
    """Keyframes whose labels, resolved to today's ids, show ``instance_id`` in
    min_pixels pixels, and the newest one's stamp: one keyframe at a time."""
    lut = mapper.instances.id_lut()
    stamps = [kf.frame.stamp for kf in mapper.keyframes.snapshot()
              if kf.labels is not None and (lut[kf.labels] == instance_id).sum()
              >= mapper.cfg.instances.min_pixels]
    return len(stamps), max(stamps) if stamps else None


def test_snapshot_observations_of_a_mapped_scene_survive_save_and_load(mapped):
    from panoptic_mapping.core.mapper import Mapper

    snap = MapSnapshots(lambda: mapped, rgb_only=False).get()
    assert len(snap.records) >= 3
    for i in snap.records:
        assert snap.observations.of(i) == recount(mapped, i), i
        assert snap.observations.of(i)[0] >= 2  # confirmed: seen in two frames at least
    assert set(snap.records) <= snap.confirmed
    loaded = Mapper.from_state_dict(mapped.state_dict(), device="cpu")
    again = MapSnapshots(lambda: loaded, rgb_only=False).get()
    assert set(again.records) == set(snap.records)
    for i in snap.records:
        assert again.observations.of(i) == snap.observations.of(i), i


def test_a_recently_checked_snapshot_is_served_without_asking_the_map(mapped, monkeypatch):
    snaps = MapSnapshots(lambda: mapped, rgb_only=False)
    first = snaps.get()

    def locked_stats():
        raise AssertionError("the map was asked (its lock taken)")

    monkeypatch.setattr(mapped, "stats", locked_stats)
    assert snaps.get(max_age_s=60.0) is first
    with pytest.raises(AssertionError, match="the map was asked"):
        snaps.get(max_age_s=0.0)  # too old for this reader: the map must be checked
    monkeypatch.undo()
    first.checked_s -= 120.0
    assert snaps.get(max_age_s=60.0) is first  # unchanged map: the same snapshot, re-checked
    assert snaps.get(max_age_s=60.0).checked_s > first.built_s
