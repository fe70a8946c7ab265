"""Instance markers, Instance messages, colours and the cloud picture."""
from __future__ import annotations

import numpy as np

from conftest import require_interfaces

require_interfaces()

from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from panoptic_mapping.core.io.export import InstanceRecord  # noqa: E402
from panoptic_mapping_interfaces.msg import Instance  # noqa: E402
from panoptic_mapping.ros.markers import (  # noqa: E402
    fill_instance_msg,
    instance_change_msg,
    instance_markers,
)
from panoptic_mapping.runtime.visuals import (  # noqa: E402
    cloud_picture,
    colorize,
    instance_colors,
)


def record(iid: int, label: str = "") -> InstanceRecord:
    c = np.cos(0.3)
    s = np.sin(0.3)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return InstanceRecord(id=iid, label=label, label_id=1 if label else 0,
                          semantic_confidence=0.8 if label else 0.0, confidence=0.9,
                          centroid=np.array([1.0, 2.0, 0.5]), box_center=np.array([1, 2, 0.4]),
                          box_rotation=R, box_size=np.array([0.2, 0.1, 0.3]), num_points=77)


def test_markers_boxes_and_labels_after_a_delete_all():
    header = Header(frame_id="map")
    arr = instance_markers([record(3, "mug"), record(7)], header)
    assert arr.markers[0].action == Marker.DELETEALL
    boxes = [m for m in arr.markers if m.ns == "boxes"]
    texts = [m for m in arr.markers if m.ns == "labels"]
    assert [m.id for m in boxes] == [3, 7] and [m.id for m in texts] == [3, 7]
    box = boxes[0]
    assert box.type == Marker.CUBE and box.header.frame_id == "map"
    assert (box.scale.x, box.scale.y, box.scale.z) == (0.2, 0.1, 0.3)
    q = box.pose.orientation
    assert abs(q.z - np.sin(0.15)) < 1e-9 and abs(q.w - np.cos(0.15)) < 1e-9
    assert texts[0].text == "#3 mug 0.80" and texts[1].text == "#7"
    assert texts[0].pose.position.z > box.pose.position.z + 0.15
    assert 0 < box.color.a < 1


def test_instance_message_from_a_record():
    msg = fill_instance_msg(Instance(), 3, record(3, "mug"), ("mug", 0.8), 1.3)
    assert msg.id == 3 and msg.semantic_label == "mug" and msg.confidence == 1.0
    assert (msg.centroid.x, msg.centroid.y) == (1.0, 2.0) and msg.num_points == 77
    assert abs(msg.bbox_size.z - 0.3) < 1e-6
    bare = fill_instance_msg(Instance(), 9, None, None, 0.5)
    assert bare.id == 9 and bare.num_points == 0 and bare.semantic_label == ""


def test_instance_change_message_from_an_event():
    from panoptic_mapping.core.map.changes import ChangeEvent

    msg = instance_change_msg(ChangeEvent(7, "removed", 40, 12.25, (1.0, -2.0, 0.5), 4), "map")
    assert (msg.instance_id, msg.kind, msg.views) == (7, "removed", 4)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "map", 12, 250_000_000)
    assert (msg.position.x, msg.position.y, msg.position.z) == (1.0, -2.0, 0.5)
    p = msg.previous_position  # a removal: where it was, as position
    assert (p.x, p.y, p.z) == (1.0, -2.0, 0.5) and msg.seen_as == 0
    moved = instance_change_msg(ChangeEvent(7, "moved", 44, 13.0, (0.5, 0.5, 0.5), 0,
                                            previous=(1.0, -2.0, 0.5), seen_as=31), "map")
    assert (moved.kind, moved.instance_id, moved.seen_as, moved.views) == ("moved", 7, 31, 0)
    assert (moved.position.x, moved.previous_position.x) == (0.5, 1.0)


def test_instance_colours_are_stable_distinct_and_black_for_none():
    c = instance_colors([0, 1, 2, 3, 1])
    assert c.dtype == np.uint8 and c.shape == (5, 3)
    assert (c[0] == 0).all() and (c[1] == c[4]).all()
    many = instance_colors(np.arange(1, 101))
    assert len({tuple(x) for x in many}) == 100
    ids = np.array([[0, 1], [2, 2]])
    img = colorize(ids)
    assert img.shape == (2, 2, 3) and (img[0, 0] == 0).all()
    over = colorize(ids, np.full((2, 2, 3), 100, np.uint8), alpha=0.5)
    assert (over[0, 0] == 35).all()


def test_cloud_picture_draws_both_views():
    rng = np.random.default_rng(0)
    xyz = rng.random((2000, 3))
    inst = (xyz[:, 0] * 4).astype(int)
    pic = cloud_picture(xyz, inst, size=120)
    assert pic.shape[0] == 120 and pic.shape[1] > 240 and pic.dtype == np.uint8
    assert (pic < 250).any(axis=2).mean() > 0.2  # points were drawn
    assert cloud_picture(np.zeros((0, 3)), np.zeros(0), size=50).shape[0] == 50


def test_topic_poses_frame_check_and_body_to_optical():
    """PoseStamped/Odometry give the pose of a frame F in the map; body_to_optical is the
    optical frame in F; a pose in another frame than the map is refused with the reason."""
    import pytest

    from panoptic_mapping.config import InputConfig
    from panoptic_mapping.core.geometry import pose_matrix
    from panoptic_mapping.ros.conversions import InputError
    from panoptic_mapping.ros.pose_sources import TopicPoses
    from panoptic_mapping.tools.replay import pose_msg

    body = pose_matrix([1.0, 2.0, 0.5], [0.0, 0.0, np.sin(0.4), np.cos(0.4)])
    rep103 = list(InputConfig.BODY_TO_OPTICAL_REP103)
    poses = TopicPoses(InputConfig(body_to_optical=rep103), "odometry")
    msg = pose_msg(body, Header(frame_id="map"))
    msg.header.stamp.sec = 3
    poses.add(msg.header, msg.pose)
    camera = poses.lookup("", 3_000_000_000, 0.0)
    # the optical z axis (viewing direction) is the body's x axis, expressed in the map
    np.testing.assert_allclose(camera[:3, 2], body[:3, 0], atol=1e-9)
    np.testing.assert_allclose(camera[:3, 1], -body[:3, 2], atol=1e-9)  # y down = -z up
    np.testing.assert_allclose(camera[:3, 3], body[:3, 3], atol=1e-9)
    msg.header.frame_id = "odom"
    with pytest.raises(InputError, match="frame 'odom', expected the map frame 'map'"):
        poses.add(msg.header, msg.pose)
