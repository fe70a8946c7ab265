"""The core must stay ROS-free: no module under panoptic_mapping/core imports ROS."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "panoptic_mapping" / "core"
FORBIDDEN_ROOTS = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosbags", "tf2_ros",
                   "tf2_py", "message_filters", "cv_bridge", "sensor_msgs_py", "launch",
                   "launch_ros", "ament_index_python", "pybullet"}
FORBIDDEN_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
FORBIDDEN_OWN = ("panoptic_mapping.ros", "panoptic_mapping.msg", "panoptic_mapping.srv",
                 "panoptic_mapping.bench")


def forbidden_imports(source: str) -> list[str]:
    """Names of forbidden modules imported anywhere in ``source`` (also inside functions)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # relative imports out of core (from ..ros import x) count as own-package imports
            names = [("panoptic_mapping." if node.level >= 2 else "panoptic_mapping.core.")
                     + (node.module or "")]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if (root in FORBIDDEN_ROOTS or root.endswith(FORBIDDEN_SUFFIXES)
                    or name.startswith(FORBIDDEN_OWN)):
                bad.append(name)
    return bad


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_checker_catches_ros_imports():
    assert forbidden_imports("import rclpy") == ["rclpy"]
    assert forbidden_imports("def f():\n    from sensor_msgs.msg import Image\n")
    assert forbidden_imports("from panoptic_mapping.srv import LocalizeInstances")
    assert forbidden_imports("from ..ros import node")
    assert forbidden_imports("import numpy as np\nfrom . import config") == []


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_source_is_ros_free(path: Path):
    assert forbidden_imports(path.read_text()) == [], f"{path} imports ROS"


def test_importing_the_whole_core_loads_no_ros():
    modules = [".".join(("panoptic_mapping", "core", *p.relative_to(CORE).with_suffix("").parts))
               .removesuffix(".__init__") for p in core_modules()]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'rclpy', 'sensor_msgs',"
        " 'geometry_msgs', 'std_msgs', 'rcl_interfaces', 'pybullet'}"
        " or m.startswith(('panoptic_mapping.ros', 'panoptic_mapping.msg', 'panoptic_mapping.srv')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
