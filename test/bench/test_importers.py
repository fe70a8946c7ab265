"""bench.importers: tiny synthetic sequences in the TUM RGB-D, 7-Scenes-style and ScanNet
layouts are imported into scene folders: intrinsics (named, from files, scaled), pose
parsing, time-stamp association, depth units, invalid poses, downscaling, held-out views,
the CLI and its errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rgbd_sequences as rs
from panoptic_mapping.bench import importers
from panoptic_mapping.bench.importers import ImportOptions, SequenceImportError
from panoptic_mapping.bench.scenes import load_scene


def _opts(**kw) -> ImportOptions:
    return ImportOptions(**{"holdout_every": 0, **kw})


# ----------------------------------------------------------------------------- helpers


def test_associate_is_one_to_one_and_within_the_tolerance():
    a = [0.00, 0.033, 0.066, 0.100]
    b = [0.004, 0.030, 0.200]
    # 0.033 and 0.004 would both like b[0]/b[1]; 0.066 is 0.036 from b[1]: beyond 0.02
    assert importers.associate(a, b, 0.02) == {0: 0, 1: 1}
    assert importers.associate(a, [], 0.02) == {}
    # greedy by difference: the closer pair wins a shared candidate
    assert importers.associate([0.0, 0.010], [0.009], 0.02) == {1: 0}


def test_validate_pose_accepts_rigid_rejects_the_rest():
    c, s = np.cos(0.3), np.sin(0.3)
    T = np.array([[c, -s, 0, 1.0], [s, c, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])
    rounded = np.round(T, 4)  # a text file with few decimals: re-orthonormalised
    out = importers.validate_pose(rounded)
    np.testing.assert_allclose(out @ np.linalg.inv(T), np.eye(4), atol=1e-3)
    np.testing.assert_allclose(out[:3, :3] @ out[:3, :3].T, np.eye(3), atol=1e-12)
    assert importers.validate_pose(np.full((4, 4), -np.inf)) is None  # ScanNet: lost
    assert importers.validate_pose(np.diag([1.0, 1.0, -1.0, 1.0])) is None  # a reflection
    assert importers.validate_pose(np.diag([2.0, 1.0, 1.0, 1.0])) is None  # a scale
    assert importers.validate_pose(np.eye(3)) is None
    assert importers.validate_pose(None) is None


def test_scale_intrinsics_keeps_pixel_centres():
    K = np.array([[100.0, 0, 63.5], [0, 90.0, 47.5], [0, 0, 1]])  # centre of 128x96
    half = importers.scale_intrinsics(K, 0.5, 0.5)
    np.testing.assert_allclose(half, [[50, 0, 31.5], [0, 45, 23.5], [0, 0, 1]])  # of 64x48
    # the same 3D point lands on the same place of the image, in pixel-centre terms
    p = np.array([0.3, -0.2, 2.0])
    u = K @ p / p[2]
    u2 = half @ p / p[2]
    np.testing.assert_allclose((u2[:2] + 0.5), (u[:2] + 0.5) * 0.5)


# ----------------------------------------------------------------------------- TUM


def test_tum_association_pose_units_and_named_intrinsics(tmp_path):
    seq = rs.frames(6)
    src = tmp_path / "rgbd_dataset_freiburg2_synthetic"
    # 25 Hz: every colour stamp falls on a 100 Hz ground-truth stamp
    stamps = rs.write_tum(src, seq, dt=0.04, drop_depth=2, gap_in_poses=4)
    report = importers.import_tum(src, tmp_path / "scene", _opts())
    assert (report.frames, report.unmatched_depth, report.unmatched_pose) == (4, 1, 1)
    assert report.intrinsics_source.startswith("camera fr2")
    scene = load_scene(tmp_path / "scene")
    assert not scene.has_ground_truth and scene.novel_frames == []
    assert scene.frames[0].instance is None and scene.classes == ["void"]
    kept = [0, 1, 3, 5]
    for f, i in zip(scene.frames, kept):
        # depth: 16-bit, 5000 units per metre
        np.testing.assert_allclose(f.depth, seq[i].depth, atol=1 / 5000)
        np.testing.assert_array_equal(f.rgb, seq[i].rgb)
        np.testing.assert_allclose(f.camera_to_world, seq[i].camera_to_world, atol=1e-4)
        assert f.stamp == pytest.approx(stamps[i] - stamps[0], abs=2e-6)
    fx, fy, cx, cy = importers.CAMERAS["fr2"]
    np.testing.assert_allclose(scene.frames[0].K, [[fx / 10, 0, (cx + 0.5) / 10 - 0.5],
                                                  [0, fy / 10, (cy + 0.5) / 10 - 0.5],
                                                  [0, 0, 1]])  # fr2 at 640x480 -> 64x48
    meta = json.loads((tmp_path / "scene" / "scene.json").read_text())
    assert meta["config"]["import"]["unmatched_depth"] == 1
    assert "instance" not in meta["frames"][0]


def test_tum_raw_images_carry_their_cameras_lens(tmp_path):
    from panoptic_mapping.bench.lens import NAMED_LENSES, scene_lens
    src = tmp_path / "rgbd_dataset_freiburg1_synthetic"
    rs.write_tum(src, rs.frames(2))
    report = importers.import_tum(src, tmp_path / "scene", _opts())
    assert report.camera == "fr1"
    lens = scene_lens(load_scene(tmp_path / "scene"))
    assert (lens.model, lens.coefficients) == NAMED_LENSES["fr1"]
    importers.import_tum(src, tmp_path / "plain", _opts(lens="none"))
    assert scene_lens(load_scene(tmp_path / "plain")) is None
    importers.import_tum(src, tmp_path / "own", _opts(lens="plumb_bob:0.1,0,0,0,0"))
    assert scene_lens(load_scene(tmp_path / "own")).coefficients[0] == 0.1
    with pytest.raises(SequenceImportError, match="not supported"):
        importers.import_tum(src, tmp_path / "bad", _opts(lens="fisheye:0.1,0,0,0"))
    # freiburg3's images are undistorted already: no lens
    src3 = tmp_path / "rgbd_dataset_freiburg3_synthetic"
    rs.write_tum(src3, rs.frames(2))
    importers.import_tum(src3, tmp_path / "fr3", _opts())
    assert scene_lens(load_scene(tmp_path / "fr3")) is None


def test_tum_quaternion_and_given_intrinsics(tmp_path):
    seq = rs.frames(2)
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # 90 degrees about z
    for f in seq:
        f.camera_to_world[:3, :3] = R
    src = tmp_path / "tum"
    rs.write_tum(src, seq)
    report = importers.import_tum(src, tmp_path / "scene",
                                  _opts(intrinsics=(50.0, 51.0, 30.0, 20.0), tolerance=0.01))
    assert report.intrinsics_source.startswith("given")
    f = load_scene(tmp_path / "scene").frames[0]
    np.testing.assert_allclose(f.camera_to_world[:3, :3], R, atol=1e-5)
    np.testing.assert_allclose(f.K, [[50, 0, 30], [0, 51, 20], [0, 0, 1]])
    # a TUM folder without a camera in its name gets TUM's default intrinsics
    r2 = importers.import_tum(src, tmp_path / "scene2", _opts())
    assert r2.intrinsics_source.startswith("camera tum")


# ----------------------------------------------------------------------------- 7-Scenes


def test_7scenes_invalid_pose_millimetres_downscale_and_holdout(tmp_path):
    seq = rs.frames(9)
    src = tmp_path / "scene_root" / "seq-01"
    rs.write_7scenes(src, seq, bad_pose=3, colour_ext="jpg")
    report = importers.import_7scenes(src, tmp_path / "scene",
                                      ImportOptions(width=32, holdout_every=4))
    assert report.skipped_invalid_pose == 1
    assert (report.frames, report.novel_frames) == (6, 2)  # 8 valid: positions 3, 7 held out
    assert report.intrinsics_source.endswith("camera-intrinsics.txt")
    scene = load_scene(tmp_path / "scene")
    valid = [i for i in range(9) if i != 3]
    train = [valid[p] for p in range(8) if p % 4 != 3]
    held = [valid[p] for p in (3, 7)]
    np.testing.assert_allclose(scene.frames[0].K, importers.scale_intrinsics(rs.K, 0.5, 0.5))
    for f, i in list(zip(scene.frames, train)) + list(zip(scene.novel_frames, held)):
        assert f.rgb.shape == (24, 32, 3) and f.depth.shape == (24, 32)
        # nearest neighbour: output pixel (r, c) is source pixel (2r + 1, 2c + 1), in metres
        np.testing.assert_allclose(f.depth, seq[i].depth[1::2, 1::2], atol=5e-4)
        np.testing.assert_allclose(f.camera_to_world, seq[i].camera_to_world, atol=1e-7)
        assert f.stamp == pytest.approx((i - valid[0]) / 30.0)
    assert [f.index for f in scene.novel_frames] == [0, 1]


def test_7scenes_invalid_depth_and_intrinsics_choices(tmp_path):
    seq = rs.frames(2)
    src = tmp_path / "a" / "seq"
    rs.write_7scenes(src, seq, intrinsics=None)
    with pytest.raises(SequenceImportError, match="--camera 7scenes"):
        importers.import_7scenes(src, tmp_path / "s1", _opts())
    importers.import_7scenes(src, tmp_path / "s1", _opts(camera="7scenes"))
    f = load_scene(tmp_path / "s1").frames[0]
    assert f.depth[0, 0] == 0.0  # 65535 = no measurement
    np.testing.assert_allclose(f.depth[1:, 1:], seq[0].depth[1:, 1:], atol=5e-4)
    # 585 at 640x480 -> 58.5 at 64x48
    assert f.K[0, 0] == pytest.approx(58.5) and f.K[0, 2] == pytest.approx(31.55)
    with pytest.raises(SequenceImportError, match="no frame-NNNNNN"):
        importers.import_7scenes(tmp_path / "a", tmp_path / "s2", _opts())  # a parent


# ----------------------------------------------------------------------------- ScanNet


def test_scannet_colour_resized_intrinsics_and_inf_poses(tmp_path):
    seq = rs.frames(4)
    K_big = np.array([[80.0, 0, 63.5], [0, 80.0, 47.5], [0, 0, 1]])  # colour at 128x96
    big = rs.frames(4, shape=(96, 128), K_=K_big)
    src = tmp_path / "scene0000_00"
    rs.write_scannet(src, seq, [b.rgb for b in big], K_big, inf_pose=1)
    report = importers.import_scannet(src, tmp_path / "scene", _opts(max_frames=2))
    assert report.skipped_invalid_pose == 1 and report.frames == 2
    assert report.intrinsics_source.endswith("intrinsic_depth.txt")
    scene = load_scene(tmp_path / "scene")
    np.testing.assert_allclose(scene.frames[0].K, rs.K)
    for f, i in zip(scene.frames, (0, 2)):
        assert f.rgb.shape == (48, 64, 3)  # colour at the depth resolution
        np.testing.assert_allclose(f.depth, seq[i].depth, atol=5e-4)  # millimetres
        np.testing.assert_allclose(f.camera_to_world, seq[i].camera_to_world, atol=1e-6)
        # the colour is the large image area-averaged to 64x48 (jpeg aside)
        small = np.asarray(Image.fromarray(big[i].rgb).resize((64, 48), Image.Resampling.BOX))
        assert np.median(np.abs(f.rgb.astype(int) - small)) <= 3
    importers.import_scannet(src, tmp_path / "scene_c", _opts(scannet_intrinsics="color"))
    np.testing.assert_allclose(load_scene(tmp_path / "scene_c").frames[0].K,
                               importers.scale_intrinsics(K_big, 0.5, 0.5))
    np.testing.assert_allclose(importers.scale_intrinsics(K_big, 0.5, 0.5), rs.K)


def test_scannet_stride_and_width(tmp_path):
    seq = rs.frames(6)
    src = tmp_path / "scan"
    rs.write_scannet(src, seq, [f.rgb for f in seq], rs.K)
    report = importers.import_scannet(src, tmp_path / "scene", _opts(stride=2, width=16))
    assert report.candidates == 3 and report.frames == 3
    scene = load_scene(tmp_path / "scene")
    assert scene.frames[0].rgb.shape == (12, 16, 3)
    np.testing.assert_allclose(scene.frames[0].K, importers.scale_intrinsics(rs.K, 0.25, 0.25))
    np.testing.assert_allclose(scene.frames[1].camera_to_world, seq[2].camera_to_world,
                               atol=1e-6)
    assert scene.frames[1].stamp == pytest.approx(2 / 30)


# ----------------------------------------------------------------------------- errors, CLI


def test_errors_are_clear(tmp_path):
    with pytest.raises(SequenceImportError, match="rgb.txt is missing"):
        importers.import_tum(tmp_path, tmp_path / "out", _opts())
    seq = rs.frames(2)
    src = tmp_path / "seq"
    rs.write_7scenes(src, seq)
    importers.import_7scenes(src, tmp_path / "out", _opts())
    with pytest.raises(SequenceImportError, match="not empty"):
        importers.import_7scenes(src, tmp_path / "out", _opts())
    importers.import_7scenes(src, tmp_path / "out", _opts(max_frames=1), overwrite=True)
    assert len(load_scene(tmp_path / "out").frames) == 1
    with pytest.raises(SequenceImportError, match="larger than the native width"):
        importers.import_7scenes(src, tmp_path / "o2", _opts(width=640))
    (src / "frame-000001.pose.txt").unlink()
    assert importers.import_7scenes(src, tmp_path / "o5", _opts()).skipped_missing == 1
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(src / "frame-000000.depth.png")
    with pytest.raises(SequenceImportError, match="16-bit"):
        importers.import_7scenes(src, tmp_path / "o3", _opts())
    with pytest.raises(SequenceImportError, match="--stride"):
        importers.import_7scenes(src, tmp_path / "o4", _opts(stride=0))


def test_cli(tmp_path, capsys):
    seq = rs.frames(3)
    src = tmp_path / "seq"
    rs.write_7scenes(src, seq)
    assert importers.main(["7scenes", str(src), str(tmp_path / "a"), "--max-frames", "2",
                           "--stride", "1", "--width", "32", "--holdout-every", "0"]) == 0
    assert "imported 2 training frames" in capsys.readouterr().out
    assert importers.main(["7scenes", str(src), str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        importers.parse_args(["tum", "a", "b", "--intrinsics", "1,2,3"])
    # the module runs as a program
    out = subprocess.run([sys.executable, "-m", "panoptic_mapping.bench.importers", "7scenes",
                          str(src), str(tmp_path / "b"), "--camera", "7scenes"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "intrinsics: camera 7scenes" in out.stdout
