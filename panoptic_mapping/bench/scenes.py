"""Benchmark scenes rendered with pybullet's CPU renderer (TinyRenderer), with exact ground truth.

Two families:

* ``"tabletop"``: a textured table in a small walled room with 8-20 small objects on it:
  duplicates of one class (ducks), two cubes touching side by side, two jenga blocks
  stacked crosswise, and a small object nested inside a tray. Floor, walls and table are
  stuff.
* ``"room"``: furniture-sized objects (shelf, tables, boxes, balls, a large teddy bear...)
  on a floor inside four coloured walls, with a mug standing on the table. Floor and walls
  are stuff.

Every object, and every stuff region (the floor, each wall, the tabletop's table), gets
its own compact instance id 1..N; 0 (``VOID``) is the sky above the walls. Objects are
placed by rejection sampling (bounding boxes, refined with collision shapes on the table),
so they never interpenetrate; touching, stacking and nesting are built on purpose. Nothing
is simulated: resting heights come from bounding boxes and closest-point queries, which
keeps a build deterministic bit for bit. ``Scene.config["layout"]`` records each
instance's asset, pose and bounds.

Camera conventions: ``SceneFrame.K`` is the pinhole matrix of the rendered images
(vertical field of view as in pybullet's ``computeProjectionMatrixFOV``, square pixels,
(u, v) = (0, 0) at the centre of the top-left pixel; see :func:`intrinsics` for
TinyRenderer's principal point) and ``camera_to_world`` is in the OpenCV optical frame
(x right, y down, z forward). ``depth`` is metric depth along the optical axis.

``save_scene``/``load_scene`` store a scene as a folder of PNG/NPY files plus
``scene.json``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from panoptic_mapping.bench.types import VOID, Scene, SceneFrame

__all__ = ["FAMILIES", "TRAJECTORIES", "make_scene", "save_scene", "load_scene",
           "family_classes", "intrinsics", "look_at", "opengl_view_matrix", "zbuffer_to_depth"]

FAMILIES = ("tabletop", "room")
TRAJECTORIES = ("orbit", "walkthrough")

FORMAT_VERSION = 1
_NEAR = 0.05  # m; small enough for a camera a few dm from furniture in the room
_FAR = 20.0  # m; beyond the farthest wall, so only the sky is clipped

_UPRIGHT_Y_UP = (math.pi / 2, 0.0, 0.0)  # meshes modelled with +y up (duck, teddy)

# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class _Asset:
    """How to load one kind of object.

    Attributes:
        cls: class name (an entry of the family's class list).
        path: URDF or SDF path relative to ``pybullet_data``; ``{k}`` is replaced by a
            random index for the random_urdfs toys.
        scale: pybullet ``globalScaling``.
        upright: roll, pitch, yaw (rad) that stand the mesh on its base before the random
            yaw is applied.
        rgba: colour that replaces an untextured mesh's white, or None to keep the asset's.
        local_aabb: (min xyz, max xyz) of the visual geometry in the base frame, at scale
            1, for assets without collision shapes (pybullet's AABB is collision-only).
    """

    cls: str
    path: str
    scale: float = 1.0
    upright: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rgba: tuple[float, float, float, float] | None = None
    local_aabb: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


_TABLETOP_ASSETS = {
    "tray": _Asset("tray", "tray/traybox.urdf", 0.5),
    "duck": _Asset("duck", "duck_vhacd.urdf", 2.0, _UPRIGHT_Y_UP),
    "cube": _Asset("cube", "cube_small.urdf", 2.0, rgba=(0.95, 0.55, 0.15, 1.0)),
    "jenga block": _Asset("jenga block", "jenga/jenga.urdf", 1.5),
    "lego brick": _Asset("lego brick", "lego/lego.urdf", 3.0),
    "ball": _Asset("ball", "sphere_small.urdf", 1.5),
    "mug": _Asset("mug", "objects/mug.urdf", 1.2),
    "teddy bear": _Asset("teddy bear", "teddy_vhacd.urdf", 2.0, _UPRIGHT_Y_UP),
    "soccer ball": _Asset("soccer ball", "soccerball.urdf", 0.1),
    "toy": _Asset("toy", "random_urdfs/{k:03d}/{k:03d}.urdf", 1.5),
}
# table.urdf collides with its top only; its legs reach the floor (z = 0).
_TABLE_AABB = ((-0.75, -0.5, 0.0), (0.75, 0.5, 0.625))
_TABLETOP_TABLE = _Asset("table", "table/table.urdf", 1.0, local_aabb=_TABLE_AABB)
_TABLETOP_STUFF = ("floor", "wall", "table")
# Random fillers beyond the fixed core of 8 (tray + content, 2 cubes, 2 jenga blocks, 2 ducks).
_TABLETOP_FILLERS = ("duck", "mug", "teddy bear", "ball", "soccer ball", "lego brick", "toy",
                     "cube", "jenga block")
_NESTABLE = ("lego brick", "ball", "cube")
# random_urdfs whose footprint at scale 1.5 is 6-20 cm and height >= 4 cm; some of the
# others are a few millimetres across and would be invisible.
_TOY_INDICES = (0, 1, 2, 4, 5, 7, 8, 10, 12, 13, 16, 17, 18, 19, 20, 24, 28, 29, 30, 31, 32,
                35, 38, 39)

_ROOM_ASSETS = {
    "shelf": _Asset("shelf", "kiva_shelf/model.sdf", 1.0),
    "table": _Asset("table", "table/table.urdf", 1.0, local_aabb=_TABLE_AABB),
    "square table": _Asset("square table", "table_square/table_square.urdf", 1.2,
                           local_aabb=((-0.3, -0.3, 0.0), (0.3, 0.3, 0.64))),
    "box": _Asset("box", "cube.urdf", 0.45, rgba=(0.62, 0.45, 0.28, 1.0)),
    "ball": _Asset("ball", "sphere2.urdf", 0.5),
    "teddy bear": _Asset("teddy bear", "teddy_vhacd.urdf", 6.0, _UPRIGHT_Y_UP),
    "soccer ball": _Asset("soccer ball", "soccerball.urdf", 0.3),
    "duck": _Asset("duck", "duck_vhacd.urdf", 4.0, _UPRIGHT_Y_UP),
    "mug": _Asset("mug", "objects/mug.urdf", 1.5),
}
_ROOM_STUFF = ("floor", "wall")
_ROOM_CORE = ("shelf", "table", "box", "box")  # the mug on the table comes on top of these
_ROOM_FILLERS = ("teddy bear", "ball", "square table", "soccer ball", "duck", "shelf", "box")
# Tall furniture would hide the rest of the room from the cameras if it stood in the middle.
_TALL = {"shelf"}
# Furniture stands parallel to the walls, as in a real room.
_AXIS_ALIGNED = {"shelf", "table", "square table", "box"}

_CLASSES = {
    "tabletop": ["void", *_TABLETOP_STUFF, *_TABLETOP_ASSETS],
    "room": ["void", *_ROOM_STUFF, *_ROOM_ASSETS],
}
_STUFF = {"tabletop": _TABLETOP_STUFF, "room": _ROOM_STUFF}


@dataclass(frozen=True)
class _Family:
    """Per-family numbers: how many things, and the walled room (lengths in metres)."""

    default_objects: int
    min_objects: int
    max_objects: int
    room_half: tuple[float, float]  # inner half extents of the walls
    wall_height: float
    wall_colours: tuple[tuple[float, float, float, float], ...]


_FAMILY = {
    "tabletop": _Family(12, 8, 20, (2.5, 2.5), 2.2,
                        ((0.85, 0.80, 0.70, 1), (0.60, 0.72, 0.85, 1), (0.70, 0.85, 0.65, 1),
                         (0.90, 0.70, 0.75, 1))),
    "room": _Family(9, 5, 14, (3.5, 2.75), 2.6,
                    ((0.90, 0.88, 0.75, 1), (0.55, 0.70, 0.88, 1), (0.65, 0.85, 0.60, 1),
                     (0.88, 0.62, 0.60, 1))),
}
_TABLE_TOP_MARGIN = 0.06  # keeps objects off the table's edge
_GAP = 0.01  # minimum clearance between separately placed objects
_CAMERA_CLEARANCE = 0.4  # room furniture keeps this far (xy) from any camera position
_MAX_TRIES = 500
_PATH_SAMPLES = 256  # points per camera path that room furniture keeps clear of


def family_classes(family: str) -> tuple[list[str], set[int]]:
    """Class names (index = semantic id, ``[0] == "void"``) and thing class ids of a family.

    The table is fixed per family, so semantic ids mean the same in every seed.
    """
    _check_family(family)
    classes = list(_CLASSES[family])
    things = {i for i, name in enumerate(classes) if i != VOID and name not in _STUFF[family]}
    return classes, things


# --------------------------------------------------------------------------- public API


def make_scene(family: str, *, seed: int = 0, num_frames: int = 60, width: int = 160,
               height: int = 120, num_objects: int | None = None, trajectory: str = "orbit",
               num_novel_frames: int = 10, fov_deg: float = 60.0,
               move_at: int | None = None) -> Scene:
    """Build and render one benchmark scene.

    Args:
        family: ``"tabletop"`` or ``"room"``.
        seed: seeds the object choice, placement and yaw; the same seed gives the same
            arrays bit for bit, different seeds different layouts. Camera paths depend only
            on the family and trajectory, not on the seed.
        num_frames: frames of the training trajectory (``Scene.frames``).
        width: image width in pixels.
        height: image height in pixels.
        num_objects: thing instances to place; tabletop 8-20 (default 12), room 5-14
            (default 9). None takes the default.
        trajectory: ``"orbit"`` (circle around the scene centre, looking at it, with a
            little vertical wobble) or ``"walkthrough"`` (tabletop: walking around the table
            while glancing left and right; room: walking a loop through the room, looking
            ahead and around).
        num_novel_frames: frames of the held-out trajectory (``Scene.novel_frames``): the
            same kind of path with a different radius, height, phase and direction.
        fov_deg: vertical field of view in degrees (pybullet's convention).
        move_at: tabletop only: before training frame ``move_at`` is rendered, one object
            standing alone on the table (the first of the duplicates) is moved to a free spot
            of the table at least 15 cm away, as a person or a robot would (0: the final
            scene from the start, the reference for a map built without the move). The
            held-out views see the final scene. ``config["moved"]`` records the instance,
            the frame, the shift and its bounds before and after.

    Returns:
        The rendered scene. Frames carry (height, width) images; ``stamp = index / 10``.
        ``Scene.config`` holds these arguments (``num_objects`` resolved), the near/far
        planes and the placed objects' layout.

    Raises:
        ValueError: unknown family or trajectory, or an argument out of range.
    """
    num_objects = _validate(family, trajectory, num_objects, num_frames, num_novel_frames,
                            width, height, fov_deg)
    if move_at is not None and (family != "tabletop" or not 0 <= move_at <= num_frames):
        raise ValueError(f"move_at={move_at}: a tabletop scene and 0 <= move_at <= "
                         f"num_frames ({num_frames}) needed")
    config = {
        "family": family, "seed": int(seed), "num_frames": int(num_frames),
        "width": int(width), "height": int(height), "num_objects": num_objects,
        "trajectory": trajectory, "num_novel_frames": int(num_novel_frames),
        "fov_deg": float(fov_deg), "near": _NEAR, "far": _FAR, "renderer": "pybullet-tiny",
        "format_version": FORMAT_VERSION,
    }
    world = _World()
    try:
        _BUILDERS[family](world, np.random.default_rng(seed), num_objects,
                          _keep_out_xy(family, trajectory))
        config["layout"] = world.layout()
        render = _Renderer(world, width, height, fov_deg)
        frames = []
        for i, (eye, target) in enumerate(_trajectory(family, trajectory, num_frames,
                                                      novel=False)):
            if i == move_at:
                config["moved"] = _move_one_object(world, np.random.default_rng((seed, 77)), i)
            frames.append(render(i, eye, target))
        if move_at == num_frames:
            config["moved"] = _move_one_object(world, np.random.default_rng((seed, 77)),
                                               move_at)
        novel = [render(i, eye, target) for i, (eye, target)
                 in enumerate(_trajectory(family, trajectory, num_novel_frames, novel=True))]
        instance_class = dict(world.instance_class)
    finally:
        world.close()  # a leaked DIRECT client keeps its meshes and textures in memory
    classes, things = family_classes(family)
    name = f"{family}-seed{seed}"
    if trajectory != "orbit":
        name = f"{family}-{trajectory}-seed{seed}"
    return Scene(name=name, frames=frames, novel_frames=novel, classes=classes,
                 thing_classes=things, instance_class=instance_class, config=config)


def _validate(family: str, trajectory: str, num_objects: int | None, num_frames: int,
              num_novel_frames: int, width: int, height: int, fov_deg: float) -> int:
    """Check make_scene's arguments; returns the resolved number of objects."""
    _check_family(family)
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {trajectory!r}; expected one of {TRAJECTORIES}")
    fam = _FAMILY[family]
    num_objects = fam.default_objects if num_objects is None else int(num_objects)
    if not fam.min_objects <= num_objects <= fam.max_objects:
        raise ValueError(f"num_objects={num_objects} out of range "
                         f"[{fam.min_objects}, {fam.max_objects}] for family {family!r}")
    if num_frames < 1 or num_novel_frames < 0:
        raise ValueError("num_frames must be >= 1 and num_novel_frames >= 0")
    if width < 8 or height < 8:
        raise ValueError(f"image size {width}x{height} too small (minimum 8x8)")
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"fov_deg={fov_deg} outside [1, 170]")
    return num_objects


def _move_one_object(world: "_World", rng: np.random.Generator, frame: int) -> dict:
    """Move the first object standing alone on the table (the first duplicate: the tray,
    cube pair and jenga stack come before it) to a free spot of the table top at least
    15 cm away; returns what moved, when and where."""
    things = [r for r in world._records if r["class"] not in _TABLETOP_STUFF]
    rec = things[6]  # 6 = tray, its content, 2 cubes, 2 blocks (see _build_tabletop)
    body = rec["body"]
    table = next(r["body"] for r in world._records if r["class"] == "table")
    tlo, thi = world.aabb(table)
    lo, hi = world.aabb(body)
    others = [world.aabb(r["body"]) for r in things if r["body"] != body]
    low = tlo[:2] + _TABLE_TOP_MARGIN - lo[:2]
    high = thi[:2] - _TABLE_TOP_MARGIN - hi[:2]
    for _ in range(_MAX_TRIES):
        shift = rng.uniform(low, high)
        if np.linalg.norm(shift) < 0.15:
            continue
        nlo, nhi = lo[:2] + shift, hi[:2] + shift
        if not any(np.all(nlo < ohi[:2] + _GAP) and np.all(olo[:2] < nhi + _GAP)
                   for olo, ohi in others):
            break
    else:
        raise RuntimeError("no free spot on the table to move an object to")
    world.translate(body, [shift[0], shift[1], 0.0])
    nlo, nhi = world.aabb(body)
    return {"instance": rec["instance"], "class": rec["class"], "at_frame": int(frame),
            "shift": [float(shift[0]), float(shift[1]), 0.0],
            "aabb_before": [lo.tolist(), hi.tolist()], "aabb_after": [nlo.tolist(), nhi.tolist()]}


def _keep_out_xy(family: str, trajectory: str) -> np.ndarray:
    """(P, 2) xy of both camera paths, which furniture must keep clear of.

    Sampled densely and independently of num_frames, so that a seed's layout does not
    change with the number of frames.
    """
    views = (_trajectory(family, trajectory, _PATH_SAMPLES, novel=False)
             + _trajectory(family, trajectory, _PATH_SAMPLES, novel=True))
    return np.array([eye[:2] for eye, _ in views])


def save_scene(scene: Scene, directory: str | Path) -> Path:
    """Write ``scene`` to ``directory`` (created if needed); returns the directory.

    Layout: ``scene.json`` (name, K, poses, stamps, classes, thing_classes,
    instance_class, config and the file names) and per frame ``frames/NNNNNN_rgb.png``
    (8-bit RGB), ``_depth.npy`` ((H, W) float32 metres, lossless), ``_instance.png`` and
    ``_semantic.png`` (16-bit greyscale); novel views likewise under ``novel/``. A frame
    without ground truth (``instance`` None) gets no ``_instance``/``_semantic`` files and
    no such keys in its scene.json entry.
    """
    root = Path(directory)
    meta = {
        "format_version": FORMAT_VERSION, "name": scene.name, "classes": list(scene.classes),
        "thing_classes": sorted(int(c) for c in scene.thing_classes),
        "instance_class": {str(k): int(v) for k, v in sorted(scene.instance_class.items())},
        "config": scene.config,
        "frames": [_save_frame(f, i, root, "frames") for i, f in enumerate(scene.frames)],
        "novel_frames": [_save_frame(f, i, root, "novel")
                         for i, f in enumerate(scene.novel_frames)],
    }
    (root / "scene.json").write_text(json.dumps(meta, indent=1))
    return root


def load_scene(directory: str | Path) -> Scene:
    """Read a scene written by :func:`save_scene`; arrays come back exactly as saved.

    Ground truth is optional: a frame entry without ``instance``/``semantic`` keys (an
    imported recording, see ``bench.importers``) loads with ``instance = semantic =
    None``, one without ``depth`` with depth 0 (unknown) everywhere; ``novel_frames``,
    ``classes`` (default ``["void"]``), ``thing_classes``, ``instance_class`` and
    ``config`` may be left out.

    Raises:
        FileNotFoundError: no scene.json, or a file an entry names is missing.
        ValueError: an unsupported format version or an unreadable entry.
    """
    root = Path(directory)
    if not (root / "scene.json").is_file():
        raise FileNotFoundError(f"{root}: no scene.json (not a scene folder)")
    meta = json.loads((root / "scene.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{root}: unsupported scene format {meta.get('format_version')!r}")
    return Scene(
        name=meta.get("name", root.name),
        frames=[_load_frame(m, root) for m in meta["frames"]],
        novel_frames=[_load_frame(m, root) for m in meta.get("novel_frames", [])],
        classes=list(meta.get("classes", ["void"])),
        thing_classes=set(meta.get("thing_classes", [])),
        instance_class={int(k): int(v) for k, v in meta.get("instance_class", {}).items()},
        config=meta.get("config", {}),
    )


# --------------------------------------------------------------------------- pybullet world


class _World:
    """A private pybullet client and the instance bookkeeping of the bodies loaded into it.

    A private client (never the global default) lets several scenes be built in one
    process, even interleaved.
    """

    def __init__(self) -> None:
        import pybullet
        import pybullet_data

        self.p = pybullet
        self.client = pybullet.connect(pybullet.DIRECT)
        self.data_path = Path(pybullet_data.getDataPath())
        self.body_instance: dict[int, int] = {}
        self.instance_class: dict[int, int] = {}
        self._records: list[dict] = []
        self._local_aabb: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def close(self) -> None:
        if self.client >= 0:
            self.p.disconnect(physicsClientId=self.client)
            self.client = -1

    # ---- bodies -------------------------------------------------------------------------

    def add_instance(self, body: int, cls_name: str, family: str, asset: str,
                     scale: float) -> int:
        """Give ``body`` the next compact instance id (1, 2, ...) of class ``cls_name``."""
        inst = len(self.instance_class) + 1
        self.body_instance[body] = inst
        self.instance_class[inst] = _CLASSES[family].index(cls_name)
        self._records.append({"instance": inst, "class": cls_name, "body": body,
                              "asset": asset, "scale": scale})
        return inst

    def load(self, asset: _Asset, yaw: float, rng: np.random.Generator) -> tuple[int, str]:
        """Load ``asset`` standing upright with heading ``yaw`` (rad) near the origin.

        Returns the body id and the resolved asset path.
        """
        p = self.p
        path = asset.path
        if "{k" in path:  # the random_urdfs toys: a different shape per instance
            path = path.format(k=int(_TOY_INDICES[int(rng.integers(len(_TOY_INDICES)))]))
        rot = _quat_mul(p.getQuaternionFromEuler((0.0, 0.0, yaw)),
                        p.getQuaternionFromEuler(asset.upright))
        full = str(self.data_path / path)
        if path.endswith(".sdf"):
            body = p.loadSDF(full, globalScaling=asset.scale, physicsClientId=self.client)[0]
            pos, _ = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
            p.resetBasePositionAndOrientation(body, pos, rot, physicsClientId=self.client)
        else:
            # Fixed bases: nothing is simulated, and fixed bodies skip inertia warnings.
            body = p.loadURDF(full, baseOrientation=rot, globalScaling=asset.scale,
                              useFixedBase=True, physicsClientId=self.client)
        if asset.rgba is not None:
            p.changeVisualShape(body, -1, rgbaColor=asset.rgba, physicsClientId=self.client)
        if asset.local_aabb is not None:
            lo, hi = (np.asarray(v, float) * asset.scale for v in asset.local_aabb)
            self._local_aabb[body] = (lo, hi)
        return body, path

    def add_box(self, half_extents: Sequence[float], position: Sequence[float],
                rgba: Sequence[float]) -> int:
        """A static coloured box (walls)."""
        p, c = self.p, self.client
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half_extents, physicsClientId=c)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half_extents, rgbaColor=rgba,
                                  physicsClientId=c)
        return p.createMultiBody(0.0, col, vis, basePosition=position, physicsClientId=c)

    def load_plane(self) -> int:
        return self.p.loadURDF(str(self.data_path / "plane.urdf"), useFixedBase=True,
                               physicsClientId=self.client)

    # ---- geometry -----------------------------------------------------------------------

    def aabb(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounds (min xyz, max xyz) of ``body``'s visible geometry."""
        p, c = self.p, self.client
        if body in self._local_aabb:
            lo, hi = self._local_aabb[body]
            pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=c)
            rot = np.array(p.getMatrixFromQuaternion(quat)).reshape(3, 3)
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                for z in (lo[2], hi[2])])
            world = corners @ rot.T + np.asarray(pos)
            return world.min(0), world.max(0)
        lo, hi = p.getAABB(body, physicsClientId=c)
        # Links other than the base (if any) belong to the same object.
        for link in range(p.getNumJoints(body, physicsClientId=c)):
            llo, lhi = p.getAABB(body, link, physicsClientId=c)
            lo, hi = np.minimum(lo, llo), np.maximum(hi, lhi)
        return np.asarray(lo, float), np.asarray(hi, float)

    def translate(self, body: int, delta: Sequence[float]) -> None:
        p, c = self.p, self.client
        pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=c)
        p.resetBasePositionAndOrientation(body, np.add(pos, delta).tolist(), quat,
                                          physicsClientId=c)

    def near(self, a: int, b: int) -> bool:
        """Whether the collision shapes of bodies ``a`` and ``b`` come within ``_GAP``."""
        return bool(self.p.getClosestPoints(a, b, _GAP, physicsClientId=self.client))

    def lower_onto(self, body: int, support: int) -> None:
        """Lower ``body`` straight down until its collision shape rests on ``support``'s.

        For a body above a horizontal part of the support, the closest distance is the
        vertical gap; a few rounds absorb the case where a slanted part is closest.
        """
        for _ in range(4):
            points = self.p.getClosestPoints(body, support, 1.0, physicsClientId=self.client)
            gap = min((pt[8] for pt in points), default=0.0)
            if abs(gap) < 1e-5:
                break
            self.translate(body, [0.0, 0.0, -gap])

    def put(self, body: int, centre_xy: Sequence[float], bottom_z: float) -> None:
        """Move ``body`` so that its bounds are centred on ``centre_xy``, resting on
        ``bottom_z``."""
        lo, hi = self.aabb(body)
        self.translate(body, [centre_xy[0] - (lo[0] + hi[0]) / 2,
                              centre_xy[1] - (lo[1] + hi[1]) / 2, bottom_z - lo[2]])

    # ---- output -------------------------------------------------------------------------

    def body_lookup(self) -> np.ndarray:
        """(num_bodies + 1,) int32: index ``body + 1`` -> instance id, so that pybullet's
        background value -1 lands on index 0 = VOID."""
        n = self.p.getNumBodies(physicsClientId=self.client)
        lut = np.zeros(n + 1, dtype=np.int32)
        for body, inst in self.body_instance.items():
            lut[body + 1] = inst
        return lut

    def layout(self) -> list[dict]:
        """JSON-serialisable pose and bounds of every instance, in instance order."""
        out = []
        for rec in self._records:
            body = rec["body"]
            pos, quat = self.p.getBasePositionAndOrientation(body, physicsClientId=self.client)
            lo, hi = self.aabb(body)
            out.append({"instance": rec["instance"], "class": rec["class"],
                        "asset": rec["asset"], "scale": rec["scale"],
                        "position": [float(v) for v in pos],
                        "orientation_xyzw": [float(v) for v in quat],
                        "aabb_min": lo.tolist(), "aabb_max": hi.tolist()})
        return out


def _quat_mul(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """Hamilton product of xyzw quaternions: rotation ``b`` first, then ``a``."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


# --------------------------------------------------------------------------- layouts


def _add_room_shell(world: _World, family: str) -> None:
    """Floor and four walls (stuff): the floor first so that it is instance 1."""
    fam = _FAMILY[family]
    world.add_instance(world.load_plane(), "floor", family, "plane.urdf", 1.0)
    hx, hy = fam.room_half
    t, h = 0.05, fam.wall_height / 2  # half thickness, half height
    walls = (([t, hy + 2 * t, h], [hx + t, 0, h]), ([t, hy + 2 * t, h], [-hx - t, 0, h]),
             ([hx, t, h], [0, hy + t, h]), ([hx, t, h], [0, -hy - t, h]))
    for (half, pos), rgba in zip(walls, fam.wall_colours):
        world.add_instance(world.add_box(half, pos, rgba), "wall", family, "box", 1.0)


class _Placer:
    """Rejection sampling of object groups inside a rectangle, without interpenetration.

    Candidate spots whose bounding box (world-axis-aligned, so conservative for yawed
    objects) is clear of every placed group's box are accepted at once. With ``exact``,
    a spot whose boxes overlap is still accepted when pybullet finds the collision shapes
    at least ``_GAP`` apart: that packs yawed objects far more densely, which 20 objects on
    one table need. ``exact`` is only sound when every collision shape covers its visual
    geometry (true of the tabletop objects, not of table.urdf's leg-less collision).
    """

    def __init__(self, world: _World, rng: np.random.Generator, region_min: Sequence[float],
                 region_max: Sequence[float], keep_out_xy: np.ndarray | None = None,
                 clearance: float = 0.0, exact: bool = False) -> None:
        self.world, self.rng = world, rng
        self.region_min = np.asarray(region_min, float)
        self.region_max = np.asarray(region_max, float)
        self.keep_out_xy = keep_out_xy  # (P, 2) points (cameras) objects must stay away from
        self.clearance = clearance
        self.exact = exact
        self.groups: list[tuple[list[int], np.ndarray, np.ndarray]] = []  # bodies, xy box

    def place(self, bodies: list[int], what: str,
              region: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Shift the already-assembled group ``bodies`` to a random free spot in the region
        (or in ``region`` = (min xy, max xy), if given).

        Raises RuntimeError if no free spot is found (a deterministic failure for a seed).
        """
        region_min, region_max = region if region is not None else (self.region_min,
                                                                     self.region_max)
        los, his = zip(*(self.world.aabb(b) for b in bodies))
        lo, hi = np.min(los, 0)[:2], np.max(his, 0)[:2]
        low, high = region_min - lo, region_max - hi  # allowed shifts
        if np.any(low > high):
            raise RuntimeError(f"{what} does not fit in the placement region")
        moved = np.zeros(2)
        for _ in range(_MAX_TRIES):
            shift = self.rng.uniform(low, high)
            box_lo, box_hi = lo + shift, hi + shift
            if not self._clear_of_cameras(box_lo, box_hi):
                continue
            near = [g for g, glo, ghi in self.groups
                    if np.all(box_lo < ghi + _GAP) and np.all(glo < box_hi + _GAP)]
            if not near:
                break
            if not self.exact:
                continue
            self._shift(bodies, shift - moved)
            moved = shift
            if not any(self.world.near(a, b) for a in bodies for g in near for b in g):
                break
        else:
            raise RuntimeError(f"no free spot for {what} after {_MAX_TRIES} tries")
        self._shift(bodies, shift - moved)
        self.groups.append((bodies, box_lo, box_hi))

    def _shift(self, bodies: list[int], delta: np.ndarray) -> None:
        for b in bodies:
            self.world.translate(b, [delta[0], delta[1], 0.0])

    def _clear_of_cameras(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        if self.keep_out_xy is None or not len(self.keep_out_xy):
            return True
        nearest = np.clip(self.keep_out_xy, lo, hi)  # closest point of the box
        return bool(np.min(np.linalg.norm(nearest - self.keep_out_xy, axis=1))
                    >= self.clearance)


def _build_tabletop(world: _World, rng: np.random.Generator, num_objects: int,
                    camera_xy: np.ndarray) -> None:
    """Floor, walls, table (stuff) and ``num_objects`` things on the table top.

    ``camera_xy`` is unused: the cameras stay well away from the table.
    """
    _add_room_shell(world, "tabletop")
    table, _ = world.load(_TABLETOP_TABLE, 0.0, rng)
    world.put(table, (0.0, 0.0), 0.0)
    world.add_instance(table, "table", "tabletop", _TABLETOP_TABLE.path, 1.0)
    top = _Tabletop(world, rng, table)
    top.tray_with_content()
    top.cube_pair()
    top.jenga_stack()
    # Duplicates of one class, then random fillers up to the requested count.
    extra = ["duck", "duck"]
    fillers = list(rng.permutation(len(_TABLETOP_FILLERS)))
    while 6 + len(extra) < num_objects:  # 6 = tray, its content, 2 cubes, 2 blocks
        if not fillers:
            fillers = list(rng.permutation(len(_TABLETOP_FILLERS)))
        extra.append(_TABLETOP_FILLERS[int(fillers.pop())])
    for cls in extra:
        top.single(cls)


class _Tabletop:
    """Puts things, alone or in deliberately touching groups, on a table's top."""

    def __init__(self, world: _World, rng: np.random.Generator, table: int) -> None:
        self.world, self.rng = world, rng
        lo, hi = world.aabb(table)
        self.top = float(hi[2])
        self.placer = _Placer(world, rng, lo[:2] + _TABLE_TOP_MARGIN,
                              hi[:2] - _TABLE_TOP_MARGIN, exact=True)

    def add(self, cls: str, yaw: float | None = None) -> int:
        """Load a thing of class ``cls`` (random heading if ``yaw`` is None) near the origin."""
        if yaw is None:
            yaw = self.yaw()
        asset = _TABLETOP_ASSETS[cls]
        body, path = self.world.load(asset, yaw, self.rng)
        self.world.add_instance(body, cls, "tabletop", path, asset.scale)
        return body

    def yaw(self) -> float:
        return float(self.rng.uniform(0.0, 2.0 * math.pi))

    def single(self, cls: str) -> None:
        body = self.add(cls)
        self.world.put(body, (0.0, 0.0), self.top)
        self.placer.place([body], cls)

    def tray_with_content(self) -> None:
        """Nested: a small object resting on the floor of a tray."""
        tray = self.add("tray")
        self.world.put(tray, (0.0, 0.0), self.top)
        inner = self.add(_NESTABLE[int(self.rng.integers(len(_NESTABLE)))])
        # Above the rim first, then straight down onto the tray's floor.
        self.world.put(inner, (0.0, 0.0), float(self.world.aabb(tray)[1][2]))
        self.world.lower_onto(inner, tray)
        self.placer.place([tray, inner], "tray")

    def cube_pair(self) -> None:
        """Touching: two cubes side by side, face to face."""
        heading = self.yaw()
        cubes = [self.add("cube", heading), self.add("cube", heading)]
        lo, hi = self.world.aabb(cubes[0])
        size = float(hi[2] - lo[2])  # the edge length: the cube stands upright
        for sign, body in zip((-0.5, 0.5), cubes):
            centre = (sign * size * math.cos(heading), sign * size * math.sin(heading))
            self.world.put(body, centre, self.top)
        self.placer.place(cubes, "cube pair")

    def jenga_stack(self) -> None:
        """Touching: two jenga blocks stacked crosswise."""
        heading = self.yaw()
        low = self.add("jenga block", heading)
        self.world.put(low, (0.0, 0.0), self.top)
        high = self.add("jenga block", heading + math.pi / 2)
        self.world.put(high, (0.0, 0.0), float(self.world.aabb(low)[1][2]))
        self.placer.place([low, high], "jenga stack")


def _build_room(world: _World, rng: np.random.Generator, num_objects: int,
                camera_xy: np.ndarray) -> None:
    """Floor and walls (stuff) and ``num_objects`` things, one of them a mug on the table."""
    family = "room"
    _add_room_shell(world, family)
    hx, hy = _FAMILY[family].room_half
    placer = _Placer(world, rng, (-hx + 0.05, -hy + 0.05), (hx - 0.05, hy - 0.05),
                     keep_out_xy=camera_xy, clearance=_CAMERA_CLEARANCE)
    names = list(_ROOM_CORE)
    fillers = list(rng.permutation(len(_ROOM_FILLERS)))
    while len(names) + 1 < num_objects:  # +1: the mug
        if not fillers:
            fillers = list(rng.permutation(len(_ROOM_FILLERS)))
        names.append(_ROOM_FILLERS[int(fillers.pop())])
    table = -1
    for cls in names:
        asset = _ROOM_ASSETS[cls]
        if cls in _AXIS_ALIGNED:
            heading = float(rng.integers(4)) * math.pi / 2
        else:
            heading = float(rng.uniform(0.0, 2.0 * math.pi))
        body, path = world.load(asset, heading, rng)
        world.put(body, (0.0, 0.0), 0.0)
        if cls in _TALL:
            _place_against_a_wall(placer, body, cls, rng)
        else:
            placer.place([body], cls)
        world.add_instance(body, cls, family, path, asset.scale)
        if cls == "table" and table < 0:
            table = body
    # Supported: a mug standing on the (first) table, away from its edges.
    mug_asset = _ROOM_ASSETS["mug"]
    mug, path = world.load(mug_asset, float(rng.uniform(0.0, 2.0 * math.pi)), rng)
    tlo, thi = world.aabb(table)
    mlo, mhi = world.aabb(mug)
    half = (mhi[:2] - mlo[:2]) / 2 + 0.1
    xy = rng.uniform(tlo[:2] + half, thi[:2] - half)
    world.put(mug, xy, float(thi[2]))
    world.add_instance(mug, "mug", family, path, mug_asset.scale)


def _place_against_a_wall(placer: _Placer, body: int, what: str,
                          rng: np.random.Generator) -> None:
    """Place ``body`` with its back to a wall, trying the walls in random order (a camera
    path may pass too close to some of them)."""
    lo_xy, hi_xy = (v[:2] for v in placer.world.aabb(body))
    depth = hi_xy - lo_xy + 0.02
    for wall in rng.permutation(4):
        axis, side = divmod(int(wall), 2)
        lo, hi = placer.region_min.copy(), placer.region_max.copy()
        if side:
            lo[axis] = hi[axis] - depth[axis]
        else:
            hi[axis] = lo[axis] + depth[axis]
        try:
            placer.place([body], what, (lo, hi))
            return
        except RuntimeError:
            continue
    raise RuntimeError(f"no free spot along any wall for {what}")


_BUILDERS: dict[str, Callable[[_World, np.random.Generator, int, np.ndarray], None]] = {
    "tabletop": _build_tabletop, "room": _build_room}

# --------------------------------------------------------------------------- trajectories

# (eye xyz, target xyz) per frame
_Views = list[tuple[np.ndarray, np.ndarray]]

_TABLE_TOP_Z = _TABLE_AABB[1][2]


def _trajectory(family: str, kind: str, n: int, novel: bool) -> _Views:
    """Camera eye and look-at target per frame; a function of the configuration only.

    The novel path is the same kind of path with a different size, height, phase and
    direction, so that it views the scene from poses never seen in training.
    """
    if n == 0:
        return []
    # Training paths start at 0 rad; novel ones start between training poses, run backwards.
    phase = 0.0 if not novel else 0.7
    direction = 1.0 if not novel else -1.0
    t = np.arange(n) / n
    theta = phase + direction * 2.0 * math.pi * t
    if family == "tabletop":
        centre = np.array([0.0, 0.0, _TABLE_TOP_Z])
        if kind == "orbit":
            radius, rise = (1.1, 0.75) if not novel else (0.85, 0.95)
            return _orbit(centre, (radius, radius), rise, theta,
                          target_offset=(0.0, 0.0, 0.0) if not novel else (0.05, -0.04, 0.0))
        # Walking around the table at eye level, looking at it while glancing sideways.
        axes, eye_z = ((1.45, 1.15), 1.55) if not novel else ((1.2, 1.4), 1.4)
        eyes = np.stack([axes[0] * np.cos(theta), axes[1] * np.sin(theta),
                         eye_z + 0.03 * np.sin(4 * theta)], 1)
        glance = math.radians(18.0) * np.sin(3.0 * theta)
        to_centre = centre[None, :2] - eyes[:, :2]
        dirs = _rotate_xy(to_centre / np.linalg.norm(to_centre, axis=1, keepdims=True), glance)
        dist = np.linalg.norm(to_centre, axis=1, keepdims=True)
        targets = np.concatenate([eyes[:, :2] + dirs * dist, np.full((n, 1), centre[2])], 1)
        return list(zip(eyes, targets))
    hx, hy = _FAMILY[family].room_half
    if kind == "orbit":
        axes, eye_z = ((0.55 * hx, 0.55 * hy), 1.5) if not novel else ((0.4 * hx, 0.4 * hy), 1.8)
        return _orbit(np.array([0.0, 0.0, 0.6]), axes, eye_z - 0.6, theta)
    # Walking a loop through the room, looking ahead with a slow look-around swing.
    axes, eye_z = ((0.55 * hx, 0.45 * hy), 1.55) if not novel else ((0.42 * hx, 0.5 * hy), 1.35)
    eyes = np.stack([axes[0] * np.cos(theta), axes[1] * np.sin(theta),
                     eye_z + 0.03 * np.sin(8 * theta)], 1)
    tangent = np.stack([-axes[0] * np.sin(theta), axes[1] * np.cos(theta)], 1) * direction
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    # Turned a little towards the inside of the loop, plus the look-around.
    inward = direction * math.radians(25.0)
    swing = math.radians(50.0) * np.sin(3.0 * theta)
    dirs = _rotate_xy(tangent, inward + swing)
    targets = np.concatenate([eyes[:, :2] + 2.0 * dirs, np.full((n, 1), eye_z - 0.5)], 1)
    return list(zip(eyes, targets))


def _orbit(centre: np.ndarray, axes: tuple[float, float], rise: float, theta: np.ndarray,
           target_offset: Sequence[float] = (0.0, 0.0, 0.0)) -> _Views:
    """Eyes on an ellipse ``rise`` above ``centre`` (with a 4 cm wobble), looking at it."""
    eyes = np.stack([centre[0] + axes[0] * np.cos(theta), centre[1] + axes[1] * np.sin(theta),
                     centre[2] + rise + 0.04 * np.sin(3.0 * theta)], 1)
    target = centre + np.asarray(target_offset, float)
    return [(eye, target.copy()) for eye in eyes]


def _rotate_xy(v: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotate (N, 2) vectors counter-clockwise by ``angle`` (rad, scalar or (N,))."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], 1)


# --------------------------------------------------------------------------- camera


def look_at(eye: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """(4, 4) camera_to_world in the OpenCV optical frame, z towards ``target``, world +z up.

    x = forward x up points right, y = forward x right points down.
    """
    eye = np.asarray(eye, float)
    forward = np.asarray(target, float) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


# OpenCV optical (y down, z forward) <-> OpenGL camera (y up, z backward).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_view_matrix(camera_to_world: np.ndarray) -> list[float]:
    """pybullet's view matrix (16 floats, column-major, OpenGL camera) for an OpenCV pose."""
    world_to_gl = _CV_TO_GL @ np.linalg.inv(camera_to_world)
    return world_to_gl.T.reshape(-1).tolist()  # row-major of the transpose = column-major


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """(3, 3) K of TinyRenderer images made with ``computeProjectionMatrixFOV(fov_deg,
    width / height, ...)``; (u, v) = (0, 0) is the centre of the top-left pixel.

    The field of view is vertical and pixels are square. TinyRenderer behaves as if it
    sampled each pixel at its corner in a bottom-up raster and then flipped the rows, so
    the principal point is (W / 2, H / 2 - 1), not ((W - 1) / 2, (H - 1) / 2). Measured by
    ray casts through every pixel (mean depth error 1e-5 m at 160x120, 64x48 and 101x77;
    half a pixel off gives millimetres to centimetres); test/bench/test_scenes.py checks it.
    """
    f = (height / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0 - 1.0], [0.0, 0.0, 1.0]])


def zbuffer_to_depth(zbuffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Metric depth along the optical axis from pybullet's non-linear [0, 1] depth buffer."""
    z = zbuffer.astype(np.float64)
    return (far * near / (far - (far - near) * z)).astype(np.float32)


class _Renderer:
    """Renders SceneFrames of a built world with TinyRenderer."""

    def __init__(self, world: _World, width: int, height: int, fov_deg: float) -> None:
        self.p, self.client = world.p, world.client
        self.width, self.height = width, height
        self.K = intrinsics(width, height, fov_deg)
        self.projection = world.p.computeProjectionMatrixFOV(fov_deg, width / height,
                                                             _NEAR, _FAR)
        self.body_lut = world.body_lookup()
        self.class_lut = np.zeros(len(world.instance_class) + 1, dtype=np.int32)
        for inst, cls in world.instance_class.items():
            self.class_lut[inst] = cls

    def __call__(self, index: int, eye: np.ndarray, target: np.ndarray) -> SceneFrame:
        p = self.p
        pose = look_at(eye, target)
        _, _, rgba, zbuf, seg = p.getCameraImage(
            self.width, self.height, opengl_view_matrix(pose), self.projection,
            renderer=p.ER_TINY_RENDERER, lightDirection=(0.4, -0.3, 1.0),
            lightAmbientCoeff=0.55, lightDiffuseCoeff=0.45, lightSpecularCoeff=0.05,
            shadow=0, physicsClientId=self.client)
        shape = (self.height, self.width)
        rgb = np.ascontiguousarray(np.reshape(rgba, (*shape, 4))[..., :3], dtype=np.uint8)
        seg = np.reshape(seg, shape).astype(np.int64)
        hit = seg >= 0
        # Plain segmentation values are body ids; link bits would only appear with flags.
        instance = np.where(hit, self.body_lut[np.clip(seg + 1, 0, len(self.body_lut) - 1)],
                            VOID).astype(np.int32)
        depth = zbuffer_to_depth(np.reshape(zbuf, shape), _NEAR, _FAR)
        depth[~hit] = 0.0
        _fill_cracks(rgb, depth, instance)
        return SceneFrame(index=index, rgb=rgb, depth=depth, instance=instance,
                          semantic=self.class_lut[instance], K=self.K.copy(),
                          camera_to_world=pose, stamp=index / 10.0)


def _fill_cracks(rgb: np.ndarray, depth: np.ndarray, instance: np.ndarray) -> int:
    """Close TinyRenderer's one-pixel cracks between adjacent triangles, in place.

    TinyRenderer leaves some pixels on shared triangle edges uncovered, so a closed mesh
    shows single pixels (dots and thin lines) of whatever lies behind it. A pixel is a crack
    when both its left and right (or both its upper and lower) neighbours belong to one
    other instance and are nearer than it; it takes their mean depth and colour and their
    instance. (A real one-pixel slit through a single object, rare at these sizes, is
    closed too; rgb, depth and ground truth stay consistent either way.) Cracks where two
    different objects meet cannot be told from real gaps and are left. Returns the number
    of pixels changed.

    Args:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32, 0 = nothing hit.
        instance: (H, W) int32.
    """
    far = np.where(depth > 0, depth, np.inf)
    filled = 0
    for axis in (1, 0):
        before = [slice(None), slice(None)]
        after = [slice(None), slice(None)]
        centre = [slice(None), slice(None)]
        before[axis], after[axis], centre[axis] = slice(0, -2), slice(2, None), slice(1, -1)
        b, a, c = tuple(before), tuple(after), tuple(centre)
        same = (instance[b] == instance[a]) & (instance[b] != instance[c]) & (instance[b] != 0)
        # "Nearer" with a 1 % margin, so that a real step between surfaces is not a crack.
        behind = (far[c] > 1.01 * np.maximum(far[b], far[a]))
        crack = same & behind
        if not crack.any():
            continue
        filled += int(crack.sum())
        depth[c] = np.where(crack, (depth[b] + depth[a]) / 2, depth[c])
        far[c] = np.where(crack, depth[c], far[c])
        instance[c] = np.where(crack, instance[b], instance[c])
        mean_rgb = ((rgb[b].astype(np.uint16) + rgb[a]) // 2).astype(np.uint8)
        rgb[c] = np.where(crack[..., None], mean_rgb, rgb[c])
    return filled


# --------------------------------------------------------------------------- files


def _save_frame(frame: SceneFrame, position: int, root: Path, folder: str) -> dict:
    """Write one frame's images under ``root/folder``; returns its scene.json entry."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    stem = f"{folder}/{position:06d}"
    files = {"rgb": f"{stem}_rgb.png", "depth": f"{stem}_depth.npy"}
    if frame.instance is not None and frame.semantic is not None:  # ground truth, if any
        files.update(instance=f"{stem}_instance.png", semantic=f"{stem}_semantic.png")
    Image.fromarray(np.ascontiguousarray(frame.rgb, dtype=np.uint8), "RGB").save(
        root / files["rgb"])
    np.save(root / files["depth"], np.asarray(frame.depth, dtype=np.float32))
    for key in ("instance", "semantic"):
        if key in files:
            _write_png16(root / files[key], getattr(frame, key))
    return {"index": int(frame.index), "stamp": float(frame.stamp),
            "K": np.asarray(frame.K, float).tolist(),
            "camera_to_world": np.asarray(frame.camera_to_world, float).tolist(), **files}


def _load_frame(meta: dict, root: Path) -> SceneFrame:
    for key in ("rgb", "depth", "instance", "semantic"):
        if meta.get(key) and not (root / meta[key]).is_file():
            raise FileNotFoundError(f"{root}: {meta[key]} (the {key} of frame "
                                    f"{meta.get('index')}) is missing")
    rgb = np.asarray(Image.open(root / meta["rgb"]).convert("RGB"), dtype=np.uint8)
    # Ground truth and depth are optional (a recording imported without them).
    has_gt = bool(meta.get("instance")) and bool(meta.get("semantic"))
    return SceneFrame(
        index=int(meta["index"]),
        rgb=rgb,
        depth=(np.load(root / meta["depth"]).astype(np.float32, copy=False) if meta.get("depth")
               else np.zeros(rgb.shape[:2], np.float32)),
        instance=_read_png16(root / meta["instance"]) if has_gt else None,
        semantic=_read_png16(root / meta["semantic"]) if has_gt else None,
        K=np.asarray(meta["K"], dtype=np.float64),
        camera_to_world=np.asarray(meta["camera_to_world"], dtype=np.float64),
        stamp=float(meta["stamp"]),
    )


def _write_png16(path: Path, ids: np.ndarray) -> None:
    """(H, W) non-negative ids < 65536 as a 16-bit greyscale PNG."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > 0xFFFF):
        raise ValueError(f"{path.name}: ids outside [0, 65535] do not fit a 16-bit PNG")
    Image.fromarray(ids.astype(np.uint16)).save(path)


def _read_png16(path: Path) -> np.ndarray:
    """(H, W) int32 ids from a 16-bit PNG written by :func:`_write_png16`."""
    return np.asarray(Image.open(path), dtype=np.int32)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
