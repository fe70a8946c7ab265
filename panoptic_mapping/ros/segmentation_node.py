"""The ``segmentation_node`` executable: a camera's class-agnostic masks (and per-mask
embeddings) as a topic, so segmentation runs on one computer (one with a GPU) and mapping on
another, over DDS.

It subscribes to the same camera input as the mapping node (``image``, ``camera_info``,
``depth`` by ``input.*``, remapped by the launch file), runs ``frontend.*`` (FastSAM, SAM, the
classical or the geometric segmenter, optionally open_clip) and publishes one
panoptic_mapping_interfaces/Masks on ``~/masks`` per segmented image, with the image's header
unchanged. A mapping node with ``input.masks_source: topic`` (its ``masks`` remapped to this
node's ``~/masks``) pairs them with the image by stamp. Parameters: ``config/segmentation.yaml``
(:class:`~panoptic_mapping.config.SegmentationNodeConfig`).

Threads, all queues bounded: callbacks only feed the synchroniser; a matched set waits in a
latest-only slot of one for the **decoder** thread, which decodes it and submits it to the
**segmentation worker** (latest-only queue of ``frontend.worker.queue_size``); the worker
segments, embeds and publishes. A frame too slow to segment is dropped (counted, logged),
never queued without bound. ``~/status`` (diagnostic_msgs/DiagnosticArray) reports the
counts and the segmentation time.

    ros2 run panoptic_mapping segmentation_node --ros-args \\
        --params-file config/segmentation.yaml -p frontend.segmenter.checkpoint:=FastSAM-s.pt \\
        -r image:=/camera/color/image_raw -r camera_info:=/camera/color/camera_info \\
        -r depth:=/camera/aligned_depth_to_color/image_raw
"""
from __future__ import annotations

import collections
import logging
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Header

from panoptic_mapping.config import SegmentationNodeConfig
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.frontends.factory import make_segmenter, segmenter_kind
from panoptic_mapping.frontends.worker import FrontendResult, SegmentationWorker
from panoptic_mapping.ros.camera_input import camera_topics, decode_camera, make_synchronizer
from panoptic_mapping.ros.conversions import InputError
from panoptic_mapping.ros.input_subscriptions import InputSubscriptions
from panoptic_mapping.ros.masks import segmentation_to_msg
from panoptic_mapping.ros.parameters import declare_config
from panoptic_mapping.ros.pose_sources import stamp_ns
from panoptic_mapping.ros.spin import run_node
from panoptic_mapping.runtime.poses import BackwardJump, clock_offset_reason
from panoptic_mapping.runtime.workers import LatestSlot, SlotWorker, Throttle
from panoptic_mapping_interfaces.msg import Masks

NODE_NAME = "segmentation"
__all__ = ["SegmentationNode", "main", "NODE_NAME"]

log = logging.getLogger("panoptic_mapping.ros")

# The segmentation worker never looks at a pose; its frames carry this one.
_UNUSED_POSE = np.eye(4)


class SegmentationNode(Node):
    """Segments every image it can keep up with and publishes the masks."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config: SegmentationNodeConfig = declare_config(self, SegmentationNodeConfig)
        cfg = self.config
        self._throttle = Throttle(cfg.input.error_log_period_s)
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self._pending: collections.OrderedDict[float, tuple[Header, float]] = (
            collections.OrderedDict())

        fcfg = cfg.frontend
        self.segmenter_kind = segmenter_kind(fcfg.segmenter)
        embedder = None
        if fcfg.embedder.enabled:  # weights load here: a missing file stops start-up
            from panoptic_mapping.frontends.embeddings import OpenClipEmbedder

            embedder = OpenClipEmbedder(fcfg.embedder)
        self.worker = SegmentationWorker(make_segmenter(fcfg.segmenter), embedder, fcfg.worker,
                                         sink=self._publish)
        self.description = self.segmenter_kind + (
            "" if embedder is None else f", open_clip {fcfg.embedder.model_name}")

        self._names = [name for _, name, _ in camera_topics(cfg.input, self.resolve_topic_name)]
        self._feed, self._sync = make_synchronizer(self._names, cfg.input, self._on_matched)
        self._image_clock = BackwardJump(cfg.input.time_jump_back_s)
        self._slot = LatestSlot(1)
        self._decoder = SlotWorker(self._slot, self._decode, "image-decoder")
        self._masks_pub = self.create_publisher(Masks, "~/masks", 10)
        self._status_pub = self.create_publisher(DiagnosticArray, "~/status", 10)
        group = MutuallyExclusiveCallbackGroup()
        self._inputs = InputSubscriptions(self, cfg.input.reliability, group)
        for index, (msg_type, name, topic) in enumerate(
                camera_topics(cfg.input, self.resolve_topic_name)):
            self._inputs.add(msg_type, topic,
                             lambda msg, index=index: self._on_message(index, msg))
        self._inputs.watch()
        self.create_timer(cfg.output.status_period_s, self.report_status,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.worker.start()
        self._decoder.start()
        self.get_logger().info(
            f"started: {self.description} on {', '.join(self._names)}; masks on "
            f"{self.resolve_topic_name('~/masks')}")

    # ------------------------------------------------------------------ input path

    def _on_message(self, index: int, msg) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if index == 0:
            self.counts["images"] += 1
            reason = clock_offset_reason(stamp, self.get_clock().now().nanoseconds,
                                         self.config.input.max_clock_offset_s)
            if reason is not None:
                self._reject(f"image {reason}")
                return
            if self._image_clock.seen(stamp) and self._sync is not None:
                self._sync.clear()  # a bag played again: never pair two runs' messages
                self.get_logger().warning("time jumped back: synchroniser cleared")
        self._feed(index, stamp, msg)

    def _on_matched(self, *msgs) -> None:
        self.counts["synced"] += 1
        if not self._slot.put((time.monotonic(), *msgs)):
            self.counts["dropped_input"] += 1

    def _reject(self, message: str) -> None:
        self.counts["rejected"] += 1
        ready, suppressed = self._throttle.ready("image")
        if ready:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self.get_logger().warning(f"input rejected: {message}{more}")

    def _decode(self, item) -> None:
        """Decoder thread: decode a matched set and hand it to the segmentation worker."""
        arrival, image, info, *rest = item
        try:
            # masks are made on the raw image: the mapping node undistorts them with it
            rgb, K, depth, _ = decode_camera(image, info, rest[0] if rest else None,
                                             self.config.input.max_image_pixels,
                                             self.config.input.lens)
        except InputError as exc:
            self._reject(str(exc))
            return
        frame = Frame(rgb=rgb, K=K, camera_to_world=_UNUSED_POSE,
                      stamp=stamp_ns(image.header.stamp) / 1e9, depth=depth)
        with self._lock:
            self._pending[frame.stamp] = (image.header, arrival)
            while len(self._pending) > 64:
                self._pending.popitem(last=False)
        try:
            self.worker.submit(frame)
        except RuntimeError:  # stopping
            return

    def _publish(self, result: FrontendResult) -> None:
        """Segmentation-worker thread: the masks of one image go out."""
        with self._lock:
            header, arrival = self._pending.pop(result.frame.stamp, (None, None))
        if header is None or not result.ok:  # a model failure is logged by the worker
            self.counts["failed"] += 1
            return
        f = result.frame
        msg = segmentation_to_msg(header, f.shape, f.masks, f.mask_scores, f.mask_embeddings,
                                  self.description, 1e3 * (time.monotonic() - arrival))
        self._masks_pub.publish(msg)
        self.counts["published"] += 1

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        """Counts (images, synced, published, dropped, rejected, failed) and latency."""
        wst = self.worker.stats()
        seg = wst["latency"].get("segment", {})
        return {"images": self.counts["images"], "synced": self.counts["synced"],
                "published": self.counts["published"],
                "dropped": self.counts["dropped_input"] + wst["dropped"],
                "rejected": self.counts["rejected"], "failed": self.counts["failed"],
                "segment_ms_p50": seg.get("p50_ms", float("nan")),
                "total_ms_p50": wst["latency"].get("total", {}).get("p50_ms", float("nan"))}

    def report_status(self) -> None:
        s = self.status()
        self.get_logger().info(
            f"segmented: {s['published']} of {s['images']} images published, {s['dropped']} "
            f"dropped, {s['rejected']} rejected, {s['failed']} failed; segmentation p50 "
            f"{s['segment_ms_p50']:.0f} ms")
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{self.get_name()}: segmentation",
            message=self.description, hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v)))
                    for k, v in s.items()])
        self._status_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self):
        for stop in (lambda: self._decoder.stop(2.0), lambda: self.worker.stop(5.0)):
            try:
                stop()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("stopping a worker failed")
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run panoptic_mapping segmentation_node``."""
    return run_node(SegmentationNode, NODE_NAME, num_threads=2, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
