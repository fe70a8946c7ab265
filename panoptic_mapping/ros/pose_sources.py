"""Where the node's camera poses come from: tf2, or a pose topic with a buffer.

Both answer ``lookup(frame_id, stamp_ns, wait_s) -> (4, 4) camera_to_map`` or raise
:class:`~panoptic_mapping.ros.poses.PoseLookupError` with the reason.

* :class:`TfPoses` (where ``tf2_ros`` is importable): ``map <- camera optical frame`` at the
  image stamp, waiting up to ``wait_s`` for the transform.
* :class:`TopicPoses`: a PoseStamped (``header.frame_id`` = the map frame) or an Odometry
  (``header.frame_id`` = the map frame, the pose of ``child_frame_id``) gives the pose of a
  frame F in the map; ``input.body_to_optical`` is the optical frame in F (identity: F is
  the optical frame). Poses wait in a bounded :class:`~panoptic_mapping.ros.poses.PoseBuffer`
  and are interpolated at the image stamp.
"""
from __future__ import annotations

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time

from panoptic_mapping.core.geometry import pose_matrix
from panoptic_mapping.ros.conversions import InputError, pose_to_matrix
from panoptic_mapping.core.geometry import pose_from_xyz_quat
from panoptic_mapping.runtime.poses import PoseBuffer, PoseLookupError

try:  # present on a real ROS 2 install, not among the PyPI wheels
    import tf2_ros

    HAVE_TF2 = True
except ImportError:
    tf2_ros = None
    HAVE_TF2 = False

__all__ = ["HAVE_TF2", "TfPoses", "TopicPoses", "stamp_ns"]


def stamp_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TfPoses:
    """Poses ``map <- camera frame`` from tf2 (where tf2_ros is importable)."""

    def __init__(self, node: Node, map_frame: str) -> None:
        self.map_frame = map_frame
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def describe(self) -> str:
        return f"tf ({self.map_frame} <- camera optical frame at the image stamp)"

    def lookup(self, frame_id: str, stamp: int, wait_s: float) -> np.ndarray:
        if not frame_id:
            raise PoseLookupError("the image has no frame_id (set input.camera_frame)")
        try:
            t = self.buffer.lookup_transform(
                self.map_frame, frame_id, Time(nanoseconds=stamp),
                timeout=Duration(seconds=wait_s))
        except tf2_ros.TransformException as exc:
            raise PoseLookupError(f"tf {self.map_frame} <- {frame_id}: {exc}") from exc
        tr, q = t.transform.translation, t.transform.rotation
        return pose_matrix([tr.x, tr.y, tr.z], [q.x, q.y, q.z, q.w])


class TopicPoses:
    """Poses from a PoseStamped/Odometry topic in a bounded buffer, interpolated."""

    def __init__(self, cfg, source: str) -> None:
        self.source = source
        self.map_frame = cfg.map_frame
        self.buffer = PoseBuffer(cfg.pose_buffer_size, cfg.pose_max_gap_s, cfg.pose_tolerance_s,
                                 cfg.time_jump_back_s)
        self.body_to_optical = pose_from_xyz_quat(cfg.body_to_optical)

    def describe(self) -> str:
        return f"{self.source} topic (frame '{self.map_frame}', interpolated at image stamps)"

    def add(self, header, pose_msg) -> bool:
        """Add a received pose; True when the clock jumped back (the buffer was cleared).
        Raises InputError (frame, NaN) for an unusable one."""
        if header.frame_id != self.map_frame:
            raise InputError(f"{self.source} is in frame '{header.frame_id}', expected the map "
                             f"frame '{self.map_frame}'")
        return self.buffer.add(stamp_ns(header.stamp), pose_to_matrix(pose_msg))

    def lookup(self, frame_id: str, stamp: int, wait_s: float) -> np.ndarray:
        return self.buffer.wait_lookup(stamp, wait_s) @ self.body_to_optical
