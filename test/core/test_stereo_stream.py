"""Stereo for a stream of posed frames: which sources are matched, what is kept (colour
check, completion inside masks), on analytic textured planes with known depth."""
from __future__ import annotations

import dataclasses

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
    # 6 px at fx 60, at the scene depth before any estimate (sqrt(0.2 * 10) m): 0.14 m
    stereo = StereoDepth(StereoConfig(min_baseline_m=0.02, target_disparity_px=6.0,
                                      max_baseline_ratio=0.5, max_view_angle_deg=30,
                                      max_sources=3))
    candidates = [view_at(pose(x=0.01), 1),             # too little parallax
                  view_at(pose(x=0.3), 2),              # usable, far from the target
                  view_at(pose(x=-0.12), 3),            # nearest the 0.14 m target
                  view_at(pose(x=0.6), 4),              # beyond half the scene depth (0.71 m)
                  view_at(pose(x=0.1, yaw_deg=60), 5),  # looks elsewhere
                  view_at(pose(y=0.05), 6),
                  view_at(pose(x=-0.12), 3)]            # the same frame again
    chosen = stereo.choose_sources(K, pose(), candidates)
    assert [v.stamp for v in chosen] == [3, 6, 2]


def test_the_target_baseline_shrinks_as_the_focal_length_grows():
    # 12 px of disparity: a fifth of the scene depth at fx 60, a twentieth at fx 240 (the
    # same camera at four times the resolution): the same depth step per pixel
    stereo = StereoDepth(StereoConfig(target_disparity_px=12.0, max_sources=1))
    scene = stereo.scene_depth()
    near, far = view_at(pose(x=0.05 * scene), 1), view_at(pose(x=0.2 * scene), 2)
    K4 = K.copy()
    K4[:2] *= 4.0
    assert [v.stamp for v in stereo.choose_sources(K, pose(), [near, far])] == [2]
    assert [v.stamp for v in stereo.choose_sources(K4, pose(), [near, far])] == [1]


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


def test_a_plane_is_only_extrapolated_as_far_as_its_support_determines_it():
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    truth = 1.0 / (0.5 + 0.004 * u - 0.002 * v)
    masks = np.ones((H, W), np.int32)
    rng = np.random.default_rng(1)
    noisy = (truth * (1.0 + 0.005 * rng.standard_normal((H, W)))).astype(np.float32)
    # Confident pixels on two rows at the bottom: the tilt across the mask is barely
    # determined, so rows far above them are a guess.
    band = np.where((v >= H - 3) & (v < H - 1), noisy, 0.0).astype(np.float32)
    args = dict(min_support=20, min_support_share=0.02, tol_rel=0.05, min_inlier_share=0.7,
                depth_range=(0.5, 5.0))
    guarded = complete_in_masks(band, masks, **args)
    unguarded = complete_in_masks(band, masks, **args, max_error_share=np.inf)
    assert (unguarded > 0).all()
    assert (guarded[H - 6:] > 0).mean() > 0.9      # near the support: filled
    assert (guarded[:7] == 0).all()                # far from it: left empty
    # The same number of confident pixels spread over the mask: filled everywhere.
    spread = np.where(rng.random((H, W)) < 128 / (H * W), noisy, 0.0).astype(np.float32)
    out = complete_in_masks(spread, masks, **args)
    assert (out > 0).all()
    assert (np.abs(out - truth) / truth).max() < 0.025   # its own pixels keep their noise


def test_borrowed_depth_fills_a_textureless_mask_only_when_its_own_pixels_say_too_little():
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    truth = (1.0 / (0.5 + 0.004 * u - 0.002 * v)).astype(np.float32)
    masks = np.ones((H, W), np.int32)
    masks[:, W // 2:] = 2
    rim = (u < 2) | (u >= W - 2) | (v < 2) | (v >= H - 2) | (np.abs(u - W // 2) < 2)
    # mask 1 has no depth of its own, only depth borrowed along its rim (a wall whose
    # creases with its neighbours are textured); mask 2 has its own on a few pixels.
    own = np.where((masks == 2) & (u % 4 == 0) & (v % 4 == 0), truth, 0.0).astype(np.float32)
    borrowed = np.where(rim & (own == 0), truth, 0.0).astype(np.float32)
    # In mask 2, borrowed depth from a nearer occluder, 30 % off: its own pixels decide.
    borrowed[(masks == 2) & rim] *= 0.7
    args = dict(min_support=20, min_support_share=0.02, tol_rel=0.05, min_inlier_share=0.7,
                depth_range=(0.5, 5.0))
    out = complete_in_masks(own, masks, **args, support=borrowed)
    assert (out > 0).all()
    assert np.abs(out - truth).max() / truth.min() < 1e-3
    # Borrowed depth says where the surface is or that it lies behind (across an
    # occluder's outline the occluder's depth is borrowed): half of it 30 % nearer, the
    # plane through the rest is filled in; depth scattered over the whole range lies on
    # no plane, and borrowed depth is never kept by itself: the pixels stay empty.
    rim_only = np.where(rim, truth, 0.0).astype(np.float32)
    nearer = rim_only * np.where((u + v) % 2 == 0, 0.7, 1.0).astype(np.float32)
    out = complete_in_masks(np.zeros_like(own), masks, **args, support=nearer)
    assert (out > 0).all()
    assert np.abs(out - truth).max() / truth.min() < 1e-3
    scattered = np.where(rim, np.random.default_rng(2).uniform(0.5, 4.0, (H, W)), 0.0)
    lone = complete_in_masks(np.zeros_like(own), masks, **args,
                             support=scattered.astype(np.float32))
    assert not lone.any()


def test_depth_at_a_mask_edge_may_be_the_neighbour_in_front_and_does_not_tilt_its_plane():
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    truth = (1.0 / (0.5 + 0.004 * u - 0.002 * v)).astype(np.float32)
    masks = np.ones((H, W), np.int32)
    masks[10:38, 16:48] = 2                          # an object standing on a flat surface
    ring = (masks == 1) & (u >= 14) & (u < 50) & (v >= 8) & (v < 40)
    # The surface's own depth lies along the object's outline only: where the object
    # stands on it (most of it) its own; along the top, the object's outline, 20 % nearer
    # (a third of the support: the robust start must still find the surface's side).
    own = np.where(ring, truth * np.where(v < 14, 0.8, 1.0), 0.0).astype(np.float32)
    args = dict(min_support=20, min_support_share=0.02, tol_rel=0.05, min_inlier_share=0.7,
                depth_range=(0.5, 5.0), max_error_share=np.inf)
    filled = (masks == 1) & (own == 0)
    plain = complete_in_masks(own, masks, **args)
    wrong = filled & (plain > 0) & (np.abs(plain - truth) > 0.05 * truth)
    assert wrong.any()                               # a plane tilted to the outline
    out = complete_in_masks(own, masks, **args, border_px=2)
    assert (out[filled] > 0).all()
    assert (np.abs(out[filled] - truth[filled]) / truth[filled]).max() < 0.01


def test_a_streamed_frame_with_masks_gives_no_flat_surface_its_neighbours_depth():
    near, far = 0.9, 1.6
    flat = lambda X, Y: np.broadcast_to(np.array([0.6, 0.4, 0.3]), X.shape + (3,)).copy()  # noqa: E731
    planes = [(near, -np.inf, 0.0, texture(1)), (far, -np.inf, np.inf, flat)]

    def last_estimate(cfg: StereoConfig):
        stereo = StereoDepth(cfg)
        for i, T in enumerate(POSES):
            rgb, truth = render(T, planes)
            masks = np.where(np.abs(truth - near) < 1e-6, 1, 2).astype(np.int32)
            est = stereo.estimate(Frame(rgb=rgb, K=K, camera_to_world=T, stamp=float(i),
                                        masks=masks, mask_embeddings=None))
        return est, truth, masks

    def fattened(est, truth, masks):
        flat_px = masks == 2
        return flat_px & (est.depth > 0) & (np.abs(est.depth - truth) > 0.05 * truth)

    # The matches alone (no plane fills): a flat surface whose only neighbour is the
    # occluder gets nothing to fit but the occluder's outline (a band of it beside the
    # outline is filled by its plane when completion is on: a known limit).
    matches = dataclasses.replace(CFG, complete_in_masks=False)
    est, truth, masks = last_estimate(matches)
    assert not fattened(est, truth, masks).any()
    near_px = masks == 1
    assert (np.abs(est.depth[near_px] - near) < 0.05 * near).mean() > 0.6
    plain = last_estimate(dataclasses.replace(matches, mask_windows=False))
    assert fattened(*plain).sum() >= 10                # what the mask windows prevent
