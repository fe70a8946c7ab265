"""Worked examples of z-buffered splatting (core.geometry.splat_depth)."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import splat_depth, up_direction

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])


def grid_on_plane(z: float, half: float, step: float) -> np.ndarray:
    """(N, 3) points of a square grid on the plane Z = z, centred on the optical axis."""
    xs = np.arange(-half, half + 1e-9, step)
    X, Y = np.meshgrid(xs, xs)
    return np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], 1)


def test_a_plane_of_voxel_centres_renders_closed_at_its_depth():
    # 1 cm voxels at 2 m: 0.5 px apart, so the plane covers its pixels without holes
    pts = grid_on_plane(2.0, 0.1, 0.01)
    depth = splat_depth(pts, K, np.eye(4), (48, 64), point_size_m=0.01)
    inside = depth[19:28, 27:36]  # the plane spans +-5 px around the principal point
    assert (inside == np.float32(2.0)).all()
    assert depth[0, 0] == 0 and depth[47, 63] == 0


def test_sparse_points_grow_squares_that_close_the_surface():
    # 4 cm apart at 1 m = 4 px: a point alone leaves holes, a 4 cm square does not
    pts = grid_on_plane(1.0, 0.08, 0.04)
    small = splat_depth(pts, K, np.eye(4), (48, 64), point_size_m=0.01)
    large = splat_depth(pts, K, np.eye(4), (48, 64), point_size_m=0.04)
    region = (slice(18, 30), slice(26, 38))
    assert (small[region] == 0).mean() > 0.5
    assert (large[region] == np.float32(1.0)).all()


def test_the_nearer_surface_hides_the_farther():
    far = grid_on_plane(3.0, 0.3, 0.01)
    near = grid_on_plane(1.0, 0.03, 0.005)
    depth = splat_depth(np.concatenate([far, near]), K, np.eye(4), (48, 64), 0.01)
    assert depth[23, 31] == np.float32(1.0)  # the near patch covers the centre
    assert depth[23, 31 + 6] == np.float32(3.0)  # the far plane around it (+-3 px near)
    # order of the points does not matter
    again = splat_depth(np.concatenate([near, far]), K, np.eye(4), (48, 64), 0.01)
    assert np.array_equal(depth, again)


def test_points_behind_the_camera_or_outside_the_image_draw_nothing():
    behind = grid_on_plane(-1.0, 0.1, 0.01)
    aside = grid_on_plane(1.0, 0.02, 0.01) + np.array([5.0, 0.0, 0.0])
    depth = splat_depth(np.concatenate([behind, aside]), K, np.eye(4), (48, 64), 0.01)
    assert not depth.any()
    assert not splat_depth(np.zeros((0, 3)), K, np.eye(4), (48, 64), 0.01).any()


def test_the_camera_pose_is_applied():
    T = np.eye(4)
    T[:3, 3] = (0.0, 0.0, -1.0)  # camera 1 m behind the origin, looking along +z
    depth = splat_depth(grid_on_plane(1.0, 0.1, 0.01), K, T, (48, 64), 0.01)
    assert depth[23, 31] == np.float32(2.0)


def test_depth_edges_tell_concave_from_convex_creases():
    """1/d is affine on a plane; at a crease its second difference is negative on a ridge
    towards the camera (convex) and positive in a valley (concave), and positive on the
    far side of a jump. Worked example, ridge: d = 1.02, 1.00, 1.02 -> second difference
    2/1.02 - 2 = -0.039, beyond 0.02 * 1.0; valley: d = 1.48, 1.50, 1.48 -> +0.018 > 0.02/1.5."""
    from panoptic_mapping.core.geometry import depth_edges

    x = np.abs(np.arange(41) - 20)[None].repeat(5, 0).astype(float)
    ridge, valley = 1.0 + 0.02 * x, 1.5 - 0.02 * x
    step = np.where(np.arange(41) < 20, 2.0, 1.0)[None].repeat(5, 0)
    for depth, convex_only in ((ridge, True), (valley, False), (step, False)):
        every = depth_edges(depth, 0.02)
        meeting = depth_edges(depth, 0.02, convex=False)
        assert every[2, 19:22].all() and not every[2, :17].any() and not every[2, 24:].any()
        assert meeting[2, 19:22].any() != convex_only


def test_a_square_reaches_only_the_pixels_its_voxel_covers():
    # 1.5 cm voxels at 1 m: 1.5 px apart, each 1.5 px wide. A patch of them spanning
    # -3..+3 px around the principal point covers pixel centres out to 3.75 px: the
    # pixels at +-3 px, not those at +-4 (rounding the half-size up to a whole pixel drew
    # them, an outline grown by a pixel over what lies beside it)
    far = grid_on_plane(3.0, 0.3, 0.01)
    patch = grid_on_plane(1.0, 0.03, 0.015)
    depth = splat_depth(np.concatenate([far, patch]), np.array(
        [[100.0, 0.0, 31.0], [0.0, 100.0, 23.0], [0.0, 0.0, 1.0]]), np.eye(4), (48, 64), 0.015)
    assert (depth[20:27, 28:35] == np.float32(1.0)).all()  # closed: no pixel of the far plane
    assert (depth[23, [27, 35]] == np.float32(3.0)).all()
    assert (depth[[19, 27], 31] == np.float32(3.0)).all()


def test_close_gaps_fills_what_shows_through_a_sparse_near_surface_only():
    from panoptic_mapping.core.geometry import close_gaps

    depth = np.full((40, 60), 3.0, np.float32)
    depth[5:35, 5:45] = 1.0  # a near surface
    depth[10:12, 10:12] = 3.0  # a 2 px gap: the far surface seen through it
    depth[20, 20] = 0.0  # a pixel where nothing was drawn
    depth[15:27, 28:40] = 3.0  # a 12 px opening: wider than twice the radius
    out = close_gaps(depth, radius_px=3)
    assert np.allclose(out[10:12, 10:12], 1.0) and out[20, 20] == np.float32(1.0)
    assert (out[19:24, 32:36] == np.float32(3.0)).all()  # the opening's middle stays open
    assert (out[:, 46:] == np.float32(3.0)).all()  # beside the near surface's outline
    assert (out[36:, :] == np.float32(3.0)).all()
    assert np.array_equal(close_gaps(depth, radius_px=0), depth)
    # a tilted near surface: the gap takes the mean of what surrounds it
    ramp = np.tile(np.linspace(1.0, 1.2, 60, dtype=np.float32), (40, 1))
    ramp[20, 30] = 3.0
    assert abs(close_gaps(ramp, radius_px=2)[20, 30] - ramp[20, 29:32:2].mean()) < 2e-3


def test_the_drawn_row_of_every_pixel_is_returned_with_its_depth():
    from panoptic_mapping.core.geometry import splat_camera_depth

    # camera frame: a far square behind (row 0), a near one (row 2) over its centre, one
    # behind the camera (row 1) and one outside the image (row 3)
    cam = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [9.0, 0.0, 1.0]])
    depth, row = splat_camera_depth(cam, K, (48, 64), 0.06, return_index=True)
    assert np.array_equal(depth, splat_camera_depth(cam, K, (48, 64), 0.06))
    assert row[23, 31] == 2 and depth[23, 31] == np.float32(1.0)  # near hides far
    # the near square holds pixel centres up to 3 px from its centre (31.5, 23.5), the
    # far one up to 1 px
    assert row[23, 34] == 2 and row[21, 31] == 2 and row[20, 31] == -1
    assert (row[depth == 0] == -1).all() and (row[depth > 0] >= 0).all()
    assert set(np.unique(row).tolist()) == {-1, 2}  # the far square lies wholly behind
    assert np.array_equal(depth > 0, row >= 0)
    # the same depths in float64 and float32 give the same image
    d32, r32 = splat_camera_depth(cam.astype(np.float32), K, (48, 64), 0.06,
                                  return_index=True)
    assert np.array_equal(d32, depth) and np.array_equal(r32, row)


def test_up_direction():
    assert up_direction("z") == (2, 1)
    assert up_direction("-y") == (1, -1)
    assert up_direction("x") == (0, 1)
