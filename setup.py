"""pip-installable form of the ROS-free core (``pip install -e .``).

The ROS 2 packages are built by colcon from package.xml + CMakeLists.txt (build type
ament_cmake) and interfaces/panoptic_mapping_interfaces; colcon ignores this file.

install_requires lists what the modules outside ros/ and tools/ import when they load
(test/test_packaging.py checks it): the ROS adapter comes from a ROS 2 install, and the
model front-ends and the benchmark's renderer are extras.
"""
from setuptools import find_packages, setup

setup(
    name="panoptic_mapping",
    version="0.1.0",
    description="Online panoptic, open-vocabulary 3D mapping with a neural feature field",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["panoptic_mapping", "panoptic_mapping.*"]),
    install_requires=[
        "numpy>=1.26",
        "pyyaml>=6.0",
        "torch>=2.4",
        "scipy>=1.11",
        # the weights-free classical segmenter (Felzenszwalb, SLIC)
        "scikit-image>=0.22",
        # the node caps the BLAS libraries' thread pools (runtime/workers.py)
        "threadpoolctl>=3.1",
    ],
    # Model front-ends are optional. ultralytics (FastSAM) is AGPL-3.0: keep it an extra.
    extras_require={
        "fastsam": ["ultralytics>=8.3"],
        "sam": ["segment-anything>=1.0"],
        "clip": ["open_clip_torch>=3.0"],
        # panoptic_mapping.bench: scenes rendered with pybullet, written as PNG with Pillow.
        "bench": ["pybullet>=3.2.6", "pillow>=10"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/panoptic_mapping"]),
        ("share/panoptic_mapping", ["package.xml"]),
    ],
)
