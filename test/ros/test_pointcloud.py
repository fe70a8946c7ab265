"""PointCloud2 of the labeled cloud: field layout, rgb packing, a sensor_msgs_py-style reader."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_rclpy

require_rclpy()

from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from panoptic_mapping.core.io.export import LabeledCloud  # noqa: E402
from panoptic_mapping.ros.pointcloud import (  # noqa: E402
    POINT_STEP,
    labeled_cloud_to_msg,
    msg_to_labeled_cloud,
    pack_rgb,
    read_points,
    subsample,
    unpack_rgb,
)


def cloud(n: int = 50, seed: int = 0) -> LabeledCloud:
    rng = np.random.default_rng(seed)
    return LabeledCloud(rng.normal(size=(n, 3)), rng.integers(0, 256, (n, 3)),
                        rng.integers(0, 9, n), rng.integers(0, 4, n), rng.random(n))


def test_field_layout_is_the_documented_one():
    msg = labeled_cloud_to_msg(cloud(3))
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == [("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
                      ("z", 8, PointField.FLOAT32, 1), ("rgb", 12, PointField.FLOAT32, 1),
                      ("instance", 16, PointField.UINT32, 1),
                      ("semantic", 20, PointField.UINT32, 1),
                      ("confidence", 24, PointField.FLOAT32, 1)]
    assert msg.point_step == POINT_STEP == 28 and msg.row_step == 3 * 28
    assert msg.height == 1 and msg.width == 3 and not msg.is_bigendian and msg.is_dense
    assert len(msg.data) == 3 * 28


def test_rgb_is_packed_as_0x00RRGGBB_in_a_float32():
    packed = pack_rgb(np.array([[0x12, 0x34, 0x56]], np.uint8))
    assert packed.dtype == np.float32
    assert packed.view(np.uint32)[0] == 0x00123456
    np.testing.assert_array_equal(unpack_rgb(packed), [[0x12, 0x34, 0x56]])


def test_round_trip_through_the_message():
    c = cloud(200)
    back = msg_to_labeled_cloud(labeled_cloud_to_msg(c))
    np.testing.assert_allclose(back.xyz, c.xyz.astype(np.float32))
    np.testing.assert_array_equal(back.rgb, c.rgb)
    np.testing.assert_array_equal(back.instance, c.instance)
    np.testing.assert_array_equal(back.semantic, c.semantic)
    np.testing.assert_allclose(back.confidence, c.confidence.astype(np.float32))
    empty = msg_to_labeled_cloud(labeled_cloud_to_msg(LabeledCloud.empty()))
    assert len(empty) == 0


def test_reader_honours_offsets_padding_rows_and_endianness():
    # an organised 2x2 cloud, big endian, 4 padding bytes per point and 8 per row
    dtype = np.dtype({"names": ["x", "y", "z", "label"], "formats": [">f4", ">f4", ">f4", ">u2"],
                      "offsets": [0, 4, 8, 12], "itemsize": 18})
    pts = np.zeros(4, dtype)
    pts["x"], pts["y"], pts["z"], pts["label"] = [1, 2, 3, 4], [5, 6, 7, 8], \
        [9, np.nan, 11, 12], [13, 14, 15, 16]
    rows = [pts[:2].tobytes() + b"\0" * 8, pts[2:].tobytes() + b"\0" * 8]
    msg = PointCloud2(height=2, width=2, is_bigendian=True, point_step=18, row_step=44,
                      data=b"".join(rows))
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in (
        ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32),
        ("z", 8, PointField.FLOAT32), ("label", 12, PointField.UINT16))]
    got = read_points(msg)
    np.testing.assert_array_equal(got["x"], [1, 2, 3, 4])
    np.testing.assert_array_equal(got["label"], [13, 14, 15, 16])
    assert read_points(msg, skip_nans=True)["x"].tolist() == [1, 3, 4]
    only = read_points(msg, field_names=["label"])
    assert only.dtype.names == ("label",)
    with pytest.raises(ValueError, match="not in the cloud"):
        read_points(msg, field_names=["rgb"])


def test_agrees_with_sensor_msgs_py_where_installed():
    pc2 = pytest.importorskip("sensor_msgs_py.point_cloud2",
                              reason="sensor_msgs_py is not installable from PyPI")
    c = cloud(20)
    msg = labeled_cloud_to_msg(c)
    theirs = pc2.read_points(msg, field_names=["x", "instance", "rgb"])
    ours = read_points(msg, field_names=["x", "instance", "rgb"])
    for name in ("x", "instance", "rgb"):
        np.testing.assert_array_equal(np.asarray(theirs[name]), ours[name])


def test_subsample_is_even_and_bounded():
    c = cloud(1000)
    s = subsample(c, 100)
    assert len(s) == 100
    np.testing.assert_array_equal(s.xyz[0], c.xyz[0])
    np.testing.assert_array_equal(s.xyz[-1], c.xyz[-1])
    assert subsample(c, 0) is c and subsample(c, 5000) is c
