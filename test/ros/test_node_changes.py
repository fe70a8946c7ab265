"""Change detection from a live node: an object taken away mid-stream is removed by the
map on its own and announced on ~/instance_changes (panoptic_mapping_interfaces/
InstanceChange), over loopback, with the node's classical front-end."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import ANY_STAMP, PARAMS_FILE, REPLAY_EXECUTABLE, make_tabletop, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402

from node_client import wait_until  # noqa: E402
from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.tools.demo_client import Client  # noqa: E402
from panoptic_mapping_interfaces.msg import InstanceChange  # noqa: E402

NS = "/panoptic_mapping"


def test_an_object_moved_away_is_removed_and_announced(start_node, tmp_path):
    # change detection needs about 120x90 or more (an object's base is judged against
    # its support below that); the move happens before frame 10 of 22
    scene = make_tabletop(num_frames=22, width=120, height=90, num_novel_frames=0,
                          move_at=10)
    moved = scene.config["moved"]
    folder = save_scene(scene, tmp_path / "scene")
    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "input.pose_source:=pose", "-p", "output.status_period_s:=0.5",
                      *ANY_STAMP,
                      "-p", "mapping.trainer.rays_per_step:=64",
                      "-p", "input.train_duty_cycle:=0.2")
    node.wait_for_line("started:")
    rclpy.init()
    client = Client(NS)
    events: list[InstanceChange] = []
    client.node.create_subscription(InstanceChange, f"{NS}/instance_changes",
                                    events.append, 10)
    try:
        replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.1",
                                 "--stamps", "recorded"], capture_output=True, text=True,
                                timeout=180)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        wait_until(client, lambda: events, 30, "an event on ~/instance_changes")
    finally:
        client.close()
        rclpy.try_shutdown()
    lo, hi = (np.asarray(v) for v in moved["aabb_before"])
    event = events[0]
    assert event.kind == "removed" and event.views >= 4  # mapping.instances.changes.gone_views
    assert event.header.frame_id == "map" and event.instance_id > 0
    where = np.array([event.position.x, event.position.y, event.position.z])
    # where the object stood (its box before the move, a few cm of slack)
    assert np.all(where > lo - 0.05) and np.all(where < hi + 0.05), (where, lo, hi)
    assert f"instance {event.instance_id} removed:" in node.output
    removed = {e.instance_id for e in events if e.kind == "removed"}
    for later in events:  # found elsewhere (when its shape is recognised): a removed id
        assert later.kind in ("removed", "moved"), later
        if later.kind == "moved":
            assert later.instance_id in removed and later.seen_as > 0, later
    assert node.interrupt() == 0, node.output
    assert "Traceback" not in node.output, node.output
