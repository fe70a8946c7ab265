"""A synthetic 48x64 scene with ground truth for the front-end tests: wall over floor, two
touching squares (duck, teddy), a disc (mug), a tiny square (pin)."""
from __future__ import annotations

import numpy as np

from helpers import scene_frame

from panoptic_mapping.bench.types import Scene, SceneFrame

H, W = 48, 64
CLASSES = ["void", "wall", "floor", "duck", "teddy", "mug", "pin"]
WALL, FLOOR, DUCK, TEDDY, MUG, PIN = 1, 2, 3, 4, 5, 6
# GT instance id -> class id: 1 wall, 2 floor (stuff); 3..6 things; 3 and 4 touch.
INSTANCE_CLASS = {1: WALL, 2: FLOOR, 3: DUCK, 4: TEDDY, 5: MUG, 6: PIN}


def make_scene() -> Scene:
    return Scene(name="synthetic", frames=[], novel_frames=[], classes=list(CLASSES),
                 thing_classes={DUCK, TEDDY, MUG, PIN}, instance_class=dict(INSTANCE_CLASS))


def make_instance(void: bool = True) -> np.ndarray:
    """(48, 64) GT instances: wall over floor, two touching squares, a disc, a tiny square,
    and (``void``) a void patch in the top-right corner."""
    inst = np.zeros((H, W), np.int32)
    inst[:16] = 1
    inst[16:] = 2
    inst[20:34, 4:18] = 3          # 14x14
    inst[20:34, 18:32] = 4         # 14x14, shares the column-18 edge with 3
    yy, xx = np.mgrid[:H, :W]
    inst[(yy - 30) ** 2 + (xx - 48) ** 2 <= 36] = 5  # disc, r = 6
    inst[40:44, 56:60] = 6         # 16 px
    if void:
        inst[0:6, 50:64] = 0       # void
    return inst


def gt_frame(index: int = 0, instance: np.ndarray | None = None) -> SceneFrame:
    """Frame ``index`` of GT instances (default: make_instance()), 2 m away, void no depth."""
    inst = make_instance() if instance is None else instance
    lut = np.zeros(inst.max() + 1, np.int32)
    for i, c in INSTANCE_CLASS.items():
        if i < len(lut):
            lut[i] = c
    sem = lut[inst]
    rng = np.random.default_rng(index)
    rgb = rng.integers(0, 255, (8, 3))[inst].astype(np.uint8)
    depth = np.where(inst > 0, 2.0, 0.0).astype(np.float32)
    K = np.array([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]])
    return scene_frame(rgb, depth, instance=inst, semantic=sem, K=K, index=index,
                       stamp=0.1 * index)
