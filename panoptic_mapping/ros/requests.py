"""Decoding and validation of service requests into core inputs.

Kept apart from the node so that every bad request has a tested, human-readable reason:
the services answer ``success=false`` with it and never raise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.lens import LensDistortion
from panoptic_mapping.ros.conversions import (
    InputError,
    camera_info_to_intrinsics,
    camera_info_to_lens,
    check_image_size,
    image_to_depth,
    image_to_rgb,
    pose_to_matrix,
)

__all__ = ["LocalizeQuery", "decode_localize_request"]


@dataclass
class LocalizeQuery:
    """A validated ``localize_instances`` request.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 metres, or None.
        K: (3, 3) intrinsics.
        camera_to_map: (4, 4) camera-to-map transform, or None when it is to be looked
            up in tf (``camera_frame`` at ``stamp_ns``).
        camera_frame: frame id of the image.
        stamp_ns: image stamp in nanoseconds.
        queries: text queries restricting the answer ([] = all instances).
        min_confidence: lower bound on returned confidences.
        lens: the lens distortion the image (and depth) carry, or None (``input.lens``).
    """

    rgb: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray
    camera_to_map: np.ndarray | None
    camera_frame: str
    stamp_ns: int
    queries: list[str]
    min_confidence: float
    lens: LensDistortion | None = None


def decode_localize_request(request, map_frame: str, max_pixels: int | None = None,
                            lens_mode: str = "ignore") -> LocalizeQuery:
    """Validate a ``LocalizeInstances.Request``; raise InputError with the reason.

    Args:
        max_pixels: larger images (or camera_info sizes) are refused before decoding.
        lens_mode: ``input.lens``: how camera_info's distortion is read.
    """
    if request.camera_info.width == 0 and request.camera_info.height == 0:
        raise InputError("camera_info is missing (width and height are 0)")
    if max_pixels is not None:
        check_image_size(request.image, max_pixels)
        check_image_size(request.camera_info, max_pixels, "camera_info")
    K, width, height = camera_info_to_intrinsics(request.camera_info, lens_mode)
    lens = camera_info_to_lens(request.camera_info, K, lens_mode)
    rgb = image_to_rgb(request.image)
    if rgb.shape[:2] != (height, width):
        raise InputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info is "
                         f"{width}x{height}")
    depth = None
    if request.depth.width > 0:
        depth = image_to_depth(request.depth)
        if depth.shape != rgb.shape[:2]:
            raise InputError(f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}")
    camera_to_map = None
    pose_frame = request.camera_pose.header.frame_id
    if pose_frame:
        if pose_frame != map_frame:
            raise InputError(f"camera_pose is in frame '{pose_frame}', expected the map frame "
                             f"'{map_frame}' (or an empty frame_id to use tf)")
        camera_to_map = pose_to_matrix(request.camera_pose.pose)
    if not (0.0 <= request.min_confidence <= 1.0):
        raise InputError(f"min_confidence must be in [0, 1], got {request.min_confidence}")
    stamp = request.image.header.stamp
    return LocalizeQuery(rgb=rgb, depth=depth, K=K, camera_to_map=camera_to_map,
                         camera_frame=request.image.header.frame_id,
                         stamp_ns=stamp.sec * 1_000_000_000 + stamp.nanosec,
                         queries=[q for q in request.queries if q.strip()],
                         min_confidence=float(request.min_confidence), lens=lens)
