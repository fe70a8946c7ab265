"""Geometry shared by every layer: rigid poses and quaternions, pinhole back-projection
and z-buffered splatting, voxel keys and depth edges (numpy; voxel keys also on torch tensors).

The lowest layer of the core after :mod:`panoptic_mapping.params`: it imports nothing of
panoptic_mapping.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pose_matrix", "pose_from_xyz_quat", "quaternion_to_rotation",
           "rotation_to_quaternion", "slerp", "interpolate_pose", "check_rigid",
           "check_intrinsics", "backproject", "project_points", "splat_depth",
           "project_squares", "splat_camera_depth", "close_gaps", "depth_edges",
           "voxel_coords", "count_pairs", "up_direction",
           "pack_voxel_keys", "unpack_voxel_keys", "VOXEL_KEY_BITS", "VOXEL_KEY_BIAS",
           "VOXEL_KEY_MASK"]


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


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (x, y, z, w) with w >= 0 of a rotation matrix (3, 3).

    Shepperd's method: branch on the largest diagonal term so that no square root of a
    near-zero (or negative, through rounding) number is taken.
    """
    m = np.asarray(R, dtype=np.float64).reshape(3, 3)
    tr = np.trace(m)
    if tr > max(m[0, 0], m[1, 1], m[2, 2]):
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0))
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0))
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_from_xyz_quat(values) -> np.ndarray:
    """(4, 4) transform of ``[x, y, z, qx, qy, qz, qw]`` (the quaternion is normalised)."""
    v = np.asarray(values, dtype=np.float64).reshape(7)
    return pose_matrix(v[:3], v[3:])


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w), shortest path."""
    q0 = np.asarray(q0, np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, np.float64) / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are the same rotation: take the short way
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear interpolation is exact enough and stable
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    s = np.sin(theta)
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / s


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, t: float) -> np.ndarray:
    """Pose a fraction ``t`` in [0, 1] of the way from ``T0`` to ``T1``."""
    out = np.eye(4)
    out[:3, 3] = (1.0 - t) * T0[:3, 3] + t * T1[:3, 3]
    q = slerp(rotation_to_quaternion(T0[:3, :3]), rotation_to_quaternion(T1[:3, :3]), t)
    out[:3, :3] = quaternion_to_rotation(q)
    return out


# Real trackers hand over rotations orthonormal to ~1e-4..1e-3 (float32 matrices,
# accumulated drift: a KinectFusion sequence's are off by 1.3e-4); such a pose is projected
# onto the nearest rotation, anything further off is refused.
RIGID_TOLERANCE = 1e-2


def check_rigid(T: np.ndarray, tol: float = RIGID_TOLERANCE) -> np.ndarray:
    """Validate a camera-to-world transform (4, 4): finite, orthonormal to ``tol``, det +1.

    Returns the transform as float64 with its rotation projected onto the nearest proper
    rotation (SVD), so that what is stored is exactly rigid; raises ValueError with the
    reason otherwise.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError("pose contains NaN or inf")
    R = T[:3, :3]
    off = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if off > tol or abs(det - 1.0) > tol:
        raise ValueError(f"pose rotation is not a proper rotation (R R^T off identity by "
                         f"{off:.2g}, det {det:.4g}; tolerance {tol:g})")
    if np.abs(T[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tol:
        raise ValueError(f"pose last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    u, _, vt = np.linalg.svd(R)
    out = T.copy()
    out[:3, :3] = u @ vt  # det stays +1: det(R) is within tol of 1
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


# A pinhole model with a horizontal field of view outside this range [deg] is a broken
# camera_info (fx = 1e-6 or 1e9), not a lens.
FOV_RANGE_DEG = (0.5, 175.0)


def check_intrinsics(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Validate a pinhole matrix (3, 3) for an image of ``width`` x ``height`` pixels:
    finite positive focal lengths giving a field of view within ``FOV_RANGE_DEG``, and a
    principal point within the image widened by half its size on each side."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {K.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError("intrinsics need finite, positive focal lengths fx, fy "
                         "(camera_info.k is empty or invalid)")
    lo, hi = FOV_RANGE_DEG
    for name, f, n in (("horizontal", K[0, 0], width), ("vertical", K[1, 1], height)):
        fov = float(np.degrees(2.0 * np.arctan(0.5 * n / f)))
        if not lo <= fov <= hi:
            raise ValueError(f"intrinsics give a {name} field of view of {fov:.3g} deg for "
                             f"{width}x{height} (fx {K[0, 0]:.4g}, fy {K[1, 1]:.4g}); a "
                             f"pinhole camera has {lo}-{hi} deg")
    cx, cy = K[0, 2], K[1, 2]
    if not (-0.5 * width <= cx <= 1.5 * width and -0.5 * height <= cy <= 1.5 * height):
        raise ValueError(f"principal point ({cx:.4g}, {cy:.4g}) lies far outside the "
                         f"{width}x{height} image")
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


def project_points(points: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray,
                   near_m: float = 1e-6
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixels of world points in a pinhole view.

    Args:
        points: (N, 3) world points. K: (3, 3). camera_to_world: (4, 4).
        near_m: points at this depth or nearer count as behind the camera.

    Returns:
        u, v: (N,) int64 column and row of the nearest pixel centre (meaningless where not
        ``front``); z: (N,) float64 depth along the optical axis; front: (N,) bool.
    """
    world_to_cam = np.linalg.inv(np.asarray(camera_to_world, np.float64))
    cam = np.asarray(points, np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    front = z > near_m
    zs = np.where(front, z, 1.0)
    u = np.rint(cam[:, 0] / zs * K[0, 0] + K[0, 2]).astype(np.int64)
    v = np.rint(cam[:, 1] / zs * K[1, 1] + K[1, 2]).astype(np.int64)
    return u, v, z, front


def splat_depth(points: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray,
                shape: tuple[int, int], point_size_m: float, max_radius_px: int = 8,
                near_m: float = 1e-3) -> np.ndarray:
    """Depth image of points seen as small squares, nearest surface first (a z-buffer).

    Each point is a square of edge ``point_size_m`` facing the camera: it covers the pixels
    whose centres its projection holds (half-size ``point_size_m / 2 * f / z``, at least
    its own nearest pixel, at most ``max_radius_px`` pixels), and every pixel keeps the
    nearest depth that covers it. Squares of neighbouring voxel centres meet, so surfaces
    render closed and occlude what lies behind them; a square never reaches a pixel its
    voxel does not cover, so an object does not grow over what lies beside it (rounding
    the half-size up grew every outline by up to a pixel).

    Args:
        points: (N, 3) world points. K: (3, 3). camera_to_world: (4, 4).
        shape: (H, W) of the image. point_size_m: edge of each point's square [m].

    Returns:
        (H, W) float32 depth along the optical axis, 0 where no point projects.
    """
    world_to_cam = np.linalg.inv(np.asarray(camera_to_world, np.float64))
    cam = np.asarray(points, np.float64).reshape(-1, 3) @ world_to_cam[:3, :3].T \
        + world_to_cam[:3, 3]
    return splat_camera_depth(cam, K, shape, point_size_m, max_radius_px, near_m)


def project_squares(cam: np.ndarray, K: np.ndarray, point_size_m: float,
                    max_radius_px: int) -> tuple[np.ndarray, ...]:
    """Where squares of edge ``point_size_m`` at camera-frame points (N, 3, in front) are
    drawn (:func:`splat_camera_depth`).

    Returns:
        uf, vf: (N,) sub-pixel centres (pixel centres at integer coordinates); u, v: (N,)
        int64 nearest pixels; radius: (N,) int64 the farthest pixel offset a square can
        hold (the nearest pixel lies within half a pixel of the centre, so offsets beyond
        half-size + 0.5 cannot), at most ``max_radius_px``.
    """
    inv_z = 1.0 / cam[:, 2]
    uf = cam[:, 0] * inv_z * K[0, 0] + K[0, 2]
    vf = cam[:, 1] * inv_z * K[1, 1] + K[1, 2]
    u, v = np.rint(uf).astype(np.int64), np.rint(vf).astype(np.int64)
    radius = np.minimum(np.floor(0.5 * point_size_m * max(K[0, 0], K[1, 1]) * inv_z + 0.5),
                        max_radius_px).astype(np.int64)
    return uf, vf, u, v, radius


def splat_camera_depth(cam: np.ndarray, K: np.ndarray, shape: tuple[int, int],
                       point_size_m: float, max_radius_px: int = 8, near_m: float = 1e-3,
                       return_index: bool = False
                       ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`splat_depth` of points (N, 3) already in the camera frame (x right, y down,
    z forward).

    With ``return_index`` also the (H, W) int64 row of ``cam`` whose square each pixel
    shows (-1: none; the lower row where two squares lie at the same depth): a caller that
    drew the map's voxels knows which voxel every pixel sees without searching for it.
    """
    h, w = shape
    rows = np.arange(len(cam), dtype=np.int64)
    front = cam[:, 2] > near_m
    if not front.all():  # (copies only where some are behind: the map culls beforehand)
        cam, rows = cam[front], rows[front]
    if not len(cam):
        depth = np.zeros((h, w), np.float32)
        return (depth, np.full((h, w), -1, np.int64)) if return_index else depth
    z = np.ascontiguousarray(cam[:, 2])
    uf, vf, u, v, radius = project_squares(cam, K, point_size_m, max_radius_px)
    # One z-buffer holds depth and row together: a positive float32's bits order as its
    # value, so (bits << 32 | row) keeps, per pixel, the nearest depth (in float32, the
    # output's precision) and the row that drew it.
    keys = torch.from_numpy((z.astype(np.float32).view(np.int32).astype(np.int64) << 32)
                            | rows)
    empty = torch.iinfo(torch.int64).max
    best = torch.full((h * w,), empty, dtype=torch.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)  # the own pixel of every point
    own, k_own = v * w + u, keys
    if not inside.all():
        own, k_own = own[inside], keys[torch.from_numpy(inside)]
    best.scatter_reduce_(0, torch.from_numpy(own), k_own, reduce="amin")
    wide = radius >= 1
    if wide.any():
        # the few points whose square reaches beyond their own pixel
        u, v, z, radius = u[wide], v[wide], z[wide], radius[wide]
        ou, ov = u - uf[wide], v - vf[wide]  # own pixel's offset from the centre
        hu = (0.5 * point_size_m * K[0, 0] / z) + 1e-6
        hv = (0.5 * point_size_m * K[1, 1] / z) + 1e-6
        k_wide = keys[torch.from_numpy(wide)]
        for r in range(1, int(radius.max()) + 1):
            sel = radius >= r  # each ring of offsets at distance r: the points reaching it
            us, vs, ks = u[sel], v[sel], k_wide[torch.from_numpy(sel)]
            ous, ovs, hus, hvs = ou[sel], ov[sel], hu[sel], hv[sel]
            for dv in range(-r, r + 1):
                for du in range(-r, r + 1):
                    if max(abs(du), abs(dv)) != r:
                        continue
                    uu, vv = us + du, vs + dv
                    # a pixel is drawn where the square holds its centre
                    ok = ((uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
                          & ((du == 0) | (np.abs(ous + du) <= hus))
                          & ((dv == 0) | (np.abs(ovs + dv) <= hvs)))
                    idx = torch.from_numpy(vv[ok] * w + uu[ok])
                    best.scatter_reduce_(0, idx, ks[torch.from_numpy(ok)], reduce="amin")
    best = best.numpy()
    drawn = best != empty
    depth = np.zeros(h * w, np.float32)
    depth[drawn] = (best[drawn] >> 32).astype(np.int32).view(np.float32)
    depth = depth.reshape(h, w)
    if not return_index:
        return depth
    index = np.full(h * w, -1, np.int64)
    index[drawn] = best[drawn] & 0xFFFFFFFF
    return depth, index.reshape(h, w)


# the 8 directions (row, column steps) a gap is looked at from
_SECTORS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def close_gaps(depth: np.ndarray, radius_px: int, rel_tol: float = 0.05,
               min_sectors: int = 7) -> np.ndarray:
    """Depth (H, W) with the gaps of sparsely drawn near surfaces closed (screen space).

    A surface the map holds only sparsely (a textureless table top where stereo found a
    voxel here and there) is drawn with gaps, and through each gap the surface behind it
    (the floor) shows: a pixel farther than a nearer surface on almost every side of it.
    Such a pixel, or an empty one (0), that has a pixel nearer by more than ``rel_tol``
    (relative) within ``radius_px`` in at least ``min_sectors`` of the 8 directions takes
    the mean depth of those nearer pixels. A pixel beside an object's outline has nearer
    pixels on one side only and keeps its depth; a real opening wider than twice the
    radius is left open.

    Args:
        depth: (H, W) float depth, 0 = nothing drawn.
        radius_px: how far each direction is looked along [px] (0: no change).

    Returns:
        (H, W) float32 depth.
    """
    depth = np.asarray(depth, np.float32)
    if radius_px <= 0 or not (depth > 0).any():
        return depth.copy()
    h, w = depth.shape
    far = np.where(depth > 0, depth, np.inf).astype(np.float32)
    limit = far * (1.0 - rel_tol)  # nearer than this counts as a surface in front
    pad = radius_px
    padded = np.pad(np.where(depth > 0, depth, 0.0).astype(np.float32), pad)
    sectors = np.zeros((h, w), np.int32)
    total = np.zeros((h, w), np.float32)
    for dr, dc in _SECTORS:
        found = np.zeros((h, w), np.float32)  # the first nearer pixel along the direction
        for step in range(1, radius_px + 1):
            r0, c0 = pad + dr * step, pad + dc * step
            seen = padded[r0:r0 + h, c0:c0 + w]
            take = (found == 0) & (seen > 0) & (seen < limit)
            found = np.where(take, seen, found)
        sectors += found > 0
        total += found
    gap = sectors >= min_sectors
    out = depth.copy()
    out[gap] = total[gap] / sectors[gap]
    return out


def depth_edges(depth: np.ndarray, curvature: float, convex: bool = True) -> np.ndarray:
    """(H, W) bool: pixels on or next to a depth edge (a jump, a crease, or missing depth).

    On a plane, inverse depth is affine in the pixel coordinates, so its second difference
    along a row or column vanishes; at a jump or a crease between surfaces it does not.
    A pixel is on an edge where |second difference of 1/d| > ``curvature`` * 1/d in either
    direction, or where a neighbour has no depth; the result is dilated by one pixel so
    that both sides of an edge are marked.

    With ``convex=False`` only jumps and concave creases count. At a concave crease (the
    surface folds away from the camera: an object standing on a table, a wall meeting the
    floor) the crease lies behind its neighbours, so 1/d has a positive second difference
    there; at a convex one (a box's edge, the side of a ball) it is negative. A jump gives
    a positive second difference on its far side. Objects meet at jumps and concave creases
    (the convexity rule of LCCP and voxblox++); a convex crease runs across one object.

    Args:
        depth: (H, W) depth; <= 0 or non-finite = none.
        curvature: relative threshold (scale-free: the same for near and far surfaces).
        convex: also mark convex creases.
    """
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    z = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
    edge = ~valid
    bend = np.abs if convex else (lambda x: x)
    across_cols = bend(z[:, 2:] - 2 * z[:, 1:-1] + z[:, :-2]) > curvature * z[:, 1:-1]
    across_rows = bend(z[2:] - 2 * z[1:-1] + z[:-2]) > curvature * z[1:-1]
    edge[:, 1:-1] |= across_cols
    edge[1:-1] |= across_rows
    out = edge.copy()
    out[:, 1:] |= edge[:, :-1]
    out[:, :-1] |= edge[:, 1:]
    out[1:] |= edge[:-1]
    out[:-1] |= edge[1:]
    return out


# --------------------------------------------------------------------------- voxel keys
# One int64 holds a voxel: 21 bits per axis, biased by 2^20, so keys sort like (x, y, z).
# Range: +-2^20 voxels (10 km at 1 cm). The instance map (numpy), the labeled cloud's
# downsampling (numpy) and the occupancy grid (torch) share this layout.

VOXEL_KEY_BITS = 21
VOXEL_KEY_BIAS = 1 << (VOXEL_KEY_BITS - 1)
VOXEL_KEY_MASK = (1 << VOXEL_KEY_BITS) - 1


def up_direction(up_axis: str) -> tuple[int, int]:
    """(axis 0-2, +1 or -1) of an up axis named "z", "-y", ...: the coordinate that grows
    upwards (+1) or downwards (-1)."""
    return "xyz".index(up_axis[-1]), -1 if up_axis.startswith("-") else 1


def voxel_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) int64 coordinates of the voxels containing world points (N, 3).

    Raises:
        ValueError: a point beyond +-2^20 voxels (10 km at 1 cm) from the origin.
    """
    c = np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)
    if c.size and np.abs(c).max() >= VOXEL_KEY_BIAS:
        raise ValueError(f"point beyond the voxel key range ({VOXEL_KEY_BIAS * voxel_size:.0f} m)")
    return c


def pack_voxel_keys(coords):
    """(N,) int64 keys of (N, 3) int64 voxel coordinates within +-2^20 (numpy or torch)."""
    b = coords + VOXEL_KEY_BIAS
    return (b[..., 0] << (2 * VOXEL_KEY_BITS)) | (b[..., 1] << VOXEL_KEY_BITS) | b[..., 2]


def unpack_voxel_keys(keys):
    """(N, 3) int64 voxel coordinates of (N,) keys (numpy or torch, as given)."""
    stack = torch.stack if isinstance(keys, torch.Tensor) else np.stack
    return stack([(keys >> (2 * VOXEL_KEY_BITS)) & VOXEL_KEY_MASK,
                  (keys >> VOXEL_KEY_BITS) & VOXEL_KEY_MASK, keys & VOXEL_KEY_MASK],
                 -1) - VOXEL_KEY_BIAS


def count_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct pairs (a[i], b[i]) of two (N,) non-negative int arrays and how often
    each occurs, sorted by a then b: ((K,) a values, (K,) b values, (K,) counts).

    One 1-D ``np.unique`` of packed keys: ``np.unique(..., axis=1)`` sorts rows as
    structured values, ten times slower on the per-frame pixel counts of the map.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if a.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), empty.copy()
    span = int(b.max()) + 1
    keys, counts = np.unique(a * span + b, return_counts=True)
    return keys // span, keys % span, counts
