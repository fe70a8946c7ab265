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
                chunk_rays: int, min_opacity: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour and depth of a whole view, rendered in chunks of ``chunk_rays`` rays.

    Args:
        K: (3, 3). camera_to_world: (4, 4). shape: (H, W).
        min_opacity: a ray whose accumulated opacity is below this hit no surface: its
            depth is 0 (unknown), not an average pulled towards the camera by misses.

    Returns:
        RGB (H, W, 3) uint8 and optical-axis depth (H, W) float32 metres (0 = none).
    """
    h, w = shape
    device = grid.device
    pix = all_pixel_coords(h, w, device=device)
    K_t = torch.as_tensor(K, dtype=torch.float32, device=device)
    pose = torch.as_tensor(camera_to_world, dtype=torch.float32, device=device)
    rgb, depth = [], []
    for chunk in torch.split(pix, chunk_rays):
        o, d, z = pixel_rays(K_t, pose, chunk)
        samples = sample_rays(o, d, z, None, grid, sampling, stratified=False)
        out = render_rays(field, o, d, samples, semantics=False, instances=False)
        rgb.append(out["rgb"])
        opacity = out["opacity"].clamp_min(1e-6)
        # expected depth of the surface actually hit, not pulled towards 0 by misses
        depth.append(torch.where(out["opacity"] > min_opacity, out["depth"] / opacity, 0.0) * z)
    rgb_img = (torch.cat(rgb).clamp(0, 1) * 255).round().to(torch.uint8)
    return (rgb_img.reshape(h, w, 3).cpu().numpy(),
            torch.cat(depth).reshape(h, w).cpu().numpy().astype(np.float32))
