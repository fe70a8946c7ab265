# Environment of the project's virtualenv, the PyPI ROS 2 wheels and the colcon install tree.
# Sourced by tools/setup.sh and tools/run.sh; `source tools/env.sh` in a shell works too.
_pm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PANOPTIC_MAPPING_ROOT="$_pm_root"
export VIRTUAL_ENV="$_pm_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
# colcon's isolated install: one prefix per package (panoptic_mapping_interfaces holds the
# generated msg/srv types and their C libraries; panoptic_mapping the node and executables).
_pm_install="$_pm_root/.ros_ws/install/panoptic_mapping"
_pm_ifaces="$_pm_root/.ros_ws/install/panoptic_mapping_interfaces"
# The ROS 2 wheels install their ament index and CMake configs into the venv itself.
export AMENT_PREFIX_PATH="$_pm_install:$_pm_ifaces:$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_pm_install:$_pm_ifaces:$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$_pm_ifaces/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Source tree first: the code under test is the checkout, not the copy colcon installed.
# The generated panoptic_mapping_interfaces package is only in its install prefix.
export PYTHONPATH="$_pm_root:$_pm_ifaces/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
unset _pm_root _pm_install _pm_ifaces
