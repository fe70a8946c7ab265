"""`replay`: the messages of a benchmark frame (encodings, units, intrinsics, pose), and a
ROS 2 bag written with rosbags played into a subscriber over loopback with a remap."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from conftest import REPLAY_EXECUTABLE, require_interfaces
from helpers import scene_frame

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402
from rclpy.time import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from panoptic_mapping.bench.types import SceneFrame  # noqa: E402
from panoptic_mapping.core.geometry import pose_matrix  # noqa: E402
from panoptic_mapping.ros.conversions import (  # noqa: E402
    camera_info_to_intrinsics,
    image_to_depth,
    image_to_rgb,
    numpy_to_image,
    pose_to_matrix,
)
from panoptic_mapping.tools.replay import parse_args, scene_frame_messages  # noqa: E402


def frame() -> SceneFrame:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 3.0, (6, 8)).astype(np.float32)
    depth[0, 0] = 0.0
    K = np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
    return scene_frame(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), depth, K=K,
                       camera_to_world=pose_matrix([1, 2, 3], [0.1, 0.2, 0.3, 0.9]), stamp=0.3)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_colour_encodings_decode_back(encoding):
    f = frame()
    msgs = scene_frame_messages(f, Time(seconds=1).to_msg(), color_encoding=encoding)
    assert msgs["image"].encoding == encoding
    rgb = image_to_rgb(msgs["image"])
    if encoding == "mono8":
        grey = np.round(f.rgb.astype(np.float32) @ [0.299, 0.587, 0.114])
        np.testing.assert_array_equal(rgb[..., 0], grey)
    else:
        np.testing.assert_array_equal(rgb, f.rgb)


def test_depth_units_intrinsics_pose_and_frames():
    f = frame()
    msgs = scene_frame_messages(f, Time(seconds=1).to_msg(), depth_encoding="16UC1")
    mm = image_to_depth(msgs["depth"])
    np.testing.assert_allclose(mm, np.round(f.depth * 1000) / 1000, atol=1e-6)
    msgs = scene_frame_messages(f, Time(seconds=1).to_msg(), map_frame="world",
                                camera_frame="cam_optical")
    np.testing.assert_array_equal(image_to_depth(msgs["depth"]), f.depth)
    K, w, h = camera_info_to_intrinsics(msgs["camera_info"])
    np.testing.assert_array_equal(K, f.K)
    assert (w, h) == (8, 6)
    assert msgs["pose"].header.frame_id == "world"
    assert msgs["image"].header.frame_id == "cam_optical"
    np.testing.assert_allclose(pose_to_matrix(msgs["pose"].pose), f.camera_to_world,
                               atol=1e-9)
    odo = scene_frame_messages(f, Time(seconds=1).to_msg(), odometry=True)["odometry"]
    assert odo.child_frame_id == "camera_color_optical_frame"
    np.testing.assert_allclose(pose_to_matrix(odo.pose.pose), f.camera_to_world, atol=1e-9)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_compressed_messages_decode_back(codec):
    from panoptic_mapping.ros.compressed import compressed_to_depth, compressed_to_rgb

    f = frame()
    stamp = Time(seconds=1).to_msg()
    msgs = scene_frame_messages(f, stamp, compressed=codec, depth_encoding="16UC1")
    assert msgs["image"].format == f"rgb8; {codec} compressed bgr8"
    assert msgs["depth"].format == "16UC1; compressedDepth png"
    assert msgs["image"].header.stamp == stamp == msgs["depth"].header.stamp
    rgb = compressed_to_rgb(msgs["image"], 10_000)
    assert rgb.shape == f.rgb.shape
    if codec == "png":
        np.testing.assert_array_equal(rgb, f.rgb)
    np.testing.assert_allclose(compressed_to_depth(msgs["depth"], 10_000),
                               np.round(f.depth * 1000) / 1000, atol=1e-6)
    depth = compressed_to_depth(scene_frame_messages(f, stamp, compressed=codec)["depth"],
                                10_000)  # 32FC1: quantised inverse depth, A = 10100
    np.testing.assert_allclose(depth, f.depth, atol=3.0 ** 2 / 10_000)
    assert depth[0, 0] == 0.0  # unknown stays unknown
    args = parse_args(["x", "--compressed", "--compressed-format", "png"])
    assert args.compressed and args.compressed_format == "png" and args.jpeg_quality == 90
    with pytest.raises(SystemExit):
        parse_args(["x", "--compressed", "--jpeg-quality", "0"])


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        parse_args(["x", "--rate", "0"])
    with pytest.raises(SystemExit):
        parse_args(["x", "--remap", "/a/b"])
    assert parse_args(["x", "--rate", "2.5"]).rate == 2.5


def test_bag_is_replayed_with_a_remap(tmp_path):
    if not REPLAY_EXECUTABLE.exists():
        pytest.skip("replay is not built; run `make setup`")
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / "bag"
    typestore = get_typestore(Stores.LATEST)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image",
                                     typestore=typestore)
        for k in range(5):
            msg = numpy_to_image(np.full((4, 6, 3), k, np.uint8), "rgb8")
            msg.header.stamp.sec = k
            writer.write(conn, int(k * 0.05 * 1e9), serialize_message(msg))

    context = rclpy.context.Context()
    rclpy.init(context=context, args=[])
    node = rclpy.create_node("bag_listener", context=context)
    got = []
    node.create_subscription(Image, "/image", lambda m: got.append(m), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        proc = subprocess.Popen([str(REPLAY_EXECUTABLE), str(bag), "--rate", "1.0",
                                 "--remap", "/camera/color/image_raw:=/image"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        output = proc.communicate(timeout=10)[0]
        assert proc.returncode == 0, output
        assert "/camera/color/image_raw -> /image" in output
        assert "published 5 messages" in output
        assert [m.header.stamp.sec for m in got] == [0, 1, 2, 3, 4]
        assert image_to_rgb(got[3])[0, 0].tolist() == [3, 3, 3]
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
