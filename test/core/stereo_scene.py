"""Analytic posed views of textured planes, for the stereo tests: a pinhole camera
(W x H, intrinsics K) looking at planes z = const with smooth random colour textures."""
from __future__ import annotations

import numpy as np

W, H = 64, 48
K = np.array([[60.0, 0.0, (W - 1) / 2], [0.0, 60.0, (H - 1) / 2], [0.0, 0.0, 1.0]])


def pose(x: float = 0.0, y: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """camera_to_world: translated, turned about the camera's y (down) axis."""
    a = np.deg2rad(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = (x, y, 0.0)
    return T


# The reference at the origin; sources left, right, below (one turned) at ~10 cm.
POSES = [pose(), pose(x=-0.1), pose(x=0.1, yaw_deg=-4.0), pose(y=0.08)]


def texture(seed: int):
    """Smooth random texture on world (X, Y): sum of sinusoids of 4-20 cm wavelength
    (2-12 px at ~1 m), three channels. Returns f(X, Y) -> (..., 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    n = 24
    wavelength = rng.uniform(0.04, 0.2, size=(3, n))
    angle = rng.uniform(0, np.pi, size=(3, n))
    phase = rng.uniform(0, 2 * np.pi, size=(3, n))
    kx, ky = 2 * np.pi / wavelength * np.cos(angle), 2 * np.pi / wavelength * np.sin(angle)

    def f(X, Y):
        arg = X[..., None, None] * kx + Y[..., None, None] * ky + phase
        return np.clip(0.5 + 0.9 * np.sin(arg).sum(-1) / np.sqrt(2 * n), 0.0, 1.0)
    return f


def render(T: np.ndarray, planes) -> tuple[np.ndarray, np.ndarray]:
    """RGB (H, W, 3) uint8 and depth (H, W) of a camera looking at world planes z = const.

    planes: (z, x_min, x_max, colour(X, Y) -> (..., 3)); each is the part of the plane with
    x_min <= X < x_max; the nearest hit along each pixel's ray is seen.
    """
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T   # camera, z = 1
    d = rays @ T[:3, :3].T                                              # world direction
    o = T[:3, 3]
    depth = np.full((H, W), np.inf)
    rgb = np.zeros((H, W, 3))
    for z, x_min, x_max, colour in planes:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z - o[2]) / d[..., 2]                 # = depth along the optical axis
        X, Y = o[0] + s * d[..., 0], o[1] + s * d[..., 1]
        hit = (s > 0) & (X >= x_min) & (X < x_max) & (s < depth)
        depth[hit] = s[hit]
        rgb[hit] = colour(X[hit], Y[hit])
    depth[~np.isfinite(depth)] = 0.0
    return np.round(rgb * 255).astype(np.uint8), depth.astype(np.float32)
