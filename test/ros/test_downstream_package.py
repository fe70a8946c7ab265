"""Another package builds against panoptic_mapping_interfaces with a plain
`colcon build` (our install as its underlay, as on a robot) and, from its own process,
calls the node's service."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import INTERFACES_INSTALL, PARAMS_FILE, REPO, require_interfaces

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_downstream_package_builds_and_calls_the_service(tmp_path, start_node):
    require_interfaces()
    if shutil.which("colcon") is None:
        pytest.skip("colcon is not installed (run `make setup`)")
    ws = tmp_path / "ws"
    shutil.copytree(REPO / "test" / "fixtures" / "consumer_pkg", ws / "src" / "consumer_pkg")
    build = subprocess.run(["colcon", "build"], cwd=ws, capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    consumer = ws / "install" / "panoptic_mapping_consumer"
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(consumer / "lib" / "python3.11" / "site-packages"), env.get("PYTHONPATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(consumer / "lib"), str(INTERFACES_INSTALL / "lib"), env.get("LD_LIBRARY_PATH", "")])

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE))
    mapper.wait_for_line("started:")
    client = subprocess.run([sys.executable, str(REPO / "test" / "fixtures" / "consumer_client.py")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert client.returncode == 0, client.stdout + client.stderr
    assert "ANSWER success=False message=no map yet" in client.stdout
    assert mapper.interrupt() == 0
