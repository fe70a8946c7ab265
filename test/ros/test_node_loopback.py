"""The installed mapping_node, started as its own process from the params file, answers
the typed services of a client in another process over loopback."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import ANY_STAMP, PARAMS_FILE, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402

from panoptic_mapping.ros.conversions import numpy_to_image  # noqa: E402
from panoptic_mapping_interfaces.srv import (  # noqa: E402
    GetInstance,
    MoveInstance,
    RemoveInstance,
    LoadMap,
    LocalizeInstances,
    QueryInstances,
    ResetMap,
    SaveMap,
)


def call(node, client, request, timeout: float = 20.0):
    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} never appeared"
    future = client.call_async(request)
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin_until_future_complete(future, timeout_sec=timeout)
    finally:
        executor.remove_node(node)
        executor.shutdown()
    assert future.done(), f"{client.srv_name} did not answer within {timeout} s"
    return future.result()


def localize_request(width: int = 32, height: int = 24) -> LocalizeInstances.Request:
    req = LocalizeInstances.Request()
    req.image = numpy_to_image(np.full((height, width, 3), 128, np.uint8), "rgb8")
    req.camera_info.width, req.camera_info.height = width, height
    req.camera_info.k = [20.0, 0.0, width / 2, 0.0, 20.0, height / 2, 0.0, 0.0, 1.0]
    req.camera_pose.header.frame_id = "map"
    req.camera_pose.pose.orientation.w = 1.0
    return req


@pytest.fixture
def client_node(rclpy_context):
    node = rclpy.create_node("loopback_test_client", context=rclpy_context)
    yield node
    node.destroy_node()


def test_services_answer_between_processes(start_node, client_node):
    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "output.status_period_s:=0.5")
    mapper.wait_for_line("started:")
    ns = "/panoptic_mapping"
    localize = client_node.create_client(LocalizeInstances, f"{ns}/localize_instances")
    query = client_node.create_client(QueryInstances, f"{ns}/query_instances")
    reset = client_node.create_client(ResetMap, f"{ns}/reset")

    # a well-formed request on an empty map: a clear refusal, not an exception
    resp = call(client_node, localize, localize_request())
    assert resp.success is False and "no map yet" in resp.message
    assert len(resp.instances) == 0

    # bad requests are answered with their reason
    missing_info = localize_request()
    missing_info.camera_info = type(missing_info.camera_info)()
    resp = call(client_node, localize, missing_info)
    assert not resp.success and "camera_info is missing" in resp.message
    mismatch = localize_request()
    mismatch.camera_info.width = 64
    resp = call(client_node, localize, mismatch)
    assert not resp.success and "but camera_info is 64x24" in resp.message
    encoding = localize_request()
    encoding.image.encoding = "rgba8"
    resp = call(client_node, localize, encoding)
    assert not resp.success and "unsupported colour encoding 'rgba8'" in resp.message
    nan_pose = localize_request()
    nan_pose.camera_pose.pose.orientation.w = float("nan")
    resp = call(client_node, localize, nan_pose)
    assert not resp.success and "quaternion" in resp.message

    # without an open_clip checkpoint the node has no text encoder, and says so
    resp = call(client_node, query, QueryInstances.Request(query="mug"))
    assert not resp.success and "no text encoder" in resp.message
    assert "frontend.embedder.checkpoint" in resp.message
    resp = call(client_node, query, QueryInstances.Request(query="  "))
    assert not resp.success and "empty" in resp.message
    resp = call(client_node, reset, ResetMap.Request())
    assert resp.success
    save = client_node.create_client(SaveMap, f"{ns}/save_map")
    load = client_node.create_client(LoadMap, f"{ns}/load_map")
    resp = call(client_node, save, SaveMap.Request(path=""))
    assert not resp.success and "path is empty" in resp.message
    resp = call(client_node, load, LoadMap.Request(path="/nonexistent/map.pmap"))
    assert not resp.success and "no map file at /nonexistent/map.pmap" in resp.message

    # the node survived every bad request and reports what it waits for
    mapper.wait_for_line("waiting for: image on /image")
    assert mapper.proc.poll() is None
    assert mapper.interrupt() == 0, mapper.output
    assert "Traceback" not in mapper.output


def test_get_move_and_remove_instance(start_node, client_node, tabletop_scene, tmp_path):
    """A map built here is loaded into the node (load_map); get_instance then answers
    with what this process's snapshot of the same map holds: box, centroid, points,
    keyframe observations; an unknown id and id 0 get success=false and the reason.
    move_instance carries the instance (get_instance shows it at the new place at once);
    remove_instance forgets it; bad edits say why."""
    from helpers import map_scene
    from panoptic_mapping.ros.pointcloud import msg_to_labeled_cloud
    from panoptic_mapping.runtime.snapshots import MapSnapshots

    built = map_scene(tabletop_scene)
    built.save(tmp_path / "map.pmap")
    expected = MapSnapshots(lambda: built, rgb_only=False).get()
    record = max(expected.records.values(), key=lambda r: r.num_points)

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "input.train_duty_cycle:=0.01")
    mapper.wait_for_line("started:")
    ns = "/panoptic_mapping"
    get = client_node.create_client(GetInstance, f"{ns}/get_instance")
    load = client_node.create_client(LoadMap, f"{ns}/load_map")
    resp = call(client_node, get, GetInstance.Request(instance_id=record.id))
    assert not resp.success and "no id has been issued yet" in resp.message  # empty map
    resp = call(client_node, load, LoadMap.Request(path=str(tmp_path / "map.pmap")))
    assert resp.success, resp.message

    resp = call(client_node, get, GetInstance.Request(instance_id=record.id))
    assert resp.success, resp.message
    inst = resp.instance
    assert inst.id == record.id and inst.num_points == record.num_points
    np.testing.assert_allclose([inst.centroid.x, inst.centroid.y, inst.centroid.z],
                               record.centroid, atol=1e-5)
    np.testing.assert_allclose([inst.bbox_size.x, inst.bbox_size.y, inst.bbox_size.z],
                               record.box_size, atol=1e-5)
    assert inst.confidence == pytest.approx(record.confidence, abs=1e-6)
    assert resp.points.header.frame_id == "map" and resp.points.header.stamp.sec > 0
    points = msg_to_labeled_cloud(resp.points)
    assert len(points) == record.num_points and (points.instance == record.id).all()
    np.testing.assert_allclose(points.xyz.mean(0), record.centroid, atol=1e-4)
    keyframes, last = expected.observations.of(record.id)
    assert keyframes >= 2 and resp.observed_keyframes == keyframes
    assert resp.last_observed.sec + resp.last_observed.nanosec * 1e-9 == pytest.approx(last)

    coarse = call(client_node, get, GetInstance.Request(instance_id=record.id,
                                                        voxel_size=0.05))
    assert coarse.success and 0 < coarse.points.width < resp.points.width
    np.testing.assert_allclose(msg_to_labeled_cloud(coarse.points).xyz.mean(0),
                               record.centroid, atol=0.03)

    unknown = max(expected.id_lut.size, 1) + 1000
    resp = call(client_node, get, GetInstance.Request(instance_id=unknown))
    assert not resp.success and f"unknown instance id {unknown}" in resp.message
    assert resp.points.width == 0
    resp = call(client_node, get, GetInstance.Request(instance_id=0))
    assert not resp.success and "bad request: instance_id 0" in resp.message

    move = client_node.create_client(MoveInstance, f"{ns}/move_instance")
    remove = client_node.create_client(RemoveInstance, f"{ns}/remove_instance")
    lift = MoveInstance.Request(instance_id=record.id)
    lift.transform.translation.z = 0.5
    resp = call(client_node, move, lift)
    assert resp.success and "moved by (0.000, 0.000, 0.500) m" in resp.message, resp.message
    resp = call(client_node, get, GetInstance.Request(instance_id=record.id))
    assert resp.success, resp.message
    np.testing.assert_allclose([resp.instance.centroid.x, resp.instance.centroid.y,
                                resp.instance.centroid.z],
                               np.asarray(record.centroid) + [0, 0, 0.5], atol=0.01)
    bad = MoveInstance.Request(instance_id=record.id)
    bad.transform.translation.x = float("nan")
    resp = call(client_node, move, bad)
    assert not resp.success and "bad request: transform" in resp.message, resp.message
    resp = call(client_node, remove, RemoveInstance.Request(instance_id=record.id))
    assert resp.success and f"instance {record.id} removed" in resp.message, resp.message
    resp = call(client_node, get, GetInstance.Request(instance_id=record.id))
    assert not resp.success and f"instance {record.id} was deleted" in resp.message
    resp = call(client_node, remove, RemoveInstance.Request(instance_id=unknown))
    assert not resp.success and "was never issued" in resp.message, resp.message
    assert mapper.interrupt() == 0, mapper.output
    assert "Traceback" not in mapper.output


def publish_once_subscribed(client_node, msg_type, topic: str, msg, times: int = 5) -> None:
    """Publish ``msg`` a few times once the node subscribes to ``topic`` (best-effort QoS
    may lose the first message while discovery completes)."""
    pub = client_node.create_publisher(msg_type, topic, 10)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pub.get_subscription_count() > 0, f"the node never subscribed to {topic}"
    for _ in range(times):
        pub.publish(msg)
        time.sleep(0.05)


def test_node_counts_inputs_it_receives(start_node, client_node):
    from sensor_msgs.msg import CameraInfo

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "output.status_period_s:=0.3", "-p", "input.use_depth:=false")
    mapper.wait_for_line("started:")
    publish_once_subscribed(client_node, CameraInfo, "/camera_info",
                            CameraInfo(width=32, height=24))
    line = mapper.wait_for_line(r"received: image 0, camera_info [345],", regex=True)
    assert "waiting for: image on /image" in line  # camera_info no longer awaited
    assert "camera_info on" not in line
    assert mapper.interrupt() == 0


def test_images_without_camera_info_are_a_warning_that_names_it(start_node, client_node):
    """Images arriving while camera_info stays silent map nothing: the status says so at
    warning level, naming the silent topic, instead of routine start-up information."""
    from sensor_msgs.msg import Image

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "output.status_period_s:=0.3", "-p", "input.use_depth:=false")
    mapper.wait_for_line("started:")
    publish_once_subscribed(client_node, Image, "/image",
                            numpy_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8"))
    line = mapper.wait_for_line(r"WARN.*waiting for: camera_info on /camera_info.*"
                                r"no frame can be mapped", regex=True)
    assert "received: image" in line and "image on /image" not in line
    assert mapper.interrupt() == 0


def test_bad_parameter_stops_start_up_with_the_key(start_node, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    output:\n      status_perod_s: 1.0\n")
    mapper = start_node("--ros-args", "--params-file", str(params))
    assert mapper.proc.wait(30) == 2
    mapper.interrupt()
    assert "unknown parameter 'output.status_perod_s'" in mapper.output


def test_a_clock_jumping_back_clears_the_input_buffers_with_a_warning(start_node, client_node):
    """A bag played again: poses (and images) stamped far before the newest clear the pose
    buffer and the synchroniser, with a warning naming the parameter."""
    from builtin_interfaces.msg import Time as TimeMsg
    from geometry_msgs.msg import PoseStamped

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "input.pose_source:=pose", "-p", "input.use_depth:=false",
                        "-p", "output.status_period_s:=0.3", *ANY_STAMP)
    mapper.wait_for_line("started:")
    late, early = PoseStamped(), PoseStamped()
    for msg, sec in ((late, 100), (early, 10)):
        msg.header.frame_id = "map"
        msg.header.stamp = TimeMsg(sec=sec)
        msg.pose.orientation.w = 1.0
    # one publisher, and each stamp a few times: best-effort delivery may lose the first
    # messages after discovery; repeats of a stamp are no further jump
    pub = client_node.create_publisher(PoseStamped, "/pose", 10)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for msg in (late, early):
        for _ in range(4):
            pub.publish(msg)
            time.sleep(0.05)
    line = mapper.wait_for_line("time jumped back")
    assert "pose stamped 10.000 s" in line and "input.time_jump_back_s = 1 s" in line
    from diagnostic_msgs.msg import DiagnosticArray

    from panoptic_mapping.tools.demo_client import diagnostic_values

    status: dict = {}
    client_node.create_subscription(DiagnosticArray, "/panoptic_mapping/status",
                                    lambda m: status.update(diagnostic_values(m)), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=client_node.context)
    executor.add_node(client_node)
    deadline = time.monotonic() + 20
    try:
        while status.get("input.time_jumps") != "1" and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(client_node)
        executor.shutdown()
    assert status.get("input.time_jumps") == "1", status
    assert mapper.interrupt() == 0
    assert "Traceback" not in mapper.output


def test_stamps_far_from_the_clock_are_refused_before_they_touch_the_buffers(start_node,
                                                                             client_node):
    """A driver stamping 1970 after a reset, or years ahead: refused with the reason and counted,
    and neither taken for a jump of the clock nor buffered beside the poses of now."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image

    mapper = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                        "-p", "input.pose_source:=pose", "-p", "input.use_depth:=false",
                        "-p", "output.status_period_s:=0.3")
    mapper.wait_for_line("started:")
    pose_pub = client_node.create_publisher(PoseStamped, "/pose", 10)
    image_pub = client_node.create_publisher(Image, "/image", 10)
    deadline = time.monotonic() + 20
    while ((pose_pub.get_subscription_count() == 0 or image_pub.get_subscription_count() == 0)
           and time.monotonic() < deadline):
        time.sleep(0.05)
    time.sleep(0.5)
    now = client_node.get_clock().now().nanoseconds // 1_000_000_000
    for sec in (now, 1, now):
        msg = PoseStamped()
        msg.header.frame_id = "map"
        msg.header.stamp.sec = sec
        msg.pose.orientation.w = 1.0
        for _ in range(3):
            pose_pub.publish(msg)
            time.sleep(0.05)
    image = numpy_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8")
    image.header.stamp.sec = 2_000_000_000  # 2033 (the largest int32 is in 2038)
    for _ in range(3):
        image_pub.publish(image)
        time.sleep(0.05)
    line = mapper.wait_for_line("input rejected: pose stamped 1.000 s")
    assert "before the node's clock" in line and "input.max_clock_offset_s = 300 s" in line
    line = mapper.wait_for_line("input rejected: image stamped 2000000000.000 s")
    assert "after the node's clock" in line
    assert "time jumped back" not in mapper.output
    assert mapper.interrupt() == 0
    assert "Traceback" not in mapper.output
