"""Baselines on a synthetic scene ray-cast with numpy: a floor plane and two boxes.

The baselines are fed frames through a proxy that raises on any access to the ground
truth, so these tests also check that no baseline peeks at it.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from panoptic_mapping.bench.baselines import (
    FrameGeometry,
    IoUTrackingBaseline,
    PerFrameMasksBaseline,
    VoxelFusionBaseline,
    match_masks,
    warp_labels,
)
from panoptic_mapping.bench.types import MaskFrame
from panoptic_mapping.bench.metrics import majority_mapping

H, W = 120, 160
K = np.array([[130.0, 0.0, 79.5], [0.0, 130.0, 59.5], [0.0, 0.0, 1.0]])
FLOOR, BOX_A, BOX_B = 1, 2, 3
# Axis-aligned boxes (world z up): id -> (min corner, max corner).
BOXES = {
    BOX_A: (np.array([-0.10, -0.10, 0.0]), np.array([0.10, 0.10, 0.20])),
    BOX_B: (np.array([0.25, 0.05, 0.0]), np.array([0.40, 0.20, 0.15])),
}
TARGET = np.array([0.12, 0.05, 0.05])


# ------------------------------------------------------------------ synthetic scene


def look_at(eye: np.ndarray, target: np.ndarray = TARGET) -> np.ndarray:
    """camera_to_world (4, 4), OpenCV optical axes, world z up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def orbit_pose(angle_deg: float, radius: float = 0.8, height: float = 0.55) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return look_at(TARGET + np.array([-radius * np.cos(a), -radius * np.sin(a), height]))


def ray_cast(pose: np.ndarray, boxes=BOXES) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) float32 along the optical axis and GT instance ids (H, W) int32.

    Rays d = R K^-1 [u, v, 1] have unit optical-axis component, so the ray parameter of
    a hit is its depth.
    """
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = d_cam.reshape(-1, 3) @ pose[:3, :3].T
    o = pose[:3, 3]
    best = np.full(len(d), np.inf)
    ids = np.zeros(len(d), np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 2] < 0, -o[2] / d[:, 2], np.inf)
        floor_hit = np.abs(o[:2] + t_floor[:, None] * d[:, :2]).max(1) < 1.5
        t_floor = np.where(floor_hit, t_floor, np.inf)
        best, ids = np.where(t_floor < best, t_floor, best), np.where(t_floor < best, FLOOR, ids)
        for obj, (lo, hi) in boxes.items():
            t1, t2 = (lo - o) / d, (hi - o) / d
            t_near = np.nanmax(np.minimum(t1, t2), axis=1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=1)
            t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
            ids = np.where(t < best, obj, ids)
            best = np.minimum(t, best)
    depth = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
    return depth.reshape(H, W), ids.reshape(H, W)


class SensorFrame:
    """A SceneFrame stand-in exposing sensor data and pose; ground truth raises."""

    def __init__(self, index: int, pose: np.ndarray, depth: np.ndarray | None):
        self.index = index
        self.K = K
        self.camera_to_world = pose
        self.depth = depth
        self.rgb = np.zeros((H, W, 3), np.uint8)

    @property
    def instance(self):
        raise AssertionError("a baseline read the ground-truth instance image")

    @property
    def semantic(self):
        raise AssertionError("a baseline read the ground-truth semantic image")


def make_view(index: int, angle: float, rng: np.random.Generator, boxes=BOXES,
              with_depth: bool = True, pose: np.ndarray | None = None):
    """A view of the scene: (sensor frame, masks with shuffled ids, GT instance image)."""
    pose = orbit_pose(angle) if pose is None else pose
    depth, gt = ray_cast(pose, boxes)
    present = np.unique(gt[gt > 0])
    shuffled = rng.permutation(len(present)) + 1       # mask ids meaningless across frames
    lut = np.zeros(int(gt.max()) + 1, np.int32)
    lut[present] = shuffled
    labels = lut[gt]
    frame = SensorFrame(index, pose, depth if with_depth else None)
    return frame, MaskFrame(labels=labels, scores=np.ones(len(present), np.float32)), gt


def gt_to_pred(pred: np.ndarray, gt: np.ndarray) -> dict[int, int]:
    return majority_mapping([pred], [gt])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------ helpers


def test_synthetic_scene_sees_all_objects():
    depth, gt = ray_cast(orbit_pose(0.0))
    assert set(np.unique(gt)) == {0, FLOOR, BOX_A, BOX_B}  # 0: sky beyond the floor
    assert (gt == BOX_A).sum() > 500 and (gt == BOX_B).sum() > 200
    assert 0.4 < depth[depth > 0].min() and depth.max() < 3.0


def test_warp_labels_reproduces_the_other_view():
    f0, _, gt0 = make_view(0, 0.0, np.random.default_rng(0))
    f1, _, gt1 = make_view(1, 10.0, np.random.default_rng(0))
    warped = warp_labels(gt0, FrameGeometry.from_frame(f0), FrameGeometry.from_frame(f1))
    # Pixels that received a label agree with the other view's GT almost everywhere.
    landed = warped > 0
    assert landed.mean() > 0.7
    assert (warped[landed] == gt1[landed]).mean() > 0.97


def test_match_masks_hungarian_and_thresholds():
    masks = np.array([[1, 1, 1, 1], [2, 2, 2, 2]])
    ref = np.array([[5, 5, 5, 0], [5, 6, 0, 0]])
    # IoU(1, 5) = 3/5 = 0.6; IoU(2, 5) = 1/7; IoU(2, 6) = 1/4 = 0.25 < 0.3.
    assert match_masks(masks, ref, iou_threshold=0.3) == {1: 5}
    # Containment(2, 6) = 1 / min(4, 1) = 1 >= 0.6 makes (2, 6) admissible.
    assert match_masks(masks, ref, 0.3, containment_threshold=0.6) == {1: 5, 2: 6}


# ------------------------------------------------------------------ per-frame masks


def test_per_frame_ids_unique_per_frame():
    rng = np.random.default_rng(1)
    base = PerFrameMasksBaseline()
    seen: set[int] = set()
    for i, angle in enumerate((0.0, 5.0, 10.0)):
        frame, masks, _ = make_view(i, angle, rng)
        ids = base.ingest(frame, masks)
        assert ids.dtype == np.int32
        assert ((ids == 0) == (masks.labels == 0)).all()
        frame_ids = set(np.unique(ids[ids > 0]).tolist())
        # One id per mask, and no id shared with any other frame.
        assert len(frame_ids) == len(np.unique(masks.labels[masks.labels > 0]))
        assert not frame_ids & seen
        seen |= frame_ids
        assert (base.prediction(i) == ids).all()


# ------------------------------------------------------------------ IoU tracking


@pytest.mark.parametrize("with_depth", [True, False])
def test_tracking_keeps_ids_under_small_motion_and_adds_new_objects(with_depth):
    rng = np.random.default_rng(2)
    tracker = IoUTrackingBaseline()
    only_a = {BOX_A: BOXES[BOX_A]}
    mappings = []
    # Frames 0-2: box B is not there yet; frame 3: it has been put down.
    for i, angle in enumerate((0.0, 3.0, 6.0, 9.0)):
        frame, masks, gt = make_view(i, angle, rng, boxes=only_a if i < 3 else BOXES,
                                     with_depth=with_depth)
        mappings.append(gt_to_pred(tracker.ingest(frame, masks), gt))
    for m in mappings[1:]:
        assert m[FLOOR] == mappings[0][FLOOR] and m[BOX_A] == mappings[0][BOX_A]
    earlier = {v for m in mappings[:3] for v in m.values()}
    assert BOX_B in mappings[3] and mappings[3][BOX_B] not in earlier


def test_tracking_depth_warp_survives_large_sideways_motion():
    # A 0.2 m sideways step moves box A by ~35 px, about its own width: image-space IoU
    # drops below the threshold, the depth warp still lines the masks up.
    rng = np.random.default_rng(3)
    p0 = orbit_pose(0.0)
    p1 = p0.copy()
    p1[:3, 3] += 0.2 * p0[:3, 0]  # along the camera's x axis
    results = {}
    for use_depth in (True, False):
        tracker = IoUTrackingBaseline(use_depth=use_depth)
        f0, m0, g0 = make_view(0, 0.0, rng, pose=p0)
        f1, m1, g1 = make_view(1, 0.0, rng, pose=p1)
        a0 = gt_to_pred(tracker.ingest(f0, m0), g0)[BOX_A]
        a1 = gt_to_pred(tracker.ingest(f1, m1), g1)[BOX_A]
        results[use_depth] = a0 == a1
    assert results == {True: True, False: False}


# ------------------------------------------------------------------ voxel fusion


def test_voxel_fusion_same_id_from_two_poses_with_shuffled_mask_ids():
    rng = np.random.default_rng(4)
    fusion = VoxelFusionBaseline()
    maps = []
    for i, angle in enumerate((0.0, 35.0)):
        frame, masks, gt = make_view(i, angle, rng)
        maps.append(gt_to_pred(fusion.ingest(frame, masks), gt))
    assert maps[0] == maps[1]
    assert len(set(maps[0].values())) == 3  # three objects, three ids
    assert set(fusion.instance_ids().tolist()) == set(maps[0].values())


def test_voxel_fusion_majority_vote_fixes_a_single_frame_mislabel():
    rng = np.random.default_rng(5)
    fusion = VoxelFusionBaseline(voxel_size=0.02)
    views = [make_view(i, a, rng) for i, a in enumerate((0.0, 2.0, 4.0))]
    # Frame 1: the top-left part of box A is wrongly given the floor's mask.
    frame1, masks1, gt1 = views[1]
    rows, cols = np.nonzero(gt1 == BOX_A)
    patch = (gt1 == BOX_A) & (np.arange(H)[:, None] < np.percentile(rows, 30)) \
        & (np.arange(W)[None, :] < np.median(cols))
    floor_mask = masks1.labels[gt1 == FLOOR][0]
    masks1.labels[patch] = floor_mask
    assert patch.sum() > 50
    for i, (frame, masks, gt) in enumerate(views):
        ids = fusion.ingest(frame, masks)
        if i == 1:
            online = ids
    box_id = gt_to_pred(fusion.prediction(0), views[0][2])[BOX_A]
    floor_id = gt_to_pred(fusion.prediction(0), views[0][2])[FLOOR]
    assert (online[patch] == floor_id).all()  # the mislabel entered the map...
    rendered = fusion.predict(frame1)
    assert (rendered[patch] == box_id).mean() > 0.9  # ...and was outvoted 2:1


def _fused_orbit(rng, angles=(0.0, 20.0, 40.0, 60.0), **kwargs):
    fusion = VoxelFusionBaseline(**kwargs)
    views = [make_view(i, a, rng) for i, a in enumerate(angles)]
    times = []
    for frame, masks, _ in views:
        t0 = time.perf_counter()
        fusion.ingest(frame, masks)
        times.append(time.perf_counter() - t0)
    return fusion, views, times


@pytest.mark.parametrize("association", ["lookup", "projection"])
def test_voxel_map_rendered_into_training_views_reproduces_masks(association):
    fusion, views, _ = _fused_orbit(np.random.default_rng(6), association=association)
    ids = gt_to_pred(fusion.prediction(0), views[0][2])
    for frame, masks, gt in views:
        rendered = fusion.predict(frame)
        for obj in (FLOOR, BOX_A, BOX_B):
            assert iou(rendered == ids[obj], gt == obj) > 0.9, (frame.index, obj)
    # Without depth the map is projected (z-buffered splats) instead: coarser, still close.
    no_depth = FrameGeometry(K=K, camera_to_world=views[1][0].camera_to_world, shape=(H, W))
    rendered = fusion.predict(no_depth)
    gt = views[1][2]
    for obj in (BOX_A, BOX_B):
        assert iou(rendered == ids[obj], gt == obj) > 0.7


def test_voxel_fusion_labels_novel_view_masks():
    rng = np.random.default_rng(7)
    fusion, views, _ = _fused_orbit(rng)
    ids = gt_to_pred(fusion.prediction(0), views[0][2])
    frame, masks, gt = make_view(99, 30.0, rng)  # between training poses
    # An extra mask over the sky (no depth, nothing in the map) gets a fresh id.
    depth, _ = ray_cast(frame.camera_to_world)
    masks.labels[(depth == 0) & (np.arange(H)[:, None] < 10)] = 9
    pred = fusion.predict_with_masks(frame, masks)
    for obj in (FLOOR, BOX_A, BOX_B):
        assert (pred[gt == obj] == ids[obj]).all()
    sky = pred[masks.labels == 9]
    assert sky.size and len(np.unique(sky)) == 1 and sky[0] not in ids.values()


def test_voxel_fusion_mean_embeddings():
    rng = np.random.default_rng(8)
    fusion = VoxelFusionBaseline()
    base = {FLOOR: np.array([1.0, 0, 0, 0]), BOX_A: np.array([0, 1.0, 0, 0]),
            BOX_B: np.array([0, 0, 1.0, 0])}
    extra = [np.array([0, 0, 0, 1.0]), np.array([0, 0, 0, -1.0])]
    for i, angle in enumerate((0.0, 10.0)):
        frame, masks, gt = make_view(i, angle, rng)
        emb = np.zeros((masks.labels.max(), 4), np.float32)
        for obj in (FLOOR, BOX_A, BOX_B):
            m = masks.labels[gt == obj][0]
            e = base[obj] + (extra[i] if obj == BOX_A else 0.0)
            emb[m - 1] = e / np.linalg.norm(e)
        masks.embeddings = emb
        fusion.ingest(frame, masks)
    ids = gt_to_pred(fusion.prediction(0), gt)
    emb = fusion.instance_embeddings()
    # Box A: mean of (0, 1, 0, 1)/sqrt2 and (0, 1, 0, -1)/sqrt2 = (0, 1/sqrt2, 0, 0),
    # normalised -> (0, 1, 0, 0). The others: their fixed vectors.
    np.testing.assert_allclose(emb[ids[BOX_A]], [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(emb[ids[BOX_B]], [0, 0, 1, 0], atol=1e-6)
    assert len(emb) == 3


def test_voxel_fusion_speed_is_printed():
    angles = tuple(np.linspace(0.0, 90.0, 10))
    fusion, _, times = _fused_orbit(np.random.default_rng(9), angles=angles)
    ms = 1000 * np.array(times)
    print(f"\nVoxelFusionBaseline ingest, 160x120: median {np.median(ms):.1f} ms, "
          f"max {ms.max():.1f} ms, {fusion.num_voxels} voxels")
    assert np.median(ms) < 500  # loose: only catches a pathological slowdown
