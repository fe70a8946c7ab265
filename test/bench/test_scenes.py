"""Benchmark scenes (panoptic_mapping.bench.scenes): determinism, ground truth, camera model,
layout constraints and the folder format.

Small images (64x48) and few frames keep the file to a few seconds; the geometric checks
that need resolution use one 160x120 scene.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

pybullet = pytest.importorskip("pybullet")
import pybullet_data  # noqa: E402  (after the skip: it ships with pybullet)

from panoptic_mapping.bench.scenes import (  # noqa: E402
    family_classes, intrinsics, load_scene, look_at, make_scene, opengl_view_matrix,
    save_scene, zbuffer_to_depth)
from panoptic_mapping.bench.types import VOID, Scene, SceneFrame  # noqa: E402

SMALL = dict(width=64, height=48, num_frames=6, num_novel_frames=2)


@pytest.fixture(scope="module")
def tabletop() -> Scene:
    return make_scene("tabletop", seed=1, **SMALL)


@pytest.fixture(scope="module")
def room() -> Scene:
    return make_scene("room", seed=2, trajectory="walkthrough", **SMALL)


@pytest.fixture(scope="module")
def tabletop_160() -> Scene:
    """The resolution the depth-accuracy requirement is stated for."""
    return make_scene("tabletop", seed=4, num_frames=12, num_novel_frames=2)


# --------------------------------------------------------------------------- helpers


def assert_frames_equal(a: SceneFrame, b: SceneFrame) -> None:
    assert a.index == b.index and a.stamp == b.stamp
    for key in ("rgb", "depth", "instance", "semantic", "K", "camera_to_world"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert np.array_equal(x, y), f"frame {a.index}: {key} differs"


def assert_scenes_equal(a: Scene, b: Scene) -> None:
    assert a.name == b.name
    assert a.classes == b.classes and a.thing_classes == b.thing_classes
    assert a.instance_class == b.instance_class
    assert a.config == b.config
    assert len(a.frames) == len(b.frames) and len(a.novel_frames) == len(b.novel_frames)
    for fa, fb in zip(a.frames + a.novel_frames, b.frames + b.novel_frames):
        assert_frames_equal(fa, fb)


def layout_of(scene: Scene, cls: str) -> list[dict]:
    return [o for o in scene.config["layout"] if o["class"] == cls]


def project(frame: SceneFrame, world_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) pixel coordinates and (N,) depths of (N, 3) world points."""
    world_to_camera = np.linalg.inv(frame.camera_to_world)
    cam = world_xyz @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    uvw = cam @ frame.K.T
    return uvw[:, :2] / uvw[:, 2:], cam[:, 2]


def backproject(frame: SceneFrame) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) of the pixels with depth, and their (N, 2) integer (v, u)."""
    v, u = np.nonzero(frame.depth > 0)
    z = frame.depth[v, u].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], 1) @ np.linalg.inv(frame.K).T
    cam = rays * z[:, None]
    return cam @ frame.camera_to_world[:3, :3].T + frame.camera_to_world[:3, 3], \
        np.stack([v, u], 1)


def load_layout(client: int, scene: Scene) -> dict[int, int]:
    """Recreate the scene's loadable objects in ``client``; returns instance -> body."""
    bodies = {}
    for obj in scene.config["layout"]:
        if obj["asset"] in ("box", "plane.urdf"):
            continue
        path = str(Path(pybullet_data.getDataPath()) / obj["asset"])
        if path.endswith(".sdf"):
            body = pybullet.loadSDF(path, globalScaling=obj["scale"], physicsClientId=client)[0]
        else:
            body = pybullet.loadURDF(path, globalScaling=obj["scale"], useFixedBase=True,
                                     physicsClientId=client)
        pybullet.resetBasePositionAndOrientation(body, obj["position"],
                                                 obj["orientation_xyzw"],
                                                 physicsClientId=client)
        bodies[obj["instance"]] = body
    return bodies


def min_distance(client: int, a: int, b: int, search: float = 0.05) -> float:
    """Signed distance between collision shapes (negative: penetration); inf if > search."""
    points = pybullet.getClosestPoints(a, b, search, physicsClientId=client)
    return min((pt[8] for pt in points), default=math.inf)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_arrays_bit_for_bit():
    a = make_scene("tabletop", seed=7, **SMALL)
    b = make_scene("tabletop", seed=7, **SMALL)
    assert_scenes_equal(a, b)


def test_different_seeds_give_different_scenes(tabletop):
    other = make_scene("tabletop", seed=2, **SMALL)
    positions = [o["position"] for o in tabletop.config["layout"]]
    assert positions != [o["position"] for o in other.config["layout"]]
    assert any(not np.array_equal(a.instance, b.instance)
               for a, b in zip(tabletop.frames, other.frames))


def test_layout_does_not_depend_on_the_number_of_frames():
    few = make_scene("room", seed=5, width=16, height=12, num_frames=2, num_novel_frames=0)
    many = make_scene("room", seed=5, width=16, height=12, num_frames=9, num_novel_frames=3)
    assert few.config["layout"] == many.config["layout"]


def test_two_scenes_use_private_clients():
    """Building a scene neither uses nor disconnects a client the caller holds."""
    mine = pybullet.connect(pybullet.DIRECT)
    try:
        make_scene("room", seed=0, width=16, height=12, num_frames=1, num_novel_frames=0)
        assert pybullet.isConnected(physicsClientId=mine)
        assert pybullet.getNumBodies(physicsClientId=mine) == 0
    finally:
        pybullet.disconnect(physicsClientId=mine)


# --------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("name", ["tabletop", "room"])
def test_ground_truth_is_compact_and_consistent(name, request):
    scene: Scene = request.getfixturevalue(name)
    classes, things = family_classes(scene.config["family"])
    assert scene.classes == classes and scene.thing_classes == things
    assert scene.classes[VOID] == "void"
    ids = sorted(scene.instance_class)
    assert ids == list(range(1, len(ids) + 1))
    assert all(0 < c < len(scene.classes) for c in scene.instance_class.values())
    class_of = np.zeros(len(ids) + 1, dtype=np.int32)
    for inst, cls in scene.instance_class.items():
        class_of[inst] = cls

    seen: set[int] = set()
    h, w = scene.config["height"], scene.config["width"]
    for frame in scene.frames + scene.novel_frames:
        assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (h, w) and frame.depth.dtype == np.float32
        assert frame.instance.dtype == np.int32 and frame.semantic.dtype == np.int32
        assert frame.K.shape == (3, 3) and frame.camera_to_world.shape == (4, 4)
        assert frame.stamp == pytest.approx(frame.index / 10.0)
        assert np.array_equal(frame.semantic, class_of[frame.instance])
        # Depth exactly where something was hit.
        assert np.array_equal(frame.depth > 0, frame.instance != VOID)
        seen |= set(np.unique(frame.instance).tolist()) - {VOID}
    assert seen <= set(ids)
    seen_classes = {scene.instance_class[i] for i in seen}
    assert seen_classes & things, "no thing visible"
    assert seen_classes - things, "no stuff visible"


def test_every_instance_is_visible_somewhere(tabletop_160):
    seen = set()
    for frame in tabletop_160.frames:
        seen |= set(np.unique(frame.instance).tolist())
    assert set(tabletop_160.instance_class) <= seen


def test_tabletop_has_duplicates_touching_and_nested_objects(tabletop):
    scene = tabletop
    names = [scene.classes[c] for i, c in sorted(scene.instance_class.items())]
    thing_names = [n for i, n in zip(sorted(scene.instance_class), names)
                   if scene.instance_class[i] in scene.thing_classes]
    assert len(thing_names) >= 8
    assert max(thing_names.count(n) for n in set(thing_names)) >= 2
    assert {"floor", "table"} <= set(names) - set(thing_names)

    client = pybullet.connect(pybullet.DIRECT)
    try:
        bodies = load_layout(client, scene)
        things = [i for i in bodies if scene.instance_class[i] in scene.thing_classes]
        # No interpenetration (1 mm: pybullet's collision margins).
        for a, b in itertools.combinations(things, 2):
            assert min_distance(client, bodies[a], bodies[b]) > -1e-3, (a, b)
        # Built to touch: two cubes side by side, two stacked jenga blocks, the tray's content.
        tray = layout_of(scene, "tray")[0]["instance"]
        inner = tray + 1  # placed right after the tray
        assert min_distance(client, bodies[tray], bodies[inner]) < 1e-3
        for cls in ("cube", "jenga block"):
            ids = [o["instance"] for o in layout_of(scene, cls)]
            gaps = [min_distance(client, bodies[a], bodies[b])
                    for a, b in itertools.combinations(ids, 2)]
            assert min(gaps) < 3e-3, cls
    finally:
        pybullet.disconnect(physicsClientId=client)

    tray = layout_of(scene, "tray")[0]
    inner = scene.config["layout"][tray["instance"]]  # placed right after the tray
    assert np.all(np.array(inner["aabb_min"][:2]) > tray["aabb_min"][:2])
    assert np.all(np.array(inner["aabb_max"][:2]) < tray["aabb_max"][:2])
    assert tray["aabb_min"][2] < inner["aabb_min"][2] < tray["aabb_min"][2] + 0.02


def test_room_builds_with_furniture_walls_and_a_mug_on_the_table(room):
    names = {i: room.classes[c] for i, c in room.instance_class.items()}
    walls = [i for i, n in names.items() if n == "wall"]
    assert len(walls) == 4 and "floor" in names.values()
    things = [i for i, c in room.instance_class.items() if c in room.thing_classes]
    assert len(things) == room.config["num_objects"]

    table, mug = layout_of(room, "table")[0], layout_of(room, "mug")[0]
    assert mug["aabb_min"][2] == pytest.approx(table["aabb_max"][2], abs=2e-3)
    assert np.all(np.array(mug["aabb_min"][:2]) > table["aabb_min"][:2])
    assert np.all(np.array(mug["aabb_max"][:2]) < table["aabb_max"][:2])

    # The walkthrough camera stays out of the furniture and sees the room.
    for frame in room.frames + room.novel_frames:
        eye = frame.camera_to_world[:3, 3]
        for obj in room.config["layout"]:
            if room.instance_class[obj["instance"]] in room.thing_classes:
                nearest = np.clip(eye[:2], obj["aabb_min"][:2], obj["aabb_max"][:2])
                assert np.linalg.norm(nearest - eye[:2]) > 0.35
        assert frame.depth[frame.depth > 0].min() > 0.2
        assert (frame.instance == VOID).mean() < 0.5


# --------------------------------------------------------------------------- camera model


@pytest.mark.parametrize("size", [(40, 30), (41, 31)])
def test_intrinsics_match_pybullet_ray_casts(size):
    """Rays through pixel centres with K hit what TinyRenderer drew there, at its depth."""
    width, height = size
    client = pybullet.connect(pybullet.DIRECT)
    try:
        data = Path(pybullet_data.getDataPath())
        pybullet.loadURDF(str(data / "plane.urdf"), physicsClientId=client)
        pybullet.loadURDF(str(data / "cube_small.urdf"), [0.0, 0.0, 0.1], globalScaling=4.0,
                          useFixedBase=True, physicsClientId=client)
        near, far = 0.05, 20.0
        pose = look_at((0.7, -0.5, 0.6), (0.05, 0.0, 0.05))
        proj = pybullet.computeProjectionMatrixFOV(55.0, width / height, near, far)
        _, _, _, zbuf, seg = pybullet.getCameraImage(
            width, height, opengl_view_matrix(pose), proj,
            renderer=pybullet.ER_TINY_RENDERER, physicsClientId=client)
        depth = zbuffer_to_depth(np.reshape(zbuf, (height, width)), near, far)
        seg = np.reshape(seg, (height, width))
        K = intrinsics(width, height, 55.0)
        v, u = np.mgrid[0:height, 0:width]
        rays = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T
        starts = np.broadcast_to(pose[:3, 3], rays.shape)
        ends = starts + (rays * far) @ pose[:3, :3].T  # optical-axis depth `far` at the end
        hits = pybullet.rayTestBatch(starts.tolist(), ends.tolist(), physicsClientId=client)
    finally:
        pybullet.disconnect(physicsClientId=client)
    body = np.array([h[0] for h in hits]).reshape(height, width)
    ray_depth = np.array([h[2] for h in hits]).reshape(height, width) * far
    same = (body == seg) & (seg >= 0)
    assert same.mean() > 0.97
    assert np.abs(ray_depth - depth)[same].mean() < 1e-3


def test_camera_pose_is_opencv_and_looks_at_the_scene(tabletop):
    centre = np.array([0.0, 0.0, 0.63])
    for frame in tabletop.frames + tabletop.novel_frames:
        rot = frame.camera_to_world[:3, :3]
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        assert rot[2, 0] == pytest.approx(0.0, abs=1e-9)  # x (right) is horizontal
        assert rot[2, 1] < 0  # y (down) points down in the world
        to_centre = centre - frame.camera_to_world[:3, 3]
        assert rot[:, 2] @ to_centre / np.linalg.norm(to_centre) > 0.95  # z forward
        assert np.array_equal(frame.camera_to_world[3], [0, 0, 0, 1])


def test_object_positions_project_onto_their_ground_truth_pixels(tabletop_160):
    """An object's centre, projected with K and world_to_camera, lands on the object
    wherever nothing stands in front of it."""
    scene = tabletop_160
    convex = [o for o in scene.config["layout"] if o["class"] in ("cube", "ball", "soccer ball")]
    assert convex
    checked = 0
    for frame in scene.frames:
        h, w = frame.instance.shape
        centres = np.array([o["position"] for o in convex])
        uv, z = project(frame, centres)
        for obj, (u, v), depth in zip(convex, np.rint(uv).astype(int), z):
            if not (0 <= u < w and 0 <= v < h and depth > 0):
                continue
            # 3x3: TinyRenderer leaves rare cracks (a few pixels of what lies behind) on
            # triangle edges, which the renderer's filling cannot tell from real gaps where
            # two objects meet. A wrong camera convention misses by far more than a pixel.
            if np.any(frame.instance[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2]
                      == obj["instance"]):
                checked += 1
            else:
                # Only something in front of the centre may hide it; anything seen behind
                # the centre means that the projection missed the object.
                assert 0 < frame.depth[v, u] < depth, (frame.index, obj["class"])
    assert checked >= len(scene.frames)


def test_depth_reprojects_between_frames(tabletop_160):
    """Back-project frame i's depth, move it into frame i+1 and compare with its depth."""
    errors, agree = [], []
    frames = tabletop_160.frames
    for a, b in zip(frames, frames[1:]):
        points, va = backproject(a)
        uv, z = project(b, points)
        h, w = b.depth.shape
        u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (u0 >= 0) & (v0 >= 0) & (u0 < w - 1) & (v0 < h - 1)
        u0, v0, z, uv, va = u0[inside], v0[inside], z[inside], uv[inside], va[inside]
        src = a.instance[va[:, 0], va[:, 1]]
        corners = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)]
        # Bilinear interpolation only within one surface, seen in both frames.
        same = np.all([b.instance[c] == src for c in corners], axis=0)
        fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
        weights = [(1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu]
        sampled = sum(wt * b.depth[c] for wt, c in zip(weights, corners))
        errors.append(np.abs(sampled - z)[same])
        agree.append(same.mean())
    errors = np.concatenate(errors)
    assert len(errors) > 10_000
    assert np.median(errors) < 0.01  # the requirement
    # Measured 3e-5 m; a principal point half a pixel off gives ~2e-3 m.
    assert np.median(errors) < 5e-4
    assert np.mean(agree) > 0.6


def test_novel_views_are_a_different_trajectory(tabletop):
    train = np.array([f.camera_to_world[:3, 3] for f in tabletop.frames])
    novel = np.array([f.camera_to_world[:3, 3] for f in tabletop.novel_frames])
    assert len(novel) == SMALL["num_novel_frames"]
    gaps = np.linalg.norm(train[:, None] - novel[None], axis=-1)
    assert gaps.min() > 0.1
    assert [f.index for f in tabletop.novel_frames] == list(range(len(novel)))


# --------------------------------------------------------------------------- files and errors


def test_save_and_load_round_trip(tabletop, tmp_path):
    from PIL import Image

    root = save_scene(tabletop, tmp_path / "scene")
    meta = json.loads((root / "scene.json").read_text())
    assert meta["config"]["seed"] == 1 and len(meta["frames"]) == SMALL["num_frames"]
    assert Image.open(root / meta["frames"][0]["instance"]).mode == "I;16"
    assert Image.open(root / meta["frames"][0]["rgb"]).mode == "RGB"
    assert_scenes_equal(load_scene(root), tabletop)


def test_config_is_json_serialisable_and_complete(room):
    config = json.loads(json.dumps(room.config))
    assert config == room.config
    for key in ("family", "seed", "num_frames", "width", "height", "num_objects",
                "trajectory", "num_novel_frames", "fov_deg", "near", "far", "layout"):
        assert key in config


def test_unknown_family_raises_naming_it():
    with pytest.raises(ValueError, match="kitchen"):
        make_scene("kitchen")


@pytest.mark.parametrize("kwargs, word", [
    (dict(trajectory="spiral"), "spiral"),
    (dict(num_objects=3), "num_objects"),
    (dict(num_frames=0), "num_frames"),
])
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_scene("tabletop", **kwargs)
