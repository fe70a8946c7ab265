"""`make demo`'s program exits 0 after the node reported its inputs and stopped cleanly."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import NODE_EXECUTABLE, REPO

pytestmark = pytest.mark.ros


def test_demo_runs_and_exits_cleanly():
    if not NODE_EXECUTABLE.exists():
        pytest.skip("mapping_node is not built; run `make setup`")
    result = subprocess.run([sys.executable, "-m", "panoptic_mapping.demo"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for: image on /image" in result.stdout
    assert "stopped cleanly (exit 0)" in result.stdout
