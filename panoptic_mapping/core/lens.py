"""Lens distortion: the images a real camera sends, and the pinhole images the map needs.

Every geometric step of the map (back-projecting depth, plane-sweep stereo, fusing masks
into voxels, drawing the map into a view) assumes a pinhole camera. A driver publishes
its raw images with the lens's distortion in ``camera_info.d``: at the edge of a TUM
freiburg1 image (k1 0.26, k2 -0.95, k3 1.16) a pixel lies ~20 px from where the pinhole
model puts it, a whole stereo disparity. A :class:`LensDistortion` names the model and
its coefficients as ROS and OpenCV define them; :class:`Undistortion` resamples a raw
image into the pinhole image with the same intrinsics K (and back, for per-pixel answers
the caller reads at its raw pixels).

Models (``sensor_msgs/CameraInfo.distortion_model``), on normalised coordinates
(x, y) = ((u - cx) / fx, (v - cy) / fy), r^2 = x^2 + y^2:

* ``plumb_bob`` (k1, k2, p1, p2, k3) and ``rational_polynomial`` (k1, k2, p1, p2, k3,
  k4, k5, k6): x' = x g + 2 p1 x y + p2 (r^2 + 2 x^2), y' = y g + p1 (r^2 + 2 y^2)
  + 2 p2 x y with g = (1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6);
* ``equidistant`` (k1, k2, k3, k4): theta = atan(r), theta_d = theta (1 + k1 theta^2 +
  k2 theta^4 + k3 theta^6 + k4 theta^8), (x', y') = (theta_d / r) (x, y).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LENS_MODELS", "LensDistortion", "Undistortion", "undistortion_for",
           "check_lens"]

#: Supported models and how many coefficients each takes.
LENS_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

# Newton iterations inverting the distortion, and the pixel residual below which a
# pixel's inverse counts as found.
_INVERSE_ITERATIONS = 20
_INVERSE_TOL_PX = 0.01


@dataclass(frozen=True)
class LensDistortion:
    """A lens model and its coefficients (``camera_info.distortion_model`` and ``.d``).

    Attributes:
        model: one of :data:`LENS_MODELS`.
        coefficients: exactly ``LENS_MODELS[model]`` floats, in the ROS / OpenCV order.
    """

    model: str
    coefficients: tuple[float, ...]

    @property
    def is_identity(self) -> bool:
        """True when every coefficient is 0: the raw image is already a pinhole image."""
        return not any(self.coefficients)

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) normalised pinhole coordinates -> (N, 2) where the lens images them."""
        xy = np.asarray(xy, np.float64)
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        c = self.coefficients
        if self.model == "equidistant":
            r = np.sqrt(r2)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
            scale = np.where(r > 1e-12, theta_d / np.where(r > 1e-12, r, 1.0), 1.0)
            return xy * scale[:, None]
        k1, k2, p1, p2, k3 = c[:5]
        k4, k5, k6 = c[5:8] if len(c) == 8 else (0.0, 0.0, 0.0)
        g = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * g + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * g + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=1)

    def undistort(self, xy_d: np.ndarray, iterations: int = _INVERSE_ITERATIONS
                  ) -> np.ndarray:
        """(N, 2) distorted normalised coordinates -> (N, 2) pinhole ones: the inverse of
        :meth:`distort` by Newton's method from x = x_d (the plain fixed-point iteration
        x <- x + x_d - distort(x) diverges where the lens stretches the radius more than
        twice, as a freiburg1 polynomial does at r ~ 0.9)."""
        xy_d = np.asarray(xy_d, np.float64)
        xy = xy_d.copy()
        h = 1e-6
        for _ in range(iterations):
            f = self.distort(xy)
            r = f - xy_d
            if np.abs(r).max(initial=0.0) < 1e-12:
                break
            jx = (self.distort(xy + (h, 0.0)) - f) / h  # d distort / dx, (N, 2)
            jy = (self.distort(xy + (0.0, h)) - f) / h
            det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
            det = np.where(np.abs(det) > 1e-12, det, 1e-12)
            step = np.stack([(jy[:, 1] * r[:, 0] - jy[:, 0] * r[:, 1]) / det,
                             (jx[:, 0] * r[:, 1] - jx[:, 1] * r[:, 0]) / det], axis=1)
            xy -= np.clip(step, -0.5, 0.5)  # a bounded step where the Jacobian is poor
        return xy


def check_lens(model: str, coefficients, width: int | None = None,
               height: int | None = None, K: np.ndarray | None = None
               ) -> LensDistortion | None:
    """A validated :class:`LensDistortion`, or None when there is no distortion.

    No coefficients, or all of them 0, is a pinhole camera whatever the model's name.
    ``plumb_bob`` takes 4 or 5 coefficients (a missing k3 is 0) and, as OpenCV reads it,
    8 for the rational model; ``rational_polynomial`` 5 to 8 (missing ones 0).
    With ``K`` and the image size, the distortion must also invert over the whole image
    (a raw pixel's pinhole position found to 0.01 px) and keep the image's own order
    (no fold: coefficients with the wrong sign or scale fold the image's edge back).

    Raises:
        ValueError: an unknown model, a wrong number of coefficients, NaN or inf, or a
            distortion that does not invert over the image; the message says which.
    """
    values = [float(v) for v in coefficients]
    if not np.isfinite(values).all():
        raise ValueError(f"distortion coefficients must be finite, got {values}")
    if not any(values):
        return None
    name = model.strip().lower()
    if name == "plumb_bob" and len(values) == 8:
        name = "rational_polynomial"
    if name not in LENS_MODELS:
        raise ValueError(f"distortion model '{model}' is not supported (supported: "
                         f"{', '.join(LENS_MODELS)})")
    n = LENS_MODELS[name]
    least = {"plumb_bob": 4, "rational_polynomial": 5, "equidistant": 4}[name]
    if not least <= len(values) <= n:
        raise ValueError(f"distortion model '{name}' takes {least}-{n} coefficients, got "
                         f"{len(values)}")
    lens = LensDistortion(name, tuple(values + [0.0] * (n - len(values))))
    if K is not None and width is not None and height is not None:
        reason = _not_invertible(lens, np.ascontiguousarray(K, np.float64).tobytes(),
                                 int(width), int(height))
        if reason:
            raise ValueError(reason)
    return lens


@lru_cache(maxsize=16)
def _not_invertible(lens: LensDistortion, K_bytes: bytes, width: int, height: int) -> str:
    """Why the raw image's border does not map back to pinhole coordinates that the lens
    images there again, in order ("" when it does). Cached: every frame of a camera
    brings the same camera_info (~1 ms a check at 640x480)."""
    K = np.frombuffer(K_bytes, np.float64).reshape(3, 3)
    u = np.concatenate([np.arange(width), np.arange(width), np.zeros(height),
                        np.full(height, width - 1.0)])
    v = np.concatenate([np.zeros(width), np.full(width, height - 1.0), np.arange(height),
                        np.arange(height)])
    xy_d = _normalised(u, v, K)
    with np.errstate(all="ignore"):  # a diverging inverse is what this looks for
        xy = lens.undistort(xy_d)
        residual = np.abs(lens.distort(xy) - xy_d).max(axis=1) * max(K[0, 0], K[1, 1])
    # along a border row the pinhole x must grow with the raw x (no fold)
    rows = xy[:2 * width, 0].reshape(2, width)
    if not np.isfinite(xy).all() or residual.max() > _INVERSE_TOL_PX \
            or (np.diff(rows, axis=1) <= 0).any():
        return (f"the {lens.model} distortion {list(lens.coefficients)} does not invert "
                f"over the {width}x{height} image (it folds or diverges at the border): "
                "wrong coefficients for this camera?")
    return ""


def _normalised(u: np.ndarray, v: np.ndarray, K: np.ndarray) -> np.ndarray:
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]], axis=1)


class Undistortion:
    """Pixel maps between a camera's raw images and the pinhole images the map works in.

    The pinhole image keeps the raw one's focal lengths. With ``grow`` its canvas widens,
    by at most ``MAX_GROW`` of the raw size on each side, to hold every raw pixel: a barrel
    lens (k1 < 0) sees wider than the pinhole image of the same size, and what it sees at
    its edges would otherwise be cut off. A pinhole pixel whose ray falls outside the raw
    image gets nothing (colour 0, depth 0, mask 0).

    Attributes:
        K_pinhole: (3, 3) intrinsics of the pinhole image (the principal point moved by
            the canvas's growth). pinhole_shape: its (H, W).
    """

    MAX_GROW = 0.25

    def __init__(self, K: np.ndarray, lens: LensDistortion, shape: tuple[int, int],
                 grow: bool = True):
        """K: (3, 3) intrinsics of the raw image. shape: its (H, W). grow: widen the
        pinhole canvas to the raw image's view (False: the same size and K)."""
        self.K = np.asarray(K, np.float64)
        self.lens = lens
        self.shape = (int(shape[0]), int(shape[1]))
        h, w = self.shape
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        u, v = u.reshape(-1), v.reshape(-1)
        pin = self._pixels(lens.undistort(_normalised(u, v, self.K)), self.K)
        left = top = 0
        ph, pw = h, w
        if grow:  # whole pixels, so the pinhole grid keeps the raw one's pixel centres
            g = self.MAX_GROW
            left = int(np.clip(np.ceil(-pin[:, 0].min() - 0.5), 0, g * w))
            top = int(np.clip(np.ceil(-pin[:, 1].min() - 0.5), 0, g * h))
            right = int(np.clip(np.ceil(pin[:, 0].max() - (w - 0.5)), 0, g * w))
            bottom = int(np.clip(np.ceil(pin[:, 1].max() - (h - 0.5)), 0, g * h))
            ph, pw = h + top + bottom, w + left + right
        self.K_pinhole = self.K.copy()
        self.K_pinhole[0, 2] += left
        self.K_pinhole[1, 2] += top
        self.pinhole_shape = (ph, pw)
        # where each raw pixel lies in the pinhole image
        self._to_raw = _Sampler(pin + (left, top), (h, w), (ph, pw))
        # where each pinhole pixel is seen in the raw image
        pv, pu = np.mgrid[0:ph, 0:pw].astype(np.float64)
        raw = self._pixels(lens.distort(_normalised(pu.reshape(-1), pv.reshape(-1),
                                                    self.K_pinhole)), self.K)
        self._from_raw = _Sampler(raw, (ph, pw), (h, w))

    @staticmethod
    def _pixels(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
        return np.stack([xy[:, 0] * K[0, 0] + K[0, 2], xy[:, 1] * K[1, 1] + K[1, 2]], 1)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, C) raw image -> pinhole image, bilinear (same dtype)."""
        return self._from_raw.bilinear(rgb)

    def nearest(self, values: np.ndarray) -> np.ndarray:
        """(H, W) raw depth or labels -> pinhole, nearest pixel (depths and ids are never
        blended across an outline)."""
        return self._from_raw.nearest(values)

    def to_raw(self, values: np.ndarray) -> np.ndarray:
        """Pinhole labels -> the raw image's (H, W) pixels, nearest pixel (the answers a
        caller reads at its own pixels)."""
        return self._to_raw.nearest(values)

    def image_to_raw(self, rgb: np.ndarray) -> np.ndarray:
        """Pinhole image (..., C) -> raw (H, W, C), bilinear: what the lens makes of a
        pinhole image (the benchmark's distorted scenes)."""
        return self._to_raw.bilinear(rgb)

    @property
    def seen(self) -> np.ndarray:
        """(H', W') bool of the pinhole image: the pixels whose ray the raw image sees."""
        return self._from_raw.inside

    @property
    def seen_share(self) -> float:
        """Share of the pinhole image's pixels that the raw image sees."""
        return float(self._from_raw.inside.mean())

    def describe(self) -> str:
        """One line for a log: the lens and what undistorting it makes of the image."""
        names = {"equidistant": ("k1", "k2", "k3", "k4")}.get(
            self.lens.model, ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"))
        terms = ", ".join(f"{n} {c:.4g}" for n, c in zip(names, self.lens.coefficients) if c)
        (h, w), (ph, pw) = self.shape, self.pinhole_shape
        return (f"{self.lens.model} lens ({terms}): {w}x{h} raw images undistorted into a "
                f"{pw}x{ph} pinhole image, {100 * self.seen_share:.0f} % of it seen, "
                f"{100 * self.kept_share:.0f} % of the raw pixels kept")

    @property
    def kept(self) -> np.ndarray:
        """(H, W) bool: the raw pixels the pinhole image holds (all but those beyond the
        canvas's growth)."""
        return self._to_raw.inside

    @property
    def kept_share(self) -> float:
        """Share of the raw image's pixels that the pinhole image holds."""
        return float(self._to_raw.inside.mean())


class _Sampler:
    """Reads a source image at fixed sub-pixel positions, one per output pixel."""

    def __init__(self, positions: np.ndarray, shape: tuple[int, int],
                 source_shape: tuple[int, int]):
        """positions: (H * W, 2) source pixel (x, y) of each output pixel; shape: the
        output's (H, W); source_shape: the source's (Hs, Ws)."""
        self.shape, self.source_shape = shape, source_shape
        hs, ws = source_shape
        x, y = positions[:, 0], positions[:, 1]
        self.inside = ((x > -0.5) & (x < ws - 0.5) & (y > -0.5)
                       & (y < hs - 0.5)).reshape(shape)
        xi = np.clip(np.rint(x), 0, ws - 1).astype(np.int64)
        yi = np.clip(np.rint(y), 0, hs - 1).astype(np.int64)
        self.nearest_index = yi * ws + xi
        # bilinear reads through grid_sample (a quarter of the time of four numpy
        # gathers at 640x480); 'border' padding clamps like reading the nearest edge pixel
        gx = 2.0 * x / max(ws - 1, 1) - 1.0
        gy = 2.0 * y / max(hs - 1, 1) - 1.0
        self.grid = torch.from_numpy(np.stack([gx, gy], 1).astype(np.float32)
                                     ).reshape(1, *shape, 2)

    def _check(self, values: np.ndarray) -> None:
        if values.shape[:2] != self.source_shape:
            raise ValueError(f"image is {values.shape[1]}x{values.shape[0]}, the lens map's "
                             f"{self.source_shape[1]}x{self.source_shape[0]}")

    def nearest(self, values: np.ndarray) -> np.ndarray:
        self._check(values)
        flat = values.reshape(-1)
        out = flat[self.nearest_index].reshape(self.shape)
        return np.where(self.inside, out, np.zeros((), values.dtype))

    def bilinear(self, image: np.ndarray) -> np.ndarray:
        self._check(image)
        src = torch.from_numpy(image.astype(np.float32))  # a copy: read-only arrays too
        src = (src[..., None] if image.ndim == 2 else src).permute(2, 0, 1)[None]
        out = F.grid_sample(src, self.grid, mode="bilinear", padding_mode="border",
                            align_corners=True)[0].permute(1, 2, 0)
        out[~torch.from_numpy(self.inside)] = 0.0
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            out = out.round().clamp(info.min, info.max)
        return out.numpy().astype(image.dtype).reshape(*self.shape, *image.shape[2:])


@lru_cache(maxsize=4)  # a node sees one camera; the maps of a 640x480 one hold ~10 MB
def _cached(K_bytes: bytes, lens: LensDistortion, shape: tuple[int, int], grow: bool
            ) -> Undistortion:
    return Undistortion(np.frombuffer(K_bytes, np.float64).reshape(3, 3), lens, shape, grow)


def undistortion_for(K: np.ndarray, lens: LensDistortion, shape: tuple[int, int],
                     grow: bool = True) -> Undistortion:
    """The :class:`Undistortion` of a camera, built once per (K, lens, size): a camera
    streams with one calibration, and building the maps of a 640x480 image costs a few
    hundred milliseconds."""
    return _cached(np.ascontiguousarray(K, np.float64).tobytes(), lens,
                   (int(shape[0]), int(shape[1])), bool(grow))
