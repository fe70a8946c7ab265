"""Plane-sweep stereo recovers depth of analytically rendered textured planes from known
poses, says where it cannot (textureless), and the consistency filter drops wrong depth."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from panoptic_mapping.core.stereo import (
    StereoConfig,
    consistency_filter,
    plane_sweep,
    plane_sweep_depth,
)

from stereo_scene import POSES, H, K, W, pose, render, texture  # noqa: E402

CFG = StereoConfig(min_depth_m=0.5, max_depth_m=3.0, num_planes=64)


def sweep(planes, cfg=CFG, poses=POSES):
    views = [render(T, planes) for T in poses]
    src = [(rgb, K, T) for (rgb, _), T in zip(views[1:], poses[1:])]
    depth, conf = plane_sweep_depth(views[0][0], K, poses[0], src, cfg)
    return depth, conf, views


def interior(a: np.ndarray, border: int = 5) -> np.ndarray:
    return a[border:-border, border:-border]


def test_textured_plane_depth_is_recovered_to_2_percent_with_high_confidence():
    depth, conf, views = sweep([(1.2, -np.inf, np.inf, texture(0))])
    assert depth.shape == (H, W) and depth.dtype == np.float32
    assert conf.dtype == np.float32 and conf.min() >= 0.0 and conf.max() <= 1.0
    err = np.abs(interior(depth) - 1.2)
    assert np.median(err) < 0.02 * 1.2
    assert np.mean(err < 0.05 * 1.2) > 0.95
    assert np.median(interior(conf)) > 0.6
    # Sub-plane refinement: finer than a plane spacing in inverse depth (0.026 / m).
    assert np.median(np.abs(1 / interior(depth) - 1 / 1.2)) < 0.008


def test_a_step_between_two_planes_is_recovered_and_a_flat_region_has_low_confidence():
    flat = texture(2)

    def far_colour(X, Y):
        c = flat(X, Y)
        c[Y > 0.3] = (0.6, 0.4, 0.3)                  # a textureless band on the far wall
        return c
    near, far = 0.9, 1.6
    planes = [(near, -np.inf, 0.0, texture(1)), (far, -np.inf, np.inf, far_colour)]
    depth, conf, views = sweep(planes)
    gt = views[0][1]
    step_col = int(np.ceil(K[0, 2]))                   # X = 0 on the near plane
    flat_rows = np.broadcast_to(
        np.arange(H)[:, None] > K[1, 2] + 0.3 / far * K[1, 1] + 3, (H, W))
    near_px = (np.abs(gt - near) < 1e-6) & (np.arange(W) < step_col - 4)
    far_px = (np.abs(gt - far) < 1e-6) & (np.arange(W) > step_col + 4) & ~flat_rows
    for px, d in ((near_px, near), (far_px, far)):
        px = px.copy()
        px[:4], px[-4:], px[:, :4], px[:, -4:] = False, False, False, False
        assert px.sum() > 100
        assert np.median(np.abs(depth[px] - d)) < 0.02 * d
        assert np.median(conf[px]) > 0.5
    flat_px = (flat_rows & (np.arange(W) > step_col + 4)).copy()
    flat_px[-2:] = False
    assert flat_px.sum() > 40
    assert np.median(conf[flat_px]) < 0.1
    assert conf[flat_px].max() < CFG.min_confidence


def test_consistency_filter_removes_a_corrupted_depth_patch():
    planes = [(1.2, -np.inf, np.inf, texture(0))]
    views = [render(T, planes) for T in POSES]
    depths = [d.copy() for _, d in views]
    confs = [np.ones((H, W), np.float32) for _ in views]
    bad = (slice(15, 25), slice(20, 32))
    depths[0][bad] *= 1.15
    kept = consistency_filter(depths, confs, [K] * 4, POSES, 0, CFG)
    assert kept.shape == (H, W) and kept.dtype == np.float32
    assert np.all(kept[bad] == 0.0)
    good = np.ones((H, W), bool)
    good[bad] = False
    assert kept[good].mean() > 0.99             # every other pixel is seen by a source
    # Requiring more agreeing views than exist keeps nothing; a loose tolerance keeps all.
    strict = dataclasses.replace(CFG, consistency_min_views=4)
    assert not consistency_filter(depths, confs, [K] * 4, POSES, 0, strict).any()
    loose = dataclasses.replace(CFG, consistency_rel_tol=0.2)
    assert consistency_filter(depths, confs, [K] * 4, POSES, 0, loose)[bad].min() == 1.0


def test_consistency_filter_on_swept_depths_keeps_most_of_a_plane():
    planes = [(1.2, -np.inf, np.inf, texture(0))]
    views = [render(T, planes) for T in POSES]
    depths, confs = [], []
    for i, T in enumerate(POSES):
        src = [(views[j][0], K, POSES[j]) for j in range(4) if j != i]
        d, c = plane_sweep_depth(views[i][0], K, T, src, CFG)
        depths.append(d)
        confs.append(c)
    depths[0][15:25, 20:32] = 0.7                   # a wrong surface in the reference
    kept = consistency_filter(depths, confs, [K] * 4, POSES, 0, CFG)
    assert np.all(kept[15:25, 20:32] == 0.0)
    ok = kept >= CFG.min_confidence
    assert interior(ok).mean() > 0.7
    assert np.all(np.abs(depths[0][ok] - 1.2) < 0.03 * 1.2)


def test_chunked_sweep_equals_unchunked():
    planes = [(0.9, -np.inf, 0.0, texture(1)), (1.6, -np.inf, np.inf, texture(2))]
    one = sweep(planes, dataclasses.replace(CFG, planes_per_chunk=1))
    odd = sweep(planes, dataclasses.replace(CFG, planes_per_chunk=7))
    whole = sweep(planes, dataclasses.replace(CFG, planes_per_chunk=CFG.num_planes))
    for a in (one, odd):
        np.testing.assert_allclose(a[0], whole[0], rtol=1e-6, atol=0)
        np.testing.assert_allclose(a[1], whole[1], rtol=0, atol=1e-6)


def test_sources_that_see_nothing_give_zero_confidence():
    planes = [(1.2, -np.inf, np.inf, texture(0))]
    rgb, _ = render(POSES[0], planes)
    behind = pose(yaw_deg=180.0)                   # looks away from the plane
    depth, conf = plane_sweep_depth(rgb, K, POSES[0], [(rgb, K, behind)], CFG)
    assert not conf.any() and not depth.any()
    depth, conf = plane_sweep_depth(rgb, K, POSES[0], [], CFG)
    assert not conf.any() and not depth.any()
    with pytest.raises(ValueError, match="empty"):
        plane_sweep_depth(rgb, K, POSES[0], [(rgb, K, POSES[1])],
                          dataclasses.replace(CFG, min_depth_m=3.0, max_depth_m=1.0))


def test_mask_windows_stop_a_textured_object_lending_its_depth_to_the_flat_surface_beside_it():
    # A textured near plane (X < 0) in front of a flat far plane: a plain window on the
    # flat side of the outline holds the near plane's texture and matches its depth.
    near, far = 0.9, 1.6
    flat = lambda X, Y: np.broadcast_to(np.array([0.6, 0.4, 0.3]), X.shape + (3,)).copy()  # noqa: E731
    planes = [(near, -np.inf, 0.0, texture(1)), (far, -np.inf, np.inf, flat)]
    views = [render(T, planes) for T in POSES]
    gt = views[0][1]
    segments = np.where(np.abs(gt - near) < 1e-6, 1, 2).astype(np.int32)
    src = [(rgb, K, T) for (rgb, _), T in zip(views[1:], POSES[1:])]
    plain = plane_sweep(views[0][0], K, POSES[0], src, CFG)
    masked = plane_sweep(views[0][0], K, POSES[0], src, CFG, segments=segments)
    border = np.zeros((H, W), bool)
    border[4:-4, 4:-4] = True
    flat_px = (segments == 2) & border
    fattened = flat_px & (plain.confidence >= CFG.min_confidence) \
        & (np.abs(plain.depth - near) < 0.05 * near)
    assert fattened.sum() >= 10                      # the failure mask windows remove
    assert (masked.confidence[flat_px] < CFG.min_confidence).all()
    near_px = (segments == 1) & border
    ok = near_px & (masked.confidence >= CFG.min_confidence)
    assert ok.sum() > 0.8 * near_px.sum()
    assert np.median(np.abs(masked.depth[ok] - near)) < 0.02 * near
    # the whole windows' answer comes beside the own-segment one, as a plain sweep's
    np.testing.assert_allclose(masked.window_depth, plain.depth, rtol=1e-6)
    np.testing.assert_allclose(masked.window_confidence, plain.confidence, atol=1e-6)
    assert plain.window_depth is None


def test_mask_windows_off_or_no_segments_give_the_plain_sweep():
    planes = [(0.9, -np.inf, 0.0, texture(1)), (1.6, -np.inf, np.inf, texture(2))]
    rgb = [render(T, planes)[0] for T in POSES]
    src = [(im, K, T) for im, T in zip(rgb[1:], POSES[1:])]
    plain = plane_sweep_depth(rgb[0], K, POSES[0], src, CFG)
    off = plane_sweep_depth(rgb[0], K, POSES[0], src, dataclasses.replace(CFG, mask_windows=False),
                            segments=np.ones((H, W), np.int32))
    # every pixel in segment 0 (none): whole windows
    none = plane_sweep_depth(rgb[0], K, POSES[0], src, CFG, segments=np.zeros((H, W), np.int32))
    for a in (off, none):
        np.testing.assert_allclose(a[0], plain[0], rtol=1e-6)
        np.testing.assert_allclose(a[1], plain[1], atol=1e-6)
    with pytest.raises(ValueError, match="segments"):
        plane_sweep(rgb[0], K, POSES[0], src, CFG, segments=np.ones((H + 1, W), np.int32))


def test_read_only_frames_are_converted_without_a_warning():
    """A recording's frames may be read-only (memory-mapped); torch warned on each one
    that it could not protect a shared read-only array."""
    import warnings

    import torch

    from panoptic_mapping.core.device import numpy_tensor
    from panoptic_mapping.core.stereo.plane_sweep import _grey

    rgb = np.full((4, 5, 3), 255, np.uint8)
    depth = np.ones((4, 5), np.float64)
    for a in (rgb, depth):
        a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = _grey(rgb, torch.device("cpu"))
        same = numpy_tensor(depth, np.float64, torch.device("cpu"))
    assert grey.shape == (1, 1, 4, 5) and torch.allclose(grey, torch.ones(1))
    assert same.dtype == torch.float64 and bool((same == 1).all())
    writable = np.ones(3)
    assert np.shares_memory(numpy_tensor(writable, np.float64, torch.device("cpu")).numpy(),
                            writable)  # a writable array is not copied


def test_box_means_are_avg_pool_means():
    """The shifted-copy box filter adds a window's pixels in avg_pool2d's order: the same
    means, at the border over the in-image part."""
    import torch
    import torch.nn.functional as F

    from panoptic_mapping.core.stereo.plane_sweep import _box

    gen = torch.Generator().manual_seed(0)
    for shape, r in (((6, 1, 12, 16), 2), ((2, 1, 5, 7), 3), ((1, 1, 4, 4), 1)):
        x = torch.rand(shape, generator=gen)
        expected = F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
        torch.testing.assert_close(_box(x, r), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sources", [1, 2, 3, 4, 5])
def test_best_half_of_the_sources_is_the_mean_of_the_sorted_best(sources):
    """Running minima (up to 4 sources) and the sort (more) give the mean of the best
    half, rounded up, of the finite costs; no source -> the no-source cost."""
    import math

    import torch

    from panoptic_mapping.core.stereo.plane_sweep import _NO_SOURCE_COST, _robust_mean

    gen = torch.Generator().manual_seed(sources)
    costs = torch.rand((sources, 3, 6, 7), generator=gen) * 2
    costs[torch.rand(costs.shape, generator=gen) < 0.3] = math.inf
    agg, n = _robust_mean(costs)
    for idx in np.ndindex(*costs.shape[1:]):
        finite = sorted(float(c) for c in costs[(slice(None),) + idx] if math.isfinite(c))
        assert int(n[idx]) == len(finite)
        want = (np.mean(finite[:(len(finite) + 1) // 2]) if finite else _NO_SOURCE_COST)
        assert float(agg[idx]) == pytest.approx(want, rel=1e-6)


def test_whole_window_inside_is_a_box_mean_of_one():
    import torch

    from panoptic_mapping.core.stereo.plane_sweep import _all_in_window, _box

    gen = torch.Generator().manual_seed(2)
    for r in (1, 2, 7):
        mask = torch.rand((3, 1, 20, 24), generator=gen) > 0.02
        expected = _box(mask.float(), r) > 1.0 - 1e-4
        assert expected.any() and not expected.all()
        assert torch.equal(_all_in_window(mask, r), expected)


def test_pixels_no_camera_saw_are_neither_matched_nor_given_depth():
    """An undistorted image's canvas reaches beyond its raw view: a black border fixed in
    every image, which matched as texture gives the windows along its edge a confident
    wrong depth. Told which pixels were seen, the sweep gives those windows none."""
    planes = [(1.2, -np.inf, np.inf, texture(0))]
    views = [render(T, planes) for T in POSES]
    seen = np.ones((H, W), bool)
    seen[:, :16], seen[:10, :] = False, False
    rgbs = [np.where(seen[..., None], rgb, 0).astype(np.uint8) for rgb, _ in views]
    src = [(rgb, K, T) for rgb, T in zip(rgbs[1:], POSES[1:])]
    results = {}
    for told in (False, True):
        kw = dict(ref_seen=seen, src_seen=[seen] * 3) if told else {}
        r = plane_sweep(rgbs[0], K, POSES[0], src, CFG, **kw)
        sure = r.confidence >= CFG.min_confidence
        results[told] = (sure, sure & (np.abs(r.depth - 1.2) > 0.05 * 1.2))
    (sure_blind, bad_blind), (sure, bad) = results[False], results[True]
    assert bad_blind.sum() > 30  # the border's edge, matched at the wrong plane
    assert not bad.any() and not (sure & ~seen).any()
    assert sure.sum() > 0.8 * sure_blind.sum()  # the rest of the plane keeps its depth


def test_the_colour_check_skips_sources_at_pixels_they_did_not_see():
    from panoptic_mapping.core.stereo import photometric_residual
    planes = [(1.2, -np.inf, np.inf, texture(0))]
    (ref, depth), (rgb1, _) = render(POSES[0], planes), render(POSES[1], planes)
    seen = np.ones((H, W), bool)
    seen[:, :20] = False
    res = photometric_residual(ref, K, POSES[0], depth, [(rgb1, K, POSES[1])],
                               src_seen=[seen])[0]
    plain = photometric_residual(ref, K, POSES[0], depth, [(rgb1, K, POSES[1])])[0]
    compared = np.isfinite(res)
    assert compared.sum() < np.isfinite(plain).sum()
    assert np.nanmax(res) < 0.05 and np.allclose(res[compared], plain[compared])
