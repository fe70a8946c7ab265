"""Colours and pictures of instance maps (ROS-free; numpy and PIL only).

* :func:`instance_colors` gives every instance id a stable, well-spread colour (the same
  in the panoptic image, the markers and the demo's pictures);
* :func:`colorize` paints an instance-id image;
* :func:`cloud_picture` renders a labeled cloud as orthographic point splats seen from
  above and from an oblique viewpoint, coloured by instance.
"""
from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["instance_colors", "colorize", "cloud_picture", "side_by_side"]

_GOLDEN = 0.618033988749895


def instance_colors(ids) -> np.ndarray:
    """(N, 3) uint8 colours of instance ids (N,); id 0 is black.

    Hues step by the golden ratio, so consecutive ids get very different colours;
    saturation and value vary a little with the id so that ids far apart differ too.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    uniq, inv = np.unique(ids, return_inverse=True)
    table = np.zeros((len(uniq), 3), np.uint8)
    for k, i in enumerate(uniq.tolist()):
        if i == 0:
            continue
        h = (i * _GOLDEN) % 1.0
        s = 0.55 + 0.35 * ((i * 7) % 5) / 4.0
        v = 0.75 + 0.25 * ((i * 3) % 4) / 3.0
        table[k] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255).astype(np.uint8)
    return table[inv]


def colorize(ids: np.ndarray, rgb: np.ndarray | None = None, alpha: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 picture of an instance-id image, optionally blended over ``rgb``.

    Pixels with id 0 show ``rgb`` darkened (or black without ``rgb``).
    """
    ids = np.asarray(ids)
    colors = instance_colors(ids.reshape(-1)).reshape(*ids.shape, 3).astype(np.float32)
    if rgb is None:
        return colors.astype(np.uint8)
    base = np.asarray(rgb, np.float32)
    out = np.where((ids > 0)[..., None], alpha * colors + (1 - alpha) * base, 0.35 * base)
    return np.clip(out, 0, 255).astype(np.uint8)


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images of the same height next to each other, with a white gap between them."""
    h = max(im.shape[0] for im in images)
    parts = []
    for k, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, 2)
        pad = np.full((h, im.shape[1], 3), 255, np.uint8)
        pad[:im.shape[0]] = im
        parts.append(pad)
        if k + 1 < len(images):
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, 1)


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """World (z up) -> view rotation (3, 3): rows are the picture's right, down and depth.

    The viewer sits at azimuth ``yaw`` and elevation ``pitch`` (90 = straight above) and
    looks at the cloud; the view frame is right-handed like a camera's optical frame.
    """
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    forward = -np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), np.sin(p)])
    right = np.array([-np.sin(y), np.cos(y), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def _splat(xyz: np.ndarray, colors: np.ndarray, R: np.ndarray, size: int,
           radius: int) -> np.ndarray:
    """Orthographic z-buffered splats of points into a size x size picture."""
    img = np.full((size, size, 3), 255, np.uint8)
    if len(xyz) == 0:
        return img
    uvw = xyz @ R.T
    lo, hi = uvw[:, :2].min(0), uvw[:, :2].max(0)
    scale = (size - 2 * radius - 8) / max(float((hi - lo).max()), 1e-6)
    centre = (lo + hi) / 2
    px = np.round((uvw[:, :2] - centre) * scale + size / 2).astype(np.int64)
    depth = uvw[:, 2]
    order = np.argsort(depth, kind="stable")  # nearest first
    px, colors = px[order], colors[order]
    zbuf = np.full((size, size), np.iinfo(np.int64).max, np.int64)
    rank = np.arange(len(px), dtype=np.int64)
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            u, v = px[:, 0] + du, px[:, 1] + dv
            ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
            np.minimum.at(zbuf, (v[ok], u[ok]), rank[ok])
    hit = zbuf != np.iinfo(np.int64).max
    img[hit] = colors[zbuf[hit]]
    return img


def cloud_picture(xyz: np.ndarray, instance: np.ndarray, rgb: np.ndarray | None = None,
                  size: int = 480, radius: int = 1,
                  views: tuple[tuple[str, float, float], ...] = (("top-down", 0.0, 90.0),
                                                                ("oblique", 35.0, 35.0)),
                  max_points: int = 150_000) -> np.ndarray:
    """(size, len(views) * size, 3) uint8 picture of a labeled cloud.

    Points with an instance are coloured by :func:`instance_colors`; points without one
    in their own colour, faded (or light grey without ``rgb``).
    """
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    instance = np.asarray(instance).reshape(-1)
    if len(xyz) > max_points:
        keep = np.linspace(0, len(xyz) - 1, max_points).round().astype(np.int64)
        xyz, instance = xyz[keep], instance[keep]
        rgb = None if rgb is None else np.asarray(rgb)[keep]
    colors = instance_colors(instance)
    none = instance == 0
    if rgb is not None:
        faded = 0.4 * np.asarray(rgb, np.float32).reshape(-1, 3) + 0.6 * 220
        colors[none] = faded[none].astype(np.uint8)
    else:
        colors[none] = 200
    panels = []
    for title, yaw, pitch in views:
        panel = _splat(xyz, colors, _rotation(yaw, pitch), size, radius)
        panels.append(_caption(panel, title))
    return side_by_side(panels)


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # pragma: no cover - PIL ships with the benchmark's dependencies
        return img
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((6, 4), text, fill=(0, 0, 0))
    return np.asarray(pil)
