"""input.reliability 'auto' over loopback: a subscription follows what its publishers
offer, so 640x480 images from a reliable driver arrive (Fast DDS drops best-effort
messages above its 0.5 MB shared-memory segment between processes) and a best-effort
driver is still matched."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import require_rclpy

# A camera driver in a process of its own: 640x480 rgb8 images (0.9 MB), reliable, 10 Hz.
CAMERA = """
import sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("camera_process")
pub = node.create_publisher(Image, sys.argv[1],
                            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
msg = Image(width=640, height=480, encoding="rgb8", step=1920)
msg.data = bytes(1920 * 480)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pub.publish(msg)
    time.sleep(0.1)
"""


def _wait(condition, timeout_s: float, spin) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        spin()
    return condition()


def test_auto_receives_large_images_from_a_reliable_driver_process(rclpy_context):
    """A best-effort subscription got none of these here (see config: input.reliability)."""
    rclpy = require_rclpy()
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from panoptic_mapping.ros.input_subscriptions import InputSubscriptions

    node = rclpy.create_node("reliability_probe", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    got: list[tuple[int, int]] = []
    inputs = InputSubscriptions(node, "auto", None)
    inputs.add(Image, "image", lambda m: got.append((m.width, m.height)))
    topic = node.resolve_topic_name("image")
    camera = subprocess.Popen([sys.executable, "-c", CAMERA, topic, "20"], env=os.environ.copy())
    try:
        def spin():
            executor.spin_once(timeout_sec=0.05)

        def adapted():
            inputs.adapt()
            return inputs.reliabilities()[topic] == "reliable"

        assert _wait(adapted, 15.0, spin), "the subscription never became reliable"
        assert _wait(lambda: len(got) >= 5, 10.0, spin), f"{len(got)} images arrived"
        assert got[-1] == (640, 480)
    finally:
        camera.kill()
        camera.wait(5)
        inputs.destroy()
        executor.shutdown()
        node.destroy_node()


def test_auto_goes_back_to_best_effort_when_a_best_effort_driver_appears(rclpy_context):
    rclpy = require_rclpy()
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from panoptic_mapping.ros.input_subscriptions import InputSubscriptions

    # the camera in a participant of its own, as a driver in another process would be
    camera_context = rclpy.context.Context()
    rclpy.init(context=camera_context, args=[])
    try:
        node = rclpy.create_node("reliability_probe", context=rclpy_context)
        camera = rclpy.create_node("camera_probe", context=camera_context)
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        got: list[tuple[int, int]] = []
        inputs = InputSubscriptions(node, "auto", None)
        inputs.add(Image, "image", lambda m: got.append((m.width, m.height)))
        topic = node.resolve_topic_name("image")
        assert inputs.reliabilities() == {topic: "best_effort"}  # nothing offered yet

        def spin():
            executor.spin_once(timeout_sec=0.05)

        def adapted(expected):
            inputs.adapt()
            return inputs.reliabilities()[topic] == expected

        reliable = camera.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        assert _wait(lambda: adapted("reliable"), 10.0, spin), "never became reliable"
        assert _wait(lambda: reliable.get_subscription_count() > 0, 10.0, spin)
        big = Image(width=640, height=480, encoding="rgb8", step=1920)
        big.data = bytes(1920 * 480)  # 0.9 MB: above Fast DDS's shared-memory segment
        for _ in range(10):
            reliable.publish(big)
            for _ in range(4):
                spin()
        assert _wait(lambda: len(got) >= 8, 5.0, spin), f"{len(got)} of 10 arrived"
        assert got[0] == (640, 480)

        # a best-effort driver joins: a reliable subscription would not match it
        best_effort = camera.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert _wait(lambda: adapted("best_effort"), 10.0, spin), "never went best effort"
        assert _wait(lambda: best_effort.get_subscription_count() > 0, 10.0, spin)
        small = Image(width=8, height=4, encoding="rgb8", step=24)
        small.data = bytes(96)
        count = len(got)
        for _ in range(5):
            best_effort.publish(small)
            spin()
        assert _wait(lambda: (8, 4) in got[count:], 5.0, spin)
        inputs.destroy()
        executor.shutdown()
        camera.destroy_node()
        node.destroy_node()
    finally:
        camera_context.try_shutdown()
