"""Segmentation in its own process: segmentation_node -> Masks -> mapping_node
(input.masks_source 'topic'), three processes over loopback, as on a robot whose GPU
computer segments and whose arm computer maps."""
from __future__ import annotations

import math
import subprocess

import pytest

from conftest import (
    ANY_STAMP,
    PARAMS_FILE,
    REPLAY_EXECUTABLE,
    SEGMENTATION_EXECUTABLE,
    SEGMENTATION_PARAMS_FILE,
    require_interfaces,
)

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402

from node_client import wait_until  # noqa: E402
from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.tools.demo_client import Client  # noqa: E402

NS = "/panoptic_mapping"


def test_masks_from_a_segmentation_node_are_mapped(start_node, tabletop_scene, tmp_path):
    folder = save_scene(tabletop_scene, tmp_path / "scene")
    seg = start_node("--ros-args", "--params-file", str(SEGMENTATION_PARAMS_FILE),
                     "-p", "output.status_period_s:=0.5", *ANY_STAMP,
                     executable=SEGMENTATION_EXECUTABLE)
    seg.wait_for_line("started:")
    mapping = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                         "-p", "input.pose_source:=pose", "-p", "input.masks_source:=topic",
                         *ANY_STAMP,
                         "-r", "masks:=/segmentation/masks",
                         "-p", "output.status_period_s:=0.5",
                         "-p", "mapping.trainer.rays_per_step:=64",
                         "-p", "input.train_duty_cycle:=0.3")
    assert "masks from a segmentation node on /segmentation/masks" in mapping.wait_for_line(
        "started:")
    rclpy.init()
    client = Client(NS)
    try:
        replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.1",
                                 "--stamps", "recorded", "--subscribers", "2"], capture_output=True, text=True,
                                timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        status = wait_until(
            client, lambda: client.status if int(client.status.get("frames.mapped", 0)) >= 3
            else None, 60, "frames to be mapped from the segmentation node's masks")
        assert status["frontend.masks_source"] == "topic"
        # every pair of image and masks that met was mapped or counted as dropped
        wait_until(client, lambda: int(client.status["frames.synced"])
                   == int(client.status["frames.mapped"]) + int(client.status["frames.dropped"]),
                   30, "every synchronised frame to be accounted for")
        assert int(client.status["mapping.instances"]) > 0
        assert int(client.status["frontend.queued"]) == 0  # the in-process worker idles
        assert math.isfinite(float(client.status["masks.added_ms_p50"]))
        assert "frames.rejected.masks" not in client.status
    finally:
        client.close()
        rclpy.try_shutdown()
    # every image that reached it was segmented and published (best-effort delivery may
    # lose one of the ten on the way: a fresh-clone run received 9)
    published = seg.wait_for_line(r"segmented: ([1-9]\d*) of \1 images published",
                                  regex=True)
    assert published, seg.output
    for node in (mapping, seg):
        assert node.interrupt() == 0, node.output
        assert "Traceback" not in node.output, node.output
