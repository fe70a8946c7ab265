"""The node's service logic in process, on a map built from simulated masks and
SIMULATED vision-language embeddings (a stand-in text encoder): query ranking, text-filtered
localization, and map loading refusals. The same handlers serve the ROS services."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_tabletop, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402

from panoptic_mapping.bench.frontends import (  # noqa: E402
    MaskErrorModel,
    SimulatedEmbeddingSpace,
    SimulatedMaskFrontend,
)
from panoptic_mapping.core.frames import Frame  # noqa: E402
from panoptic_mapping.core.mapper import Mapper  # noqa: E402
from panoptic_mapping.ros.node import MappingNode  # noqa: E402
from panoptic_mapping.tools.replay import scene_frame_messages  # noqa: E402
from panoptic_mapping_interfaces.srv import LoadMap, LocalizeInstances, QueryInstances, SaveMap  # noqa: E402


class StubTextEncoder:
    """SIMULATED text tower with the interface of OpenClipEmbedder (no weights)."""

    def __init__(self, space: SimulatedEmbeddingSpace) -> None:
        self.space = space
        self.dim = space.dim

    def embed_text(self, texts):
        return self.space.text_embeddings(texts)

    def embed_masks(self, rgb, labels):
        n = int(labels.max())
        rng = np.random.default_rng(0)
        v = rng.standard_normal((n, self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def use_text_encoder(node: MappingNode, encoder: StubTextEncoder) -> None:
    """Give the running node (and its services) the simulated text encoder."""
    node.embedder, node.embedding_dim = encoder, encoder.dim
    node.map_services.embedder, node.map_services.embedding_dim = encoder, encoder.dim


def map_simulated_scene(node: MappingNode, scene, space: SimulatedEmbeddingSpace) -> None:
    """Give the node the simulated text encoder, the scene's classes as vocabulary and a
    map of the scene built from error-free simulated masks and embeddings."""
    use_text_encoder(node, StubTextEncoder(space))
    node.config.output.vocabulary = scene.classes[1:]
    mapper = Mapper(node.config.mapping, embedding_dim=space.dim)
    node._apply_vocabulary(mapper)
    frontend = SimulatedMaskFrontend(MaskErrorModel.none(), scene=scene, embedding_space=space)
    for f in scene.frames:
        m = frontend(f)
        mapper.ingest(Frame(rgb=f.rgb, K=f.K, camera_to_world=f.camera_to_world,
                            stamp=f.stamp, depth=f.depth, masks=m.labels,
                            mask_embeddings=m.embeddings, mask_scores=m.scores))
    node._swap(mapper)


@pytest.fixture(scope="module")
def scene():
    return make_tabletop(num_frames=6, num_novel_frames=1)


@pytest.fixture(scope="module")
def node(scene):
    context = rclpy.context.Context()
    rclpy.init(context=context, args=[
        "mapping_node", "--ros-args", "-p", "input.pose_source:=pose",
        "-p", "input.train_duty_cycle:=0.05", "-p", "mapping.trainer.rays_per_step:=32",
        "-p", "output.cloud_period_s:=0.5"])
    n = MappingNode(context=context)
    map_simulated_scene(n, scene, SimulatedEmbeddingSpace(dim=16, noise_std=0.05))
    yield n
    n.destroy_node()
    context.try_shutdown()


def test_query_ranks_instances_by_text(node, scene):
    resp = node.map_services.query(QueryInstances.Request(query="duck", max_results=3),
                          QueryInstances.Response())
    assert resp.success, resp.message
    assert 1 <= len(resp.instances) <= 3 and len(resp.scores) == len(resp.instances)
    assert list(resp.scores) == sorted(resp.scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in resp.scores)
    assert resp.instances[0].semantic_label == "duck"
    assert resp.instances[0].num_points > 0  # geometry from the map snapshot
    everything = node.map_services.query(QueryInstances.Request(query="duck", min_score=0.0),
                                QueryInstances.Response())
    strict = node.map_services.query(QueryInstances.Request(query="duck", min_score=0.9),
                            QueryInstances.Response())
    assert len(strict.instances) < len(everything.instances)
    assert all(s >= 0.9 for s in strict.scores)


def test_localize_with_a_text_query_keeps_only_matching_instances(node, scene):
    f = scene.novel_frames[0]
    from rclpy.time import Time

    msgs = scene_frame_messages(f, Time(seconds=1).to_msg())
    req = LocalizeInstances.Request(image=msgs["image"], camera_info=msgs["camera_info"],
                                    camera_pose=msgs["pose"], depth=msgs["depth"])
    everything = node.map_services.localize(req, LocalizeInstances.Response())
    assert everything.success, everything.message
    labels = {i.semantic_label for i in everything.instances}
    assert len(labels) > 1
    req.queries = ["duck"]
    ducks = node.map_services.localize(req, LocalizeInstances.Response())
    assert ducks.success and ducks.instances
    assert {i.semantic_label for i in ducks.instances} == {"duck"}
    mask = np.frombuffer(bytes(ducks.instance_mask.data), "<i4")
    assert set(np.unique(mask)) - {0} == {i.id for i in ducks.instances}
    for inst in ducks.instances:
        assert inst.pixel_count == int((mask == inst.id).sum())


def test_load_refuses_other_embedding_sizes_and_corrupt_files(node, tmp_path):
    keyframes = node.mapper.stats()["keyframes"]
    other = tmp_path / "other.pmap"
    Mapper(node.config.mapping, embedding_dim=4).save(other)
    resp = node.map_services.load(LoadMap.Request(path=str(other)), LoadMap.Response())
    assert not resp.success and "4-d embeddings" in resp.message
    bad = tmp_path / "bad.pmap"
    bad.write_bytes(b"not a map")
    resp = node.map_services.load(LoadMap.Request(path=str(bad)), LoadMap.Response())
    assert not resp.success and "map not loaded" in resp.message
    assert node.mapper.stats()["keyframes"] == keyframes  # the running map is intact
    good = tmp_path / "good.pmap"
    assert node.map_services.save(SaveMap.Request(path=str(good)), SaveMap.Response()).success
    resp = node.map_services.load(LoadMap.Request(path=str(good)), LoadMap.Response())
    assert resp.success and f"loaded {keyframes} keyframes" in resp.message


def test_localize_from_the_pose_buffer_refuses_a_stamp_far_from_every_pose(node, scene):
    """An empty camera_pose asks for the pose at the image stamp; a stamp from 1970 or
    2100 while the poses are from now has none: refused as far from the node's clock, and
    with that check off, because no buffered pose is near it; never localized with another
    frame's pose."""
    from rclpy.time import Time

    f = scene.novel_frames[0]
    now = scene_frame_messages(f, node.get_clock().now().to_msg())
    node.poses.add(now["pose"].header, now["pose"].pose)
    offset = node.config.input.max_clock_offset_s
    try:
        for check, expected in ((offset, "input.max_clock_offset_s"),
                                (0.0, "no pose was found")):
            node.config.input.max_clock_offset_s = check
            for seconds in (1, 4_102_444_800):  # 1970, 2100
                msgs = scene_frame_messages(f, Time(seconds=seconds).to_msg())
                req = LocalizeInstances.Request(image=msgs["image"],
                                                camera_info=msgs["camera_info"],
                                                depth=msgs["depth"])
                resp = node.map_services.localize(req, LocalizeInstances.Response())
                assert not resp.success and expected in resp.message, (seconds, resp.message)
    finally:
        node.config.input.max_clock_offset_s = offset
    req = LocalizeInstances.Request(image=now["image"], camera_info=now["camera_info"],
                                    depth=now["depth"])
    resp = node.map_services.localize(req, LocalizeInstances.Response())
    assert resp.success and resp.instances, resp.message  # the stamp of the pose: found


def test_localize_undistorts_a_raw_image_and_answers_at_its_pixels(node, scene):
    """A request whose camera_info carries a lens's distortion (a raw image, as drivers
    publish them) is undistorted before it meets the map (``input.lens`` 'undistort', the
    default): the same instances as the pinhole view of the same pose, the mask at the
    raw image's pixels."""
    from rclpy.time import Time

    from panoptic_mapping.bench.lens import distort_scene
    from panoptic_mapping.core.lens import LensDistortion, undistortion_for

    assert node.config.input.lens == "undistort"
    lens = LensDistortion("plumb_bob", (0.3, 0.1, 0.0, 0.0, 0.0))
    f = scene.novel_frames[0]
    raw = distort_scene(dataclasses.replace(scene, frames=[f], novel_frames=[]),
                        lens).frames[0]
    answers = []
    for view, d in ((f, []), (raw, list(lens.coefficients))):
        msgs = scene_frame_messages(view, Time(seconds=1).to_msg())
        msgs["camera_info"].distortion_model, msgs["camera_info"].d = "plumb_bob", d
        req = LocalizeInstances.Request(image=msgs["image"], camera_info=msgs["camera_info"],
                                        camera_pose=msgs["pose"], depth=msgs["depth"])
        resp = node.map_services.localize(req, LocalizeInstances.Response())
        assert resp.success, resp.message
        assert (resp.instance_mask.height, resp.instance_mask.width) == f.rgb.shape[:2]
        mask = np.frombuffer(bytes(resp.instance_mask.data), "<i4").reshape(f.rgb.shape[:2])
        answers.append(({i.id for i in resp.instances}, mask))
    (pinhole, pin_mask), (undistorted, raw_mask) = answers
    # the lens (a pincushion) sees less than the pinhole view: objects at its edges leave
    assert len(pinhole) > 5 and undistorted <= pinhole and len(undistorted) >= len(pinhole) - 3
    # the pinhole answer, carried to the raw pixels, is the raw answer
    expect = undistortion_for(f.K, lens, f.rgb.shape[:2], grow=False).to_raw(pin_mask)
    seen = (expect > 0) & (raw_mask > 0)
    assert seen.sum() > 0.5 * (expect > 0).sum()
    assert np.mean(expect[seen] == raw_mask[seen]) > 0.9


def test_the_node_says_which_lens_it_undistorts(node):
    from panoptic_mapping.core.lens import LensDistortion
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    node._log_lens(K, LensDistortion("plumb_bob", (0.1, 0.0, 0.0, 0.0, 0.0)), (60, 80))
    assert node._lens_seen.startswith("plumb_bob lens (k1 0.1): 80x60 raw images")
    node._log_lens(K, None, (60, 80))
    assert node._lens_seen == ""
