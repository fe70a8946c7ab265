"""Lens distortion: the models on worked examples, their inverse, the image maps, and a
mapper that takes raw images of a distorting lens."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import render_boxes
from panoptic_mapping.core.frames import Frame, FrameError, undistort_frame, validate_frame
from panoptic_mapping.core.lens import LensDistortion, Undistortion, check_lens
from panoptic_mapping.core.mapper import Mapper, MapperConfig

# TUM RGB-D freiburg1's colour camera (published calibration), at 640x480
K_FR1 = np.array([[517.3, 0.0, 318.6], [0.0, 516.5, 255.3], [0.0, 0.0, 1.0]])
FR1 = LensDistortion("plumb_bob", (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))


def test_plumb_bob_worked_examples():
    radial = LensDistortion("plumb_bob", (0.1, 0.0, 0.0, 0.0, 0.0))
    # r^2 = 0.25: x' = 0.5 (1 + 0.1 * 0.25)
    np.testing.assert_allclose(radial.distort(np.array([[0.5, 0.0]])), [[0.5125, 0.0]])
    np.testing.assert_allclose(radial.distort(np.zeros((1, 2))), [[0.0, 0.0]])
    tangential = LensDistortion("plumb_bob", (0.0, 0.0, 0.01, 0.02, 0.0))
    # x' = x + 2 p1 x y + p2 (r^2 + 2 x^2), y' = y + p1 (r^2 + 2 y^2) + 2 p2 x y
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    expect = [x + 2 * 0.01 * x * y + 0.02 * (r2 + 2 * x * x),
              y + 0.01 * (r2 + 2 * y * y) + 2 * 0.02 * x * y]
    np.testing.assert_allclose(tangential.distort(np.array([[x, y]])), [expect])
    rational = LensDistortion("rational_polynomial", (0.1, 0, 0, 0, 0, 0.1, 0, 0))
    # (1 + k1 r^2) / (1 + k4 r^2) = 1 when k1 = k4
    np.testing.assert_allclose(rational.distort(np.array([[0.4, 0.3]])), [[0.4, 0.3]])


def test_equidistant_worked_example():
    lens = LensDistortion("equidistant", (0.1, 0.0, 0.0, 0.0))
    # r = 1: theta = pi/4, theta_d = theta (1 + 0.1 theta^2), scale theta_d / r
    theta = math.pi / 4
    np.testing.assert_allclose(lens.distort(np.array([[1.0, 0.0]])),
                               [[theta * (1 + 0.1 * theta ** 2), 0.0]])
    # no coefficients: the equidistant model itself, not the pinhole
    plain = LensDistortion("equidistant", (0.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(plain.distort(np.array([[0.0, 1.0]])), [[0.0, theta]])


@pytest.mark.parametrize("lens", [FR1, LensDistortion("plumb_bob", (-0.28, 0.07, 0, 0, 0)),
                                  LensDistortion("equidistant", (0.05, -0.01, 0.0, 0.0))])
def test_undistort_inverts_distort_over_the_image(lens):
    v, u = np.mgrid[0:480:8, 0:640:8].astype(np.float64)
    xy_d = np.stack([(u.ravel() - K_FR1[0, 2]) / K_FR1[0, 0],
                     (v.ravel() - K_FR1[1, 2]) / K_FR1[1, 1]], 1)
    np.testing.assert_allclose(lens.distort(lens.undistort(xy_d)), xy_d, atol=1e-10)


def test_the_inverse_holds_where_a_fixed_point_iteration_diverges():
    # a wide view (fx 104 at 160x120: r 0.96 at the corner) where the freiburg1 polynomial
    # stretches the radius 4x: x <- x + x_d - distort(x) moves away from the answer there
    xy_d = np.array([[0.77, 0.57], [-0.77, -0.57]])
    xy = FR1.undistort(xy_d)
    np.testing.assert_allclose(FR1.distort(xy), xy_d, atol=1e-10)
    K = np.array([[103.9, 0, 80.0], [0, 103.9, 59.0], [0, 0, 1]])
    assert check_lens("plumb_bob", FR1.coefficients, 160, 120, K) == FR1


def test_check_lens_reads_ros_camera_info_conventions():
    assert check_lens("plumb_bob", []) is None
    assert check_lens("plumb_bob", [0, 0, 0, 0, 0]) is None
    assert check_lens("", [0.0] * 5) is None  # no distortion: the model's name is moot
    assert check_lens("some_driver_model", [0.0] * 4) is None
    assert check_lens("plumb_bob", [0.1, 0.0, 0.0, 0.0]).coefficients == (0.1, 0, 0, 0, 0)
    assert check_lens("plumb_bob", [0.1] + [0.0] * 7).model == "rational_polynomial"
    assert check_lens("Rational_Polynomial", [0.1] * 5).coefficients[5:] == (0, 0, 0)
    assert check_lens("equidistant", [0.1, 0, 0, 0]).model == "equidistant"
    with pytest.raises(ValueError, match="'fisheye' is not supported"):
        check_lens("fisheye", [0.1, 0, 0, 0])
    with pytest.raises(ValueError, match="takes 4-5 coefficients, got 3"):
        check_lens("plumb_bob", [0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        check_lens("plumb_bob", [float("nan"), 0, 0, 0, 0])
    # r (1 - r^2) turns back at r = 0.58, inside a 640x480 freiburg1 image (corner r 0.77)
    with pytest.raises(ValueError, match="does not invert over the 640x480 image"):
        check_lens("plumb_bob", [-1.0, 0, 0, 0, 0], 640, 480, K_FR1)
    assert check_lens("plumb_bob", FR1.coefficients, 640, 480, K_FR1) == FR1


def _pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth grey pattern of normalised pinhole coordinates, (..., 3) uint8-valued."""
    g = 128 + 100 * np.sin(40 * x) * np.cos(30 * y)
    return np.repeat(g[..., None], 3, axis=-1)


def test_undistortion_recovers_the_pinhole_image_of_a_raw_one():
    h, w = 480, 640
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    xy_d = np.stack([(u.ravel() - K_FR1[0, 2]) / K_FR1[0, 0],
                     (v.ravel() - K_FR1[1, 2]) / K_FR1[1, 1]], 1)
    xy = FR1.undistort(xy_d)  # the ray each raw pixel sees
    raw = np.rint(_pattern(xy[:, 0], xy[:, 1])).astype(np.uint8).reshape(h, w, 3)
    und = Undistortion(K_FR1, FR1, (h, w), grow=False)
    pinhole = und.image(raw).astype(float)
    truth = _pattern((u - K_FR1[0, 2]) / K_FR1[0, 0], (v - K_FR1[1, 2]) / K_FR1[1, 1])
    inner = (slice(40, h - 40), slice(40, w - 40))
    assert np.abs(pinhole[inner] - truth[inner]).mean() < 1.0  # grey levels (0.29)
    # the raw image taken for a pinhole one: 11 grey levels off on average
    assert np.abs(raw[inner].astype(float) - truth[inner]).mean() > 5
    # the freiburg1 lens pulls its corners in: some pinhole pixels it never sees
    assert 0.9 < und.seen_share < 1.0
    assert (pinhole[0, 0] == 0).all() and pinhole[240, 320].any()


def test_labels_go_to_the_pinhole_image_and_back():
    h, w = 120, 160
    K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
    lens = LensDistortion("plumb_bob", (-0.25, 0.05, 0, 0, 0))  # barrel: sees wider
    labels = (np.arange(h)[:, None] // 10 * 100 + np.arange(w)[None] // 10).astype(np.int32)
    same = Undistortion(K, lens, (h, w), grow=False)
    assert same.pinhole_shape == (h, w) and 0.8 < same.kept_share < 0.9  # edges cut off
    und = Undistortion(K, lens, (h, w))  # the canvas grows to hold them
    assert und.kept_share == 1.0
    assert und.describe().startswith("plumb_bob lens (k1 -0.25, k2 0.05): 160x120 raw "
                                     f"images undistorted into a {und.pinhole_shape[1]}x")
    ph, pw = und.pinhole_shape
    assert ph > h and pw > w
    # the principal point moves with the canvas: the raw centre stays the pinhole centre
    np.testing.assert_allclose(und.K_pinhole[:2, 2] - K[:2, 2],
                               [(pw - w) / 2, (ph - h) / 2], atol=1.0)
    back = und.to_raw(und.nearest(labels))
    assert (back == labels).mean() > 0.97  # nearest pixels either way: ids on edges move
    depth = np.full((h, w), 2.0, np.float32)
    assert set(np.unique(und.nearest(depth))) <= {0.0, 2.0}  # never blended


def test_frames_carry_a_lens_that_validation_checks():
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    f = Frame(rgb=np.zeros((48, 64, 3), np.uint8), K=K, camera_to_world=np.eye(4),
              lens=LensDistortion("plumb_bob", (0.0,) * 5))
    assert validate_frame(f).lens is None  # all zero: a pinhole frame
    f.lens = (0.1, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(FrameError, match="LensDistortion"):
        validate_frame(f)


def test_undistort_frame_keeps_mask_ids_and_drops_those_it_cannot_see():
    h, w = 48, 64
    K = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])
    lens = LensDistortion("plumb_bob", (-0.3, 0.05, 0.0, 0.0, 0.0))  # a wide barrel
    beyond = ~Undistortion(K, lens, (h, w)).kept  # corners past the canvas's growth
    assert beyond[-3:, :3].all() and not beyond[24, 32]
    masks = np.zeros((h, w), np.int32)
    masks[10:30, 20:40] = 2
    masks[-3:, :3] = 3
    emb = np.eye(3, 4, dtype=np.float32)
    f = validate_frame(Frame(rgb=np.full((h, w, 3), 50, np.uint8), K=K,
                             camera_to_world=np.eye(4), masks=masks, mask_embeddings=emb,
                             lens=lens))
    g, und = undistort_frame(f)
    assert und is not None and g.lens is None
    assert set(np.unique(g.masks)) == {0, 2}  # id 2 kept as 2: the caller's numbering
    assert g.mask_embeddings.shape == (2, 4)  # rows up to the highest id left
    assert undistort_frame(validate_frame(Frame(rgb=f.rgb, K=K,
                                                camera_to_world=np.eye(4))))[1] is None


def _raw_box_frames(lens: LensDistortion | None, shape=(120, 160)):
    """Raw frames of three boxes before a wall seen through a pincushion lens from five
    positions (the boxes near the image's edges, where the lens moves them most), perfect
    masks; ``lens``: what the frames tell the mapper."""
    h, w = shape
    K = np.array([[110.0, 0, (w - 1) / 2], [0, 110.0, (h - 1) / 2], [0, 0, 1]])
    truth = LensDistortion("plumb_bob", (0.35, 0.1, 0.0, 0.0, 0.0))
    und = Undistortion(K, truth, shape)
    boxes = [(-0.45, -0.3, -0.15, 0.1, 0.85), (-0.1, 0.1, -0.2, 0.05, 0.9),
             (0.3, 0.45, -0.05, 0.2, 0.85)]
    frames = []
    for k, tx in enumerate(np.linspace(-0.08, 0.08, 5)):
        depth, which = render_boxes(K, shape, tx, boxes, wall_z=1.3)
        pose = np.eye(4)
        pose[0, 3] = tx
        frames.append(Frame(rgb=np.full((h, w, 3), 90, np.uint8), K=K, camera_to_world=pose,
                            stamp=float(k), depth=und.to_raw(depth),
                            masks=und.to_raw((which + 2).astype(np.int32)), lens=lens))
    return frames, boxes


def _box_centres(mapper: Mapper) -> np.ndarray:
    """(N, 3) centroids of the map's instances nearer than the wall, sorted by x."""
    cloud = mapper.labeled_cloud()
    out = []
    for i in np.unique(cloud.instance[cloud.instance > 0]):
        pts = cloud.xyz[cloud.instance == i]
        if np.median(pts[:, 2]) < 1.2:
            out.append(pts.mean(0))
    return np.array(sorted(out, key=lambda p: p[0]))


def test_a_mapper_told_the_lens_maps_raw_frames_where_the_objects_are():
    truth = LensDistortion("plumb_bob", (0.35, 0.1, 0.0, 0.0, 0.0))
    told, ignored = Mapper(MapperConfig(device="cpu")), Mapper(MapperConfig(device="cpu"))
    raw_told, boxes = _raw_box_frames(truth)
    raw_ignored, _ = _raw_box_frames(None)
    for f, g in zip(raw_told, raw_ignored):
        report = told.ingest(f)
        ignored.ingest(g)
        # the answer is at the raw pixels: each raw mask one id nearly everywhere
        assert report.labels.shape == f.masks.shape
        for m in np.unique(f.masks[f.masks > 0]):
            ids = report.labels[f.masks == m]
            assert np.mean(ids == np.bincount(ids[ids > 0]).argmax()) > 0.95
    expect = np.array([[(x0 + x1) / 2, (y0 + y1) / 2, z] for x0, x1, y0, y1, z in boxes])
    for mapper, limit in ((told, 0.01), (ignored, None)):
        centres = _box_centres(mapper)
        assert len(centres) == 3
        err = np.linalg.norm(centres - expect, axis=1)
        if limit is not None:
            assert err.max() < limit, err
        else:  # the side boxes land several centimetres off when the lens is ignored
            assert err[[0, 2]].min() > 0.03, err
    loc = told.localize(raw_told[2])
    assert loc.ids.shape == raw_told[2].masks.shape
    assert len({i for _, i, _ in loc.matches}) >= 4  # the wall and the three boxes


def test_training_draws_only_pixels_the_camera_saw_and_a_save_keeps_them(tmp_path):
    """A pincushion lens sees less than its pinhole image: the rest of the keyframe is
    no colour (black), which training must never learn."""
    h, w = 48, 64
    K = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])
    lens = LensDistortion("plumb_bob", (0.3, 0.0, 0.0, 0.0, 0.0))
    mapper = Mapper(MapperConfig(device="cpu"))
    masks = np.ones((h, w), np.int32)
    mapper.ingest(Frame(rgb=np.full((h, w, 3), 200, np.uint8), K=K,
                        camera_to_world=np.eye(4), depth=np.full((h, w), 1.5, np.float32),
                        masks=masks, lens=lens))
    (kf,) = mapper.keyframes.snapshot()
    assert kf.frame.seen is not None and 0.7 < kf.frame.seen.mean() < 1.0
    assert (kf.frame.rgb[~kf.frame.seen] == 0).all()
    mapper.train(1)
    for _ in range(3):
        batch = mapper.trainer.sample_batch()
        assert torch.allclose(batch.rgb, torch.full_like(batch.rgb, 200 / 255))
    mapper.save(tmp_path / "map.pmap")
    loaded = Mapper(mapper.cfg)
    loaded.load(tmp_path / "map.pmap")
    np.testing.assert_array_equal(loaded.keyframes.snapshot()[0].frame.seen, kf.frame.seen)
    from panoptic_mapping.core.resolution import decimate_frame
    assert decimate_frame(kf.frame, 2).seen.shape == (h // 2, w // 2)
    with pytest.raises(FrameError, match="seen must be an"):
        validate_frame(Frame(rgb=kf.frame.rgb, K=K, camera_to_world=np.eye(4),
                             seen=np.ones((2, 2), bool)))
