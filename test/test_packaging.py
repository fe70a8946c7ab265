"""The pip package of the ROS-free core: the wheel holds the code and no tests, imports from
an install of its own, and setup.py declares every third-party package the code imports
when it loads (ros/ and tools/ need a ROS 2 install; bench/ is the 'bench' extra)."""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

PACKAGE = REPO / "panoptic_mapping"
# Subpackages that need more than install_requires: ROS 2 (not from pip), or the 'bench' extra.
ROS_SUBPACKAGES = ("ros", "tools")
EXTRA_SUBPACKAGES = {"bench": "bench"}
# Import name -> distribution name, where they differ and the distribution may be absent here.
KNOWN_DISTRIBUTIONS = {"yaml": "pyyaml", "skimage": "scikit-image", "PIL": "pillow",
                       "cv2": "opencv-python", "open_clip": "open_clip_torch",
                       "segment_anything": "segment-anything"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_requirements() -> tuple[set[str], dict[str, set[str]]]:
    """install_requires and extras_require of setup.py, as normalised distribution names."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup")
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords
              if kw.arg in ("install_requires", "extras_require")}

    def names(reqs):
        return {normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in reqs}

    return (names(kwargs.get("install_requires", [])),
            {k: names(v) for k, v in kwargs.get("extras_require", {}).items()})


def top_level_imports(source: str) -> set[str]:
    """Root names of the modules a source file imports when it loads (module level only;
    imports inside functions are lazy and belong to optional features)."""
    roots = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names) - {"__future__", "panoptic_mapping"}


@functools.lru_cache(maxsize=None)
def _installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    installed = _installed_distributions().get(module)
    return normalise(installed[0] if installed else KNOWN_DISTRIBUTIONS.get(module, module))


def test_setup_declares_every_third_party_import_at_module_load():
    install_requires, extras = setup_requirements()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        sub = path.relative_to(PACKAGE).parts
        if sub[0] in ROS_SUBPACKAGES:
            continue
        declared = install_requires | extras.get(EXTRA_SUBPACKAGES.get(sub[0], ""), set())
        for module in sorted(top_level_imports(path.read_text())):
            if distribution_of(module) not in declared:
                missing.append(f"{path.relative_to(REPO)}: {module} ({distribution_of(module)})")
    assert not missing, "not declared in setup.py:\n" + "\n".join(missing)
    assert {"numpy", "torch", "pyyaml"} <= install_requires


def test_checker_sees_module_level_imports_only():
    source = "import numpy as np\nfrom yaml import safe_load\nimport os\n" \
             "from . import x\ndef f():\n    import ultralytics\n"
    assert top_level_imports(source) == {"numpy", "yaml"}
    assert distribution_of("yaml") == "pyyaml"


def _source_copy(dest: Path) -> Path:
    """The files a clone would have (tracked and new, not ignored): no stale build/ tree."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the source files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # listed but deleted in the working tree: skip
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_holds_the_code_and_imports_from_its_own_install(tmp_path):
    src = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("panoptic_mapping-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(src).as_posix() for p in (src / "panoptic_mapping").rglob("*.py")}
    assert "panoptic_mapping/core/mapper.py" in expected
    assert not expected - names, f"left out of the wheel: {sorted(expected - names)}"
    tests = [n for n in names if n.split("/")[0] in ("test", "tests")
             or Path(n).name.startswith("test_") or Path(n).name == "conftest.py"]
    assert not tests, tests

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr

    # Only the installed copy on the path (the venv's site-packages give numpy and torch);
    # -P and a neutral working directory keep the checkout off sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    code = ("import panoptic_mapping.core.mapper as m, panoptic_mapping.config as c\n"
            "print(m.__file__); print(c.__file__)\n")
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    files = run.stdout.split()
    assert len(files) == 2 and all(Path(f).is_relative_to(target) for f in files), run.stdout
