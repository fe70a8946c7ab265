"""The ROS-free live pipeline: latest-only slots and workers, the training thread, the
pose buffer and interpolation, approximate time synchronisation, request decisions and
pictures for status images.

Everything a live node needs that is not a ROS message: the ROS adapter
(:mod:`panoptic_mapping.ros`) wires it to topics and services; tests drive it directly.
"""
