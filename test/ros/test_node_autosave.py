"""Autosave: the map is saved on its own while mapping and at a clean shutdown, and what
was written loads."""
from __future__ import annotations

import subprocess

import pytest

from conftest import ANY_STAMP, PARAMS_FILE, REPLAY_EXECUTABLE, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.core.mapper import Mapper  # noqa: E402


def test_autosave_while_mapping_and_at_shutdown(start_node, tabletop_scene, tmp_path):
    folder = save_scene(tabletop_scene, tmp_path / "scene")
    target = tmp_path / "maps" / "auto.pmap"
    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "input.pose_source:=pose", "-p", "input.train_duty_cycle:=0.3",
                      *ANY_STAMP,
                      "-p", "mapping.trainer.rays_per_step:=64",
                      "-p", f"output.autosave_path:={target}",
                      "-p", "output.autosave_period_s:=1.0")
    node.wait_for_line("started:")
    replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.2",
                             "--stamps", "recorded"], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    node.wait_for_line(f"autosaved the map (period) to {target}", timeout=30)
    periodic = Mapper.from_file(target, device="cpu").stats()["keyframes"]
    assert periodic >= 1
    assert node.interrupt() == 0, node.output
    assert f"autosaved the map (shutdown) to {target}" in node.output
    assert "Traceback" not in node.output, node.output
    final = Mapper.from_file(target, device="cpu").stats()["keyframes"]
    assert final >= periodic
    assert not list(target.parent.glob(".*.tmp"))  # no temporary left behind
