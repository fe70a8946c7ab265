"""Stereo for a stream of posed frames: which sources are matched, what is kept (colour
check, completion inside masks), on analytic textured planes with known depth."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.stereo import (
    SourceView,
    StereoConfig,
    StereoDepth,
    photometric_residual,
)
from panoptic_mapping.core.stereo.completion import complete_in_masks
from stereo_scene import POSES, H, K, W, pose, render, texture

CFG = StereoConfig(min_depth_m=0.5, max_depth_m=3.0, num_planes=64)
PLANE = [(1.5, -10.0, 10.0, texture(3))]


def view_at(T: np.ndarray, stamp: float) -> SourceView:
    return SourceView(np.zeros((H, W, 3), np.uint8), K, T, None, stamp)


# ------------------------------------------------------------------ source selection


def test_sources_are_chosen_for_parallax_and_overlap_nearest_the_target_baseline_first():
    stereo = StereoDepth(StereoConfig(min_baseline_m=0.02, target_baseline_ratio=0.1,
                                      max_baseline_ratio=0.5, max_view_angle_deg=30,
                                      max_sources=3))
    candidates = [view_at(pose(x=0.01), 1),             # too little parallax
                  view_at(pose(x=0.3), 2),              # usable, far from the target
                  view_at(pose(x=-0.12), 3),            # nearest the 0.1 m target
                  view_at(pose(x=0.6), 4),              # beyond half the scene depth (1 m)
                  view_at(pose(x=0.1, yaw_deg=60), 5),  # looks elsewhere
                  view_at(pose(y=0.05), 6),
                  view_at(pose(x=-0.12), 3)]            # the same frame again
    chosen = stereo.choose_sources(K, pose(), candidates)
    assert [v.stamp for v in chosen] == [3, 6, 2]


def test_a_frame_without_sources_is_remembered_and_serves_the_next():
    stereo = StereoDepth(CFG)
    frames = [Frame(rgb=render(T, PLANE)[0], K=K, camera_to_world=T, stamp=float(i))
              for i, T in enumerate(POSES)]
    assert stereo.estimate(frames[0]) is None
    assert stereo.estimate(frames[1]) is None  # one source, two needed
    est = stereo.estimate(frames[2])
    assert est is not None and est.sources == 2
    stats = stereo.stats()
    assert stats["estimated"] == 1 and stats["without_sources"] == 2


# ------------------------------------------------------------------ what is kept


def test_streamed_depth_of_a_textured_plane_is_within_2_percent():
    stereo = StereoDepth(CFG)
    for i, T in enumerate(POSES):
        rgb, truth = render(T, PLANE)
        est = stereo.estimate(Frame(rgb=rgb, K=K, camera_to_world=T, stamp=float(i)))
    kept = est.depth > 0
    assert kept.mean() > 0.35  # the border strips no source sees are left out
    assert np.median(np.abs(est.depth[kept] - truth[kept]) / truth[kept]) < 0.02


def test_the_colour_check_flags_a_wrong_depth():
    views = [render(T, PLANE) for T in POSES]
    src = [(rgb, K, T) for (rgb, _), T in zip(views[1:], POSES[1:])]
    rgb, truth = views[0]
    right = photometric_residual(rgb, K, POSES[0], truth, src)
    wrong = photometric_residual(rgb, K, POSES[0], truth * 1.3, src)
    assert right.shape == (3, H, W)
    # the texture has 2-12 px wavelengths: resampling alone leaves a few percent
    assert np.nanmedian(right) < 0.06
    assert np.nanmedian(wrong) > 2 * np.nanmedian(right)
    # no depth: nothing to compare
    assert np.isnan(photometric_residual(rgb, K, POSES[0], np.zeros_like(truth), src)).all()


def test_masks_are_filled_from_the_plane_their_confident_pixels_agree_on():
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    truth = 1.0 / (0.5 + 0.004 * u - 0.002 * v)       # a tilted plane: 1/d affine in (u, v)
    masks = np.zeros((H, W), np.int32)
    masks[:, :20], masks[:, 20:40], masks[:, 40:] = 1, 2, 3
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random((H, W)) < 0.1, truth, 0.0).astype(np.float32)
    # mask 2: its confident pixels half on the plane, half 30 % farther (two surfaces)
    two = (masks == 2) & (sparse > 0) & (u % 2 == 0)
    sparse[two] *= 1.3
    # mask 3: too few confident pixels
    sparse[(masks == 3) & (v > 2)] = 0.0
    out = complete_in_masks(sparse, masks, min_support=20, min_support_share=0.02,
                            tol_rel=0.02, min_inlier_share=0.7, depth_range=(0.5, 5.0))
    m1 = masks == 1
    assert (out[m1] > 0).all()
    assert np.abs(out[m1] - truth[m1]).max() / truth[m1].min() < 1e-4
    assert np.array_equal(out[masks == 2], sparse[masks == 2])  # not one plane: unchanged
    assert np.array_equal(out[masks == 3], sparse[masks == 3])  # too little support
    # the fit's depths outside the range are left empty
    far = complete_in_masks(sparse, masks, 20, 0.02, 0.02, 0.7, depth_range=(0.5, 1.2))
    assert ((far[m1] == 0) == ((sparse[m1] == 0) & (truth[m1] > 1.2))).all()


def test_a_frame_with_masks_gets_depth_inside_them_only_where_confident_or_filled():
    stereo = StereoDepth(CFG)
    masks = np.zeros((H, W), np.int32)
    masks[8:40, 8:56] = 1
    for i, T in enumerate(POSES):
        rgb, truth = render(T, PLANE)
        est = stereo.estimate(Frame(rgb=rgb, K=K, camera_to_world=T, stamp=float(i),
                                    masks=masks, mask_embeddings=None))
    inside = masks == 1
    assert (est.depth[inside] > 0).all()
    assert np.abs(est.depth[inside] - truth[inside]).max() / 1.5 < 0.03


# ------------------------------------------------------------------ depth range


def test_the_sweep_range_follows_the_scene_depth():
    cfg = StereoConfig(min_depth_m=0.2, max_depth_m=10.0, depth_range_ratio=4.0)
    stereo = StereoDepth(cfg)
    first = stereo.sweep_config()  # no estimate yet: around the range's geometric mean
    assert np.isclose(first.min_depth_m, np.sqrt(2.0) / 4)
    assert np.isclose(first.max_depth_m, np.sqrt(2.0) * 4)
    for i, T in enumerate(POSES):
        stereo.estimate(Frame(rgb=render(T, PLANE)[0], K=K, camera_to_world=T,
                              stamp=float(i)))
    assert abs(stereo.scene_depth() - 1.5) < 0.03
    swept = stereo.sweep_config()
    assert abs(swept.min_depth_m - 1.5 / 4) < 0.01 and abs(swept.max_depth_m - 6.0) < 0.1
    # ratio 0: the whole configured range, always
    whole = StereoDepth(StereoConfig(min_depth_m=0.2, max_depth_m=10.0,
                                     depth_range_ratio=0.0)).sweep_config()
    assert (whole.min_depth_m, whole.max_depth_m) == (0.2, 10.0)
