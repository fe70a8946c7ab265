"""The working resolution: frames fused at a decimation chosen from the voxel size, answers
at full resolution on the masks' own boundaries."""
from __future__ import annotations

import numpy as np

from helpers import render_boxes
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.geometry import backproject, pose_matrix
from panoptic_mapping.core.mapper import Mapper, MapperConfig
from panoptic_mapping.core.resolution import (
    decimate_frame,
    decimate_intrinsics,
    labels_at_full_resolution,
    median_depth,
    upsample_nearest,
    working_factor,
)

K640 = np.array([[415.7, 0.0, 319.5], [0.0, 415.7, 239.5], [0.0, 0.0, 1.0]])


def test_factor_keeps_a_pixel_within_the_stated_share_of_a_voxel():
    # 1 cm voxels at 1.66 m: a 640x480 pixel spans 4 mm, 2.5 pixels a voxel edge
    assert working_factor(1.66, K640, (480, 640), 0.01, 0.5) == 5  # 2.5 / 0.5
    assert working_factor(1.66, K640, (480, 640), 0.01, 1.0) == 2
    assert working_factor(1.66, K640, (480, 640), 0.01, 3.0) == 1  # never below 1
    assert working_factor(1.66, K640, (480, 640), 0.01, 0.0) == 1  # 0: full resolution
    assert working_factor(0.2, K640, (480, 640), 0.01, 0.5) == 15  # near: 41 px a voxel
    # the working image keeps 32 pixels on its shorter side
    assert working_factor(0.01, K640, (480, 640), 0.01, 0.5) == 15
    assert working_factor(float("nan"), K640, (480, 640), 0.01, 0.5) == 1
    # the benchmark's 160x120 tabletop (fy 104 at 1.7 m: 0.6 px a voxel) stays whole
    K160 = np.array([[103.9, 0, 79.5], [0, 103.9, 59.5], [0, 0, 1]])
    assert working_factor(1.7, K160, (120, 160), 0.01, 0.5) == 1
    assert working_factor(1.7, K160, (120, 160), 0.01, 0.75) == 1  # the default


def test_median_depth_ignores_unknown_pixels():
    d = np.zeros((48, 64), np.float32)
    d[:, :32] = 2.0
    d[:, 32:40] = 1.0
    assert median_depth(d) == 2.0
    assert np.isnan(median_depth(np.zeros((4, 4), np.float32)))


def test_decimated_pixels_backproject_to_the_same_points():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, (480, 640)).astype(np.float32)
    pose = pose_matrix([0.3, -0.2, 1.0], [0.1, 0.2, 0.05, 0.97])
    for s in (2, 3, 4, 5):
        o = s // 2
        full, _ = backproject(depth, K640, pose)
        work, _ = backproject(np.ascontiguousarray(depth[o::s, o::s]),
                              decimate_intrinsics(K640, s), pose)
        expect = full.reshape(480, 640, 3)[o::s, o::s].reshape(-1, 3)
        np.testing.assert_allclose(work, expect, atol=1e-9)


def test_labels_come_back_on_the_full_masks_boundaries():
    masks = np.zeros((40, 40), np.int32)
    masks[3:21, 5:30] = 1   # edges off the 4-pixel block grid
    masks[21:38, 5:30] = 2
    masks[30:32, 33:35] = 3  # too small for the working image: no label
    s = 4
    work_masks = masks[2::4, 2::4]
    labels = np.select([work_masks == 1, work_masks == 2], [7, 9], 0)
    full = labels_at_full_resolution(labels, masks, s)
    expect = np.select([masks == 1, masks == 2], [7, 9], 0)
    np.testing.assert_array_equal(full, expect)
    assert full.dtype == np.int32


def test_a_mask_the_association_divided_keeps_its_division():
    masks = np.ones((32, 32), np.int32)
    labels = np.zeros((8, 8), np.int64)
    labels[:, :4], labels[:, 4:] = 5, 6  # one mask, two ids (left and right)
    full = labels_at_full_resolution(labels, masks, 4)
    assert (full[:, :16] == 5).all() and (full[:, 16:] == 6).all()


def test_upsample_nearest_covers_a_size_that_is_no_multiple():
    img = np.arange(6).reshape(2, 3)
    up = upsample_nearest(img, 4, (9, 13))  # last block rows/columns reach the border
    assert up.shape == (9, 13)
    assert up[0, 0] == 0 and up[8, 12] == 5 and up[3, 4] == 1


def test_decimate_frame_keeps_ids_and_embeddings():
    masks = np.zeros((64, 96), np.int32)
    masks[10:40, 20:60] = 1
    masks[50:60, 70:90] = 2
    emb = np.eye(2, 4, dtype=np.float32)
    f = Frame(rgb=np.zeros((64, 96, 3), np.uint8), K=K640, camera_to_world=np.eye(4),
              depth=np.ones((64, 96), np.float32), masks=masks, mask_embeddings=emb)
    w = decimate_frame(f, 4)
    assert w.shape == (16, 24) and w.depth.shape == (16, 24) and w.masks.shape == (16, 24)
    assert w.mask_embeddings is emb and set(np.unique(w.masks)) == {0, 1, 2}
    assert decimate_frame(f, 1) is f


def _box_frames(shape=(192, 256)):
    """Frames of three boxes before a wall from five camera positions, perfect masks."""
    h, w = shape
    K = np.array([[300.0, 0, (w - 1) / 2], [0, 300.0, (h - 1) / 2], [0, 0, 1]])
    boxes = [(-0.25, -0.05, -0.15, 0.1, 0.7), (0.0, 0.2, -0.2, 0.05, 0.8),
             (0.22, 0.4, -0.05, 0.2, 0.9)]
    frames = []
    for k, tx in enumerate(np.linspace(-0.1, 0.1, 5)):
        depth, which = render_boxes(K, shape, tx, boxes, wall_z=1.2)
        masks = (which + 2).astype(np.int32)  # wall 1, boxes 2..4
        pose = np.eye(4)
        pose[0, 3] = tx
        frames.append(Frame(rgb=np.full((h, w, 3), 90, np.uint8), K=K, camera_to_world=pose,
                            stamp=float(k), depth=depth, masks=masks))
    return frames


def test_mapper_at_full_resolution_equals_the_map_of_the_decimated_frames():
    """A 256x192 view whose median depth (1.2 m) gives 2.5 pixels a voxel edge is fused
    at a quarter of its width (0.6 pixels a voxel): exactly the map of the decimated
    frames, its labels on the full masks."""
    frames = _box_frames()
    full = Mapper(MapperConfig(device="cpu", working_pixels_per_voxel=0.6))
    work = Mapper(MapperConfig(device="cpu", working_pixels_per_voxel=0.0))
    for f in frames:
        a = full.ingest(f)
        b = work.ingest(decimate_frame(f, 4))
        assert full.stats()["working_decimation"] == 4
        assert work.stats()["working_decimation"] == 1
        np.testing.assert_array_equal(a.labels, labels_at_full_resolution(b.labels, f.masks, 4))
        assert a.labels.shape == f.masks.shape
        # every mask one id, on its full-resolution boundary
        for m in np.unique(f.masks):
            assert len(np.unique(a.labels[f.masks == m])) == 1
    assert full.instances.num_voxels == work.instances.num_voxels
    np.testing.assert_array_equal(full.instances.confirmed_ids(), work.instances.confirmed_ids())
    assert len(full.instances.confirmed_ids()) == 4  # the wall and three boxes
    loc_a = full.localize(frames[2])
    loc_b = work.localize(decimate_frame(frames[2], 4))
    assert loc_a.matches == loc_b.matches
    np.testing.assert_array_equal(loc_a.ids, labels_at_full_resolution(loc_b.ids,
                                                                       frames[2].masks, 4))


def test_count_pairs_counts_each_distinct_pair_sorted():
    from panoptic_mapping.core.geometry import count_pairs

    a = np.array([3, 1, 3, 1, 0, 3])
    b = np.array([7, 2, 7, 9, 0, 2])
    ia, ib, n = count_pairs(a, b)
    assert list(zip(ia, ib, n)) == [(0, 0, 1), (1, 2, 1), (1, 9, 1), (3, 2, 1), (3, 7, 2)]
    ia, ib, n = count_pairs(np.zeros(0, int), np.zeros(0, int))
    assert ia.size == ib.size == n.size == 0
