"""`make demo`'s program, in its quick form: the scene streamed through the installed node
by the installed replay, the client's calls, and every output written; exit 0."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import NODE_EXECUTABLE, REPLAY_EXECUTABLE, REPO

pytestmark = pytest.mark.ros


def test_quick_demo_streams_localizes_and_writes_its_outputs(tmp_path):
    if not (NODE_EXECUTABLE.exists() and REPLAY_EXECUTABLE.exists()):
        pytest.skip("mapping_node / replay are not built; run `make setup`")
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "panoptic_mapping.tools.demo", "--quick",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "front-end: classical (weights-free scikit-image), no embedder" in text
    assert "semantics: none" in text
    assert "the node stopped cleanly (exit 0)" in text
    assert "localize_instances view 1: success=True" in text
    for name in ("labeled_cloud.ply", "labeled_cloud.png", "panoptic/novel_00.png",
                 "panoptic/novel_01.png", "instances.md", "instances.json", "summary.json",
                 "summary.md", "map.pmap", "node.log", "scene/scene.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cloud"]["points"] > 0 and summary["cloud"]["table_rows"] > 0
    assert summary["cloud"]["fields"] == ["x", "y", "z", "rgb", "instance", "semantic",
                                          "confidence"]
    assert 0.0 <= summary["quality"]["matched_mIoU"] <= 1.0
    assert summary["save_map"]["success"]
    assert summary["query"]["message"].startswith("no text encoder")
    assert summary["query_points"]["message"].startswith("no text encoder")
    move = summary["move"]  # lifted by 0.3 m: get_instance shows it there at once
    assert move["success"], move
    assert move["centroid_after"][2] == pytest.approx(move["centroid_before"][2] + 0.3, abs=0.02)
    assert "move_instance (a pick-and-place, after the save): instance" in text
    remove = summary["remove"]  # put away: get_instance says so at once
    assert remove["success"], remove
    assert f"instance {remove['instance']} was deleted" in remove["get_instance_after"], remove
    assert {"scene_render_s", "stream_s", "train_s", "client_s", "total_s"} <= set(
        summary["times_s"])


def test_quick_demo_with_a_segmentation_node(tmp_path):
    """`make demo DEMO_ARGS=--segmentation-node`: the masks come from a second process."""
    if not (NODE_EXECUTABLE.exists() and REPLAY_EXECUTABLE.exists()):
        pytest.skip("mapping_node / replay are not built; run `make setup`")
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "panoptic_mapping.tools.demo", "--quick",
                             "--segmentation-node", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "front-end: masks from a segmentation node on /segmentation/masks" in text
    assert "segmentation node: masks over DDS for" in text
    assert (out / "segmentation.log").is_file()
    assert "segmented: " in (out / "segmentation.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert int(summary["node"]["frames.mapped"]) >= 1
    assert summary["cloud"]["points"] > 0
