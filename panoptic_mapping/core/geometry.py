"""Rigid-body helpers shared by the core and the adapter (numpy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["pose_matrix", "quaternion_to_rotation", "check_rigid", "check_intrinsics",
           "backproject", "depth_edges"]


def quaternion_to_rotation(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion given as (x, y, z, w); normalised first.

    Raises:
        ValueError: for a non-finite or zero-length quaternion.
    """
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(4)
    norm = np.linalg.norm(q)
    if not np.isfinite(q).all() or norm < 1e-9:
        raise ValueError(f"invalid quaternion {q.tolist()} (must be finite and non-zero)")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def pose_matrix(translation: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Homogeneous transform (4, 4) from a translation (3,) and a quaternion (x, y, z, w)."""
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    if not np.isfinite(t).all():
        raise ValueError(f"invalid translation {t.tolist()} (must be finite)")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q_xyzw)
    T[:3, 3] = t
    return T


def check_rigid(T: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Validate a camera-to-world transform (4, 4): finite, orthonormal, det +1.

    Returns the transform as float64; raises ValueError with the reason otherwise.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError("pose contains NaN or inf")
    R = T[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1.0) > tol:
        raise ValueError("pose rotation is not a proper rotation (R R^T != I or det != 1)")
    if np.abs(T[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tol:
        raise ValueError(f"pose last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    return T


def check_intrinsics(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Validate a pinhole matrix (3, 3) for an image of ``width`` x ``height`` pixels."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {K.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError("intrinsics need finite, positive focal lengths fx, fy "
                         "(camera_info.k is empty or invalid)")
    return K


def backproject(depth: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """World points of the pixels with valid depth.

    Pixel centres are at integer (u, v), as in OpenCV and sensor_msgs/CameraInfo.

    Args:
        depth: (H, W) depth along the optical axis; <= 0 or non-finite = none.
        K: (3, 3) intrinsics. camera_to_world: (4, 4) pose.

    Returns:
        points (P, 3) float64 in the world frame and pix (P,) int64 flat pixel indices
        (row-major) they come from.
    """
    h, w = depth.shape
    d = depth.reshape(-1).astype(np.float64)
    pix = np.flatnonzero(np.isfinite(d) & (d > 0))
    v, u = np.divmod(pix, w)
    z = d[pix]
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    cam = np.stack([x, y, z], axis=1)
    return cam @ camera_to_world[:3, :3].T + camera_to_world[:3, 3], pix


def depth_edges(depth: np.ndarray, curvature: float) -> np.ndarray:
    """(H, W) bool: pixels on or next to a depth edge (a jump, a crease, or missing depth).

    On a plane, inverse depth is affine in the pixel coordinates, so its second difference
    along a row or column vanishes; at a jump or a crease between surfaces it does not.
    A pixel is on an edge where |second difference of 1/d| > ``curvature`` * 1/d in either
    direction, or where a neighbour has no depth; the result is dilated by one pixel so
    that both sides of an edge are marked.

    Args:
        depth: (H, W) depth; <= 0 or non-finite = none.
        curvature: relative threshold (scale-free: the same for near and far surfaces).
    """
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    z = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
    edge = ~valid
    across_cols = np.abs(z[:, 2:] - 2 * z[:, 1:-1] + z[:, :-2]) > curvature * z[:, 1:-1]
    across_rows = np.abs(z[2:] - 2 * z[1:-1] + z[:-2]) > curvature * z[1:-1]
    edge[:, 1:-1] |= across_cols
    edge[1:-1] |= across_rows
    out = edge.copy()
    out[:, 1:] |= edge[:, :-1]
    out[:, :-1] |= edge[:, 1:]
    out[1:] |= edge[:-1]
    out[:-1] |= edge[1:]
    return out
