"""The camera input both nodes share: image, camera_info and depth topics by transport,
their approximate time synchroniser, and the decoding of one matched set.

Callbacks only feed the synchroniser; :func:`decode_camera` runs on a worker thread.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from panoptic_mapping.config import CameraInputConfig
from panoptic_mapping.core.lens import LensDistortion
from panoptic_mapping.ros.compressed import decode_color, decode_depth
from panoptic_mapping.ros.conversions import (
    InputError,
    camera_info_to_intrinsics,
    camera_info_to_lens,
)
from panoptic_mapping.runtime.sync import ApproximateTimeSync

try:  # present on a real ROS 2 install, not among the PyPI wheels
    import message_filters

    HAVE_MESSAGE_FILTERS = True
except ImportError:
    message_filters = None
    HAVE_MESSAGE_FILTERS = False

__all__ = ["HAVE_MESSAGE_FILTERS", "camera_topics", "make_synchronizer", "decode_camera"]


def camera_topics(cfg: CameraInputConfig,
                  resolve: Callable[[str], str]) -> list[tuple[type, str, str]]:
    """(message type, input name, topic) of the image, camera_info and (with
    ``use_depth``) depth subscriptions; compressed transports on image_transport's topics
    below the resolved (remapped) names."""
    topics: list[tuple[type, str, str]] = []
    if cfg.image_transport == "compressed":
        topics.append((CompressedImage, "image", resolve("image") + "/compressed"))
    else:
        topics.append((Image, "image", "image"))
    topics.append((CameraInfo, "camera_info", "camera_info"))
    if cfg.use_depth and cfg.depth_transport == "compressedDepth":
        topics.append((CompressedImage, "depth", resolve("depth") + "/compressedDepth"))
    elif cfg.use_depth:
        topics.append((Image, "depth", "depth"))
    return topics


def make_synchronizer(names: list[str], cfg: CameraInputConfig, on_matched: Callable
                      ) -> tuple[Callable[[int, int, Any], Any], ApproximateTimeSync | None]:
    """``(feed(index, stamp_ns, msg), own synchroniser or None)``: message_filters'
    ApproximateTimeSynchronizer when importable, else :class:`ApproximateTimeSync`; both
    call ``on_matched(*msgs)`` in the order of ``names``."""
    if HAVE_MESSAGE_FILTERS:
        inputs = [message_filters.SimpleFilter() for _ in names]
        sync = message_filters.ApproximateTimeSynchronizer(
            inputs, cfg.sync_queue_size, cfg.sync_slop_s)
        sync.registerCallback(on_matched)
        return (lambda index, stamp, msg: inputs[index].signalMessage(msg)), None
    own = ApproximateTimeSync(names, cfg.sync_queue_size, int(round(cfg.sync_slop_s * 1e9)),
                              on_matched)
    return own.add, own


def decode_camera(image, info: CameraInfo, depth_msg, max_pixels: int,
                  lens_mode: str = "ignore"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, LensDistortion | None]:
    """(rgb (H, W, 3) uint8, K (3, 3), depth (H, W) float32 m or None, the lens distortion
    the images carry or None) of a matched set, raw or compressed (``lens_mode``:
    ``input.lens``); raises InputError naming what does not fit."""
    rgb = decode_color(image, max_pixels)
    K, width, height = camera_info_to_intrinsics(info, lens_mode)
    lens = camera_info_to_lens(info, K, lens_mode)
    if rgb.shape[:2] != (height, width):
        raise InputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info "
                         f"is {width}x{height}")
    depth = None
    if depth_msg is not None:
        depth = decode_depth(depth_msg, max_pixels)
        if depth.shape != rgb.shape[:2]:
            raise InputError(f"depth is {depth.shape[1]}x{depth.shape[0]} but the "
                             f"image is {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb, K, depth, lens
