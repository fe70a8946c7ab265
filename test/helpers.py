"""Synthetic frames and views shared by several test modules (import: ``from helpers import
...``; the tabletop scene fixtures are in conftest.py)."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.bench.types import SceneFrame
from panoptic_mapping.core.frames import Frame


def make_frame(K: np.ndarray, shape: tuple[int, int], *, rgb: np.ndarray | int = 128,
               depth: float | None = 2.0, camera_to_world: np.ndarray | None = None,
               stamp: float = 0.0, **fields) -> Frame:
    """A camera frame facing a flat surface: every pixel at ``depth`` metres (None: an
    RGB-only frame).

    Args:
        K: (3, 3) intrinsics; shape: (H, W).
        rgb: (H, W, 3) uint8 image, or one grey value for all pixels.
        camera_to_world: (4, 4) pose (None: identity).
        fields: further Frame fields (masks, mask_scores, ...).
    """
    h, w = shape
    if np.ndim(rgb) == 0:
        rgb = np.full((h, w, 3), rgb, np.uint8)
    d = None if depth is None else np.full((h, w), depth, np.float32)
    pose = np.eye(4) if camera_to_world is None else camera_to_world
    return Frame(rgb=rgb, K=K, camera_to_world=pose, stamp=stamp, depth=d, **fields)


def scene_frame(rgb: np.ndarray, depth: np.ndarray, *, instance: np.ndarray | None = None,
                semantic: np.ndarray | None = None, K: np.ndarray | None = None,
                camera_to_world: np.ndarray | None = None, index: int = 0,
                stamp: float = 0.0) -> SceneFrame:
    """A benchmark SceneFrame; ground truth ids default to void, K and the pose to
    identity."""
    void = np.zeros(depth.shape, np.int32)
    return SceneFrame(index=index, rgb=rgb, depth=depth,
                      instance=void if instance is None else instance,
                      semantic=void if semantic is None else semantic,
                      K=np.eye(3) if K is None else K,
                      camera_to_world=np.eye(4) if camera_to_world is None else camera_to_world,
                      stamp=stamp)


def render_boxes(K: np.ndarray, shape: tuple[int, int], tx: float,
                 boxes: list[tuple[float, float, float, float, float]], wall_z: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A camera at (tx, 0, 0) looking along +z (OpenCV axes) at fronto-parallel rectangles
    before a wall.

    Args:
        boxes: (x0, x1, y0, y1, z) world extents (bounds included) and depth, nearest
            first; wall_z: depth of the wall behind them.
    Returns:
        depth (H, W) float32 and the box index seen at each pixel (H, W) int (-1: wall).
    """
    h, w = shape
    v, u = np.mgrid[:h, :w].astype(np.float64)
    dx, dy = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    depth = np.full((h, w), wall_z, np.float32)
    which = np.full((h, w), -1)
    for i, (x0, x1, y0, y1, z) in reversed(list(enumerate(boxes))):
        x, y = tx + dx * z, dy * z
        hit = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        depth[hit], which[hit] = z, i
    return depth, which


def map_scene(scene):
    """A CPU Mapper that ingested every training frame of ``scene`` with perfect masks
    (the simulated front-end without errors), depth on."""
    from panoptic_mapping.bench.frontends import MaskErrorModel, SimulatedMaskFrontend
    from panoptic_mapping.bench.mapper_method import to_frame
    from panoptic_mapping.core.mapper import Mapper, MapperConfig

    mapper = Mapper(MapperConfig(device="cpu"))
    frontend = SimulatedMaskFrontend(MaskErrorModel.none(), 0, scene=scene)
    for f in scene.frames:
        mapper.ingest(to_frame(f, frontend(f, scene), True))
    return mapper
