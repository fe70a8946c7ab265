"""Conversions between ROS messages and the numpy arrays the core works on.

Decoding only; no mathematics beyond unpacking (the geometry lives in the core).
Every decoder raises :class:`InputError` with a reason a person can act on.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapping.core.geometry import check_intrinsics, check_rigid, pose_matrix
from panoptic_mapping.core.lens import LensDistortion, check_lens

__all__ = ["InputError", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "image_to_rgb",
           "image_to_depth", "camera_info_to_intrinsics", "camera_info_to_lens",
           "pose_to_matrix", "numpy_to_image"]


class InputError(ValueError):
    """A message that cannot be used, with the reason."""


COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
_DTYPES = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1),
           "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1), "32SC1": (np.int32, 1)}


def _pixels(msg: Image) -> np.ndarray:
    """(H, W, C) view of an Image's data honouring step and endianness."""
    dtype, channels = _DTYPES[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dt.itemsize
    if msg.height == 0 or msg.width == 0:
        raise InputError("image is empty (width or height is 0)")
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise InputError(f"image data too short for {msg.width}x{msg.height} {msg.encoding} "
                         f"(step {msg.step}, {len(msg.data)} bytes)")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = buf.reshape(msg.height, msg.step)[:, :row_bytes]
    return np.ascontiguousarray(rows).view(dt).reshape(msg.height, msg.width, channels)


def image_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an rgb8, bgr8 or mono8 image."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise InputError(f"unsupported colour encoding '{msg.encoding}' "
                         f"(supported: {', '.join(COLOR_ENCODINGS)})")
    px = _pixels(msg)
    if msg.encoding == "bgr8":
        px = px[..., ::-1]
    elif msg.encoding == "mono8":
        px = np.repeat(px, 3, axis=2)
    return np.ascontiguousarray(px, dtype=np.uint8)


def image_to_depth(msg: Image) -> np.ndarray:
    """Metric depth float32 (H, W) in metres; 0 where unknown (NaN, inf, 0 mm)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f"unsupported depth encoding '{msg.encoding}' "
                         f"(supported: 16UC1 in mm, 32FC1 in m)")
    px = _pixels(msg)[..., 0]
    depth = px.astype(np.float32) * (0.001 if msg.encoding == "16UC1" else 1.0)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def check_image_size(msg, max_pixels: int, what: str = "image") -> None:
    """Refuse an Image (or CameraInfo) larger than ``max_pixels`` before anything is
    decoded or allocated for it; raises InputError with its size."""
    width, height = int(msg.width), int(msg.height)
    if width * height > max_pixels:
        raise InputError(f"{what} is {width}x{height} = {width * height} pixels, more than "
                         f"input.max_image_pixels ({max_pixels})")


def camera_info_to_intrinsics(msg: CameraInfo, lens_mode: str = "ignore"
                              ) -> tuple[np.ndarray, int, int]:
    """(K (3, 3), width, height) from a CameraInfo; raises InputError when unusable.

    ``lens_mode`` 'rectified' takes the rectified camera's intrinsics (``p``; ``k``
    where ``p`` is all zero), any other mode ``k`` (``input.lens``)."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if lens_mode == "rectified":
        P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
        if P[:, :3].any():
            K = P[:, :3].copy()
    try:
        K = check_intrinsics(K, int(msg.width), int(msg.height))
    except ValueError as exc:
        raise InputError(f"camera_info: {exc}") from exc
    return K, int(msg.width), int(msg.height)


def camera_info_to_lens(msg: CameraInfo, K: np.ndarray, lens_mode: str
                        ) -> LensDistortion | None:
    """The lens distortion the images still carry (None: pinhole images), by
    ``input.lens``: only 'undistort' reads ``distortion_model`` and ``d``; raises
    InputError naming an unsupported model or coefficients that cannot be undistorted."""
    if lens_mode != "undistort":
        return None
    try:
        return check_lens(str(msg.distortion_model), list(msg.d), int(msg.width),
                          int(msg.height), K)
    except ValueError as exc:
        raise InputError(f"camera_info: {exc} (input.lens:=rectified if the images are "
                         "already rectified, input.lens:=ignore to use k alone)") from exc


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """Camera-to-map transform (4, 4) of a Pose; raises InputError for NaN or bad rotation."""
    p, q = pose.position, pose.orientation
    try:
        return check_rigid(pose_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]))
    except ValueError as exc:
        raise InputError(f"pose: {exc}") from exc


def transform_to_matrix(transform) -> np.ndarray:
    """(4, 4) matrix of a geometry_msgs/Transform (the quaternion normalised, as for
    poses); raises InputError for NaN/inf or a zero quaternion."""
    t, q = transform.translation, transform.rotation
    try:
        return check_rigid(pose_matrix([t.x, t.y, t.z], [q.x, q.y, q.z, q.w]))
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def numpy_to_image(array: np.ndarray, encoding: str, header=None) -> Image:
    """Image message from (H, W) or (H, W, C) pixels of the dtype the encoding implies."""
    dtype, channels = _DTYPES[encoding]
    arr = np.ascontiguousarray(array, dtype=dtype)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] != channels:
        raise ValueError(f"{encoding} needs {channels} channels, got {arr.shape[2]}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = arr.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * arr.dtype.itemsize
    msg.data = arr.tobytes()
    return msg
