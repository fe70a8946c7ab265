"""launch/mapping.launch.py: compiles, starts what the build installs, references files
that exist; run for real where `launch` is importable (a real ROS 2 install)."""
from __future__ import annotations

import ast
import importlib.util
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import INSTALL, REPO

LAUNCH_FILE = REPO / "launch" / "mapping.launch.py"


def launch_module_constants() -> dict[str, object]:
    """Module-level constant assignments of the launch file, evaluated literally."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def node_calls() -> list[dict[str, str]]:
    """keyword -> source text of every Node(...) call in the launch file."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            calls.append({kw.arg: ast.unparse(kw.value) for kw in node.keywords})
    return calls


def test_launch_file_compiles():
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")
    assert "def generate_launch_description" in LAUNCH_FILE.read_text()


def test_starts_the_package_and_executable_the_build_installs():
    consts = launch_module_constants()
    package_name = ET.parse(REPO / "package.xml").getroot().findtext("name")
    assert consts["PACKAGE"] == package_name == "panoptic_mapping"
    cmake = (REPO / "CMakeLists.txt").read_text()
    installed = re.findall(r"panoptic_mapping_entry_point\((\w+) ([\w.]+)\)", cmake)
    assert (consts["EXECUTABLE"], "panoptic_mapping.ros.node") in installed
    mapping = [c for c in node_calls() if c.get("executable") == "EXECUTABLE"]
    assert mapping and mapping[0]["package"] == "PACKAGE"
    assert (INSTALL / "lib" / "panoptic_mapping" / consts["EXECUTABLE"]).exists(), (
        "the build did not install the executable the launch file starts")


def test_referenced_files_exist_and_are_installed():
    consts = launch_module_constants()
    cmake = (REPO / "CMakeLists.txt").read_text()
    for rel in (consts["PARAMS_FILE"], consts["RVIZ_FILE"]):
        assert (REPO.joinpath(*rel)).is_file(), rel
        assert re.search(rf"install\(DIRECTORY[^)]*\b{rel[0]}\b[^)]*DESTINATION share", cmake)
        assert (INSTALL / "share" / "panoptic_mapping" / rel[0] / rel[1]).is_file()


def test_remappings_target_the_topics_the_node_subscribes_to():
    consts = launch_module_constants()
    ros = REPO / "panoptic_mapping" / "ros"
    subscribed = set(re.findall(r'self\._subscribe\(\w+, "(\w+)"\)',
                                (ros / "node.py").read_text()))
    camera = set(re.findall(r'\(\w+, "(\w+)", ', (ros / "camera_input.py").read_text()))
    assert camera == set(consts["CAMERA_TOPICS"])
    remapped = {topic for _, topic, _ in consts["TOPIC_REMAPPINGS"]}
    assert subscribed | camera == remapped, (subscribed, camera, remapped)
    # the segmentation node's masks reach the mapping node by default
    seg_source = (ros / "segmentation_node.py").read_text()
    assert 'create_publisher(Masks, "~/masks"' in seg_source
    assert consts["MASKS_TOPIC"] == "/segmentation/masks"  # ~/masks of node 'segmentation'
    assert 'NODE_NAME = "segmentation"' in seg_source


def test_segmentation_node_is_installed_and_launchable():
    consts = launch_module_constants()
    cmake = (REPO / "CMakeLists.txt").read_text()
    installed = re.findall(r"panoptic_mapping_entry_point\((\w+) ([\w.]+)\)", cmake)
    assert (consts["SEGMENTATION_EXECUTABLE"], "panoptic_mapping.ros.segmentation_node") in installed
    seg = [c for c in node_calls() if c.get("executable") == "SEGMENTATION_EXECUTABLE"]
    assert seg and seg[0]["condition"] == "IfCondition(split)"
    assert (REPO.joinpath(*consts["SEGMENTATION_PARAMS_FILE"])).is_file()
    mapping = [c for c in node_calls() if c.get("executable") == "EXECUTABLE"][0]
    assert "lifecycle.autostart" in mapping["parameters"]
    assert "input.masks_source" in mapping["parameters"]


def test_arguments_cover_params_sim_time_and_rviz():
    source = LAUNCH_FILE.read_text()
    for arg in ("params_file", "use_sim_time", "rviz", "rviz_config", "autostart",
                "segmentation_node", "segmentation_params_file"):
        assert f'DeclareLaunchArgument("{arg}"' in source, arg
    assert 'IfCondition(LaunchConfiguration("rviz"))' in source


MISSING_LAUNCH_MODULES = [m for m in ("launch", "launch_ros") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(MISSING_LAUNCH_MODULES),
                    reason=f"ROS 2 {', '.join(MISSING_LAUNCH_MODULES)} not importable (not on "
                           "PyPI); the launch file runs for real only on a ROS 2 install")
def test_launch_file_runs(tmp_path):  # pragma: no cover - needs a ROS 2 install
    import asyncio

    from launch import LaunchService
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.actions import IncludeLaunchDescription

    service = LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments={"rviz": "false"}.items()))
    loop = asyncio.new_event_loop()
    task = loop.create_task(service.run_async())
    loop.run_until_complete(asyncio.sleep(5.0))
    assert not task.done(), "the launched node exited early"
    service.shutdown()
    loop.run_until_complete(task)
    assert task.result() == 0
