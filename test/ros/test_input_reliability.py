"""input.reliability 'auto' over loopback: a subscription follows what its publishers
offer, so 640x480 images from a reliable driver arrive (Fast DDS drops best-effort
messages above its 0.5 MB shared-memory segment between processes) and a best-effort
driver is still matched."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
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


class _Probe:
    """A node with 'auto' input subscriptions on ``image`` that records (width, height)
    of what arrives, spun by hand."""

    def __init__(self, context) -> None:
        rclpy = require_rclpy()
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from panoptic_mapping.ros.input_subscriptions import InputSubscriptions

        self.node = rclpy.create_node("reliability_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.got: list[tuple[int, int]] = []
        self.inputs = InputSubscriptions(self.node, "auto", None)
        self.inputs.add(Image, "image", lambda m: self.got.append((m.width, m.height)))
        self.topic = self.node.resolve_topic_name("image")

    def spin(self) -> None:
        self.executor.spin_once(timeout_sec=0.05)

    def adapted(self, expected: str) -> bool:
        """One adaptation; whether the subscription now asks for ``expected``."""
        self.inputs.adapt()
        return self.inputs.reliabilities()[self.topic] == expected

    def close(self) -> None:
        self.inputs.destroy()
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def probe(rclpy_context):
    p = _Probe(rclpy_context)
    yield p
    p.close()


def test_auto_receives_large_images_from_a_reliable_driver_process(probe):
    """A best-effort subscription got none of these here (see config: input.reliability)."""
    camera = subprocess.Popen([sys.executable, "-c", CAMERA, probe.topic, "20"],
                              env=os.environ.copy())
    try:
        assert _wait(lambda: probe.adapted("reliable"), 15.0, probe.spin), \
            "the subscription never became reliable"
        assert _wait(lambda: len(probe.got) >= 5, 10.0, probe.spin), \
            f"{len(probe.got)} images arrived"
        assert probe.got[-1] == (640, 480)
    finally:
        camera.kill()
        camera.wait(5)


def test_auto_goes_back_to_best_effort_when_a_best_effort_driver_appears(probe):
    rclpy = require_rclpy()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    got, topic, spin = probe.got, probe.topic, probe.spin
    assert probe.inputs.reliabilities() == {topic: "best_effort"}  # nothing offered yet
    # the camera in a participant of its own, as a driver in another process would be
    camera_context = rclpy.context.Context()
    rclpy.init(context=camera_context, args=[])
    try:
        camera = rclpy.create_node("camera_probe", context=camera_context)
        reliable = camera.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        assert _wait(lambda: probe.adapted("reliable"), 10.0, spin), "never became reliable"
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
        assert _wait(lambda: probe.adapted("best_effort"), 10.0, spin), \
            "never went best effort"
        assert _wait(lambda: best_effort.get_subscription_count() > 0, 10.0, spin)
        small = Image(width=8, height=4, encoding="rgb8", step=24)
        small.data = bytes(96)
        count = len(got)
        for _ in range(5):
            best_effort.publish(small)
            spin()
        assert _wait(lambda: (8, 4) in got[count:], 5.0, spin)
        camera.destroy_node()
    finally:
        camera_context.try_shutdown()
