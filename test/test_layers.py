"""The package's layer rule: each layer imports only from layers below it, peers never
import each other, there is no import cycle, and everything below the ROS adapter is
ROS-free (also when imported: a subprocess loads it and finds no ROS module).

Layers, lowest first (README "Architecture"):
params < core.geometry, core.device, core.lens < core.frames
< {core.field, core.map, core.semantics, core.io, core.stereo, core.resolution} < core.labels
< core.mapper
< {frontends, runtime}
< config < ros < bench < tools.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "panoptic_mapping"
PACKAGE = "panoptic_mapping"

# Each inner tuple is one layer; its members are peers (neither imports the other).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("params",),
    ("core.geometry", "core.device", "core.lens"),
    ("core.frames",),
    ("core.field", "core.map", "core.semantics", "core.io", "core.stereo", "core.resolution"),
    ("core.labels",),
    ("core.mapper",),
    ("frontends", "runtime"),
    ("config",),
    ("ros",),
    ("bench",),
    ("tools",),
)
# Below the ROS adapter nothing imports ROS, its messages, or our interfaces.
ROS_FREE_BELOW = "ros"
FORBIDDEN_ROOTS = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosbags", "tf2_ros",
                   "tf2_py", "message_filters", "cv_bridge", "sensor_msgs_py", "launch",
                   "launch_ros", "ament_index_python"}
FORBIDDEN_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
# The benchmark's renderer stays out of everything a robot runs.
NOT_BELOW_BENCH = {"pybullet"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, module: str = "x", is_package: bool = False) -> list[str]:
    """Every module imported anywhere in ``source`` (inside functions too), absolute.

    ``from a import b`` yields ``a`` and ``a.b`` (b may be a submodule); relative imports
    are resolved against ``module``.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, is_package) if node.level else (node.module or "")
            out.append(base)
            out.extend(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


def own_modules(names: list[str], known: set[str]) -> set[str]:
    """The package's modules among imported names (``a.b`` counts only if a module)."""
    return {n for n in names if n in known}


# Namespaces only: packages whose __init__ holds a docstring and spans several layers.
NAMESPACES = {PACKAGE, f"{PACKAGE}.core"}


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, group) of a module of the package; None if it is in no layer."""
    rel = module.removeprefix(PACKAGE).removeprefix(".")
    best = None
    for rank, layer in enumerate(LAYERS):
        for group in layer:
            if rel == group or rel.startswith(group + "."):
                if best is None or len(group) > len(best[1]):
                    best = (rank, group)
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run upwards or sideways between peers."""
    bad = []
    for module, deps in graph.items():
        me = layer_of(module)
        if me is None:
            continue
        for dep in sorted(deps):
            other = layer_of(dep)
            if other is None:
                continue
            if other[0] > me[0]:
                bad.append(f"{module} -> {dep} (up: {me[1]} imports {other[1]})")
            elif other[0] == me[0] and other[1] != me[1]:
                bad.append(f"{module} -> {dep} (sideways: peers {me[1]} and {other[1]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        names = imports_of(path.read_text(), name, path.name == "__init__.py")
        # a package's own __init__ is imported implicitly by its submodules: not an edge
        graph[name] = {d for d in own_modules(names, known) if d != name}
    return graph


def forbidden_imports(source: str, roots: set[str] = FORBIDDEN_ROOTS) -> list[str]:
    """ROS (or ``roots``) modules imported anywhere in ``source``."""
    return [n for n in imports_of(source)
            if n.split(".")[0] in roots or n.split(".")[0].endswith(FORBIDDEN_SUFFIXES)]


# --------------------------------------------------------------------------- the checkers


def test_checkers_catch_what_they_should():
    graph = {"panoptic_mapping.core.geometry": {"panoptic_mapping.core.mapper"},
             "panoptic_mapping.core.field.trainer": {"panoptic_mapping.core.map.instances"},
             "panoptic_mapping.core.mapper": {"panoptic_mapping.core.field.trainer",
                                              "panoptic_mapping.params"}}
    bad = violations(graph)
    assert any("up:" in b and b.startswith("panoptic_mapping.core.geometry") for b in bad)
    assert any("sideways:" in b and "core.field.trainer" in b for b in bad)
    assert not any(b.startswith("panoptic_mapping.core.mapper") for b in bad)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert forbidden_imports("import rclpy") == ["rclpy"]
    assert forbidden_imports("def f():\n    from sensor_msgs.msg import Image\n")
    assert forbidden_imports("from panoptic_mapping_interfaces.srv import LocalizeInstances")
    assert forbidden_imports("import numpy as np\nfrom . import config") == []
    assert imports_of("from ..ros import node", "panoptic_mapping.core.mapper") == [
        "panoptic_mapping.ros", "panoptic_mapping.ros.node"]


def test_every_module_has_a_layer():
    for name, path in modules().items():
        if name in NAMESPACES:
            assert imports_of(path.read_text(), name, True) == [], f"{name} imports"
        else:
            assert layer_of(name) is not None, f"{name} belongs to no layer: add it to LAYERS"


# --------------------------------------------------------------------------- the rule


def test_no_import_runs_upwards_or_between_peers():
    assert violations(package_graph()) == []


def test_there_is_no_import_cycle():
    assert cycles(package_graph()) == []


def _below_ros() -> list[tuple[str, Path]]:
    ros_rank = next(i for i, layer in enumerate(LAYERS) if ROS_FREE_BELOW in layer)
    return [(n, p) for n, p in modules().items()
            if n in NAMESPACES or layer_of(n)[0] < ros_rank]


@pytest.mark.parametrize("name,path", _below_ros(), ids=lambda v: v if isinstance(v, str) else "")
def test_module_below_the_adapter_is_ros_free(name: str, path: Path):
    source = path.read_text()
    assert forbidden_imports(source) == [], f"{name} imports ROS"
    if not name.startswith(f"{PACKAGE}.bench"):
        assert forbidden_imports(source, NOT_BELOW_BENCH) == [], f"{name} imports pybullet"


def test_importing_everything_below_the_adapter_loads_no_ros():
    names = [n for n, _ in _below_ros() if not n.startswith(f"{PACKAGE}.bench")]
    code = (
        "import importlib, sys\n"
        f"for m in {names!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'rclpy', 'sensor_msgs',"
        " 'geometry_msgs', 'std_msgs', 'rcl_interfaces', 'pybullet'}"
        " or m.startswith(('panoptic_mapping.ros', 'panoptic_mapping_interfaces')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
