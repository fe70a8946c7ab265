"""Recorded stamps with the clock check on: replayed with /clock into a node that uses sim
time, every frame is taken; the check refuses nothing that lives in the node's time."""
from __future__ import annotations

import subprocess

import pytest

from conftest import PARAMS_FILE, REPLAY_EXECUTABLE, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.core.mapper import Mapper  # noqa: E402


def test_a_recording_replayed_with_its_clock_is_mapped(start_node, tabletop_scene, tmp_path):
    folder = save_scene(tabletop_scene, tmp_path / "scene")
    target = tmp_path / "sim.pmap"
    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "use_sim_time:=true", "-p", "input.pose_source:=pose",
                      "-p", "input.train_duty_cycle:=0.1",
                      "-p", "mapping.trainer.rays_per_step:=32",
                      "-p", f"output.autosave_path:={target}")
    node.wait_for_line("started:")
    replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.2",
                             "--clock"], capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert node.interrupt() == 0, node.output
    assert "input rejected" not in node.output, node.output
    assert "Traceback" not in node.output, node.output
    # the scene's stamps start at 0 s (1970): only the replayed clock makes them current
    assert Mapper.from_file(target, device="cpu").stats()["keyframes"] >= 3
