"""The ``mapping_node`` executable: the ROS 2 face of panoptic_mapping.

The node converts messages, wires threads and parameters; the mathematics lives in
:mod:`panoptic_mapping.core`. Threads and queues (every queue bounded, the backlog never
grows with the input rate):

* **input callbacks** (one mutually exclusive callback group, QoS per input.reliability) only
  enqueue: image, camera_info and depth go into the approximate time synchroniser
  (``input.sync_queue_size`` per topic; message_filters when importable, else
  :mod:`.sync`), poses into the bounded pose buffer (:mod:`.poses`; tf2 when used);
  a matched set goes into a latest-only slot of one;
* the **frame assembler** thread, once the segmentation worker has room for a frame, takes
  the newest matched set (so only frames that will be mapped are decoded), looks its pose
  up at the image stamp (waiting at most ``input.pose_wait_s``), decodes it and submits the
  frame to
* the **segmentation worker** thread (:class:`~panoptic_mapping.frontends.worker.
  SegmentationWorker`, latest-only queue of ``frontend.worker.queue_size``), which segments,
  embeds and ingests it into the mapper, beside training
  (``mapping.associate_beside_training``);
* the **training worker** thread, the one that owns the GPU, trains the map continuously
  (``mapping``), one step per lock acquisition;
* **publishers** (their own callback group, on timers) read snapshots taken under the
  mapper's lock: ``~/labeled_cloud``, ``~/instances``, ``~/panoptic_image``, ``~/status``
  (and ``~/query_cloud``, latched: the answer of the last ``~/query_points``);
* **services** run in a callback group of their own, so a slow request never blocks the
  input path; bad requests are answered with ``success=false`` and the reason.

Relative input topics (remap them, e.g. in ``launch/mapping.launch.py``): ``image``
(sensor_msgs/Image), ``camera_info`` (sensor_msgs/CameraInfo), ``depth`` (sensor_msgs/Image,
when ``input.use_depth``), ``pose`` (geometry_msgs/PoseStamped) or ``odometry``
(nav_msgs/Odometry) when poses do not come from tf. With ``input.image_transport``
'compressed' the image is a sensor_msgs/CompressedImage on ``<image>/compressed``, with
``input.depth_transport`` 'compressedDepth' the depth one on ``<depth>/compressedDepth``
(image_transport's names below the remapped topics); both are decoded by the frame
assembler (:mod:`.compressed`), never in a callback. With ``input.masks_source`` 'topic' a
frame's masks come from a ``segmentation_node`` (:mod:`.segmentation_node`) on ``masks``
(panoptic_mapping_interfaces/Masks), synchronised with the image like its depth; such a
frame goes from the frame assembler straight into the map (``~/status``:
``masks.added_ms_p50``, what the second process added to a frame's latency).

Pose conventions: with tf, the pose is ``map <- camera optical frame`` (the image's
frame_id or ``input.camera_frame``) at the image stamp. A PoseStamped (header.frame_id =
the map frame) or an Odometry (header.frame_id = the map frame, pose of child_frame_id)
gives the pose of a frame F in the map; ``input.body_to_optical`` is the optical frame in F
(identity: F is the optical frame). Poses are interpolated at the image stamp.
"""
from __future__ import annotations

import collections
import gc
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from panoptic_mapping.config import ConfigError, PanopticMappingConfig
from panoptic_mapping.core.frames import Frame, FrameError
from panoptic_mapping.core.io.export import LabeledCloud
from panoptic_mapping.core.lens import LensDistortion, undistortion_for
from panoptic_mapping.core.mapper import Mapper
from panoptic_mapping.frontends.worker import FrontendResult, SegmentationWorker
from panoptic_mapping.ros.camera_input import (
    HAVE_MESSAGE_FILTERS,
    camera_topics,
    decode_camera,
    make_synchronizer,
)
from panoptic_mapping.ros.conversions import InputError, numpy_to_image
from panoptic_mapping.ros.input_subscriptions import InputSubscriptions
from panoptic_mapping.ros.masks import msg_to_masks
from panoptic_mapping.ros.markers import instance_change_msg, instance_markers
from panoptic_mapping.ros.parameters import declare_config, runtime_validator
from panoptic_mapping.ros.pointcloud import labeled_cloud_to_msg, subsample
from panoptic_mapping.ros.pose_sources import HAVE_TF2, TfPoses, TopicPoses, stamp_ns
from panoptic_mapping.ros.services import LOCALIZE_STAGES, NO_TEXT_ENCODER, MapServices
from panoptic_mapping.ros.spin import run_node
from panoptic_mapping.runtime.memory import set_mmap_threshold, trim_heap
from panoptic_mapping.runtime.poses import BackwardJump, PoseLookupError, clock_offset_reason
from panoptic_mapping.runtime.snapshots import MapSnapshot, MapSnapshots
from panoptic_mapping.runtime.visuals import colorize
from panoptic_mapping.runtime.workers import (
    LatencyWindow,
    LatestSlot,
    LockedModel,
    RateMeter,
    SlotWorker,
    ThreadCpu,
    Throttle,
    TrainingWorker,
    limit_blas_threads,
    process_memory_mb,
    set_switch_interval,
    torch_threads,
    training_pause_s,
)
from panoptic_mapping_interfaces.msg import InstanceChange, Masks
from panoptic_mapping_interfaces.srv import (
    GetInstance,
    LoadMap,
    LocalizeInstances,
    MoveInstance,
    QueryInstances,
    QueryPoints,
    RemoveInstance,
    ResetMap,
    SaveMap,
)

try:
    from nav_msgs.msg import Odometry
except ImportError:  # pragma: no cover - nav_msgs ships with every ROS 2 distribution
    Odometry = None

NODE_NAME = "panoptic_mapping"
__all__ = ["MappingNode", "main", "NODE_NAME", "NO_TEXT_ENCODER", "HAVE_TF2",
           "HAVE_MESSAGE_FILTERS"]

log = logging.getLogger("panoptic_mapping.ros")


@dataclass
class StreamState:
    """Bookkeeping of one input stream (guarded by the node's input lock)."""

    topic: str
    received: int = 0
    rate: RateMeter | None = None


# ---------------------------------------------------------------------------- node


class MappingNode(LifecycleNode):
    """Maps posed images online; publishes the labeled map and answers its services.

    A managed node (lifecycle states): constructing it declares and checks the parameters;
    **configure** loads the front-end's models, allocates the map and creates the
    publishers and services; **activate** subscribes to the inputs, starts the worker
    threads and the publishing timers; **deactivate** unsubscribes and stops the threads
    and timers but keeps the map (the services still answer); **cleanup** frees the map
    and the models. With ``lifecycle.autostart`` (default) the constructor configures and
    activates, raising what configure raised (a missing weights file, ...).
    """

    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config: PanopticMappingConfig = declare_config(self)
        cfg = self.config
        self._throttle = Throttle(cfg.input.error_log_period_s)
        self.pose_source = self._resolve_pose_source()
        self._input_lock = threading.Lock()
        self._started = time.monotonic()
        self.mapper: Mapper | None = None
        self._generation = 0
        self._map_lock = threading.Lock()  # swaps of self.mapper (reset, load)
        self._active = False
        self._threads: tuple = ()
        self.configure_error: BaseException | None = None

        # -- statistics (all bounded)
        self.counts = collections.Counter()
        self._ingest_rate = RateMeter(10.0)
        self._ingest_time = LatencyWindow(200)
        self._thread_cpu = ThreadCpu()  # read at each status report
        self._frame_latency = LatencyWindow(200)
        self._localize_time = LatencyWindow(200)
        self._localize_stages = {n: LatencyWindow(200) for n in LOCALIZE_STAGES}
        self._ingest_paused_s = 0.0  # waited after frames for training (min_training_share)
        self._stopping = threading.Event()  # set while the worker threads stop
        self._arrivals: collections.OrderedDict[float, float] = collections.OrderedDict()

        # -- inputs
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._input_subscriptions = InputSubscriptions(self, cfg.input.reliability,
                                                       self._input_group)
        self.streams: dict[str, StreamState] = {}
        self._masks_from_topic = cfg.input.masks_source == "topic"
        self._sync_names = (["image", "camera_info"] + (["depth"] if cfg.input.use_depth else [])
                            + (["masks"] if self._masks_from_topic else []))
        self._image_arrivals: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._masks_added = LatencyWindow(200)
        self._embeddings_ignored = False
        self._lens_seen: str = ""  # the camera lens last logged ("" = pinhole images)
        self._lens_key: tuple | None = None  # (lens, K, shape) it describes
        self._image_clock = BackwardJump(cfg.input.time_jump_back_s)
        self._sync = None
        self.segmenter = self.embedder = self.map_services = None

        # -- outputs and services (created by configure)
        self._publish_group = MutuallyExclusiveCallbackGroup()
        self._status_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._publishers_made: list = []
        self._services_made: list = []
        self._publish_timers: dict[str, object] = {}
        self._autosave_group = MutuallyExclusiveCallbackGroup()  # a save takes seconds
        self._autosaved_key = None
        self.add_on_set_parameters_callback(runtime_validator(self._apply_runtime_parameter))
        if cfg.lifecycle.autostart:
            self._autostart()
        else:
            self.get_logger().info("unconfigured: waiting for the lifecycle transitions "
                                   "configure and activate (lifecycle.autostart is false)")

    def _autostart(self) -> None:
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self.configure_error or RuntimeError("configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("activate failed")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the front-end's models, allocate the map, create publishers and services."""
        cfg = self.config
        try:
            self._build_frontend()
        except (FileNotFoundError, ImportError) as exc:  # model weights or packages missing
            self.configure_error = exc
            self.get_logger().error(f"configure failed: front-end: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        threads = torch_threads(cfg.input.torch_threads)
        torch.set_num_threads(threads)
        self.blas_pools = limit_blas_threads(cfg.input.blas_threads or threads)
        if isinstance(self.blas_pools, str):
            self.get_logger().warning(f"BLAS thread pools left as loaded: {self.blas_pools}")
        set_switch_interval(cfg.input.switch_interval_ms)
        why_not = set_mmap_threshold(cfg.input.malloc_mmap_threshold_mb)
        if why_not is not None and cfg.input.malloc_mmap_threshold_mb > 0:
            self.get_logger().warning(f"input.malloc_mmap_threshold_mb not applied: {why_not}")
        # torch imports its compiler stack the first time an optimizer is built: seconds
        # on a busy CPU, inside the first ingest, under the map's lock (the first frame
        # of a flood held everything up); paid here instead
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        self.mapper = Mapper(cfg.mapping, embedding_dim=self.embedding_dim or None)
        self._snapshots = MapSnapshots(lambda: self.mapper, rgb_only=not cfg.input.use_depth)
        self._latest_view = None
        self._vocabulary_note = ""
        self._apply_vocabulary(self.mapper)
        self._make_synchronizer()
        self.poses = (TfPoses(self, cfg.input.map_frame) if self.pose_source == "tf"
                      else TopicPoses(cfg.input, self.pose_source))
        self._make_publishers()
        self._make_services()
        self.get_logger().info(f"configured: front-end {self.frontend_description()}, "
                               f"map on {self.mapper.device}, threads per operation: torch "
                               f"{torch.get_num_threads()}, BLAS {self.blas_pools}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the inputs, start the worker threads and the publishing timers."""
        cfg = self.config
        self._frames = LatestSlot(1)
        self.worker = SegmentationWorker(self.segmenter, self.embedder, cfg.frontend.worker,
                                         sink=self._ingest)
        # a matched set is decoded only once the front-end has room for it (with masks
        # from a segmentation node the assembler maps the frame itself)
        self._assembler = SlotWorker(
            self._frames, self._assemble, "frame-assembler",
            ready=None if self._masks_from_topic else self.worker.wait_for_room)
        self._trainer = TrainingWorker(lambda: self.mapper,
                                       lambda: self.config.input.train_duty_cycle)
        self._threads = (self._assembler, self.worker, self._trainer)
        self._stopping.clear()
        for thread in self._threads:
            thread.start()
        self._subscribe_inputs()
        self._input_subscriptions.watch()
        self._active = True
        self._reset_timers()
        if cfg.output.autosave_path.strip() and cfg.output.autosave_period_s > 0:
            self._publish_timers["autosave"] = self.create_timer(
                cfg.output.autosave_period_s, self.autosave,
                callback_group=self._autosave_group)
        self.get_logger().info(
            f"started: pose from {self.poses.describe()}, depth "
            f"{'on' if cfg.input.use_depth else 'off'}, map frame '{cfg.input.map_frame}', "
            f"front-end {self.frontend_description()}, map on {self.mapper.device}, "
            f"synchroniser {'message_filters' if HAVE_MESSAGE_FILTERS else 'own'} "
            f"(slop {cfg.input.sync_slop_s} s)")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the input, the threads and the timers; the map stays (services answer)."""
        self._stop_active()
        st = self.mapper.stats()
        self.get_logger().info(
            f"deactivated: input and training stopped, the map kept ({st['keyframes']} "
            f"keyframes, {st.get('instances_confirmed', 0)} instances)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the map, the models, the publishers and the services."""
        self._free()
        self.get_logger().info("cleaned up: map and models freed (unconfigured)")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self.autosave("shutdown")
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def _stop_active(self) -> None:
        """Undo activate (a no-op when not active)."""
        self._active = False
        for timer in self._publish_timers.values():
            self.destroy_timer(timer)
        self._publish_timers.clear()
        self._input_subscriptions.destroy()
        self._stop_threads()
        if self._sync is not None:
            self._sync.clear()

    def _stop_threads(self) -> None:
        # getattr: rclpy destroys a node whose constructor raised (a bad parameter) too
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()  # ends a pause for training at once
        timeouts = {"frame-assembler": 2.0, "training-worker": 10.0}
        for thread in getattr(self, "_threads", ()):
            try:
                thread.stop(timeouts.get(getattr(thread, "name", ""), 5.0))
            except Exception:  # noqa: BLE001 - stopping anyway
                log.exception("stopping a worker failed")
        self._threads = ()

    def _free(self) -> None:
        """Undo configure (a no-op when unconfigured)."""
        for service in self._services_made:
            self.destroy_service(service)
        for publisher in self._publishers_made:
            self.destroy_publisher(publisher)
        self._services_made.clear()
        self._publishers_made.clear()
        if self.mapper is None:
            return
        device = self.mapper.device
        with self._map_lock:
            self.mapper = None
            self._latest_view = None
        self._snapshots.clear()
        self.segmenter = self.embedder = self.map_services = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def _make_publishers(self) -> None:
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             history=HistoryPolicy.KEEP_LAST)
        self._cloud_pub = self.create_publisher(PointCloud2, "~/labeled_cloud", latched)
        self._markers_pub = self.create_publisher(MarkerArray, "~/instances", latched)
        self._panoptic_pub = self.create_publisher(Image, "~/panoptic_image", 2)
        self._status_pub = self.create_publisher(DiagnosticArray, "~/status", 10)
        self._changes_pub = self.create_publisher(InstanceChange, "~/instance_changes", 10)
        # the cloud of the last answered query_points (relevance per point), for RViz
        self._query_cloud_pub = self.create_publisher(PointCloud2, "~/query_cloud", latched)
        self._publishers_made = [self._cloud_pub, self._markers_pub, self._panoptic_pub,
                                 self._status_pub, self._changes_pub, self._query_cloud_pub]
        self._published_key = None
        self._markers_empty = False
        self._published_view = None
        self._publish_cost: dict[str, float] = collections.defaultdict(float)
        self._last_publish: dict[str, float] = collections.defaultdict(lambda: -1e9)

    def _make_services(self) -> None:
        self.map_services = MapServices(
            config=self.config, logger=self.get_logger(), current_mapper=lambda: self.mapper,
            swap=self._swap, apply_vocabulary=self._apply_vocabulary,
            segmenter=self.segmenter, embedder=self.embedder,
            embedding_dim=self.embedding_dim, poses=self.poses, snapshots=self._snapshots,
            latency=self._localize_time, now=lambda: self.get_clock().now().to_msg(),
            publish_query_cloud=self._query_cloud_pub.publish, stages=self._localize_stages)
        self._services_made = [
            self.create_service(srv_type, name, self.map_services.guarded(handler),
                                callback_group=self._service_group)
            for srv_type, name, handler in (
                (LocalizeInstances, "~/localize_instances", self.map_services.localize),
                (QueryInstances, "~/query_instances", self.map_services.query),
                (QueryPoints, "~/query_points", self.map_services.query_points),
                (GetInstance, "~/get_instance", self.map_services.get_instance),
                (RemoveInstance, "~/remove_instance", self.map_services.remove_instance),
                (MoveInstance, "~/move_instance", self.map_services.move_instance),
                (SaveMap, "~/save_map", self.map_services.save),
                (LoadMap, "~/load_map", self.map_services.load),
                (ResetMap, "~/reset", self.map_services.reset))]

    # ------------------------------------------------------------------ set-up

    def _resolve_pose_source(self) -> str:
        source = self.config.input.pose_source
        if source == "auto":
            return "tf" if HAVE_TF2 else "pose"
        if source == "tf" and not HAVE_TF2:
            raise ConfigError("parameter 'input.pose_source' is 'tf' but tf2_ros is not "
                              "importable; use 'pose' or 'odometry', or install tf2_ros")
        if source == "odometry" and Odometry is None:
            raise ConfigError("parameter 'input.pose_source' is 'odometry' but nav_msgs is "
                              "not importable")
        return source

    def _build_frontend(self) -> None:
        """Segmenter, optional embedder and their worker (weights load here, at start-up)."""
        from panoptic_mapping.frontends.factory import make_segmenter, segmenter_kind

        fcfg = self.config.frontend
        self.segmenter_kind = segmenter_kind(fcfg.segmenter)
        self.segmenter = LockedModel(make_segmenter(fcfg.segmenter), ("segment",))
        self.embedder = None
        if fcfg.embedder.enabled:
            from panoptic_mapping.frontends.embeddings import OpenClipEmbedder

            self.embedder = LockedModel(OpenClipEmbedder(fcfg.embedder), ("embed_masks",))
        self.embedding_dim = 0 if self.embedder is None else int(self.embedder.dim)

    def frontend_description(self) -> str:
        seg = self.segmenter_kind
        if seg == "classical":
            seg = "classical (weights-free scikit-image)"
        elif seg == "geometric":
            seg = "geometric (weights-free, depth edges and planes)"
        else:
            seg = f"{seg} ({self.config.frontend.segmenter.checkpoint})"
        if self.embedder is None:
            text = f"{seg}, no embedder (no open-vocabulary semantics)"
        else:
            text = f"{seg}, open_clip {self.config.frontend.embedder.model_name}"
        if self._masks_from_topic:
            return (f"masks from a segmentation node on {self.resolve_topic_name('masks')}; "
                    f"localize requests: {text}")
        return text

    def _make_synchronizer(self) -> None:
        self._feed, self._sync = make_synchronizer(self._sync_names, self.config.input,
                                                   self._on_matched)

    def _subscribe(self, msg_type, name: str, topic: str | None = None) -> None:
        topic = topic or name
        state = StreamState(topic=self.resolve_topic_name(topic), rate=RateMeter(5.0))
        self.streams[name] = state
        index = self._sync_names.index(name) if name in self._sync_names else None

        def callback(msg, state=state, index=index, name=name) -> None:
            with self._input_lock:
                state.received += 1
            state.rate.tick()
            if index is not None:
                stamp = stamp_ns(msg.header.stamp)
                if index == 0 and self._far_from_clock("stamp", "image", stamp):
                    return
                if index == 0 and self._image_clock.seen(stamp):
                    self._time_jumped("image", stamp)
                if index == 0 and self._masks_from_topic:
                    self._note_image_arrival(stamp)
                self._feed(index, stamp, msg)
            else:
                self._on_pose(name, msg)

        self._input_subscriptions.add(msg_type, topic, callback)

    def _subscribe_inputs(self) -> None:
        for msg_type, name, topic in camera_topics(self.config.input, self.resolve_topic_name):
            self._subscribe(msg_type, name, topic)
        if self._masks_from_topic:
            self._subscribe(Masks, "masks")
        if self.pose_source == "pose":
            self._subscribe(PoseStamped, "pose")
        elif self.pose_source == "odometry":
            self._subscribe(Odometry, "odometry")

    # ------------------------------------------------------------------ input path

    def _reject(self, key: str, message: str) -> None:
        """Count a rejected input and log the reason, throttled per kind."""
        self.counts[f"rejected_{key}"] += 1
        ready, suppressed = self._throttle.ready(key)
        if ready:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self.get_logger().warning(f"input rejected: {message}{more}")

    def _far_from_clock(self, key: str, what: str, stamp: int) -> bool:
        """Refuse (count, log) a message stamped far from the node's clock, before it can
        pair with poses of another time or look like a jump back of the clock."""
        reason = clock_offset_reason(stamp, self.get_clock().now().nanoseconds,
                                     self.config.input.max_clock_offset_s)
        if reason is not None:
            self._reject(key, f"{what} {reason}")
        return reason is not None

    def _on_pose(self, name: str, msg) -> None:
        if self._far_from_clock("pose", name, stamp_ns(msg.header.stamp)):
            return
        pose = msg.pose if name == "pose" else msg.pose.pose
        try:
            if self.poses.add(msg.header, pose):
                self._time_jumped(name, stamp_ns(msg.header.stamp))
        except InputError as exc:
            self._reject("pose", str(exc))

    def _time_jumped(self, what: str, stamp: int) -> None:
        """The clock jumped back: unmatched messages of the old run must not pair with the
        new run's (the pose buffer clears itself)."""
        if self._sync is not None:
            self._sync.clear()
        self.counts["time_jumps"] += 1
        self.get_logger().warning(
            f"time jumped back ({what} stamped {stamp / 1e9:.3f} s, more than "
            f"input.time_jump_back_s = {self.config.input.time_jump_back_s:g} s before the "
            f"newest): synchroniser and pose buffer cleared")

    def _note_image_arrival(self, stamp: int) -> None:
        """When each image arrived (masks from a topic: their lag behind it is measured)."""
        with self._input_lock:
            self._image_arrivals[stamp] = time.monotonic()
            while len(self._image_arrivals) > 64:
                self._image_arrivals.popitem(last=False)

    def _on_matched(self, *msgs) -> None:
        """A synchronised image (+ camera_info, + depth, + masks): hand it to the assembler."""
        self.counts["synced"] += 1
        now = arrival = time.monotonic()
        matched = dict(zip(self._sync_names, msgs))
        masks = matched.get("masks")
        if masks is not None:
            with self._input_lock:
                seen = self._image_arrivals.pop(stamp_ns(masks.header.stamp), None)
            if seen is not None:  # what the trip through a second node added
                self._masks_added.add(max(0.0, now - seen - masks.processing_ms / 1e3))
                arrival = seen  # a frame's latency counts from its image, as in-process
        if not self._frames.put((arrival, matched["image"], matched["camera_info"],
                                 matched.get("depth"), masks)):
            self.counts["dropped_input"] += 1

    def _assemble(self, item) -> None:
        """Frame-assembler thread: decode, look the pose up, submit to the front-end (or,
        with masks from a segmentation node, straight to the map)."""
        arrival, image, info, depth_msg, masks_msg = item
        stamp = stamp_ns(image.header.stamp)
        try:  # raw or compressed: decoded here, never in a callback
            rgb, K, depth, lens = decode_camera(image, info, depth_msg,
                                                self.config.input.max_image_pixels,
                                                self.config.input.lens)
            received = None if masks_msg is None else msg_to_masks(masks_msg, rgb.shape[:2])
        except InputError as exc:
            self._reject("masks" if "masks:" in str(exc) else "image", str(exc))
            return
        frame_id = self.config.input.camera_frame or image.header.frame_id
        try:
            pose = self.poses.lookup(frame_id, stamp, self.config.input.pose_wait_s)
        except PoseLookupError as exc:
            self._reject("no_pose", f"no camera pose at the image stamp "
                         f"{stamp / 1e9:.3f} s: {exc}")
            return
        frame = Frame(rgb=rgb, K=K, camera_to_world=pose, stamp=stamp / 1e9, depth=depth,
                      lens=lens)
        self._log_lens(K, lens, rgb.shape[:2])
        with self._input_lock:
            self._arrivals[frame.stamp] = arrival
            while len(self._arrivals) > 64:
                self._arrivals.popitem(last=False)
        if received is not None:
            self._ingest_received(frame, received)
            return
        try:
            self.worker.submit(frame)
        except RuntimeError:  # stopping
            return

    def _log_lens(self, K: np.ndarray, lens: LensDistortion | None,
                  shape: tuple[int, int]) -> None:
        """Say once (and again when it changes) which lens the frames are undistorted
        from; the maps are the ones the mapper uses (built once per camera). Every frame
        brings the camera again: only a changed one is described."""
        key = None if lens is None else (lens, np.asarray(K).tobytes(), tuple(shape))
        if key == self._lens_key:
            return
        self._lens_key = key
        said = "" if lens is None else undistortion_for(K, lens, shape).describe()
        if said != self._lens_seen:
            self._lens_seen = said
            self.get_logger().info(f"camera: {said}" if said else
                                   "camera: pinhole images (camera_info.d all zero or "
                                   f"input.lens '{self.config.input.lens}')")

    def _ingest_received(self, frame: Frame, received) -> None:
        """Frame-assembler thread: a frame whose masks a segmentation node made goes into
        the map here (the in-process front-end worker stays idle)."""
        emb = received.embeddings
        dim = self.mapper.embedding_dim
        if emb is not None and dim and emb.shape[1] != dim:
            self._reject("masks", f"masks: embeddings of dimension {emb.shape[1]}, but this "
                         f"node's embedder gives {dim}: both nodes must run the same "
                         "open_clip model (frontend.embedder.*)")
            return
        if emb is not None and not dim:
            if not self._embeddings_ignored:  # said once: without a text encoder here
                self.get_logger().warning(
                    "masks carry embeddings but this node has no embedder "
                    "(frontend.embedder.enabled false), so no text encoder to compare them "
                    "with: embeddings ignored; enable the same open_clip model here for "
                    "open-vocabulary labels")
                self._embeddings_ignored = True
            emb = None
        frame.masks, frame.mask_scores, frame.mask_embeddings = (
            received.labels, received.scores, emb)
        self._ingest(FrontendResult(seq=-1, frame=frame))

    def _ingest(self, result) -> None:
        """Segmentation-worker thread: the front-end's result goes into the map."""
        with self._input_lock:
            arrival = self._arrivals.pop(result.frame.stamp, None)
        if not result.ok:
            self.counts["frontend_failed"] += 1
            return
        mapper = self.mapper
        t0 = time.perf_counter()
        try:
            report = mapper.ingest(result.frame)
        except FrameError as exc:
            self._reject("frame", f"the mapper refused the frame: {exc}")
            return
        if report.skipped:  # a still camera: nothing new to map (not timed as an ingest)
            self.counts["skipped_still"] += 1
            return
        now = time.perf_counter()
        self._ingest_time.add(now - t0)
        self._ingest_rate.tick()
        if arrival is not None:
            self._frame_latency.add(time.monotonic() - arrival)
        self.counts["ingested"] += 1
        if report.keyframe is not None:
            self.counts["keyframes_added"] += 1
        for event in report.removed:
            self._changes_pub.publish(instance_change_msg(event, self.config.input.map_frame))
            self.get_logger().info(_describe_change(event))
        f = result.frame
        self._latest_view = (mapper, f.K, f.camera_to_world, f.depth, f.rgb, f.stamp, f.lens)
        self._pause_for_training(now - t0)  # the frame counted and shown first

    def _pause_for_training(self, ingest_s: float) -> None:
        """After a frame that took ``ingest_s`` to map, wait so that training keeps
        ``input.min_training_share`` of the time (frames arriving meanwhile replace the
        waiting one); no wait while training has nothing to train or is paused."""
        pause = training_pause_s(ingest_s, self.config.input.min_training_share)
        trainer = getattr(self, "_trainer", None)  # None before the first activation
        if pause <= 0 or trainer is None or not trainer.training():
            return
        self._ingest_paused_s += pause
        self._stopping.wait(pause)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, max_age_s: float | None = None) -> MapSnapshot:
        """The newest snapshot, rebuilt if the map changed and it is older than max_age_s."""
        return self._snapshots.get(max_age_s)

    # ------------------------------------------------------------------ publishers

    def _header(self, frame_id: str | None = None) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(),
                      frame_id=frame_id or self.config.input.map_frame)

    def _due(self, name: str, period: float) -> bool:
        """Publish no more often than 4x the time the last one took (bounded load)."""
        now = time.monotonic()
        if now - self._last_publish[name] < max(period, 4 * self._publish_cost[name]) - 1e-3:
            return False
        self._last_publish[name] = now
        return True

    def _reset_timers(self) -> None:
        if not self._active:  # timers run only while active
            return
        out = self.config.output
        for name, period, callback in (("status", out.status_period_s, self.report_status),
                                       ("cloud", out.cloud_period_s, self.publish_cloud),
                                       ("markers", out.markers_period_s, self.publish_markers),
                                       ("panoptic", out.panoptic_image_period_s,
                                        self.publish_panoptic_image)):
            timer = self._publish_timers.pop(name, None)
            if timer is not None:
                self.destroy_timer(timer)
            if period > 0:
                # the status report has a group of its own: it must not wait behind a
                # cloud or a rendering that waits for the map (it went silent for 30
                # periods under a flood)
                group = self._status_group if name == "status" else self._publish_group
                self._publish_timers[name] = self.create_timer(period, callback,
                                                               callback_group=group)

    def publish_cloud(self) -> None:
        if self.mapper.stats()["keyframes"] == 0:
            if self._published_key != "empty":  # an empty map (start, reset): clear RViz
                self._cloud_pub.publish(labeled_cloud_to_msg(LabeledCloud.empty(),
                                                             self._header()))
                self._published_key = "empty"
            return
        if not self._due("cloud", self.config.output.cloud_period_s):
            return
        t0 = time.perf_counter()
        snap = self.snapshot()
        if snap is None or snap.key == self._published_key:
            self._publish_cost["cloud"] = time.perf_counter() - t0
            return
        cloud = subsample(snap.cloud, self.config.output.cloud_max_points)
        self._cloud_pub.publish(labeled_cloud_to_msg(cloud, self._header()))
        self._published_key = snap.key
        self.counts["clouds_published"] += 1
        self._publish_cost["cloud"] = time.perf_counter() - t0

    def publish_markers(self) -> None:
        snap = self._snapshots.latest
        records = [] if snap is None else [snap.records[i] for i in sorted(snap.records)]
        if not records and self._markers_empty:
            return
        if not self._due("markers", self.config.output.markers_period_s):
            return
        self._markers_pub.publish(instance_markers(records, self._header()))
        self._markers_empty = not records

    def publish_panoptic_image(self) -> None:
        view = self._latest_view
        if view is None or view is self._published_view:
            return
        if not self._due("panoptic", self.config.output.panoptic_image_period_s):
            return
        mapper, K, c2w, depth, rgb, _, lens = view
        t0 = time.perf_counter()
        ids = mapper.render_instances(K, c2w, depth, rgb.shape[:2], lens)
        header = self._header(self.config.input.camera_frame or None)
        msg = numpy_to_image(colorize(ids, rgb, alpha=0.65), "rgb8", header)
        self._panoptic_pub.publish(msg)
        self._published_view = view
        self._publish_cost["panoptic"] = time.perf_counter() - t0

    def status(self) -> dict:
        """Everything the status report says, as plain values."""
        mapper = self.mapper
        st = mapper.stats()
        wst = self.worker.stats()
        with self._input_lock:
            streams = {n: (s.received, s.rate.rate()) for n, s in self.streams.items()}
            topics = {n: s.topic for n, s in self.streams.items()}
        reliability = self._input_subscriptions.reliabilities()
        # every frame ends mapped or dropped (still frames skipped, rejected ones included)
        dropped = (self.counts["dropped_input"] + wst["dropped"] + self.counts["skipped_still"]
                   + sum(v for k, v in self.counts.items() if k.startswith("rejected_")))
        seg = wst["latency"].get("segment", {})
        gpu_mb = 0.0
        if mapper.device.type == "cuda":
            gpu_mb = torch.cuda.memory_allocated(mapper.device) / 1e6
        return {
            "streams": streams,
            "input_reliability": {n: reliability.get(t, "") for n, t in topics.items()},
            "synced": self.counts["synced"],
            "sync_unmatched_dropped": (sum(self._sync.dropped.values())
                                       if self._sync is not None else 0),
            "sync_pending": (sum(self._sync.pending().values())
                             if self._sync is not None else 0),
            "poses_buffered": len(self.poses.buffer) if self.pose_source != "tf" else 0,
            "time_jumps": self.counts["time_jumps"],
            "assembler_queued": len(self._frames),
            "dropped": dropped,
            "dropped_input": self.counts["dropped_input"],
            "dropped_frontend": wst["dropped"],
            "rejected": {k[len("rejected_"):]: v for k, v in self.counts.items()
                         if k.startswith("rejected_")},
            "frontend_queued": wst["queued"],
            "masks_added_ms": self._masks_added.summary(),
            "segment_ms_p50": seg.get("p50_ms", float("nan")),
            "ingested": self.counts["ingested"],
            "skipped_still": self.counts["skipped_still"],
            "ingest_fps": self._ingest_rate.rate(),
            "ingest_ms": self._ingest_time.summary(),
            "ingest_paused_s": self._ingest_paused_s,
            "frame_latency_ms": self._frame_latency.summary(),
            "localize_ms": self._localize_time.summary(),
            "localize_stage_ms": {n: w.summary() for n, w in self._localize_stages.items()},
            "keyframes": st["keyframes"],
            "working_decimation": st.get("working_decimation", 1),
            "instances": st.get("instances_confirmed", 0),
            "instances_removed_as_gone": st.get("instances_removed_as_gone", 0),
            "instances_found_moved": st.get("instances_found_moved", 0),
            "edits": st.get("edits", 0),
            "training_steps": st["training_steps"],
            "training_steps_per_s": self._trainer.rate.rate(),
            "rss_mb": process_memory_mb(),
            "keyframes_mb": st["keyframe_mb"],
            "cloud_cache_mb": st.get("cloud_cache_mb", 0.0),
            "gpu_mb": gpu_mb,
            # depth from posed RGB (frames without a depth image): frames served, their cost
            "stereo_frames": st.get("stereo_estimated", 0),
            "stereo_without_sources": st.get("stereo_without_sources", 0),
            "stereo_ms_p50": 1000 * (st.get("stereo_seconds_p50") or float("nan")),
            "stereo_kept_share_p50": st.get("stereo_kept_share_p50") or float("nan"),
        }

    def waiting_for(self) -> list[str]:
        """Inputs that have not delivered a single message yet (for the status report)."""
        with self._input_lock:
            missing = [f"{name} on {s.topic}" for name, s in self.streams.items()
                       if s.received == 0]
        if self.pose_source == "tf" and self.counts["ingested"] == 0:
            missing.append(f"poses from tf ({self.config.input.map_frame} <- camera frame)")
        return missing

    def report_status(self) -> None:
        if self.config.input.malloc_mmap_threshold_mb > 0:
            trim_heap()  # the heaps' free pages back before memory is reported
        s = self.status()
        s["thread_cpu"] = self._thread_cpu.read()
        counts = ", ".join(f"{n} {c}" for n, (c, _) in s["streams"].items())
        missing = self.waiting_for()
        lat = s["frame_latency_ms"]
        summary = (f"map: {s['keyframes']} keyframes, {s['instances']} instances, "
                   f"{s['training_steps']} training steps ({s['training_steps_per_s']:.1f}/s); "
                   f"frames: {s['ingested']} mapped ({s['ingest_fps']:.1f}/s), "
                   f"{s['dropped']} dropped; latency p50 {lat['p50_ms']:.0f} ms; "
                   f"memory {s['rss_mb']:.0f} MB")
        if s["stereo_frames"] or s["stereo_without_sources"]:
            summary += (f"; stereo depth: {s['stereo_frames']} frames "
                        f"({s['stereo_ms_p50']:.0f} ms p50, "
                        f"{100 * s['stereo_kept_share_p50']:.0f}% of pixels), "
                        f"{s['stereo_without_sources']} without sources")
        if missing:
            # images arriving while a companion stays silent (no camera_info: a driver
            # that publishes it elsewhere) map nothing: a warning, not routine start-up
            # (rclpy ties a call site to one severity: one call each)
            text = f"waiting for: {'; '.join(missing)} (received: {counts}); {summary}"
            if s["streams"].get("image", (0, 0.0))[0]:
                self.get_logger().warning(text + "; no frame can be mapped until it arrives")
            else:
                self.get_logger().info(text)
        else:
            rates = ", ".join(f"{n} {c} ({r:.1f} Hz)" for n, (c, r) in s["streams"].items())
            self.get_logger().info(f"receiving: {rates}; {summary}")
        self._status_pub.publish(self._diagnostics(s, missing))

    def _diagnostics(self, s: dict, missing: list[str]) -> DiagnosticArray:
        level = DiagnosticStatus.OK
        message = "mapping"
        if missing:
            level, message = DiagnosticStatus.WARN, "waiting for " + "; ".join(missing)
        elif s["dropped"] and s["ingested"] == 0:
            level, message = DiagnosticStatus.WARN, "frames arrive but none was mapped"
        values = {
            "frontend": self.frontend_description(),
            "pose_source": self.pose_source,
            **{f"input.{n}.received": c for n, (c, _) in s["streams"].items()},
            **{f"input.{n}.rate_hz": r for n, (_, r) in s["streams"].items()},
            **{f"input.{n}.reliability": r for n, r in s["input_reliability"].items()},
            "frames.synced": s["synced"],
            "frames.mapped": s["ingested"],
            "frames.skipped_still": s["skipped_still"],
            "frames.dropped": s["dropped"],
            "frames.dropped_input_slot": s["dropped_input"],
            "frames.dropped_frontend_queue": s["dropped_frontend"],
            **{f"frames.rejected.{k}": v for k, v in s["rejected"].items()},
            "sync.unmatched_dropped": s["sync_unmatched_dropped"],
            "sync.pending": s["sync_pending"],
            "poses.buffered": s["poses_buffered"],
            "input.time_jumps": s["time_jumps"],
            "assembler.queued": s["assembler_queued"],
            "frontend.queued": s["frontend_queued"],
            "frontend.segment_ms_p50": s["segment_ms_p50"],
            "frontend.masks_source": self.config.input.masks_source,
            "camera.lens": self._lens_seen or "pinhole",
            "masks.added_ms_p50": s["masks_added_ms"]["p50_ms"],
            "masks.added_ms_p95": s["masks_added_ms"]["p95_ms"],
            "mapping.ingest_fps": s["ingest_fps"],
            "mapping.ingest_ms_p50": s["ingest_ms"]["p50_ms"],
            "mapping.paused_for_training_s": s["ingest_paused_s"],
            "mapping.frame_latency_ms_p50": s["frame_latency_ms"]["p50_ms"],
            "mapping.frame_latency_ms_p95": s["frame_latency_ms"]["p95_ms"],
            "mapping.keyframes": s["keyframes"],
            "mapping.working_decimation": s["working_decimation"],
            "mapping.instances": s["instances"],
            "mapping.instances_removed_as_gone": s["instances_removed_as_gone"],
            "mapping.instances_found_moved": s["instances_found_moved"],
            "mapping.edits": s["edits"],
            "training.steps": s["training_steps"],
            "training.steps_per_s": s["training_steps_per_s"],
            "stereo.frames": s["stereo_frames"],
            "stereo.frames_without_sources": s["stereo_without_sources"],
            "stereo.ms_p50": s["stereo_ms_p50"],
            "stereo.depth_share_p50": s["stereo_kept_share_p50"],
            "localize.ms_p50": s["localize_ms"]["p50_ms"],
            "localize.ms_p95": s["localize_ms"]["p95_ms"],
            **{f"localize.{n}_ms_{q}": v[f"{q}_ms"]
               for n, v in s["localize_stage_ms"].items() for q in ("p50", "p95")},
            "memory.rss_mb": s["rss_mb"],
            "memory.keyframes_mb": s["keyframes_mb"],
            "memory.cloud_cache_mb": s["cloud_cache_mb"],
            "memory.gpu_mb": s["gpu_mb"],
            # percent of one core since the last report, by thread (pools together)
            **{f"cpu.{n}_pct": v for n, v in sorted(s.get("thread_cpu", {}).items())},
        }
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: mapping", message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v)))
                    for k, v in values.items()])
        return DiagnosticArray(header=self._header(""), status=[status])

    # ------------------------------------------------------------------ parameters

    def _apply_runtime_parameter(self, name: str, value) -> None:
        *sections, leaf = name.split(".")
        target = self.config
        for section in sections:
            target = getattr(target, section)
        setattr(target, leaf, value)
        if name.startswith("mapping.semantics.") and self.mapper is not None:
            mapper_cfg = self.mapper.vocabulary.cfg
            if mapper_cfg is not self.config.mapping.semantics:
                setattr(mapper_cfg, leaf, value)
        elif name.startswith("output.") and name.endswith("_period_s"):
            self._reset_timers()
        elif name == "output.vocabulary" and self.mapper is not None:
            self._apply_vocabulary(self.mapper)
            self.get_logger().info(f"vocabulary: {len(value)} prompts"
                                   + (f" ({self._vocabulary_note})"
                                      if self._vocabulary_note else ""))
        elif name == "input.error_log_period_s":
            self._throttle.period_s = value

    def _apply_vocabulary(self, mapper: Mapper) -> None:
        """Embed output.vocabulary with the text encoder and give it to ``mapper``."""
        prompts = [p.strip() for p in self.config.output.vocabulary if p.strip()]
        if self.embedder is None:
            self._vocabulary_note = "kept, but unused without a text encoder"
            return
        text = (self.embedder.embed_text(prompts) if prompts
                else np.zeros((0, self.embedding_dim), np.float32))
        mapper.vocabulary.set(prompts, text)
        self._vocabulary_note = ""

    # ------------------------------------------------------------------ map swaps

    def _swap(self, mapper: Mapper) -> None:
        """Replace the running map; threads pick the new one up at their next step."""
        with self._map_lock:
            self.mapper = mapper
            self._generation += 1
            self._latest_view = None
        self._snapshots.clear()
        self.get_logger().info(f"map replaced (generation {self._generation})")

    # ------------------------------------------------------------------ shutdown

    def destroy_node(self):
        self._active = False
        self._stop_threads()
        self.autosave("shutdown")
        return super().destroy_node()

    # ------------------------------------------------------------------ autosave

    def _map_key(self) -> tuple:
        st = self.mapper.stats()
        return (self._generation, st["frames"], st.get("edits", 0), st["keyframes"])

    def autosave(self, why: str = "period") -> bool:
        """Save the map to ``output.autosave_path`` if set and the map holds keyframes:
        at shutdown always (training went on), periodically only when frames or edits
        changed it since the last autosave. Errors are logged (the node goes on)."""
        # getattr: rclpy destroys a node whose constructor raised (a bad parameter) too
        config, mapper = getattr(self, "config", None), getattr(self, "mapper", None)
        path = "" if config is None else config.output.autosave_path.strip()
        if not path or mapper is None or mapper.stats()["keyframes"] == 0:
            return False
        key = self._map_key()
        if why == "period" and key == self._autosaved_key:
            return False
        target = Path(path).expanduser()
        t0 = time.perf_counter()
        try:
            size = mapper.save(target)
        except Exception as exc:  # noqa: BLE001 - a full disk must not end the node
            log.error("autosave (%s) to %s failed: %s", why, target, exc)
            return False
        self._autosaved_key = key
        log.info("autosaved the map (%s) to %s: %.1f MB in %.1f s", why, target, size / 1e6,
                 time.perf_counter() - t0)
        return True


def _describe_change(event) -> str:
    """The log line of a change-detection event."""
    where = ", ".join(f"{c:.2f}" for c in event.centroid)
    if event.kind == "moved":
        was = ", ".join(f"{c:.2f}" for c in event.previous)
        return (f"instance {event.instance_id} moved: removed from ({was}), seen again at "
                f"({where}) as instance {event.seen_as}, which takes its id")
    return (f"instance {event.instance_id} removed: {event.views} views saw through where "
            f"it was ({where})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run panoptic_mapping mapping_node``."""
    return run_node(MappingNode, NODE_NAME, num_threads=4, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
