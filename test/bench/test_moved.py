"""An object moved half-way through the stream (``--move-at``): the scene, the bench's
follow metrics, and the map following it with change detection (and not without)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pybullet", reason="pybullet renders the benchmark scenes")

from panoptic_mapping.bench import runner  # noqa: E402
from panoptic_mapping.bench.scenes import make_scene  # noqa: E402

SMALL = dict(frames=16, novel_frames=1, width=120, height=90, train_seconds=0.0,
             methods=("mapper",))


def centroid(frame, instance: int) -> np.ndarray:
    from panoptic_mapping.core.geometry import backproject

    xyz, flat = backproject(frame.depth, frame.K, frame.camera_to_world)
    return xyz[frame.instance.reshape(-1)[flat] == instance].mean(0)


def test_the_scene_moves_one_object_before_the_given_frame():
    s = make_scene("tabletop", seed=0, num_frames=8, width=80, height=60,
                   num_novel_frames=0, move_at=4)
    m = s.config["moved"]
    assert m["at_frame"] == 4 and np.linalg.norm(m["shift"]) >= 0.15
    g = m["instance"]
    seen = [k for k, f in enumerate(s.frames) if (f.instance == g).sum() > 5]
    before = np.mean([centroid(s.frames[k], g) for k in seen if k < 4], axis=0)
    after = np.mean([centroid(s.frames[k], g) for k in seen if k >= 4], axis=0)
    np.testing.assert_allclose(after[:2] - before[:2], m["shift"][:2], atol=0.04)
    with pytest.raises(ValueError, match="move_at"):
        make_scene("room", num_frames=4, move_at=2)


@pytest.mark.parametrize("detect", [True, False])
def test_the_map_follows_a_moved_object_with_change_detection(detect):
    cfg = runner.BenchConfig(**SMALL, move_at=8,
                             mapper_set={"instances.changes.enabled": detect})
    r = runner.run(cfg)["methods"]["mapper"]
    assert r["pq_from_frame"] == 8 and 0.0 < r["PQ_scene_from_frame"] <= 1.0
    assert r["move_points_before"] > 20
    if detect:  # removed after gone_views views, shown at once at the new place
        assert r["instances"]["removed_as_gone"] == 1
        assert r["instances"]["found_moved"] == 1 and r["move_id_kept"]
        assert 1 <= r["move_frames_to_follow"] <= 8
        assert r["move_old_place_points_end"] <= 0.1 * r["move_points_before"]
    else:  # the keyframes before the move keep showing it where it was
        assert r["instances"]["removed_as_gone"] == 0
        assert r["move_frames_to_follow"] == -1
        assert r["move_old_place_points_end"] > 0.5 * r["move_points_before"]


def test_the_mapper_reports_the_removal_with_the_views_that_decided_it():
    from panoptic_mapping.bench.frontends import (
        MaskErrorModel,
        SimulatedEmbeddingSpace,
        SimulatedMaskFrontend,
    )
    from panoptic_mapping.bench.mapper_method import to_frame
    from panoptic_mapping.core.mapper import Mapper, MapperConfig

    s = make_scene("tabletop", seed=0, num_frames=16, width=120, height=90,
                   num_novel_frames=0, move_at=8)
    space = SimulatedEmbeddingSpace(dim=16, noise_std=0.05)
    m = Mapper(MapperConfig(device="cpu"), embedding_dim=space.dim)
    fe = SimulatedMaskFrontend(MaskErrorModel(), 0, scene=s, embedding_space=space)
    events = [e for f in s.frames for e in m.ingest(to_frame(f, fe(f, s), True)).removed]
    assert [e.kind for e in events] == ["removed", "moved"]
    removed, moved = events
    assert removed.views == m.cfg.instances.changes.gone_views
    assert removed.frame > 8 and m.stats()["instances_removed_as_gone"] == 1
    # found elsewhere: the same id, where the scene put it, the old place as 'previous'
    assert moved.instance_id == removed.instance_id and moved.previous == removed.centroid
    lo, hi = (np.asarray(v) for v in s.config["moved"]["aabb_after"])
    assert np.all(np.asarray(moved.centroid) > lo - 0.03)
    assert np.all(np.asarray(moved.centroid) < hi + 0.03)
    assert moved.seen_as > 0 and m.instances.resolve(moved.seen_as) == moved.instance_id
    assert m.stats()["instances_found_moved"] == 1
    assert moved.instance_id in set(m.instances.confirmed_ids().tolist())
