# Environment of the project's virtualenv, the PyPI ROS 2 wheels and the colcon install tree.
# Sourced by tools/setup.sh and tools/run.sh; `source tools/env.sh` in a shell works too.
_pm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PANOPTIC_MAPPING_ROOT="$_pm_root"
export VIRTUAL_ENV="$_pm_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
_pm_install="$_pm_root/.ros_ws/install/panoptic_mapping"
# The ROS 2 wheels install their ament index and CMake configs into the venv itself.
export AMENT_PREFIX_PATH="$_pm_install:$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_pm_install:$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$_pm_install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Source tree first: the code under test is the checkout, not the copy colcon installed;
# panoptic_mapping/__init__.py extends the package path to the generated msg/ and srv/.
export PYTHONPATH="$_pm_root:$_pm_install/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
unset _pm_root _pm_install
