"""The synthetic wall scene the instance-map tests share: two touching patches A, B on a
wall at 1 m (or two boxes before it), a camera sliding along x, and map helpers."""
from __future__ import annotations

import numpy as np

from helpers import render_boxes

from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.instances import InstanceMap


H, W = 48, 64

# principal point off the 1 cm voxel lattice, so no pixel ray lands on a voxel boundary
K = np.array([[50.0, 0, W / 2 + 0.3], [0, 50.0, H / 2 + 0.3], [0, 0, 1]])

# world x ranges of two touching objects on a wall at z = 1 m (y spans the middle rows)
A = (-0.30, -0.02)

B = (-0.02, 0.25)


# These worlds are painted on one flat wall: no geometry tells their objects apart, and
# 'smooth' evidence (one surface, cut by the front-end) would rightly merge them. Tests of
# the mask rules run on them with that evidence off.
PAINTED = InstanceConfig(smooth_weight=0.0)


def camera(tx: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = tx
    return T


def world_x(tx: float) -> np.ndarray:
    u = np.arange(W)
    return (u - K[0, 2]) / K[0, 0] + tx


def ground_truth(tx: float) -> np.ndarray:
    """(H, W) ids: 1 = wall, 2 = A, 3 = B."""
    x = np.broadcast_to(world_x(tx), (H, W))
    gt = np.ones((H, W), np.int32)
    rows = slice(12, 36)
    gt[rows][(x[rows] >= A[0]) & (x[rows] < A[1])] = 2
    gt[rows][(x[rows] >= B[0]) & (x[rows] < B[1])] = 3
    return gt


def shuffled(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same segmentation with random ids 1..M, as a front-end emits them."""
    ids = np.unique(labels[labels > 0])
    perm = rng.permutation(len(ids)) + 1
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[ids] = perm
    return lut[labels]


def ingest(im: InstanceMap, masks: np.ndarray, tx: float):
    return im.process_frame(masks, np.ones((H, W), np.float32), K, camera(tx))


def map_ids(im: InstanceMap, tx: float) -> dict[int, int]:
    """GT id -> majority rendered map id at view tx."""
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(tx))
    gt = ground_truth(tx)
    out = {}
    for g in (1, 2, 3):
        ids, c = np.unique(rendered[gt == g], return_counts=True)
        out[g] = int(ids[np.argmax(c)])
    return out


# Two fronto-parallel boxes, A 0.8 m and B 0.6 m away, before the wall at 1 m (all at
# z = depth for a camera at (tx, 0, 0)): depth jumps at their outlines, none across them.
WALL_Z = 1.0

BOX_A = (-0.30, -0.05, -0.12, 0.12, 0.8)


BOX_B = (0.05, 0.25, -0.12, 0.12, 0.6)


def boxes_view(tx: float, stain: tuple[float, float, float, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(depth, ground truth: 1 = wall, 2 = A, 3 = B, 4 = ``stain``) at view tx; ``stain``:
    the world x0, x1, y0, y1 of a patch on the wall (no depth of its own)."""
    boxes = [BOX_A, BOX_B] + ([(*stain, WALL_Z)] if stain else [])
    depth, which = render_boxes(K, (H, W), tx, boxes, WALL_Z)
    return depth, (which + 2).astype(np.int32)


def established(im: InstanceMap, n: int) -> list[int]:
    """n fresh ids that masks have joined often enough to be confirmed."""
    ids = [im.ids.new_id() for _ in range(n)]
    im.ids.assigned[ids] = im.cfg.confirm_frames
    im.ids.best_run[ids] = im.cfg.confirm_frames
    im.ids.visible[ids] = im.cfg.settled_frames + 1
    return ids


def side_by_side(h: int = 20, w: int = 40
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two masks, the left and right halves of an (h, w) view (all pixels valid), and two
    depths for them: one flat surface 2 m away, or the right half standing 0.5 m in front
    of the left (a depth step at the masks' boundary)."""
    masks = np.ones((h, w), np.int64)
    masks[:, w // 2:] = 2
    flat = np.full((h, w), 2.0)
    step = flat.copy()
    step[:, w // 2:] = 1.5
    return masks, np.ones((h, w), bool), flat, step
