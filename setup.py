"""pip-installable form of the ROS-free core (``pip install -e .``).

The ROS 2 package is built by colcon from package.xml + CMakeLists.txt (build type
ament_cmake); colcon ignores this file.
"""
from setuptools import find_packages, setup

setup(
    name="panoptic_mapping",
    version="0.1.0",
    description="Online panoptic, open-vocabulary 3D mapping with a neural feature field",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["panoptic_mapping", "panoptic_mapping.*"]),
    install_requires=["numpy>=1.26", "pyyaml>=6.0", "torch>=2.4"],
    # Model front-ends are optional. ultralytics (FastSAM) is AGPL-3.0: keep it an extra.
    extras_require={
        "fastsam": ["ultralytics>=8.3"],
        "sam": ["segment-anything>=1.0"],
        "clip": ["open_clip_torch>=3.0"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/panoptic_mapping"]),
        ("share/panoptic_mapping", ["package.xml"]),
    ],
)
