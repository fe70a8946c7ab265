"""Ray sampling: pixel rays, the data-grown scene extent, the sparse occupancy grid and the
samplers that keep the field's queries out of empty space."""
from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
import torch

from panoptic_mapping.config import ConfigError, config_from_dict, param_specs
from panoptic_mapping.core.geometry import backproject, pose_matrix
from panoptic_mapping.core.field.extent import SceneExtent
from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.sampling import (
    SamplingConfig,
    all_pixel_coords,
    pixel_rays,
    sample_depth_guided,
    sample_occupied,
    sample_rays,
    sample_uniform,
)

K = np.array([[100.0, 0.0, 64.0], [0.0, 110.0, 47.0], [0.0, 0.0, 1.0]])
H, W = 96, 128
# A rotated, translated camera: the world frame differs from the camera frame.
POSE = pose_matrix([0.3, -1.2, 0.8], [0.2, -0.4, 0.1, 0.9])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def axis_rays(n: int, x: float = 0.02, y: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays from (x, y, 0) along +z."""
    origins = torch.tensor([[x, y, 0.0]]).repeat(n, 1)
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    return origins, dirs


def room_points(spacing: float = 0.02) -> torch.Tensor:
    """(P, 3) points on the floor, ceiling and 4 walls of a 6 m x 6 m x 3 m room."""
    a = torch.arange(-3.0, 3.0, spacing)
    z = torch.arange(0.0, 3.0, spacing)
    gx, gy = torch.meshgrid(a, a, indexing="ij")
    floor = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(gx.numel())], 1)
    ceil = floor + torch.tensor([0.0, 0.0, 3.0])
    wa, wz = torch.meshgrid(a, z, indexing="ij")
    wa, wz = wa.reshape(-1), wz.reshape(-1)
    walls = [torch.stack([torch.full_like(wa, s * 3.0), wa, wz], 1) for s in (-1, 1)]
    walls += [torch.stack([wa, torch.full_like(wa, s * 3.0), wz], 1) for s in (-1, 1)]
    return torch.cat([floor, ceil, *walls])


def room_density(points: torch.Tensor) -> torch.Tensor:
    """(M,) density of the room_points walls: 100 within 4 cm of a wall, else 0."""
    wall = torch.minimum((points[:, :2].abs() - 3.0).abs().amin(dim=1),
                         torch.minimum(points[:, 2].abs(), (points[:, 2] - 3.0).abs()))
    return torch.where(wall < 0.04, 100.0, 0.0)


# --------------------------------------------------------------------------- config


def test_config_fields_are_documented_with_the_specified_defaults():
    specs = {s.name: s for s in param_specs(SamplingConfig)}
    for spec in specs.values():
        assert len(spec.doc) > 30, spec.name
    defaults = {name: s.default for name, s in specs.items()}
    assert defaults["occupancy_voxel_m"] == 0.04
    assert defaults["occupancy_dilation"] == 1
    assert defaults["near_m"] == 0.05 and defaults["far_m"] == 8.0
    assert defaults["samples_per_ray_depth"] == 12
    assert defaults["surface_band_m"] == 0.04
    assert defaults["free_space_samples"] == 4
    assert defaults["free_space_occupied_samples"] == 8
    assert defaults["samples_per_ray_rgb"] == 32
    cfg = config_from_dict({"far_m": 5, "samples_per_ray_rgb": 16}, SamplingConfig)
    assert cfg.far_m == 5.0 and cfg.samples_per_ray_rgb == 16
    # 1% opacity across one 4 cm voxel.
    assert cfg.density_threshold == pytest.approx(-math.log(0.99) / 0.04)


@pytest.mark.parametrize("values, key", [
    ({"free_space_samples": 12}, "free_space_samples"),
    ({"near_m": 9.0}, "near_m"),
    ({"occupancy_voxel_m": 0.0}, "occupancy_voxel_m"),
    ({"samples_per_ray_rgb": 0}, "samples_per_ray_rgb"),
])
def test_config_rejects_inconsistent_values_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(values, SamplingConfig)


# --------------------------------------------------------------------------- rays


def test_principal_point_ray_is_the_optical_axis_in_world():
    origins, dirs, z_scale = pixel_rays(K, POSE, torch.tensor([[K[0, 2], K[1, 2]]]))
    np.testing.assert_allclose(origins[0].numpy(), POSE[:3, 3], atol=1e-6)
    np.testing.assert_allclose(dirs[0].numpy(), POSE[:3, 2], atol=1e-6)
    assert z_scale[0].item() == pytest.approx(1.0)


def test_pixel_one_focal_length_right_is_45_degrees():
    pix = torch.tensor([[K[0, 2] + K[0, 0], K[1, 2]]])
    _, dirs, z_scale = pixel_rays(K, np.eye(4), pix)
    np.testing.assert_allclose(dirs[0].numpy(), np.array([1, 0, 1]) / math.sqrt(2), atol=1e-6)
    assert z_scale[0].item() == pytest.approx(1 / math.sqrt(2))
    _, dirs_w, _ = pixel_rays(K, POSE, pix)  # the same ray, rotated into the world
    np.testing.assert_allclose(dirs_w[0].numpy(),
                               POSE[:3, :3] @ np.array([1, 0, 1]) / math.sqrt(2), atol=1e-6)


def test_z_scale_converts_ray_distance_to_optical_depth():
    pix = torch.rand(500, 2, generator=gen()) * torch.tensor([W - 1.0, H - 1.0])
    depth = 0.3 + 5 * torch.rand(500, generator=gen(1))
    origins, dirs, z_scale = pixel_rays(K, POSE, pix.double())
    assert torch.allclose(dirs.norm(dim=1), torch.ones(500, dtype=torch.float64))
    points = origins + dirs * (depth.double() / z_scale)[:, None]  # t = d / z_scale
    cam = (points.numpy() - POSE[:3, 3]) @ POSE[:3, :3]  # world -> camera
    np.testing.assert_allclose(cam[:, 2], depth.numpy(), rtol=1e-6)
    uv = cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]  # and projects back
    np.testing.assert_allclose(uv, pix.numpy(), atol=1e-4)


def test_pixel_rays_accept_one_pose_per_ray():
    pix = all_pixel_coords(4, 5)
    poses = np.stack([np.eye(4), POSE] * 10)
    origins, dirs, _ = pixel_rays(K, torch.as_tensor(poses), pix.double())
    o1, d1, _ = pixel_rays(K, POSE, pix.double())
    assert torch.allclose(origins[1::2], o1[1::2]) and torch.allclose(dirs[1::2], d1[1::2])
    assert torch.allclose(origins[0::2], torch.zeros(3, dtype=torch.float64))


def test_all_pixel_coords_are_row_major_centres():
    uv = all_pixel_coords(2, 3)
    assert uv.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


def test_backproject_skips_unknown_pixels_and_hits_the_depth():
    depth = np.full((H, W), 2.0, dtype=np.float32)
    depth[:10] = 0.0
    points, pix = backproject(depth, K, POSE)
    assert points.shape == ((H - 10) * W, 3) and int(pix.min()) == 10 * W
    cam = (points - POSE[:3, 3]) @ POSE[:3, :3]
    np.testing.assert_allclose(cam[:, 2], 2.0, rtol=1e-5)


# --------------------------------------------------------------------------- samplers


def test_depth_guided_samples_lie_in_the_band_and_free_space():
    cfg = SamplingConfig()
    n = 256
    pix = torch.rand(n, 2, generator=gen()) * torch.tensor([W - 1.0, H - 1.0])
    origins, dirs, z_scale = pixel_rays(K, POSE, pix)
    depth = 0.5 + 4 * torch.rand(n, generator=gen(1))
    t_s, t_e, valid = sample_depth_guided(origins, dirs, z_scale, depth, cfg, gen(2))
    assert t_s.shape == (n, 12) and valid.all()
    t_d = (depth / z_scale)[:, None]
    band = cfg.surface_band_m
    free, surf = slice(0, cfg.free_space_samples), slice(cfg.free_space_samples, None)
    eps = 1e-5
    assert (t_s[:, free] >= cfg.near_m - eps).all() and (t_e[:, free] <= t_d - band + eps).all()
    assert (t_s[:, surf] >= t_d - band - eps).all() and (t_e[:, surf] <= t_d + band + eps).all()
    # Sorted, contiguous, covering [near, t_d + band] exactly.
    assert (t_e > t_s).all() and torch.allclose(t_s[:, 1:], t_e[:, :-1])
    assert torch.allclose(t_s[:, 0], torch.full((n,), cfg.near_m))
    assert torch.allclose(t_e[:, -1], (t_d + band)[:, 0], atol=1e-5)
    # Stratified: each midpoint stays in its own bin, and the jitter is random.
    mid = 0.5 * (t_s + t_e)[:, surf]
    bins = torch.linspace(0, 1, 9)
    rel = (mid - (t_d - band)) / (2 * band)
    assert ((rel >= bins[:-1] - eps) & (rel <= bins[1:] + eps)).all()
    t_s2, _, _ = sample_depth_guided(origins, dirs, z_scale, depth, cfg, gen(3))
    assert not torch.allclose(t_s, t_s2)


def test_depth_guided_is_deterministic_without_stratification():
    cfg = SamplingConfig()
    origins, dirs = axis_rays(1)
    out = sample_depth_guided(origins, dirs, torch.ones(1), torch.tensor([2.0]), cfg,
                              stratified=False)
    np.testing.assert_allclose(out.t_starts[0, 4:].numpy(), 1.96 + 0.01 * np.arange(8),
                               atol=1e-6)


def test_depth_guided_close_surface_leaves_free_space_invalid():
    cfg = SamplingConfig()
    origins, dirs = axis_rays(2)
    depth = torch.tensor([0.07, 0.005])  # within near + band; entirely before near - band
    t_s, t_e, valid = sample_depth_guided(origins, dirs, torch.ones(2), depth, cfg, gen())
    assert not valid[0, :4].any() and valid[0, 4:].all()
    assert (t_s[0, 4:] >= cfg.near_m).all()
    assert not valid[1].any()
    assert (t_s[:, 1:] >= t_e[:, :-1] - 1e-7).all()  # still sorted


def test_unknown_depth_falls_back_to_the_grid_or_uniform():
    cfg = SamplingConfig()
    origins, dirs = axis_rays(3)
    depth = torch.tensor([2.0, 0.0, 0.0])
    t_s, _, valid = sample_depth_guided(origins, dirs, torch.ones(3), depth, cfg, gen())
    assert valid.all() and t_s[1:, 0].eq(cfg.near_m).all()  # uniform over [near, far]
    grid = OccupancyGrid(0.04, dilation=0)
    grid.mark_points(torch.tensor([[0.02, 0.02, 3.02]]))  # voxel z in [3.00, 3.04]
    t_s, t_e, valid = sample_depth_guided(origins, dirs, torch.ones(3), depth, cfg, gen(),
                                          grid=grid)
    assert valid[0].all()
    mid = 0.5 * (t_s + t_e)[1:][valid[1:]]
    assert len(mid) >= 2 and ((mid >= 3.0) & (mid <= 3.04)).all()


def test_estimated_depth_spends_free_space_samples_in_the_occupied_voxels_in_front():
    """Depth that is an estimate (stereo, the map's surfaces): a floater voxel 1 m in front
    of a surface at 2 m is where a rendered view looks first, so the free-space samples of
    a flagged ray go there; an unflagged ray (measured depth) keeps its stratified ones."""
    cfg = SamplingConfig()
    grid = OccupancyGrid(0.04, dilation=0)
    grid.mark_points(torch.tensor([[0.02, 0.02, 1.02], [0.02, 0.02, 2.02]]))  # z 1-1.04, 2-2.04
    origins, dirs = axis_rays(3)
    depth = torch.tensor([2.0, 2.0, 0.0])
    flagged = torch.tensor([True, False, True])
    t_s, t_e, valid = sample_depth_guided(origins, dirs, torch.ones(3), depth, cfg, gen(),
                                          grid=grid, occupied_free=flagged)
    n_free = cfg.free_space_occupied_samples
    assert t_s.shape == (3, n_free + cfg.samples_per_ray_depth - cfg.free_space_samples)
    free = slice(0, n_free)
    mid = 0.5 * (t_s + t_e)
    # the flagged ray: free samples only inside the floater's voxel (2-3 at a 2 cm step)
    assert 2 <= int(valid[0, free].sum()) <= 3
    assert ((mid[0, free][valid[0, free]] >= 1.0) & (mid[0, free][valid[0, free]] <= 1.04)).all()
    # the unflagged ray: the stratified intervals over [near, 2 - band], then padding
    assert valid[1, :cfg.free_space_samples].all()
    assert not valid[1, cfg.free_space_samples:n_free].any()
    assert t_s[1, 0] == pytest.approx(cfg.near_m)
    # both: the band around the depth, every ray sorted without overlap
    assert valid[:2, n_free:].all()
    assert ((mid[:2, n_free:] >= 1.96 - 1e-5) & (mid[:2, n_free:] <= 2.04 + 1e-5)).all()
    assert (t_s[:, 1:] >= t_e[:, :-1] - 1e-6).all()
    # a ray without depth falls back to the grid, padded to the same width
    assert valid[2].any() and (mid[2][valid[2]] >= 1.0).all()
    # a flagged ray whose march meets nothing in front keeps the stratified intervals
    o_side, d_side = axis_rays(1, x=1.02)
    t_s, _, valid = sample_depth_guided(o_side, d_side, torch.ones(1), torch.tensor([2.0]),
                                        cfg, gen(), grid=grid,
                                        occupied_free=torch.tensor([True]))
    assert valid[0, :cfg.free_space_samples].all() and t_s[0, 0] == pytest.approx(cfg.near_m)


def test_a_voxel_is_marked_once_enough_frames_put_a_point_in_it():
    grid = OccupancyGrid(0.1, dilation=1)
    surface = torch.tensor([[0.55, 0.55, 0.55], [0.56, 0.54, 0.55]])  # one voxel, twice
    outlier = torch.tensor([[2.55, 0.55, 0.55]])
    assert grid.mark_confirmed(torch.cat([surface, outlier]), min_frames=2) == 0
    assert grid.is_empty and grid.num_pending == 2  # per frame, not per point
    assert grid.mark_confirmed(surface + 0.01, min_frames=2) == 27  # and its dilation
    assert grid.is_occupied(surface).all() and not grid.is_occupied(outlier).any()
    assert grid.num_pending == 1  # the outlier waits
    # a voxel already marked is not counted again; one frame: as mark_points
    assert grid.mark_confirmed(surface, min_frames=2) == 0
    assert grid.mark_confirmed(outlier, min_frames=1) == 27
    # bounded: beyond max_pending, voxels seen by one frame only are forgotten
    many = torch.tensor([[5.05 + 0.1 * i, 0.05, 0.05] for i in range(10)])
    grid.mark_confirmed(many, min_frames=3, max_pending=4)
    assert grid.num_pending == 0
    grid.mark_confirmed(many[:2], min_frames=3)
    grid.mark_confirmed(many[:2], min_frames=3)
    assert grid.num_pending == 2
    grid.mark_confirmed(many[2:], min_frames=3, max_pending=4)
    assert grid.num_pending == 2  # the two seen twice stay
    assert grid.mark_confirmed(many[:2], min_frames=3) == 4 * 3 * 3  # two neighbours dilated
    # a hard bound even when every pending voxel was seen twice: the most seen stay
    for _ in range(2):
        grid.mark_confirmed(many[2:], min_frames=5)
    grid.mark_confirmed(many[2:4], min_frames=5)
    grid.mark_confirmed(many[2:], min_frames=5, max_pending=3)
    assert grid.num_pending == 3
    assert grid.mark_confirmed(many[2:4], min_frames=5) > 0  # the two seen most went on
    grid.clear()
    assert grid.is_empty and grid.num_pending == 0


def test_occupied_sampling_hits_only_the_occupied_voxel():
    grid = OccupancyGrid(0.04, dilation=0)
    grid.mark_points(torch.tensor([[0.02, 0.02, 2.02]]))  # voxel (0, 0, 50): z in [2, 2.04]
    origins, dirs = axis_rays(64)
    t_s, t_e, valid = sample_occupied(origins, dirs, grid, 0.05, 8.0, 32, gen())
    counts = valid.sum(1)
    assert (counts >= 2).all() and (counts <= 3).all()  # 4 cm at a 2 cm step
    mid = 0.5 * (t_s + t_e)
    assert ((mid[valid] >= 2.0) & (mid[valid] <= 2.04)).all()
    assert (t_s[valid] >= 1.99 - 1e-6).all() and (t_e[valid] <= 2.05 + 1e-6).all()
    assert (t_e[~valid] == t_s[~valid]).all() and (t_s[~valid] == 8.0).all()
    # A parallel ray 1 m to the side crosses only empty space: no samples.
    o_empty, d_empty = axis_rays(4, x=1.02)
    assert not sample_occupied(o_empty, d_empty, grid, 0.05, 8.0, 32, gen()).valid.any()


def test_occupied_sampling_takes_the_first_stretch_first():
    grid = OccupancyGrid(0.04, dilation=0)
    near_wall = torch.tensor([[0.02, 0.02, z] for z in np.arange(1.0, 1.4, 0.04) + 0.02])
    grid.mark_points(near_wall)  # 10 voxels: z in [1.0, 1.4]
    grid.mark_points(torch.tensor([[0.02, 0.02, 3.02]]))
    origins, dirs = axis_rays(8)
    t_s, t_e, valid = sample_occupied(origins, dirs, grid, 0.05, 8.0, 8, gen())
    assert valid.all()  # 8 slots, 20 occupied candidates: all filled in the first stretch
    assert (t_e <= 1.4 + 0.01).all() and (t_s[:, 1:] >= t_e[:, :-1] - 1e-6).all()
    out = sample_occupied(origins, dirs, grid, 0.05, 8.0, 64, gen())
    mid = out.midpoints[out.valid]
    assert ((mid > 3.0) & (mid < 3.04)).any()  # room left: the second stretch too
    # A per-ray far that stops before the wall gives nothing.
    assert not sample_occupied(origins, dirs, grid, 0.05, torch.full((8,), 0.9), 8,
                               gen()).valid.any()


@pytest.mark.parametrize("step", [0.02, 0.08])
def test_block_prefilter_finds_exactly_the_occupied_candidates(step):
    from panoptic_mapping.core.field.sampling import _occupied_candidates
    grid = OccupancyGrid(0.04, dilation=1)
    grid.mark_points(room_points(0.05))
    grid.mark_points(torch.rand(300, 3, generator=gen(5)) * 5 - 2.5)  # clutter
    n, k = 300, 203  # not a multiple of the group size
    origins = torch.rand(n, 3, generator=gen(1)) * 4 - 2
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen(2)), dim=1)
    edges = 0.05 + step * (torch.arange(k + 1) - torch.rand(n, 1, generator=gen(3)))
    starts, ends = edges[:, :-1].clamp_min(0.05), edges[:, 1:]
    occ = _occupied_candidates(origins, dirs, grid, starts, ends, torch.full((n,), step))
    mid = 0.5 * (starts + ends)
    brute = grid.is_occupied((origins[:, None] + dirs[:, None] * mid[..., None]).reshape(-1, 3))
    assert occ.any() and torch.equal(occ, brute.view(n, k) & (ends > starts))


def test_occupied_march_step_is_bounded():
    grid = OccupancyGrid(0.04, dilation=0)
    z = torch.arange(500.0, 501.2, 0.04) + 0.02  # a 1.2 m thick stretch 500 m away
    grid.mark_points(torch.stack([torch.full_like(z, 0.02), torch.full_like(z, 0.02), z], 1))
    origins, dirs = axis_rays(16)
    out = sample_occupied(origins, dirs, grid, 0.05, 1000.0, 4, gen(), max_steps=1024)
    # 1024 steps over 1 km: ~1 m per step, so the long ray still finds the stretch.
    assert out.valid.any(dim=1).all()
    assert ((out.midpoints[out.valid] > 500.0) & (out.midpoints[out.valid] < 501.2)).all()
    widths = (out.t_ends - out.t_starts)[out.valid]
    assert (widths <= 1000.0 / 1024 + 1e-3).all()


def test_uniform_sampling_is_stratified_over_near_far():
    origins, _ = axis_rays(100)
    t_s, t_e, valid = sample_uniform(origins, 0.05, 8.0, 32, gen())
    assert valid.all() and torch.allclose(t_s[:, 1:], t_e[:, :-1])
    assert (t_s[:, 0] == 0.05).all() and torch.allclose(t_e[:, -1], torch.tensor(8.0))
    rel = (0.5 * (t_s + t_e) - 0.05) / 7.95 * 32 - torch.arange(32)
    assert ((rel >= -1e-4) & (rel <= 1 + 1e-4)).all()


def test_sample_rays_dispatches_on_depth_and_grid():
    cfg = SamplingConfig()
    origins, dirs = axis_rays(5)
    grid = OccupancyGrid.from_config(cfg)
    assert sample_rays(origins, dirs, torch.ones(5), None, grid, cfg).valid.all()  # uniform
    grid.mark_points(torch.tensor([[0.02, 0.02, 2.02]]))
    out = sample_rays(origins, dirs, torch.ones(5), None, grid, cfg, gen())
    assert out.t_starts.shape == (5, cfg.samples_per_ray_rgb)
    assert out.valid.any(1).all() and ((out.midpoints[out.valid] - 2.02).abs() < 0.07).all()
    out = sample_rays(origins, dirs, torch.ones(5), torch.full((5,), 2.0), grid, cfg, gen())
    assert out.t_starts.shape == (5, cfg.samples_per_ray_depth) and out.valid.all()


# --------------------------------------------------------------------------- grid


def test_grid_is_unbounded():
    grid = OccupancyGrid(0.04, dilation=0)
    far_points = torch.tensor([[1e3, -1e3, 1e3], [-1000.5, 2.0, 999.9], [3e4, 0.0, -3e4]],
                              dtype=torch.float64)
    assert grid.mark_points(far_points) == 3
    assert grid.is_occupied(far_points).all()
    assert not grid.is_occupied(far_points + 0.05).any()  # the next voxel over
    assert not grid.is_occupied(torch.zeros(1, 3)).any()
    centres = grid.voxel_centers().double()
    assert grid.is_occupied(centres).all()
    assert torch.cdist(centres, far_points).min(dim=1).values.max() < 0.04 * math.sqrt(3)
    # Beyond the key range (+-42 km at 4 cm) and non-finite points are ignored, not wrapped.
    bad = torch.tensor([[1e6, 0.0, 0.0], [float("nan"), 0.0, 0.0], [float("inf"), 1, 1]])
    assert grid.mark_points(bad) == 0 and not grid.is_occupied(bad).any()


def test_dilation_marks_the_neighbours():
    point = torch.tensor([[0.55, 0.55, 0.55]])  # a voxel centre
    assert OccupancyGrid(0.1, dilation=0).mark_points(point) == 1
    grid = OccupancyGrid(0.1, dilation=1)
    assert grid.mark_points(point) == 27
    offsets = torch.tensor([[dx, dy, dz] for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                            for dz in (-1, 0, 1)], dtype=torch.float32) * 0.1
    assert grid.is_occupied(point + offsets).all()
    assert not grid.is_occupied(point + 2 * offsets[offsets.abs().sum(1) > 0]).any()
    assert grid.mark_points(point + torch.tensor([0.1, 0.0, 0.0])) == 9  # one new face


@pytest.mark.parametrize("radius", [1, 2])
def test_separable_dilation_equals_the_cube(radius):
    from panoptic_mapping.core.field.occupancy import _dilate_keys
    from panoptic_mapping.core.geometry import pack_voxel_keys, unpack_voxel_keys
    coords = torch.randint(-20, 20, (200, 3), generator=gen())
    edge = 2 ** 20 - 1  # the last coordinate a key can hold: its neighbours must not wrap
    coords = torch.cat([coords, torch.tensor([[edge, -edge - 1, 0], [0, edge, -edge - 1]])])
    keys = torch.unique(pack_voxel_keys(coords))
    r = torch.arange(-radius, radius + 1)
    cube = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    brute = (unpack_voxel_keys(keys)[:, None] + cube).reshape(-1, 3)
    brute = brute[((brute >= -2 ** 20) & (brute < 2 ** 20)).all(1)]
    assert torch.equal(_dilate_keys(keys, radius), torch.unique(pack_voxel_keys(brute)))


def test_update_from_density_drops_empty_voxels_and_keeps_dense_ones():
    grid = OccupancyGrid(0.1, dilation=1)
    grid.mark_points(torch.rand(2000, 3, generator=gen()) * 4 - 2)  # a 4 m cube of clutter
    centre = torch.tensor([1.0, 1.0, 1.0])

    def density(points: torch.Tensor) -> torch.Tensor:  # a dense ball, empty elsewhere
        return torch.where((points - centre).norm(dim=1) < 0.3, 100.0, 0.0)

    stats = grid.update_from_density(density, threshold=1.0)
    assert stats["before"] > stats["after"] > 0
    ball = grid.voxel_centers()[(grid.voxel_centers() - centre).norm(dim=1) < 0.3]
    assert len(ball) > 0 and grid.is_occupied(ball).all()
    assert not grid.is_occupied(torch.tensor([[-1.5, -1.5, -1.5], [0.0, 0.0, 0.0]])).any()
    # Everything kept is the ball or its one-voxel margin.
    assert (grid.voxel_centers() - centre).norm(dim=1).max() < 0.3 + 0.2
    grid.update_from_density(lambda p: torch.zeros(len(p)), threshold=1.0)
    assert grid.num_occupied == 0


def test_update_from_density_grows_into_dense_neighbours():
    grid = OccupancyGrid(0.1, dilation=0)
    grid.mark_points(torch.tensor([[0.05, 0.05, 0.05]]))
    # The field has learnt a slab x in [0, 0.3): the grid spreads along it one voxel a time.
    slab = lambda p: torch.where((p[:, 0] >= 0) & (p[:, 0] < 0.3) & (p[:, 1:].abs() < 0.1)
                                 .all(1), 10.0, 0.0)
    grid.update_from_density(slab, 1.0)
    grid.update_from_density(slab, 1.0)
    assert grid.is_occupied(torch.tensor([[0.25, 0.05, 0.05]])).all()


def test_rgb_only_grid_starts_from_candidate_points():
    grid = OccupancyGrid(0.1, dilation=0)  # nothing marked from depth
    extent = SceneExtent()
    extent.update_from_frustum(K, np.eye(4), (H, W), (0.05, 3.0))
    centre = torch.tensor([0.0, 0.0, 2.0])
    ball = lambda p: torch.where((p - centre).norm(dim=1) < 0.3, 100.0, 0.0)
    assert grid.update_from_density(ball, 1.0)["after"] == 0  # no candidates yet
    candidates = extent.random_points(20000, gen())
    assert extent.contains(candidates).all()
    grid.update_from_density(ball, 1.0, extra_points=candidates)
    assert grid.num_occupied > 0
    assert ((grid.voxel_centers() - centre).norm(dim=1) < 0.3).all()
    assert grid.is_occupied(centre[None]).all()


def test_state_dict_round_trip():
    grid = OccupancyGrid(0.05, dilation=1)
    grid.mark_points(room_points(0.2))
    buf = io.BytesIO()
    torch.save(grid.state_dict(), buf)
    buf.seek(0)
    other = OccupancyGrid()
    other.load_state_dict(torch.load(buf))
    assert other.voxel_m == 0.05 and other.dilation == 1
    assert torch.equal(other.keys, grid.keys)
    probe = torch.rand(1000, 3, generator=gen()) * 8 - 4
    assert torch.equal(other.is_occupied(probe), grid.is_occupied(probe))
    extent = SceneExtent()
    extent.update_from_points(room_points(0.5))
    restored = SceneExtent()
    restored.load_state_dict(extent.state_dict())
    np.testing.assert_array_equal(restored.bounds()[0], extent.bounds()[0])


# --------------------------------------------------------------------------- extent


def wall_frame(pose: np.ndarray, distance: float = 2.0) -> np.ndarray:
    """(H, W) depth of a camera facing a wall ``distance`` m away along its optical axis."""
    return np.full((H, W), distance, dtype=np.float32)


def test_scene_extent_grows_from_data_and_the_map_follows_the_camera():
    cfg = SamplingConfig()
    extent, grid = SceneExtent(), OccupancyGrid.from_config(cfg)
    assert extent.is_empty and extent.bounds() is None
    assert not extent.contains(np.zeros((1, 3))).any()
    seen = []
    # The camera starts at the origin, then drives 50 m away (beyond anything seen).
    for x in (0.0, 0.5, 50.0):
        pose = pose_matrix([x, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0])
        points = torch.as_tensor(backproject(wall_frame(pose), K, pose)[0], dtype=torch.float32)
        extent.update_from_points(points)
        extent.update_from_frustum(K, pose, (H, W), (cfg.near_m, 2.0))
        grid.mark_points(points)
        seen.append(points)
        lo, hi = extent.bounds()
        assert extent.contains(torch.cat(seen)).all()
        assert extent.contains(pose[None, :3, 3]).all()  # camera centre
        # RGB-only rays of the new view find the wall the depth marked, at t = d / z_scale.
        pix = all_pixel_coords(H, W)[::97]
        origins, dirs, z_scale = pixel_rays(K, pose, pix)
        t_enter, t_exit = extent.ray_intersect(origins, dirs, margin=cfg.occupancy_voxel_m)
        out = sample_occupied(origins, dirs, grid, torch.clamp_min(t_enter, cfg.near_m),
                              torch.clamp_max(t_exit, cfg.far_m), 16, gen())
        assert out.valid[:, 0].all()
        depth_at_first = out.midpoints[:, 0] * z_scale
        assert ((depth_at_first - 2.0).abs() < 2.5 * cfg.occupancy_voxel_m).all()
    assert hi[0] > 50.0 and lo[0] < 0.0  # grew from the first box to the far camera
    np.testing.assert_allclose(extent.center(), 0.5 * (lo + hi))
    assert not extent.contains(np.array([[25.0, 0.0, 50.0]])).any()


def test_ray_intersect_clips_to_the_box():
    extent = SceneExtent()
    extent.update_from_points(np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    origins = torch.tensor([[-5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-5.0, 3.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    t_enter, t_exit = extent.ray_intersect(origins, dirs)
    assert t_enter.tolist() == [4.0, 0.0, pytest.approx(t_enter[2].item())]
    assert t_exit[:2].tolist() == [6.0, 1.0] and t_exit[2] <= t_enter[2]  # third misses


# --------------------------------------------------------------------------- timing


def best_of(fn, repeats: int = 3) -> float:
    """Shortest of a few timed runs, after a warm-up (the machine is shared)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def test_room_scale_grid_sampling_and_refresh():
    """A 6 x 6 x 3 m room grid: every ray finds a wall, walls survive a density refresh.

    Timings are printed for information; speed targets live in BENCHMARKS.md.
    """
    cfg = SamplingConfig()
    grid = OccupancyGrid.from_config(cfg)
    points = room_points(0.02)

    def mark():
        grid.clear()
        grid.mark_points(points)

    t_mark = best_of(mark)
    n = 4096
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen()), dim=1)
    origins = torch.tensor([0.0, 0.0, 1.5]).expand(n, 3).contiguous()
    z_scale = torch.ones(n)
    depth = 0.5 + 3 * torch.rand(n, generator=gen(1))
    depth_guided = lambda: sample_depth_guided(origins, dirs, z_scale, depth, cfg, gen())
    occupied = lambda: sample_occupied(origins, dirs, grid, cfg.near_m, cfg.far_m,
                                       cfg.samples_per_ray_rgb, gen())
    for fn in (depth_guided, occupied):
        assert fn().valid.any(dim=1).float().mean() > 0.95  # every ray sees a wall
    t_depth, t_occ = best_of(depth_guided), best_of(occupied)
    probe = torch.rand(100_000, 3, generator=gen()) * 8 - 4
    t_lookup = best_of(lambda: grid.is_occupied(probe))
    n_voxels = grid.num_occupied
    state = grid.state_dict()

    def refresh():  # a field that has learnt the walls: dense within 4 cm of them
        grid.load_state_dict(state)
        grid.update_from_density(room_density, 1.0)

    t_refresh = best_of(refresh, 1)
    assert grid.is_occupied(points[::97]).all()  # the walls survive the refresh
    print(f"\n[sampling timing, {torch.get_num_threads()} threads] grid of {n_voxels} voxels "
          f"(room, {len(points)} points marked in {t_mark * 1e3:.0f} ms); 4096 rays: "
          f"depth-guided {t_depth * 1e3:.1f} ms, occupied-only {t_occ * 1e3:.1f} ms; "
          f"1e5-point lookup {t_lookup * 1e3:.1f} ms; density refresh {t_refresh * 1e3:.0f} ms")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_everything_runs_on_cuda():
    cfg = SamplingConfig()
    dev = torch.device("cuda")
    grid = OccupancyGrid.from_config(cfg, device=dev)
    pose = torch.as_tensor(POSE, device=dev)
    depth = torch.full((H, W), 2.0, device=dev)
    points = torch.as_tensor(backproject(depth.cpu().numpy(), K, POSE)[0], device=dev,
                             dtype=torch.float32)
    grid.mark_points(points)
    origins, dirs, z_scale = pixel_rays(K, pose, all_pixel_coords(H, W, device=dev))
    g = torch.Generator(device=dev).manual_seed(0)
    for d in (depth.reshape(-1), None):
        out = sample_rays(origins, dirs, z_scale, d, grid, cfg, g)
        assert out.t_starts.device.type == "cuda" and out.valid.any(1).all()
    grid.update_from_density(lambda p: torch.ones(len(p), device=dev), 0.5)
    extent = SceneExtent()
    extent.update_from_points(points)
    assert extent.contains(points).all()
    grid.load_state_dict(grid.state_dict())
    assert grid.device.type == "cuda"
