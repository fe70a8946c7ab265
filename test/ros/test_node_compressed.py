"""The live node on compressed input, over loopback: `replay --compressed` publishes a
benchmark scene as image_transport's plugins would (jpeg on /image/compressed, 32FC1
compressedDepth on /depth/compressedDepth); the node, started with
input.image_transport compressed and input.depth_transport compressedDepth, maps it. A
corrupt frame and one with a wrong format string are rejected, logged with the reason
and counted, and the node keeps running."""
from __future__ import annotations

import subprocess

import pytest

from conftest import ANY_STAMP, PARAMS_FILE, REPLAY_EXECUTABLE, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.time import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.tools.demo_client import Client  # noqa: E402
from panoptic_mapping.tools.replay import scene_frame_messages  # noqa: E402

from node_client import wait_until  # noqa: E402

NS = "/panoptic_mapping"


def test_compressed_input_is_mapped_and_bad_compressed_frames_are_rejected(
        start_node, tabletop_scene, tmp_path):
    folder = save_scene(tabletop_scene, tmp_path / "scene")
    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "input.pose_source:=pose", *ANY_STAMP,
                      "-p", "input.image_transport:=compressed",
                      "-p", "input.depth_transport:=compressedDepth",
                      "-p", "input.error_log_period_s:=0.0",
                      "-p", "output.status_period_s:=0.5",
                      "-p", "mapping.trainer.rays_per_step:=64",
                      "-p", "input.train_duty_cycle:=0.3")
    node.wait_for_line("started:")
    rclpy.init()
    client = Client(NS)
    try:
        # the node names the image_transport topics it waits for
        node.wait_for_line("waiting for: image on /image/compressed; "
                           "camera_info on /camera_info; depth on /depth/compressedDepth")
        # 1 frame/s, as test_node_mapping: the first ingest builds the field
        replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.1",
                                 "--stamps", "recorded", "--limit", "6", "--compressed"],
                                capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "published 6 frames" in replay.stdout
        wait_until(client, lambda: int(client.status.get("frames.mapped", 0)) >= 2, 60,
                   "compressed frames to be mapped")
        assert int(client.status.get("frames.rejected.image", 0)) == 0, node.output
        assert int(client.status["input.image.received"]) >= 5
        assert int(client.status["input.depth.received"]) >= 5
        # input.reliability 'auto': the replay's reliable publishers made the inputs
        # reliable while it played (logged; ~/status shows the current choice, which goes
        # back to best effort once the replay's publishers are gone); 80x60: no decimation
        for topic in ("/image/compressed", "/depth/compressedDepth"):
            node.wait_for_line(f"input reliability {topic}: best_effort -> reliable", 5)
        assert client.status["input.image.reliability"] in ("reliable", "best_effort")
        assert client.status["mapping.working_decimation"] == "1"

        # bad compressed frames, each with a valid pose, camera_info and depth
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {"image": client.node.create_publisher(CompressedImage, "/image/compressed",
                                                      qos),
                "camera_info": client.node.create_publisher(CameraInfo, "/camera_info", qos),
                "depth": client.node.create_publisher(CompressedImage,
                                                      "/depth/compressedDepth", qos),
                "pose": client.node.create_publisher(PoseStamped, "/pose", qos)}
        wait_until(client, lambda: all(p.get_subscription_count() for p in pubs.values()),
                   20, "subscriptions")
        for k, (edit, _) in enumerate(BAD_FRAMES):
            msgs = scene_frame_messages(tabletop_scene.frames[k], Time(seconds=30 + k).to_msg(),
                                        compressed="jpeg")
            edit(msgs["image"])
            for key in ("pose", "camera_info", "depth", "image"):
                pubs[key].publish(msgs[key])
            client.spin_for(1.0)
        wait_until(client, lambda: int(client.status.get("frames.rejected.image", 0))
                   >= len(BAD_FRAMES), 20, "the rejections to be counted")
        for _, reason in BAD_FRAMES:
            assert any(reason in line and "input rejected" in line for line in node.lines), \
                (reason, node.output[-3000:])
        assert node.proc.poll() is None
    finally:
        client.close()
        rclpy.try_shutdown()
    assert node.interrupt() == 0, node.output
    assert "Traceback" not in node.output


def _truncate(msg) -> None:
    msg.data = bytes(msg.data)[:-400]


def _tiff(msg) -> None:
    msg.format = "rgb8; tiff compressed bgr8"


BAD_FRAMES = [
    (_truncate, "compressed image: corrupt JPEG data"),
    (_tiff, "unsupported CompressedImage format 'rgb8; tiff compressed bgr8'"),
]
