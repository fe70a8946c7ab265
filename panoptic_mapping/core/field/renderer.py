"""The renderer: the field queried along camera rays and composited.

:func:`render_rays` renders given samples (training and every view); :func:`render_view`
renders a whole camera view through the occupancy grid's samples, in chunks. The
quadrature itself is in :mod:`panoptic_mapping.core.field.rendering`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.panoptic_field import PanopticField
from panoptic_mapping.core.field.rendering import (
    composite,
    composite_normalized,
    render_depth,
    weights_from_density,
)
from panoptic_mapping.core.field.sampling import (
    RaySamples,
    SamplingConfig,
    all_pixel_coords,
    pixel_rays,
    sample_occupied,
    sample_rays,
)

__all__ = ["render_rays", "render_view"]


def render_rays(field: PanopticField, origins: Tensor, dirs: Tensor, samples: RaySamples,
                semantics: bool = True, instances: bool = True) -> dict[str, Tensor]:
    """Query the field along rays and composite.

    Semantic and instance features are composited with detached weights: their losses
    never reach density.

    Returns:
        rgb (R, 3), depth (R,) along the ray, opacity (R,), weights (R, S), and when asked
        semantic (R, semantic_dim) and instance (R, instance_dim, unit) features.
    """
    valid = samples.valid
    t_mid = samples.midpoints
    pts = samples.points(origins, dirs)[valid]  # only valid samples are queried
    r, s = valid.shape
    sigma = torch.zeros(r, s, device=origins.device)
    sigma_v, geo = field.geometry(pts)
    sigma = sigma.masked_scatter(valid, sigma_v)
    color = torch.zeros(r, s, 3, device=origins.device)
    color[valid] = field.color(geo)
    weights, _ = weights_from_density(sigma, samples.t_ends - samples.t_starts, valid)
    out = {"rgb": composite(weights, color), "depth": render_depth(weights, t_mid),
           "opacity": weights.sum(-1), "weights": weights}
    w_det = weights.detach()
    if semantics:
        sem = torch.zeros(r, s, field.cfg.semantic_dim, device=origins.device)
        sem[valid] = field.semantic_features(pts)
        out["semantic"] = composite(w_det, sem)
    if instances:
        inst = torch.zeros(r, s, field.cfg.instance_dim, device=origins.device)
        inst[valid] = field.instance_features(pts)
        out["instance"] = composite_normalized(w_det, inst)
    return out


@torch.no_grad()
def render_view(field: PanopticField, grid: OccupancyGrid, sampling: SamplingConfig,
                K: np.ndarray, camera_to_world: np.ndarray, shape: tuple[int, int],
                chunk_rays: int, min_opacity: float, *, tile_px: int = 16,
                round_samples: int = 8, stop_transmittance: float = 1e-3,
                smooth_depth_rel: float = 0.0, smooth_rgb: int = 0, smooth_levels: int = 1,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Colour and depth of a whole view, rendered in chunks of ``chunk_rays`` rays.

    Empty space costs nothing: each ray is marched only inside the window where the
    occupancy grid's voxels project onto its tile (:meth:`OccupancyGrid.view_bounds`), and
    rendered ``round_samples`` samples at a time, front to back, until its transmittance
    falls below ``stop_transmittance`` (early ray termination) or it has the
    ``samples_per_ray_rgb`` samples of a training ray. Up to that residual, the image is
    the one a single pass over the whole march would render (the same samples, in the
    same order).

    With ``smooth_depth_rel`` > 0 the view is drawn coarse to fine: the rays of a lattice
    of every ``2 ** smooth_levels``-th pixel of every such row first, then, halving the
    spacing, each pixel between lattice rays whose two or four neighbours agree (all hit
    a surface, their depths within ``smooth_depth_rel`` of each other, their colours
    within ``smooth_rgb`` levels in every channel) is interpolated from them and every
    other pixel is rendered: outlines, texture and unknown space are drawn, the smooth
    rest costs a fraction of its rays. A structure thinner than the lattice whose
    neighbours all agree is missed (the price of not drawing every pixel).

    Args:
        K: (3, 3). camera_to_world: (4, 4). shape: (H, W).
        min_opacity: a ray whose accumulated opacity is below this hit no surface: its
            depth is 0 (unknown), not an average pulled towards the camera by misses.
        tile_px: tile edge of the view bounds. round_samples: samples per ray and round.
        stop_transmittance: a ray stops once less than this much light passes.
        smooth_depth_rel, smooth_rgb: the interpolation's tolerances (0: every pixel
            rendered). smooth_levels: the coarsest lattice's spacing is 2 ** this.

    Returns:
        RGB (H, W, 3) uint8 and optical-axis depth (H, W) float32 metres (0 = none).
    """
    h, w = shape
    device = grid.device
    K_t = torch.as_tensor(K, dtype=torch.float32, device=device)
    pose = torch.as_tensor(camera_to_world, dtype=torch.float32, device=device)
    bounds = None if grid.is_empty else grid.view_bounds(K_t, pose, shape, tile_px)

    def draw(index: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3) colours in [0, 1] and (N,) depths of the pixels ``index`` (row-major)."""
        pix = torch.stack([index % w, index // w], 1).to(torch.float32)
        rgb, depth = [], []
        for lo in range(0, pix.shape[0], chunk_rays):
            o, d, z = pixel_rays(K_t, pose, pix[lo:lo + chunk_rays])
            if bounds is None:  # nothing occupied yet: uniform samples, one pass
                samples = sample_rays(o, d, z, None, grid, sampling, stratified=False)
                out = render_rays(field, o, d, samples, semantics=False, instances=False)
                color, t_sum, opacity = out["rgb"], out["depth"], out["opacity"]
            else:
                at = index[lo:lo + chunk_rays]
                color, t_sum, opacity = _render_in_rounds(
                    field, grid, sampling, o, d, (bounds[0][at], bounds[1][at]),
                    round_samples, stop_transmittance)
            rgb.append(color.clamp(0, 1))
            # expected depth of the surface actually hit, not pulled towards 0 by misses
            depth.append(torch.where(opacity > min_opacity,
                                     t_sum / opacity.clamp_min(1e-6), 0.0) * z)
        if not rgb:
            return torch.zeros(0, 3, device=device), torch.zeros(0, device=device)
        return torch.cat(rgb), torch.cat(depth)

    if smooth_depth_rel > 0 and h >= 3 and w >= 3:
        rgb, depth = _render_adaptive(draw, h, w, smooth_depth_rel, smooth_rgb / 255.0,
                                      device, smooth_levels)
    else:
        rgb, depth = draw(torch.arange(h * w, device=device))
    rgb_img = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
    return (rgb_img.reshape(h, w, 3).cpu().numpy(),
            depth.reshape(h, w).cpu().numpy().astype(np.float32))


def _render_adaptive(draw, h: int, w: int, depth_rel: float, rgb_tol: float,
                     device: torch.device, levels: int = 1) -> tuple[Tensor, Tensor]:
    """(H*W, 3) colours and (H*W,) depths, coarse to fine (see :func:`render_view`).

    The pixels on a lattice of spacing ``2 ** levels`` (and the last row and column) are
    drawn; then, halving the spacing each time, every pixel of the finer lattice that is
    not on the coarser one is interpolated from its coarser lattice neighbours (bilinear)
    where they agree, and drawn where they do not.
    """
    rgb = torch.zeros(h * w, 3, device=device)
    depth = torch.zeros(h * w, device=device)
    rgb_img, depth_img = rgb.view(h, w, 3), depth.view(h, w)
    v, u = torch.arange(h, device=device), torch.arange(w, device=device)

    def lattice(spacing: int) -> tuple[Tensor, Tensor]:
        # contiguous: strided slices cost searchsorted a copy (and a warning) each level
        rows, cols = v[::spacing].contiguous(), u[::spacing].contiguous()
        if rows[-1] != h - 1:
            rows = torch.cat([rows, rows.new_tensor([h - 1])])
        if cols[-1] != w - 1:
            cols = torch.cat([cols, cols.new_tensor([w - 1])])
        return rows, cols

    spacing = 2 ** levels
    rows, cols = lattice(spacing)
    known = (rows[:, None] * w + cols[None, :]).reshape(-1)
    rgb[known], depth[known] = draw(known)
    while spacing > 1:
        fine_rows, fine_cols = lattice(spacing // 2)
        # each fine pixel's bracketing coarse rows and columns
        r_hi = torch.searchsorted(rows, fine_rows).clamp(max=rows.numel() - 1)
        c_hi = torch.searchsorted(cols, fine_cols).clamp(max=cols.numel() - 1)
        r1, c1 = rows[r_hi], cols[c_hi]
        r0 = rows[(r_hi - (r1 != fine_rows).long()).clamp_min(0)]
        c0 = cols[(c_hi - (c1 != fine_cols).long()).clamp_min(0)]
        fr = ((fine_rows - r0) / (r1 - r0).clamp_min(1)).to(rgb.dtype)
        fc = ((fine_cols - c0) / (c1 - c0).clamp_min(1)).to(rgb.dtype)
        corners = [(r0[:, None], c0[None, :]), (r0[:, None], c1[None, :]),
                   (r1[:, None], c0[None, :]), (r1[:, None], c1[None, :])]
        wt = torch.stack([(1 - fr)[:, None] * (1 - fc)[None, :],
                          (1 - fr)[:, None] * fc[None, :],
                          fr[:, None] * (1 - fc)[None, :], fr[:, None] * fc[None, :]])
        cd = torch.stack([depth_img[r, c] for r, c in corners])      # (4, h', w')
        cc = torch.stack([rgb_img[r, c] for r, c in corners])        # (4, h', w', 3)
        used = wt > 0
        big = torch.finfo(cd.dtype).max
        d_max = torch.where(used, cd, torch.full_like(cd, -big)).amax(0)
        d_min = torch.where(used, cd, torch.full_like(cd, big)).amin(0)
        c_max = torch.where(used[..., None], cc, torch.full_like(cc, -big)).amax(0)
        c_min = torch.where(used[..., None], cc, torch.full_like(cc, big)).amin(0)
        # not on the coarse lattice: a coarse row and a coarse column
        new = ~((r0 == fine_rows)[:, None] & (c0 == fine_cols)[None, :])
        smooth = new & (d_min > 0) & (d_max - d_min <= depth_rel * d_min) \
            & ((c_max - c_min).amax(-1) <= rgb_tol)
        flat = (fine_rows[:, None] * w + fine_cols[None, :])
        rgb[flat[smooth]] = (wt[..., None] * cc).sum(0)[smooth]
        depth[flat[smooth]] = (wt * cd).sum(0)[smooth]
        rest = flat[new & ~smooth]
        if rest.numel():
            rgb[rest], depth[rest] = draw(rest)
        rows, cols, spacing = fine_rows, fine_cols, spacing // 2
    return rgb, depth


def _render_in_rounds(field: PanopticField, grid: OccupancyGrid, sampling: SamplingConfig,
                      origins: Tensor, dirs: Tensor, window: tuple[Tensor, Tensor],
                      round_samples: int, stop_transmittance: float,
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """(colour (R, 3), sum of weight x distance (R,), opacity (R,)) of rays (R, 3) marched
    inside their ``window`` ((R,) start, (R,) stop), a round of samples at a time."""
    n_rays = origins.shape[0]
    color = torch.zeros(n_rays, 3, device=origins.device)
    t_sum = torch.zeros(n_rays, device=origins.device)
    transmittance = torch.ones(n_rays, device=origins.device)
    start, stop = window[0].clone(), window[1]
    rays = torch.nonzero(start <= stop).reshape(-1)
    left = sampling.samples_per_ray_rgb
    while rays.numel() and left > 0:
        n = min(round_samples, left)
        samples = sample_occupied(
            origins[rays], dirs[rays], grid, sampling.near_m, sampling.far_m, n,
            step_ratio=sampling.march_step_ratio, max_steps=sampling.max_march_steps,
            stratified=False, window=(start[rays], stop[rays]))
        out = render_rays(field, origins[rays], dirs[rays], samples, semantics=False,
                          instances=False)
        t = transmittance[rays]
        color[rays] += t[:, None] * out["rgb"]
        t_sum[rays] += t * out["depth"]
        transmittance[rays] = t * (1.0 - out["opacity"]).clamp_min(0.0)
        count = samples.valid.sum(1)
        # the next round resumes in the candidate after this round's last one
        last = (count - 1).clamp_min(0)[:, None]
        end = samples.t_ends.gather(1, last)[:, 0]
        start[rays] = end + 0.5 * (end - samples.t_starts.gather(1, last)[:, 0])
        left -= n
        rays = rays[(count == n) & (transmittance[rays] > stop_transmittance)]
    return color, t_sum, 1.0 - transmittance
