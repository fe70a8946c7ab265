"""The mapper from posed RGB alone: stereo depth fuses the masks, and views without depth
meet the map at its voxels' surfaces (analytic textured planes, known answers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.core.mapper import Mapper, MapperConfig
from panoptic_mapping.core.stereo import StereoConfig
from stereo_scene import H, K, W, pose, render, texture

# Two objects: a textured plane at 1.2 m left of X = 0, another at 1.8 m right of it.
PLANES = [(1.2, -10.0, 0.0, texture(1)), (1.8, 0.0, 10.0, texture(2))]
STREAM = [pose(x=0.03 * i, y=0.01 * (i % 3)) for i in range(-3, 4)]


def frame(T: np.ndarray, stamp: float, with_depth: bool = False) -> tuple[Frame, np.ndarray]:
    """A posed RGB frame with ground-truth masks (1 = near plane, 2 = far), its true depth."""
    rgb, depth = render(T, PLANES)
    pts, flat = backproject(depth, K, T)
    masks = np.zeros(H * W, np.int32)
    masks[flat] = np.where(np.abs(pts[:, 2] - 1.2) < 0.01, 1, 2)
    masks = masks.reshape(H, W)
    return Frame(rgb=rgb, K=K, camera_to_world=T, stamp=stamp,
                 depth=depth if with_depth else None, masks=masks), depth


def mapper(**kwargs) -> Mapper:
    cfg = MapperConfig(device="cpu", stereo=StereoConfig(min_depth_m=0.5, max_depth_m=3.0,
                                                         min_baseline_m=0.02), **kwargs)
    cfg.instances.voxel_size_m = 0.02
    return Mapper(cfg)


def test_rgb_only_frames_get_stereo_depth_and_their_masks_fused():
    m = mapper()
    reports = [m.ingest(frame(T, float(i))[0]) for i, T in enumerate(STREAM)]
    assert [r.depth_source for r in reports[:2]] == ["none", "none"]  # no sources yet
    assert all(r.depth_source == "stereo" and r.integrated for r in reports[2:])
    assert all(r.stereo_s is not None for r in reports[2:])
    assert len(m.instances.confirmed_ids()) == 2
    # each plane is one id in the last frame's online labels
    f, _ = frame(STREAM[-1], 99.0)
    labels = reports[-1].labels
    for obj in (1, 2):
        ids, counts = np.unique(labels[(f.masks == obj) & (labels > 0)], return_counts=True)
        assert counts.max() / counts.sum() > 0.95
    stats = m.stats()
    assert stats["stereo_estimated"] == len(STREAM) - 2


def test_stereo_depth_reaches_the_field_with_its_confidence(tmp_path):
    """The field learns stereo depth as a prior as good as the sweep's confidence in it
    (measured depth counts fully); the keyframes keep the confidence through a save."""
    m = mapper(rgb_only_depth_targets="stereo")
    m.ingest(frame(STREAM[0], 0.0, with_depth=True)[0])
    for i, T in enumerate(STREAM[1:], start=1):
        m.ingest(frame(T, float(i))[0])
    kfs = m.keyframes.snapshot()
    measured = [kf.frame for kf in kfs if kf.frame.depth_confidence is None]
    stereo = [kf.frame for kf in kfs if kf.frame.depth_confidence is not None]
    assert measured and stereo
    floor = m.cfg.stereo.min_confidence
    for f in stereo:
        known = f.depth > 0
        assert known.any()
        assert np.all(f.depth_confidence[~known] == 0)
        assert np.all((f.depth_confidence[known] >= floor) & (f.depth_confidence[known] <= 1))
        assert f.depth_confidence[known].min() < 1  # some pixels are less certain
    m.train(1)
    batch = m.trainer.sample_batch()
    assert batch.depth_confidence is not None and batch.depth_confidence.shape == batch.depth.shape
    assert float(batch.depth_confidence.min()) >= 0 and float(batch.depth_confidence.max()) <= 1
    assert torch.equal(m.trainer._depth_weight(batch), batch.depth_confidence)
    m.trainer.cfg.depth_confidence = False
    assert m.trainer._depth_weight(batch) is None
    m.save(tmp_path / "map.pmap")
    loaded = Mapper(m.cfg)
    loaded.load(tmp_path / "map.pmap")
    again = {kf.frame.stamp: kf.frame.depth_confidence for kf in loaded.keyframes.snapshot()}
    for f in stereo:
        assert np.array_equal(again[f.stamp], f.depth_confidence)


def test_keyframes_without_a_depth_camera_learn_the_maps_surfaces():
    """With ``rgb_only_depth_targets`` 'map' a stereo keyframe's rays learn the depth of
    the map's surfaces drawn at it (every frame's stereo fused); a keyframe with measured
    depth keeps its own; the draws per step are bounded and refreshed as the map grows."""
    m = mapper(rgb_only_depth_targets="map")
    m.ingest(frame(STREAM[0], 0.0, with_depth=True)[0])
    for i, T in enumerate(STREAM[1:], start=1):
        m.ingest(frame(T, float(i))[0])
    calls = []
    draw = m.trainer.depth_prior
    m.trainer.depth_prior = lambda kf: calls.append(kf.id) or draw(kf)
    m.trainer.cfg.prior_draws_per_step = 2
    batch = m.trainer.sample_batch()
    assert len(calls) == 2  # the rest keep their own stereo meanwhile
    for _ in range(4):
        batch = m.trainer.sample_batch()
    kfs = {kf.id: kf for kf in m.keyframes.snapshot()}
    stereo = {i for i, kf in kfs.items() if kf.frame.depth_confidence is not None}
    assert set(m.trainer._priors) == stereo  # measured depth: never a prior
    for kid in stereo:
        f = kfs[kid].frame
        drawn = m.instances.surface_depth(f.K, f.camera_to_world, f.shape,
                                          m.cfg.surface_min_weight, m.cfg.surface_gap_m)
        assert np.array_equal(m.trainer._priors[kid][1].numpy(), drawn.reshape(-1))
        # the map's surfaces cover the frame and lie on the planes
        assert (drawn > 0).mean() > 0.9
        _, truth = frame(f.camera_to_world, 0.0)
        known = (drawn > 0) & (truth > 0)
        assert np.median(np.abs(drawn[known] - truth[known]) / truth[known]) < 0.02
    assert batch.estimated is not None and bool(batch.estimated.any())
    assert not bool(batch.estimated.all())  # the measured keyframe's rays
    first = dict((k, v[0]) for k, v in m.trainer._priors.items())
    m.trainer.steps += m.trainer.cfg.prior_refresh_steps
    calls.clear()
    m.trainer.sample_batch()
    assert len(calls) == 2 and all(first[k] < m.trainer._priors[k][0] for k in calls)


@pytest.mark.parametrize("targets", ["stereo", "map"])
def test_the_field_learns_planes_at_their_distance_from_posed_rgb(targets):
    """Worked example: two textured planes at 1.2 m and 1.8 m seen by a camera without
    depth. Trained on the frames' stereo or on the map's surfaces, the field's depth at a
    view between the training views lies on the planes."""
    torch.manual_seed(0)
    m = mapper(rgb_only_depth_targets=targets)
    m.cfg.trainer.rays_per_step = 256
    for i, T in enumerate(STREAM):
        m.ingest(frame(T, float(i))[0])
    m.train(100)
    view = pose(x=0.015, y=0.005)
    _, depth = m.render_rgbd(K, view, (H, W))
    _, truth = frame(view, 0.0)
    known = (depth > 0) & (truth > 0)
    assert known.mean() > 0.9
    error = np.abs(depth[known] - truth[known]) / truth[known]
    assert np.median(error) < 0.03 and np.mean(error < 0.05) > 0.9


def test_a_view_without_depth_meets_the_map_at_its_surfaces():
    m = mapper()
    for i, T in enumerate(STREAM):
        m.ingest(frame(T, float(i))[0])
    query, truth = frame(pose(x=0.02, y=0.02), 50.0)
    loc = m.localize(query)
    answers = {mask: map_id for mask, map_id, _ in loc.matches}
    assert set(answers) == {1, 2} and answers[1] != answers[2]
    assert set(answers.values()) == set(m.instances.confirmed_ids().tolist())
    # the instance render without depth agrees with the masks where it draws
    ids = m.render_instances(K, query.camera_to_world, None, (H, W))
    drawn = ids > 0
    assert drawn.mean() > 0.3
    agree = (ids == np.where(query.masks == 1, answers[1], answers[2])) & drawn
    assert agree.sum() / drawn.sum() > 0.95


def test_without_stereo_or_field_a_view_without_depth_draws_nothing_from_the_field():
    cfg = MapperConfig(device="cpu", render_without_depth="field",
                       stereo=StereoConfig(enabled=False))
    m = Mapper(cfg)
    report = m.ingest(frame(STREAM[0], 0.0)[0])
    assert report.depth_source == "none" and not report.integrated
    assert not m.render_instances(K, STREAM[0], None, (H, W)).any()


def test_measured_depth_is_used_as_it_is_and_remembered_for_stereo():
    m = mapper()
    f, depth = frame(STREAM[0], 0.0, with_depth=True)
    report = m.ingest(f)
    assert report.depth_source == "measured" and report.stereo_s is None
    assert m.stereo.stats()["estimated"] == 0


def test_carving_with_all_depth_sources_takes_frames_without_depth_too():
    cfg = MapperConfig(device="cpu", carve_free_space="all", stereo=StereoConfig(enabled=False))
    m = Mapper(cfg)
    f, depth = frame(STREAM[0], 0.0, with_depth=True)
    m.ingest(f)
    voxels = len(m.instances.votes)
    report = m.ingest(frame(STREAM[1], 1.0)[0])  # no depth, no stereo: nothing to carve
    assert report.depth_source == "none" and len(m.instances.votes) == voxels
