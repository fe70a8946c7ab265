"""Whole-view rendering through the occupancy grid: the per-tile windows hold every
occupied voxel a ray meets, the windowed march gives the whole march's samples, and the
rendering in rounds with early termination gives the single pass's image."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.renderer import render_rays, render_view
from panoptic_mapping.core.field.sampling import (
    SamplingConfig,
    all_pixel_coords,
    pixel_rays,
    sample_occupied,
    sample_rays,
)
from panoptic_mapping.core.geometry import pose_matrix

K = np.array([[70.0, 0.0, 31.5], [0.0, 75.0, 24.0], [0.0, 0.0, 1.0]])
H, W = 48, 64
# Rotated about all three axes: the world's voxel axes are not the camera's.
POSE = pose_matrix([0.1, -0.2, 0.0], [0.15, -0.3, 0.2, 0.92])


def wall_and_clutter() -> tuple[OccupancyGrid, torch.Tensor]:
    """A grid with a wall 2 m in front of the camera and random clutter voxels; also the
    wall's points (P, 3)."""
    grid = OccupancyGrid(0.04, dilation=1)
    cam = torch.as_tensor(POSE, dtype=torch.float32)
    u, v = torch.meshgrid(torch.linspace(-1.5, 1.5, 120), torch.linspace(-1.2, 1.2, 100),
                          indexing="ij")
    local = torch.stack([u.reshape(-1), v.reshape(-1), torch.full((u.numel(),), 2.0)], 1)
    wall = local @ cam[:3, :3].T + cam[:3, 3]
    grid.mark_points(wall)
    g = torch.Generator().manual_seed(3)
    clutter = (torch.rand(60, 3, generator=g) * 2 - 1) * torch.tensor([1.0, 0.8, 0.9])
    clutter[:, 2] += 1.0  # between the camera and the wall, in the camera frame
    grid.mark_points(clutter @ cam[:3, :3].T + cam[:3, 3])
    return grid, wall


def march_brute_force(grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                      far: float, step: float = 0.004) -> torch.Tensor:
    """(R, S) distances along the rays whose point lies in an occupied voxel (NaN else)."""
    t = torch.arange(0.0, far, step)
    pts = origins[:, None] + dirs[:, None] * t[None, :, None]
    occ = grid.is_occupied(pts.reshape(-1, 3)).view(len(origins), -1)
    return torch.where(occ, t, float("nan"))


@pytest.mark.parametrize("tile_px", [1, 8, 16])
def test_view_bounds_hold_every_occupied_voxel_on_each_ray(tile_px):
    grid, _ = wall_and_clutter()
    start, stop = grid.view_bounds(K, POSE, (H, W), tile_px)
    o, d, _ = pixel_rays(K, POSE, all_pixel_coords(H, W))
    hits = march_brute_force(grid, o, d, far=4.0)
    hit = ~torch.isnan(hits)
    assert hit.any(1).float().mean() > 0.9  # the wall fills the view
    inside = (hits >= start[:, None] - 1e-5) & (hits <= stop[:, None] + 1e-5)
    assert inside[hit].all()
    # a ray that meets no voxel may have an empty window; one that meets some never has
    assert (start[hit.any(1)] <= stop[hit.any(1)]).all()


@pytest.mark.parametrize("tile_px", [1, 16])
def test_view_bounds_are_tight_on_a_wall(tile_px):
    _, wall = wall_and_clutter()
    grid = OccupancyGrid(0.04, dilation=1)
    grid.mark_points(wall)
    start, stop = grid.view_bounds(K, POSE, (H, W), tile_px)
    o, d, _ = pixel_rays(K, POSE, all_pixel_coords(H, W))
    hits = march_brute_force(grid, o, d, far=4.0)
    first = torch.where(torch.isnan(hits), torch.inf, hits).amin(1)
    last = torch.where(torch.isnan(hits), -torch.inf, hits).amax(1)
    seen = torch.isfinite(first)
    assert seen.float().mean() > 0.9
    # entered within about a voxel's diagonal of the first occupied voxel, not from the
    # camera 2 m away; left as soon after the last (a 16-pixel tile of this small view
    # spans 13 degrees: its rays meet the wall over a wider range)
    tol = 0.1 if tile_px == 1 else 0.2
    assert (first - start)[seen].median() < tol and (stop - last)[seen].median() < tol


def test_view_bounds_of_an_empty_grid_and_of_voxels_behind_the_camera():
    grid = OccupancyGrid(0.04, dilation=0)
    start, stop = grid.view_bounds(K, np.eye(4), (H, W), 8)
    assert (start > stop).all()
    grid.mark_points(torch.tensor([[0.0, 0.0, -1.0]]))  # behind: seen by no ray
    start, stop = grid.view_bounds(K, np.eye(4), (H, W), 8)
    assert (start > stop).all()
    grid.mark_points(torch.tensor([[0.01, 0.01, 0.01]]))  # holds the camera: every ray
    start, stop = grid.view_bounds(K, np.eye(4), (H, W), 8)
    assert (start == 0).all() and (stop > 0).all()


@pytest.mark.parametrize("stratified", [False, True])
def test_windowed_march_gives_the_whole_march_samples(stratified):
    grid, _ = wall_and_clutter()
    cfg = SamplingConfig()
    start, stop = grid.view_bounds(K, POSE, (H, W), 8)
    o, d, _ = pixel_rays(K, POSE, all_pixel_coords(H, W))
    kw = dict(step_ratio=cfg.march_step_ratio, max_steps=cfg.max_march_steps,
              stratified=stratified)
    whole = sample_occupied(o, d, grid, cfg.near_m, cfg.far_m, 24,
                            torch.Generator().manual_seed(4), **kw)
    windowed = sample_occupied(o, d, grid, cfg.near_m, cfg.far_m, 24,
                               torch.Generator().manual_seed(4), window=(start, stop), **kw)
    assert whole.valid.sum() > 1000
    empty = sample_occupied(o[:3], d[:3], grid, cfg.near_m, cfg.far_m, 24,
                            window=(torch.tensor([torch.inf, 3.0, 0.0]),
                                    torch.tensor([-torch.inf, 1.0, -torch.inf])), **kw)
    assert not empty.valid.any()  # empty windows, however written: no sample
    assert torch.equal(whole.valid, windowed.valid)
    assert torch.allclose(whole.t_starts[whole.valid], windowed.t_starts[whole.valid],
                          atol=1e-5)
    # resuming after the 5th sample continues the same march
    resume = whole.t_ends[:, 4] + 0.5 * (whole.t_ends[:, 4] - whole.t_starts[:, 4])
    rest = sample_occupied(o, d, grid, cfg.near_m, cfg.far_m, 19,
                           torch.Generator().manual_seed(4), window=(resume, stop), **kw)
    full = whole.valid[:, 5:].sum(1) == 19
    assert torch.allclose(rest.t_starts[full], whole.t_starts[full, 5:], atol=1e-5)


class SlabField(torch.nn.Module):
    """A field with a known answer: density ``sigma`` in a 6 cm slab 2 m in front of the
    camera, nothing elsewhere (the clutter voxels are occupied but empty); colour from
    the position. Counts the points it is asked for."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.cam = torch.as_tensor(POSE, dtype=torch.float32)
        self.cfg = SimpleNamespace(semantic_dim=4, instance_dim=4)
        self.queried = 0

    def geometry(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.queried += len(pts)
        z = (pts - self.cam[:3, 3]) @ self.cam[:3, :3][:, 2]
        inside = (z > 1.97) & (z < 2.03)
        return torch.where(inside, self.sigma, 0.0), pts

    def color(self, geo: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(geo * 3.0)


def single_pass(field, grid: OccupancyGrid, cfg: SamplingConfig) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """The whole view in one pass of ``samples_per_ray_rgb`` samples from near to far."""
    o, d, z = pixel_rays(K, POSE, all_pixel_coords(H, W))
    out = render_rays(field, o, d, sample_rays(o, d, z, None, grid, cfg, stratified=False),
                      semantics=False, instances=False)
    opacity = out["opacity"]
    depth = torch.where(opacity > 0.5, out["depth"] / opacity.clamp_min(1e-6), 0.0) * z
    rgb = (out["rgb"].clamp(0, 1) * 255).round().to(torch.uint8)
    return rgb.reshape(H, W, 3).numpy(), depth.reshape(H, W).numpy()


@pytest.mark.parametrize("sigma", [20.0, 400.0])
def test_rendering_in_rounds_gives_the_single_pass_image(sigma):
    grid, _ = wall_and_clutter()
    cfg = SamplingConfig()
    field = SlabField(sigma)
    rgb_ref, depth_ref = single_pass(field, grid, cfg)
    one_pass_queries, field.queried = field.queried, 0
    # no early termination: the same samples, composited in rounds
    rgb, depth = render_view(field, grid, cfg, K, POSE, (H, W), 1000, 0.5, tile_px=8,
                             round_samples=5, stop_transmittance=0.0)
    assert np.abs(rgb.astype(int) - rgb_ref).max() <= 1
    assert np.allclose(depth, depth_ref, atol=1e-4)
    field.queried = 0
    rgb, depth = render_view(field, grid, cfg, K, POSE, (H, W), 1000, 0.5, tile_px=8,
                             round_samples=5, stop_transmittance=1e-3)
    assert np.abs(rgb.astype(int) - rgb_ref).max() <= 1  # the residual: < 1e-3 of 255
    assert np.abs(depth - depth_ref).max() < 1e-3 * 2.0 + 1e-4
    hit = depth_ref > 0
    assert hit.mean() > 0.9 and np.abs(depth_ref[hit] - 2.0).max() < 0.04  # the slab
    if sigma > 100:  # an opaque slab stops the rays: far fewer queries
        assert field.queried < 0.7 * one_pass_queries
    else:  # a thin one lets light through: every ray goes on, over the same samples
        assert field.queried == one_pass_queries


def test_coarse_to_fine_draws_outlines_and_interpolates_smooth_surfaces():
    """A tilted plane with a box in front and a patch of sky: drawn coarse to fine, the
    plane's pixels between agreeing lattice rays are interpolated (exactly: bilinear on a
    linear ramp), every pixel whose neighbours straddle the box's outline or the sky is
    drawn, and far fewer rays are drawn than pixels."""
    from panoptic_mapping.core.field.renderer import _render_adaptive

    h, w = 37, 50  # odd and even: the last row and column join the lattice
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.0 + 0.001 * u + 0.0005 * v
    box = (v >= 10) & (v < 18) & (u >= 20) & (u < 31)
    depth[box] = 0.5
    depth[:4, 40:] = 0.0  # sky: no surface
    rgb = np.stack([u / w, v / h, np.where(box, 0.9, 0.2)], -1).astype(np.float32)
    drawn = []

    def draw(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drawn.append(index.clone())
        i = index.numpy()
        return torch.from_numpy(rgb.reshape(-1, 3)[i]), torch.from_numpy(depth.reshape(-1)[i])

    out_rgb, out_depth = _render_adaptive(draw, h, w, 0.02, 16 / 255, torch.device("cpu"),
                                          levels=2)
    np.testing.assert_allclose(out_depth.numpy().reshape(h, w), depth, atol=1e-5)
    np.testing.assert_allclose(out_rgb.numpy().reshape(h, w, 3), rgb, atol=1e-5)
    every = torch.cat(drawn)
    assert every.unique().numel() == every.numel()  # no pixel drawn twice
    assert every.numel() < 0.4 * h * w
    drawn_img = np.zeros(h * w, bool)
    drawn_img[every.numpy()] = True
    assert drawn_img.reshape(h, w)[:4, 40:].all()  # no surface: never interpolated
    # interpolated across the outline, the plane's pixels would have taken the box's
    # depth: the exact depths above say they were not


@pytest.mark.parametrize("sigma", [20.0, 400.0])
def test_coarse_to_fine_view_is_close_to_the_full_render_on_the_slab(sigma):
    grid, _ = wall_and_clutter()
    cfg = SamplingConfig()
    field = SlabField(sigma)
    rgb_ref, depth_ref = render_view(field, grid, cfg, K, POSE, (H, W), 1000, 0.5, tile_px=8)
    full_queries, field.queried = field.queried, 0
    rgb, depth = render_view(field, grid, cfg, K, POSE, (H, W), 1000, 0.5, tile_px=8,
                             smooth_depth_rel=0.02, smooth_rgb=16, smooth_levels=2)
    # the slab's colour varies with position and its rendered depth by a sample's
    # quantisation from pixel to pixel: interpolation stays within the tolerances
    assert np.abs(rgb.astype(int) - rgb_ref).mean() < 2.0
    hit = depth_ref > 0
    assert ((depth > 0) == hit).all()
    assert (np.abs(depth - depth_ref)[hit] <= 0.02 * depth_ref[hit]).all()
    assert field.queried < 0.5 * full_queries
