"""~/query_points over loopback: a client node calls the service of a MappingNode (in this
process, spun by the same executor) and reads ~/query_cloud.

Without a text encoder (the default configuration) and for bad requests the answer says
why; with the SIMULATED text encoder of test_services.py on a map of the tabletop scene
built from simulated masks and embeddings, a phrase gives the matching points, their
relevance and the instances holding them."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import make_tabletop, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from panoptic_mapping.bench.frontends import SimulatedEmbeddingSpace  # noqa: E402
from panoptic_mapping.ros.node import MappingNode  # noqa: E402
from panoptic_mapping.ros.pointcloud import read_points  # noqa: E402
from panoptic_mapping.runtime.queries import NO_TEXT_ENCODER, NO_VOXEL_FEATURES  # noqa: E402
from panoptic_mapping_interfaces.srv import QueryInstances, QueryPoints  # noqa: E402

from test_services import StubTextEncoder, map_simulated_scene, use_text_encoder  # noqa: E402

NS = "/panoptic_mapping"
NODE_ARGS = ["mapping_node", "--ros-args", "-p", "input.pose_source:=pose",
             "-p", "input.train_duty_cycle:=0.05", "-p", "mapping.trainer.rays_per_step:=32",
             "-p", "output.cloud_period_s:=0.5", "-p", "output.status_period_s:=30.0"]


class Loopback:
    """A MappingNode and a client node in one rclpy context, spun by one executor."""

    def __init__(self) -> None:
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, args=NODE_ARGS)
        self.node = MappingNode(context=self.context)
        self.client_node = rclpy.create_node("query_points_test_client", context=self.context)
        self.client = self.client_node.create_client(QueryPoints, f"{NS}/query_points")
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client_node)

    def call(self, request: QueryPoints.Request, timeout: float = 30.0):
        assert self.client.wait_for_service(timeout_sec=timeout), "query_points never appeared"
        future = self.client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        assert future.done(), f"query_points did not answer within {timeout} s"
        return future.result()

    def spin_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
            if predicate():
                return
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        self.executor.shutdown()
        self.client_node.destroy_node()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def space():
    return SimulatedEmbeddingSpace(dim=16, noise_std=0.05)


@pytest.fixture(scope="module")
def scene():
    return make_tabletop(num_frames=6, num_novel_frames=1)


@pytest.fixture(scope="module")
def mapped(scene, space):
    """The node with the simulated text encoder and a map of the scene."""
    loop = Loopback()
    map_simulated_scene(loop.node, scene, space)
    yield loop
    loop.close()


def test_without_a_text_encoder_or_a_map_and_for_bad_requests_the_answer_says_why(space):
    loop = Loopback()  # the default configuration: no open_clip checkpoint, no encoder
    try:
        resp = loop.call(QueryPoints.Request(query="mug"))
        assert not resp.success and resp.message == NO_TEXT_ENCODER
        assert "frontend.embedder.checkpoint" in resp.message and resp.cloud.width == 0
        resp = loop.call(QueryPoints.Request(query="  "))
        assert not resp.success and resp.message == "bad request: the query text is empty"
        for bad in (-0.5, 1.5, float("nan")):
            resp = loop.call(QueryPoints.Request(query="mug", min_relevance=bad))
            assert not resp.success and "bad request: min_relevance must be in [0, 1]" in \
                resp.message, (bad, resp.message)
        use_text_encoder(loop.node, StubTextEncoder(space))
        resp = loop.call(QueryPoints.Request(query="mug"))
        assert not resp.success and resp.message.startswith("no map yet"), resp.message
    finally:
        loop.close()


def test_a_phrase_gives_the_matching_points_and_their_instances(mapped):
    threshold = mapped.node.config.mapping.semantics.query_threshold
    resp = mapped.call(QueryPoints.Request(query="duck"))
    assert resp.success, resp.message
    assert f"(relevance >= {threshold:.2f})" in resp.message and "'duck'" in resp.message
    cloud = resp.cloud
    assert cloud.header.frame_id == "map" and cloud.header.stamp.sec > 0
    points = read_points(cloud)
    assert points.dtype.names == ("x", "y", "z", "relevance", "instance")
    assert points["relevance"].dtype == np.float32 and points["instance"].dtype == np.uint32
    assert len(points) > 0 and np.isfinite(points["x"]).all()
    rel = points["relevance"]
    assert (rel >= threshold).all() and (rel <= 1.0).all()
    assert (np.diff(rel) <= 0).all()  # most relevant first

    # the instances: most matching points first, each with the share of its points
    assert len(resp.instance_ids) == len(resp.instance_shares) > 0
    counts = {i: int((points["instance"] == i).sum()) for i in resp.instance_ids}
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert set(np.unique(points["instance"])) - {0} == set(resp.instance_ids)
    assert all(0.0 < s <= 1.0 for s in resp.instance_shares)
    # the matching points lie on the instances labelled with the phrase (the scene has
    # several ducks), most of each
    ranked = mapped.node.map_services.query(QueryInstances.Request(query="duck"),
                                            QueryInstances.Response())
    ducks = {i.id for i in ranked.instances if i.semantic_label == "duck"}
    assert ducks and set(resp.instance_ids) == ducks
    assert all(s > 0.5 for s in resp.instance_shares)

    # a stricter threshold (the median relevance) and max_points: the most relevant points
    median = np.float32(np.median(rel))
    strict = mapped.call(QueryPoints.Request(query="duck", min_relevance=float(median)))
    assert strict.success, strict.message
    assert strict.cloud.width == int((rel >= median).sum())
    assert (read_points(strict.cloud)["relevance"] >= median).all()
    top = mapped.call(QueryPoints.Request(query="duck", max_points=10))
    assert top.success and top.cloud.width == min(10, cloud.width)
    np.testing.assert_array_equal(read_points(top.cloud)["relevance"], rel[:10])
    assert list(top.instance_ids) == list(resp.instance_ids)  # counted over all that pass


def test_the_last_answer_is_latched_on_query_cloud(mapped):
    resp = mapped.call(QueryPoints.Request(query="duck", max_points=25))
    assert resp.success, resp.message
    got = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = mapped.client_node.create_subscription(PointCloud2, f"{NS}/query_cloud",
                                                 got.append, latched)
    try:
        mapped.spin_until(lambda: got, 10, "the latched ~/query_cloud")  # a late subscriber
        assert got[-1].width == resp.cloud.width and bytes(got[-1].data) == bytes(
            resp.cloud.data)
        assert [f.name for f in got[-1].fields] == ["x", "y", "z", "relevance", "instance"]
    finally:
        mapped.client_node.destroy_subscription(sub)


def test_a_map_without_voxel_features_says_so(mapped, monkeypatch):
    monkeypatch.setattr(mapped.node.mapper, "point_relevance", lambda *a, **k: None)
    resp = mapped.call(QueryPoints.Request(query="duck"))
    assert not resp.success and resp.message == NO_VOXEL_FEATURES
    assert "instances.voxel_features" in resp.message
