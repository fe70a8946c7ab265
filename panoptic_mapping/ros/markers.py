"""``~/instances``: the instance table as RViz markers, and Instance and InstanceChange
messages.

Per instance: a translucent oriented box (namespace ``boxes``, marker id = instance id,
coloured by :func:`~panoptic_mapping.ros.visuals.instance_colors`) and a text label above
it (namespace ``labels``: ``#id class conf``). Every array starts with a DELETEALL marker,
so instances that merged or vanished disappear from RViz.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_mapping.core.io.export import InstanceRecord
from panoptic_mapping.core.map.changes import ChangeEvent
from panoptic_mapping.runtime.visuals import instance_colors

__all__ = ["instance_markers", "record_pose", "fill_instance_msg"]


def record_pose(record: InstanceRecord) -> Pose:
    """Pose of an instance's oriented box centre in the map frame."""
    pose = Pose()
    c = np.asarray(record.box_center, float)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in c)
    q = record.box_quaternion()
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in q)
    return pose


def _label(record: InstanceRecord) -> str:
    name = record.label or "instance"
    if record.label:
        return f"#{record.id} {name} {record.semantic_confidence:.2f}"
    return f"#{record.id}"


def instance_markers(records: list[InstanceRecord], header, box_alpha: float = 0.35,
                     text_height_m: float = 0.04) -> MarkerArray:
    """MarkerArray of boxes and labels for the instance table (``header``: map frame)."""
    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    colors = instance_colors([r.id for r in records]) / 255.0
    for record, rgb in zip(records, colors):
        color = ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]),
                          a=float(box_alpha))
        box = Marker()
        box.header = header
        box.ns, box.id = "boxes", int(record.id)
        box.type, box.action = Marker.CUBE, Marker.ADD
        box.pose = record_pose(record)
        size = np.maximum(np.asarray(record.box_size, float), 1e-3)
        box.scale = Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
        box.color = color
        out.markers.append(box)
        text = Marker()
        text.header = header
        text.ns, text.id = "labels", int(record.id)
        text.type, text.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        text.pose.position = Point(x=float(record.box_center[0]),
                                   y=float(record.box_center[1]),
                                   z=float(record.box_center[2] + size[2] / 2
                                           + text_height_m))
        text.pose.orientation.w = 1.0
        text.scale.z = float(text_height_m)
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = _label(record)
        out.markers.append(text)
    return out


def fill_instance_msg(msg, instance_id: int, record: InstanceRecord | None,
                      label: tuple[str, float] | None, confidence: float):
    """Fill a ``panoptic_mapping_interfaces/Instance`` from the map's record of the instance.

    Args:
        msg: the Instance message to fill (pixel_count and roi are left to the caller).
        record: the instance's row of the instance table, or None when the last map
            snapshot does not hold it yet (geometry stays zero).
        label: (label name, semantic confidence), or None.
        confidence: confidence of this answer (localize: the vote share).
    """
    msg.id = int(instance_id)
    name, sem_conf = label if label is not None else ("", 0.0)
    msg.semantic_label = str(name)
    msg.semantic_confidence = float(sem_conf)
    msg.confidence = float(np.clip(confidence, 0.0, 1.0))
    if record is not None:
        c = np.asarray(record.centroid, float)
        msg.centroid = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
        msg.bbox_center = record_pose(record)
        s = np.asarray(record.box_size, float)
        msg.bbox_size = Vector3(x=float(s[0]), y=float(s[1]), z=float(s[2]))
        msg.num_points = int(record.num_points)
    return msg



def instance_change_msg(event: ChangeEvent, map_frame: str):
    """A ``panoptic_mapping_interfaces/InstanceChange`` of a change-detection event."""
    from builtin_interfaces.msg import Time
    from panoptic_mapping_interfaces.msg import InstanceChange
    from std_msgs.msg import Header

    ns = max(0, round(event.stamp * 1e9))
    header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=map_frame)
    x, y, z = event.centroid
    px, py, pz = event.previous if event.previous is not None else event.centroid
    return InstanceChange(header=header, instance_id=event.instance_id, kind=event.kind,
                          position=Point(x=x, y=y, z=z),
                          previous_position=Point(x=px, y=py, z=pz), views=event.views,
                          seen_as=event.seen_as)
