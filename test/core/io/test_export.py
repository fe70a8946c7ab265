"""Map export: labeled-cloud downsampling, oriented boxes, instance table, PLY files."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from panoptic_mapping.config import ConfigError, config_from_dict, param_specs
from panoptic_mapping.core.io.export import (
    ExportConfig,
    InstanceRecord,
    LabeledCloud,
    downsample_labeled_points,
    instance_points,
    instance_table,
    oriented_box,
    read_ply,
    voxel_means,
    write_ply,
)
from panoptic_mapping.core.geometry import quaternion_to_rotation


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_grid(size=(0.4, 0.2, 0.1), n=(9, 5, 3)) -> np.ndarray:
    """(N, 3) points on a regular grid filling an axis-aligned box centred at 0."""
    axes = [np.linspace(-s / 2, s / 2, k) for s, k in zip(size, n)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def assert_rotation(R: np.ndarray) -> None:
    assert R.shape == (3, 3)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)


def assert_contains(points, center, rotation, size, tol=1e-9) -> None:
    local = (np.asarray(points, dtype=np.float64) - center) @ rotation
    assert (np.abs(local) <= size / 2 + tol).all()


def cloud_of(xyz, instance, semantic=None, confidence=None) -> LabeledCloud:
    n = len(xyz)
    return LabeledCloud(
        xyz=np.asarray(xyz, dtype=np.float32), rgb=np.full((n, 3), 128, np.uint8),
        instance=np.asarray(instance, dtype=np.uint32),
        semantic=np.zeros(n, np.uint32) if semantic is None else semantic,
        confidence=np.ones(n, np.float32) if confidence is None else confidence)


# --------------------------------------------------------------------------- config


def test_config_fields_are_documented_and_validated():
    specs = {s.name: s for s in param_specs(ExportConfig)}
    assert set(specs) == {"voxel_size_m", "min_points_per_instance", "cloud_cache_mb",
                          "obb_method"}
    assert specs["obb_method"].default == "gravity"
    assert specs["obb_method"].choices == ("gravity", "pca")
    assert all(s.doc for s in specs.values())
    assert config_from_dict({"obb_method": "pca"}, ExportConfig).obb_method == "pca"
    with pytest.raises(ConfigError, match="obb_method"):
        config_from_dict({"obb_method": "aabb"}, ExportConfig)
    with pytest.raises(ConfigError, match="voxel_size_m"):
        config_from_dict({"voxel_size_m": 0.0}, ExportConfig)
    with pytest.raises(ConfigError, match="cloud_cache_mb"):
        config_from_dict({"cloud_cache_mb": -1.0}, ExportConfig)
    with pytest.raises(ConfigError, match="export: .*min_points_per_instance"):
        ExportConfig(min_points_per_instance=0)


# --------------------------------------------------------------------------- downsampling


def test_two_points_in_one_voxel_are_averaged():
    cloud = downsample_labeled_points(
        xyz=[[0.001, 0.002, 0.003], [0.005, 0.006, 0.007]],
        rgb=[[10, 20, 30], [20, 40, 50]], instance=[3, 3], semantic=[2, 2],
        confidence=[0.4, 0.8], voxel_size=0.01)
    assert len(cloud) == 1
    np.testing.assert_allclose(cloud.xyz[0], [0.003, 0.004, 0.005], atol=1e-7)
    np.testing.assert_array_equal(cloud.rgb[0], [15, 30, 40])
    assert (cloud.instance[0], cloud.semantic[0]) == (3, 2)
    assert cloud.confidence[0] == pytest.approx(0.6)  # unanimous: mean confidence
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.uint8
    assert cloud.instance.dtype == np.uint32 and cloud.confidence.dtype == np.float32


def test_voxel_means_average_position_and_colour_per_voxel():
    xyz, rgb = voxel_means([[0.001, 0.002, 0.003], [0.005, 0.006, 0.007], [0.015, 0.0, 0.0]],
                           [[10, 20, 30], [21, 40, 50], [1, 2, 3]], 0.01)
    np.testing.assert_allclose(xyz, [[0.003, 0.004, 0.005], [0.015, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_array_equal(rgb, [[16, 30, 40], [1, 2, 3]])  # 15.5 rounds to even
    assert rgb.dtype == np.uint8
    empty = voxel_means(np.zeros((0, 3)), np.zeros((0, 3)), 0.01)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_means([[0, 0, 0]], [[0, 0, 0]], 0.0)


def test_majority_instance_in_a_voxel_of_three_points():
    cloud = downsample_labeled_points(
        xyz=[[0.011, 0.011, 0.011], [0.012, 0.012, 0.012], [0.019, 0.019, 0.019]],
        rgb=np.zeros((3, 3)), instance=[7, 7, 9], semantic=[1, 2, 2],
        confidence=[0.5, 0.7, 0.9], voxel_size=0.01)
    assert len(cloud) == 1
    assert cloud.instance[0] == 7  # 2 of 3 points, despite 9's higher confidence
    assert cloud.semantic[0] == 2
    # mean confidence of the voters for 7 (0.6) times their share (2/3)
    assert cloud.confidence[0] == pytest.approx(0.6 * 2 / 3)


def test_vote_tie_goes_to_the_higher_summed_confidence():
    cloud = downsample_labeled_points(
        xyz=np.full((4, 3), 0.5), rgb=np.zeros((4, 3)), instance=[4, 4, 5, 5],
        semantic=[1, 1, 6, 6], confidence=[0.1, 0.2, 0.9, 0.3], voxel_size=0.1)
    assert (cloud.instance[0], cloud.semantic[0]) == (5, 6)
    assert cloud.confidence[0] == pytest.approx(0.6 * 0.5)


def test_points_in_different_voxels_stay_apart_and_nonfinite_are_dropped():
    xyz = [[-0.005, 0.0, 0.0], [0.005, 0.0, 0.0], [np.nan, 0.0, 0.0], [0.0, np.inf, 0.0]]
    cloud = downsample_labeled_points(xyz, np.zeros((4, 3)), [1, 2, 3, 4], [0, 0, 0, 0],
                                      [1.0, 1.0, 1.0, 1.0], voxel_size=0.01)
    assert len(cloud) == 2
    assert sorted(cloud.instance.tolist()) == [1, 2]
    assert np.isfinite(cloud.xyz).all()


def test_empty_input_and_bad_arguments():
    empty = downsample_labeled_points(np.zeros((0, 3)), np.zeros((0, 3)), [], [], [], 0.01)
    assert len(empty) == 0 and empty.xyz.shape == (0, 3)
    with pytest.raises(ValueError, match="voxel_size"):
        downsample_labeled_points(np.zeros((1, 3)), np.zeros((1, 3)), [1], [1], [1.0], 0.0)
    with pytest.raises(ValueError, match="instance"):
        downsample_labeled_points(np.zeros((1, 3)), np.zeros((1, 3)), [-1], [1], [1.0], 0.1)
    with pytest.raises(ValueError, match="semantic"):
        downsample_labeled_points(np.zeros((2, 3)), np.zeros((2, 3)), [1, 1], [1], [1, 1], .1)


def reference_downsample(xyz, rgb, inst, sem, conf, voxel_size):
    """Slow per-voxel loop used to check the vectorised version."""
    out = {}
    keys = [tuple(k) for k in np.floor(xyz / voxel_size).astype(np.int64)]
    for key in sorted(set(keys)):
        rows = [i for i, k in enumerate(keys) if k == key]

        def vote(labels):
            best = max(set(labels[rows].tolist()), key=lambda lab: (
                sum(labels[r] == lab for r in rows),
                sum(conf[r] for r in rows if labels[r] == lab), -lab))
            return best, sum(conf[r] for r in rows if labels[r] == best)

        i_best, i_wsum = vote(inst)
        out[key] = (xyz[rows].mean(0), np.rint(rgb[rows].mean(0)), i_best, vote(sem)[0],
                    i_wsum / len(rows))
    return out


def test_vectorised_downsampling_matches_a_per_voxel_loop():
    rng = np.random.default_rng(3)
    n = 400
    xyz = rng.uniform(-0.05, 0.05, (n, 3))
    rgb = rng.integers(0, 256, (n, 3))
    inst = rng.integers(0, 4, n)
    sem = rng.integers(0, 3, n)
    conf = rng.choice([0.25, 0.5, 1.0], n)  # repeated values make ties likely
    cloud = downsample_labeled_points(xyz, rgb, inst, sem, conf, 0.02)
    ref = reference_downsample(xyz, rgb, inst, sem, conf, 0.02)
    assert len(cloud) == len(ref)
    got = {tuple(np.floor(p / 0.02).astype(np.int64)): i for i, p in
           enumerate(cloud.xyz.astype(np.float64))}
    for key, (mean, colour, i_best, s_best, c) in ref.items():
        i = got[key]
        np.testing.assert_allclose(cloud.xyz[i], mean, atol=1e-6)
        np.testing.assert_array_equal(cloud.rgb[i], colour)
        assert (cloud.instance[i], cloud.semantic[i]) == (i_best, s_best)
        assert cloud.confidence[i] == pytest.approx(c, rel=1e-6)


def test_downsampling_a_million_points_timing():
    rng = np.random.default_rng(0)
    n = 1_000_000
    xyz = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    inst = rng.integers(0, 30, n).astype(np.uint32)
    conf = rng.random(n).astype(np.float32)
    for voxel in (0.01, 0.05):
        start = time.perf_counter()
        cloud = downsample_labeled_points(xyz, rgb, inst, inst % 7, conf, voxel)
        elapsed = time.perf_counter() - start
        print(f"\ndownsample 1e6 points at {voxel} m -> {len(cloud)} voxels: {elapsed:.3f} s")
        assert 0 < len(cloud) <= n


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("method", ["gravity", "pca"])
def test_axis_aligned_box_is_recovered_exactly(method):
    center = np.array([1.0, -2.0, 0.5])
    pts = box_grid() + center
    c, R, size = oriented_box(pts, method)
    assert_rotation(R)
    np.testing.assert_allclose(c, center, atol=1e-9)
    np.testing.assert_allclose(np.sort(size), [0.1, 0.2, 0.4], atol=1e-9)
    # identity up to axis order and sign: a signed permutation matrix
    np.testing.assert_allclose(np.sort(np.abs(R), axis=None), [0] * 6 + [1] * 3, atol=1e-9)
    assert_contains(pts, c, R, size)


def test_gravity_box_of_a_box_rotated_30_degrees_about_z():
    center = np.array([0.3, 0.2, 0.75])
    pts = box_grid() @ rot_z(30).T + center
    c, R, size = oriented_box(pts, "gravity")
    assert_rotation(R)
    np.testing.assert_allclose(R[:, 2], [0, 0, 1], atol=1e-12)  # upright
    yaw = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    assert (yaw - 30) % 90 == pytest.approx(0, abs=1e-6) or (yaw - 30) % 90 == \
        pytest.approx(90, abs=1e-6)
    np.testing.assert_allclose(size, [0.4, 0.2, 0.1], atol=1e-9)
    np.testing.assert_allclose(c, center, atol=1e-9)
    assert_contains(pts, c, R, size)


def test_pca_box_of_a_tilted_box():
    tilt = quaternion_to_rotation(np.array([0.2, -0.3, 0.1, 0.9]))
    center = np.array([-1.0, 2.0, 0.3])
    pts = box_grid() @ tilt.T + center
    c, R, size = oriented_box(pts, "pca")
    assert_rotation(R)
    np.testing.assert_allclose(size, [0.4, 0.2, 0.1], atol=1e-9)
    np.testing.assert_allclose(c, center, atol=1e-9)
    np.testing.assert_allclose(np.abs(R.T @ tilt), np.eye(3), atol=1e-9)
    # the upright box of a tilted object is larger, but still contains it
    cg, Rg, sg = oriented_box(pts, "gravity")
    assert_contains(pts, cg, Rg, sg)
    assert np.prod(sg) > np.prod(size)


DEGENERATE = {
    "one point": [[0.5, -0.2, 1.0]],
    "repeated point": [[0.5, -0.2, 1.0]] * 5,
    "collinear diagonal": [[t, t, 0.3] for t in np.linspace(0, 1, 7)],
    "vertical line": [[0.1, 0.2, z] for z in np.linspace(0, 1, 5)],
    "coplanar square": [[x, y, 0.0] for x in (0, 1) for y in (0, 1)],
    "coplanar tilted": [[x, 0.0, x + z] for x in np.linspace(0, 1, 4) for z in (0, 0.5)],
}


@pytest.mark.parametrize("method", ["gravity", "pca"])
@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_inputs_give_valid_boxes(method, name):
    pts = np.array(DEGENERATE[name], dtype=np.float64)
    c, R, size = oriented_box(pts, method)
    for a in (c, R, size):
        assert np.isfinite(a).all()
    assert_rotation(R)
    assert (size >= 0).all()
    assert_contains(pts, c, R, size)
    if len(np.unique(pts, axis=0)) == 1:
        np.testing.assert_allclose(size, 0, atol=1e-12)
        np.testing.assert_allclose(c, pts[0], atol=1e-12)


def test_collinear_points_give_zero_sizes_off_the_line():
    pts = np.array(DEGENERATE["collinear diagonal"])
    for method in ("gravity", "pca"):
        _, _, size = oriented_box(pts, method)
        assert np.sort(size)[-1] == pytest.approx(math.sqrt(2), abs=1e-9)
        assert np.sort(size)[0] == pytest.approx(0, abs=1e-9)


def test_oriented_box_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one point"):
        oriented_box(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        oriented_box(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="unknown box method"):
        oriented_box(np.zeros((1, 3)), "aabb")


def test_box_quaternion_matches_the_rotation():
    for R in (np.eye(3), rot_z(30), rot_z(180), rot_z(-90) @ np.diag([1.0, -1.0, -1.0]),
              quaternion_to_rotation(np.array([0.2, -0.3, 0.1, 0.9]))):
        rec = InstanceRecord(1, "cup", 1, 1.0, 1.0, np.zeros(3), np.zeros(3), R,
                             np.ones(3), 1)
        q = rec.box_quaternion()
        assert np.linalg.norm(q) == pytest.approx(1.0) and q[3] >= 0
        np.testing.assert_allclose(quaternion_to_rotation(q), R, atol=1e-12)
    q30 = InstanceRecord(1, "", 0, 0.0, 0.0, np.zeros(3), np.zeros(3), rot_z(30),
                         np.ones(3), 1).box_quaternion()
    np.testing.assert_allclose(q30, [0, 0, math.sin(math.radians(15)),
                                     math.cos(math.radians(15))], atol=1e-12)


# --------------------------------------------------------------------------- instance table


def test_instance_table_skips_background_and_small_instances():
    rng = np.random.default_rng(1)
    big = box_grid(n=(5, 3, 2)) + [1.0, 0.0, 0.5]  # 30 points
    small = rng.uniform(0, 0.1, (5, 3))
    unlabeled = box_grid(n=(5, 5, 1)) @ rot_z(30).T  # 25 points, flat, not in `labels`
    background = rng.uniform(-1, 1, (50, 3))
    xyz = np.concatenate([background, unlabeled, small, big])
    inst = np.repeat([0, 9, 4, 2], [50, 25, 5, 30])
    conf = np.where(inst == 9, 0.5, 1.0).astype(np.float32)
    cloud = cloud_of(xyz, inst, confidence=conf)
    labels = {2: ("mug", 3, 0.8), 4: ("spoon", 5, 0.9)}
    table = instance_table(cloud, labels, {2: 0.95}, ExportConfig(min_points_per_instance=20))
    assert [r.id for r in table] == [2, 9]
    mug, other = table
    assert (mug.label, mug.label_id, mug.semantic_confidence) == ("mug", 3, 0.8)
    assert mug.confidence == 0.95 and mug.num_points == 30
    np.testing.assert_allclose(mug.centroid, [1.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(mug.box_center, [1.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(mug.box_size, [0.4, 0.2, 0.1], atol=1e-6)
    assert_rotation(mug.box_rotation)
    # missing label -> "no label"; missing confidence -> mean point confidence
    assert (other.label, other.label_id, other.semantic_confidence) == ("", 0, 0.0)
    assert other.confidence == pytest.approx(0.5)
    assert other.box_size[2] == pytest.approx(0.0, abs=1e-7)  # flat: zero height, no NaN
    d = mug.as_dict()
    assert d["id"] == 2 and len(d["box_quaternion_xyzw"]) == 4
    assert instance_table(cloud, labels, {}, ExportConfig(min_points_per_instance=100)) == []
    assert instance_table(LabeledCloud.empty(), {}, {}) == []


def test_instance_table_uses_the_configured_box_method():
    tilt = quaternion_to_rotation(np.array([0.3, 0.0, 0.0, 0.95]))
    cloud = cloud_of(box_grid() @ tilt.T, np.ones(135, np.uint32))
    (upright,) = instance_table(cloud, {}, {}, ExportConfig(obb_method="gravity"))
    (tight,) = instance_table(cloud, {}, {}, ExportConfig(obb_method="pca"))
    np.testing.assert_allclose(upright.box_rotation[:, 2], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(tight.box_size, [0.4, 0.2, 0.1], atol=1e-6)


# --------------------------------------------------------------------------- one instance


def test_instance_points_selects_one_instance_in_the_clouds_order():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]], np.float32)
    rgb = np.array([[10, 0, 0], [20, 0, 0], [30, 0, 0], [40, 0, 0], [50, 0, 0]])
    cloud = LabeledCloud(xyz, rgb, [7, 3, 7, 0, 7], [1, 2, 1, 0, 4],
                         [0.9, 0.8, 0.7, 0.1, 0.5])
    mine = instance_points(cloud, 7)
    np.testing.assert_array_equal(mine.xyz[:, 0], [0, 2, 4])
    np.testing.assert_array_equal(mine.rgb[:, 0], [10, 30, 50])
    np.testing.assert_array_equal(mine.instance, [7, 7, 7])
    np.testing.assert_array_equal(mine.semantic, [1, 1, 4])
    np.testing.assert_allclose(mine.confidence, [0.9, 0.7, 0.5])
    assert len(instance_points(cloud, 5)) == 0  # an id the cloud lacks: empty, no error
    with pytest.raises(ValueError, match="instance_id must be >= 1"):
        instance_points(cloud, 0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="voxel_size"):
            instance_points(cloud, 7, bad)


def test_instance_points_downsampled_to_a_coarser_grid():
    """A 10 x 10 grid of points 1 cm apart in the z = 0 plane (instance 4) beside 20
    points of instance 9: at 5 cm the instance keeps one point per 5 x 5 block, the mean
    of its 25 points, and nothing of instance 9."""
    g = (np.stack(np.meshgrid(np.arange(10), np.arange(10), indexing="ij"), -1)
         .reshape(-1, 2) * 0.01 + 0.0025)  # off the voxel borders
    xyz = np.concatenate([np.c_[g, np.zeros(100)], np.full((20, 3), 5.0)])
    inst = np.r_[np.full(100, 4), np.full(20, 9)]
    rgb = np.zeros((120, 3))
    rgb[:100, 0] = np.where(g[:, 0] < 0.05, 100, 200)  # left blocks red 100, right 200
    cloud = LabeledCloud(xyz, rgb, inst, np.zeros(120), np.full(120, 0.5))
    coarse = instance_points(cloud, 4, 0.05)
    assert len(coarse) == 4
    centres = np.sort(coarse.xyz[:, :2].round(4), axis=0)
    np.testing.assert_allclose(centres[:, 0], [0.0225, 0.0225, 0.0725, 0.0725], atol=1e-6)
    np.testing.assert_allclose(centres[:, 1], [0.0225, 0.0225, 0.0725, 0.0725], atol=1e-6)
    assert sorted(coarse.rgb[:, 0].tolist()) == [100, 100, 200, 200]
    assert (coarse.instance == 4).all()
    np.testing.assert_allclose(coarse.confidence, 0.5)
    assert len(instance_points(cloud, 4, 0.0)) == 100  # 0: the cloud's own points


# --------------------------------------------------------------------------- PLY


def random_cloud(n: int, seed: int = 0) -> LabeledCloud:
    rng = np.random.default_rng(seed)
    return LabeledCloud(
        xyz=rng.normal(size=(n, 3)).astype(np.float32),
        rgb=rng.integers(0, 256, (n, 3), dtype=np.uint8),
        instance=rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        semantic=rng.integers(0, 50, n).astype(np.uint32),
        confidence=rng.random(n).astype(np.float32))


def assert_clouds_equal(a: LabeledCloud, b: LabeledCloud) -> None:
    for name in ("xyz", "rgb", "instance", "semantic", "confidence"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_ply_round_trip_is_exact(tmp_path, n):
    cloud = random_cloud(n)
    path = tmp_path / "cloud.ply"
    write_ply(path, cloud)
    assert_clouds_equal(read_ply(path), cloud)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {n}" in header
    for prop in ("float x", "uchar red", "uint instance", "uint semantic", "float confidence"):
        assert f"property {prop}" in header
    # 27 bytes a vertex: 3 float + 3 uchar + 2 uint + 1 float
    assert path.stat().st_size == len(header) + len("end_header\n") + 27 * n
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]  # no temp file left


def test_write_ply_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cloud.ply"
    write_ply(path, random_cloud(10))
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("panoptic_mapping.core.io.export.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_ply(path, random_cloud(20, seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]


def test_read_ply_rejects_other_files(tmp_path):
    good = tmp_path / "good.ply"
    write_ply(good, random_cloud(10))
    blob = good.read_bytes()
    cases = {
        "truncated": (blob[:-7], "truncated"),
        "trailing": (blob + b"\0", "trailing bytes"),
        "random": (np.random.default_rng(0).bytes(500), "not a PLY file"),
        "ascii": (blob.replace(b"binary_little_endian", b"ascii"), "unsupported PLY format"),
        "big endian": (blob.replace(b"binary_little_endian", b"binary_big_endian"),
                       "unsupported PLY format"),
        "other layout": (blob.replace(b"property uint semantic", b"property uint label"),
                         "unsupported vertex properties"),
        "faces": (blob.replace(b"end_header", b"element face 0\nproperty list uchar int "
                               b"vertex_indices\nend_header"), "unsupported element"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.ply"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as info:
            read_ply(path)
        assert str(path) in str(info.value), name
