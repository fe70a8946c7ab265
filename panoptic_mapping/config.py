"""The application's configuration: the root of the one source of truth.

Each component declares its own section beside its code, with
:func:`panoptic_mapping.params.param` (the mapping core: :class:`MapperConfig`, the
front-ends: :mod:`panoptic_mapping.frontends.config`); this module adds the node's input
and output sections and nests them all into :class:`PanopticMappingConfig`. From it are
derived:

* ``config/mapping.yaml`` (``python -m panoptic_mapping.config --yaml``; a test keeps the
  committed file identical to the generated one),
* the ROS parameters the node declares (name, type, description, read-only flag),
* the validation of every YAML file, dictionary or ROS parameter set handed in: an unknown
  key or a value of the wrong type raises :class:`ConfigError` naming it.

It sits above the components it nests and below the ROS adapter; it is ROS-free.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from panoptic_mapping import params
from panoptic_mapping.core.mapper import MapperConfig
from panoptic_mapping.frontends.config import EmbedderConfig, SegmenterConfig, WorkerConfig
from panoptic_mapping.params import (
    ROS_BUILTIN_PARAMETERS,
    ConfigError,
    ParamSpec,
    config_to_dict,
    flatten,
    param,
    validate_fields,
    validate_value,
)
from panoptic_mapping.runtime.reliability import RELIABILITY_MODES

__all__ = [
    "ConfigError",
    "ParamSpec",
    "CameraInputConfig",
    "InputConfig",
    "SegmentationNodeConfig",
    "OutputConfig",
    "FrontendConfig",
    "PanopticMappingConfig",
    "ROS_BUILTIN_PARAMETERS",
    "param",
    "param_specs",
    "validate_value",
    "validate_fields",
    "config_from_dict",
    "config_from_flat",
    "config_to_dict",
    "flatten",
    "load_config",
    "config_to_yaml",
]


# --------------------------------------------------------------------------- sections


@dataclass
class CameraInputConfig:
    """How camera images enter a node: transports, synchronisation, size and log limits.

    A node subscribes to the relative topics ``image``, ``camera_info`` and ``depth`` (the
    launch file remaps them), matched by an approximate time synchroniser (message_filters
    semantics). With ``image_transport`` 'compressed' / ``depth_transport`` 'compressedDepth'
    the image and depth come as sensor_msgs/CompressedImage on the image_transport topics
    below them (``<image>/compressed``, ``<depth>/compressedDepth``). The mapping node's
    ``input`` section and the segmentation node's are this one (the mapping node's adds
    poses, masks and training).
    """

    use_depth: bool = param(True, "Subscribe to a depth image (16UC1 in mm or 32FC1 in m) "
                            "and synchronise it with the colour image.")
    image_transport: str = param(
        "raw",
        "How the colour image arrives: 'raw' (sensor_msgs/Image on 'image') or "
        "'compressed' (sensor_msgs/CompressedImage, jpeg or png, on '<image>/compressed', "
        "image_transport's naming: the resolved, remapped 'image' topic + '/compressed'). "
        "Decoded on the frame-assembler thread.",
        choices=("raw", "compressed"))
    depth_transport: str = param(
        "raw",
        "How the depth image arrives: 'raw' (sensor_msgs/Image on 'depth') or "
        "'compressedDepth' (sensor_msgs/CompressedImage from compressed_depth_image_transport, "
        "png codec, 16UC1 or 32FC1, on '<depth>/compressedDepth'). Decoded on the "
        "frame-assembler thread.",
        choices=("raw", "compressedDepth"))
    reliability: str = param(
        "auto",
        "QoS reliability of the input subscriptions (history: keep last 5, as sensor data). "
        "'best_effort' matches every publisher, but between processes on one machine Fast "
        "DDS delivers no best-effort message larger than its shared-memory segment, about "
        "0.5 MB (ros2/rmw_fastrtps#739): not one of 20 640x480 colour images arrived. "
        "'reliable' receives them but matches only reliable publishers. 'auto': reliable "
        "while every publisher of the topic offers it, best effort otherwise (checked every "
        "second; a best-effort driver appearing later switches the subscription back).",
        choices=RELIABILITY_MODES)
    lens: str = param(
        "undistort",
        "What camera_info's distortion (distortion_model, d) means for the images. "
        "'undistort': the images are raw, as drivers publish them ('image_raw'): where d "
        "is not all zero, each frame (colour, depth, masks) and each localize_instances "
        "image is undistorted to the pinhole image with the same k before it meets the "
        "map (plumb_bob, rational_polynomial, equidistant; another model with a non-zero "
        "d is refused with the reason), and per-pixel answers come back at the raw "
        "pixels. 'rectified': the images are already rectified ('image_rect', "
        "image_proc's output): d is ignored and the intrinsics are camera_info's p, the "
        "rectified camera (k where p is all zero). 'ignore': k alone, d ignored (a lens "
        "whose distortion is below a pixel).",
        choices=("undistort", "rectified", "ignore"))
    sync_slop_s: float = param(0.05, "Largest stamp difference [s] between the image, its "
                               "camera_info and its depth for them to be matched "
                               "(approximate time synchronisation).", minimum=0.0)
    sync_queue_size: int = param(5, "Unmatched messages kept per input topic by the "
                                 "synchroniser (older ones are dropped, counted).", minimum=1)
    time_jump_back_s: float = param(1.0, "An image or pose stamped this much [s] before the "
                                    "newest one of its kind means the clock jumped back (a "
                                    "bag played again): the pose buffer and the "
                                    "synchroniser are cleared, with a warning, so two runs' "
                                    "messages never pair (0: never).", minimum=0.0)
    max_clock_offset_s: float = param(
        300.0, "An image (or pose, or a localize_instances request taking its pose from "
        "the stream) stamped more than this [s] before or after the node's clock is "
        "refused with the reason: a driver stamping 1970 after a reset, or a bag played "
        "without --clock and use_sim_time:=true, would otherwise be paired with the wrong "
        "poses. Under use_sim_time the clock is /clock. 0: any stamp is accepted.",
        minimum=0.0)
    max_image_pixels: int = param(2_500_000, "Largest image (width x height) taken from the "
                                  "topics or in a localize_instances request (about "
                                  "1920x1200); a larger one is refused with the reason "
                                  "before it is decoded (a 4096x3072 request once took the "
                                  "node to 24 GB).", minimum=1)
    error_log_period_s: float = param(5.0, "Rejected inputs (bad encoding, size mismatch, "
                                      "no pose) are logged at most this often per reason; "
                                      "each is counted.", minimum=0.0)


@dataclass
class InputConfig(CameraInputConfig):
    """How camera frames, their poses and (optionally) their masks enter the mapping node,
    and its input and training threads (the camera part: :class:`CameraInputConfig`).

    Poses come from tf, ``pose`` (geometry_msgs/PoseStamped) or ``odometry``
    (nav_msgs/Odometry); with ``masks_source`` 'topic' the masks come from a
    segmentation_node on ``masks`` (panoptic_mapping_interfaces/Masks).
    """

    # (class constants, not parameters) The optical frame in a REP-103 body frame (x forward,
    # y left, z up): optical z = body x, optical x = -body y, optical y = -body z.
    BODY_TO_OPTICAL_REP103 = [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5]
    IDENTITY_POSE = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]

    pose_source: str = param(
        "auto",
        "Where camera poses come from: 'tf' (map <- camera optical frame at the image stamp), "
        "'pose' (geometry_msgs/PoseStamped on 'pose'), 'odometry' (nav_msgs/Odometry on "
        "'odometry'), or 'auto' (tf when tf2_ros is importable, else 'pose').",
        choices=("auto", "tf", "pose", "odometry"))
    map_frame: str = param("map", "Fixed frame of the map; every output is expressed in it.")
    camera_frame: str = param("", "Camera optical frame looked up in tf (z forward, x right, "
                              "y down); empty: the image's header.frame_id.")
    body_to_optical: list[float] = param(
        IDENTITY_POSE,
        "For pose_source 'pose'/'odometry': the camera optical frame in the frame whose pose "
        "is received, as x, y, z, qx, qy, qz, qw. The identity (default) means the received "
        "pose is already that of the optical frame (z forward, x right, y down); for a "
        "REP-103 body/camera_link frame (x forward, y left, z up) at the camera use "
        "[0, 0, 0, -0.5, 0.5, -0.5, 0.5].")
    pose_buffer_size: int = param(1000, "Poses kept for the lookup at image stamps when tf2 "
                                  "is not used (oldest dropped).", minimum=2)
    pose_max_gap_s: float = param(0.5, "Largest gap [s] between two buffered poses across "
                                  "which a pose is interpolated.", minimum=0.0)
    pose_tolerance_s: float = param(0.02, "How far [s] an image stamp may lie before the "
                                    "first or after the last buffered pose (the nearest "
                                    "pose is used; no extrapolation beyond).", minimum=0.0)
    pose_wait_s: float = param(0.2, "How long [s] a frame waits for its pose (tf or the pose "
                               "topic) before it is dropped, counted and logged.",
                               minimum=0.0)
    train_duty_cycle: float = param(1.0, "Share of wall time the training thread trains "
                                    "(1 = continuously); lower values leave the CPU to "
                                    "segmentation on machines without a GPU.", minimum=0.01,
                                    maximum=1.0, runtime=True)
    min_training_share: float = param(
        0.0, "While frames come faster than the map takes them, the mapping thread pauses "
        "after each frame for this share of the time (the newest frame is mapped after "
        "the pause), so that training, which shares the cores and the interpreter with "
        "mapping (and waits for it with mapping.associate_beside_training off), keeps "
        "them to itself that long. 0: no pause, every frame mapped as soon as the last "
        "one is done. Measured on 2 cores under a 100 Hz camera (twentieth session, "
        "frames mapped beside training): 0.5 gave training 0.42-0.47 of its idle rate "
        "instead of 0.37 and mapped 32-33 frames in 20 s instead of 78.",
        minimum=0.0, maximum=0.9,
        runtime=True)
    torch_threads: int = param(
        0, "Threads torch may use inside one operation (0: half the CPU cores this process "
        "may run on, at least 1). Training, mapping and service calls run side by side in "
        "the node, and an operation spread over every core makes them wait for each other "
        "(one run of the node on 2 cores with 1 thread: idle training 5.0 steps/s and "
        "localize p50 113 ms against 3.0-3.5 and 150-174 with torch's default of 2; later "
        "runs varied as much, so the gain is not established).", minimum=0)
    blas_threads: int = param(
        0, "Threads the BLAS libraries numpy and scipy load (OpenBLAS, MKL) may use inside "
        "one operation; 0: as torch_threads. Left to themselves they take every core and "
        "their idle workers spin between the many small calls of segmentation and mapping "
        "(2 cores, 100 Hz camera, mapping nearly paused: numpy's pool thread took 43 % of a "
        "core; capped at 1, training 2.4 -> 3.8-4.8 steps/s and localize p95 361 -> "
        "201-238 ms; idle localize p50 86-96 -> 66-83 ms; BENCHMARKS.md).", minimum=0)
    localize_priority: bool = param(
        True, "While a localize_instances request is answered (a manipulation stack "
        "waits on it), training starts no step (one under way finishes). Measured on 2 "
        "cores with localize called back to back while training (flood benchmark, idle "
        "phase, two runs each): localize p50 81 ms against 88-93, p95 95-99 against "
        "112-121, training 8.1 steps/s against 10.3-10.5. Under a 100 Hz flood the runs "
        "varied more than the setting moved them.", runtime=True)
    switch_interval_ms: float = param(
        1.0, "How often [ms] a thread running Python code offers the interpreter lock to the "
        "others (CPython's default 5; process-wide). The training thread's Python between "
        "its torch operations held up the mapping and input threads: `make demo` at "
        "640x480 on 2 cores mapped 18-20 of 48 frames with 5 ms, 29-30 with 1 ms and 29 "
        "with 0.5, training as many steps. 0 leaves the interpreter's setting.",
        minimum=0.0, maximum=100.0)
    malloc_mmap_threshold_mb: float = param(
        4.0, "Memory blocks up to this size [MB] come from the C allocator's heap instead of "
        "a fresh mmap each (glibc; its own threshold rises up to 32 when nothing fixes it; "
        "fixed at 128 kB, as the node did before, the training thread spent half its time "
        "mapping and zero-filling memory, 5.5 steps/s against 12 for the same map in a plain "
        "process). Measured in `make demo`: 4 gave 2.3x the training steps with the same "
        "memory, the heaps' free pages given back at every status report (without that: "
        "+18 %; 32 MB: +52 %). 0 leaves the allocator as glibc has it.",
        minimum=0.0, maximum=32.0)
    masks_source: str = param(
        "segmenter",
        "Where a streamed frame's masks come from: 'segmenter' (frontend.segmenter, in this "
        "process) or 'topic' (panoptic_mapping_interfaces/Masks on 'masks' from a "
        "segmentation_node, e.g. on a computer with a GPU, paired with the image by stamp). "
        "localize_instances requests are segmented in this process either way.",
        choices=("segmenter", "topic"))

    def __post_init__(self) -> None:
        pose = self.body_to_optical
        if (not isinstance(pose, (list, tuple)) or len(pose) != 7
                or any(not isinstance(v, (int, float)) or v != v or abs(v) == float("inf")
                       for v in pose)
                or sum(float(v) ** 2 for v in pose[3:]) < 1e-12):
            raise ConfigError("parameter 'input.body_to_optical' must be 7 finite numbers "
                              "x, y, z, qx, qy, qz, qw with a non-zero quaternion, got "
                              f"{pose!r}")


@dataclass
class OutputConfig:
    """What the node publishes and how often (all in ``input.map_frame``)."""

    # (class constant, not a parameter)
    DEFAULT_VOCABULARY = ["floor", "wall", "table", "chair", "shelf", "box", "mug", "bottle",
                          "bowl", "ball", "toy", "book"]

    status_period_s: float = param(2.0, "Period, in seconds, of the status report (log line "
                                   "and status topic).", minimum=0.1, runtime=True)
    cloud_period_s: float = param(2.0, "Period [s] of the labeled point cloud on "
                                  "~/labeled_cloud (and of the map snapshot the instance "
                                  "markers and services read).", minimum=0.1, runtime=True)
    cloud_max_points: int = param(200000, "Most points in one published cloud (evenly "
                                  "subsampled above it); 0 = no limit.", minimum=0,
                                  runtime=True)
    markers_period_s: float = param(2.0, "Period [s] of the instance boxes and labels on "
                                    "~/instances; 0 = off.", minimum=0.0, runtime=True)
    panoptic_image_period_s: float = param(1.0, "Period [s] of the panoptic rendering of the "
                                           "latest view on ~/panoptic_image; 0 = off.",
                                           minimum=0.0, runtime=True)
    autosave_path: str = param("", "File the map is saved to on its own ('~' expanded; "
                               "empty: never): every autosave_period_s while the map "
                               "changes, and at a clean shutdown (SIGINT, ros2 launch's "
                               "stop, the lifecycle's shutdown). Atomic, like save_map.")
    autosave_period_s: float = param(0.0, "Period [s] of autosaves while mapping (only "
                                     "when the map changed since the last one); 0: only "
                                     "at shutdown.", minimum=0.0)
    vocabulary: list[str] = param(
        DEFAULT_VOCABULARY, "Open-vocabulary class prompts the instances are labelled with "
        "(embedded by the text encoder, frontend.embedder; without one there are no labels).",
        runtime=True)


@dataclass
class FrontendConfig:
    """The 2D front-end: segmenter, open-vocabulary embedder and their worker thread.

    The classes live in :mod:`panoptic_mapping.frontends.config` (plain dataclasses, no
    model imports); nested here so that files and ROS parameters cover them too.
    """

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)


@dataclass
class LifecycleConfig:
    """The mapping node is a managed (lifecycle) node: configure loads the models and
    allocates the map, activate subscribes and publishes, deactivate stops the input and
    keeps the map, cleanup frees everything."""

    autostart: bool = param(True, "Configure and activate at start-up, as an unmanaged node "
                            "would (the launch file's default). False: wait 'unconfigured' "
                            "for a lifecycle manager (`ros2 lifecycle set /panoptic_mapping "
                            "configure`, then `activate`).")


@dataclass
class PanopticMappingConfig:
    """Root of the configuration: one section per component."""

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    mapping: MapperConfig = field(default_factory=MapperConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)


@dataclass
class SegmentationOutputConfig:
    """What the segmentation node reports besides its masks (on ``~/masks``)."""

    status_period_s: float = param(2.0, "Period [s] of the status report (log line and "
                                   "~/status).", minimum=0.1)


@dataclass
class SegmentationNodeConfig:
    """Root of the segmentation node's configuration (``config/segmentation.yaml``): its
    camera input and the front-end it runs (the same sections as the mapping node's), and
    its status report."""

    input: CameraInputConfig = field(default_factory=CameraInputConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    output: SegmentationOutputConfig = field(default_factory=SegmentationOutputConfig)


# The configuration roots by the node they configure (``--node``).
ROOTS = {"mapping": PanopticMappingConfig, "segmentation": SegmentationNodeConfig}


# --------------------------------------------------------------------------- the root's forms
# The machinery of panoptic_mapping.params with this application's root as the default.


def param_specs(cls: type = PanopticMappingConfig, prefix: str = "",
                instance: Any = None) -> list[ParamSpec]:
    """All leaf parameters of ``cls`` (the root by default); see :func:`params.param_specs`."""
    return params.param_specs(cls, prefix, instance)


def config_from_dict(data: Mapping[str, Any] | None, cls: type = PanopticMappingConfig,
                     prefix: str = "", base: Any = None) -> Any:
    """A validated config from a nested mapping; see :func:`params.config_from_dict`."""
    return params.config_from_dict(data, cls, prefix, base)


def config_from_flat(values: Mapping[str, Any], cls: type = PanopticMappingConfig) -> Any:
    """A validated config from dotted names (the ROS parameter form)."""
    return params.config_from_flat(values, cls)


def load_config(path: str | Path, cls: type = PanopticMappingConfig) -> Any:
    """Load and validate a YAML file (plain or ROS params-file layout)."""
    return params.load_config(path, cls)


def yaml_header(node: str = "mapping") -> list[str]:
    """The comment heading the generated params file of ``node`` ('mapping' or
    'segmentation')."""
    return [f"panoptic_mapping {node} node parameters: every key with its default.",
            "Generated from panoptic_mapping/config.py; do not edit by hand, run",
            f"  python -m panoptic_mapping.config --yaml --node {node} > config/{node}.yaml"]


def config_to_yaml(cfg: Any = None, node_name: str = "/**", node: str = "mapping") -> str:
    """The commented ROS params file of ``cfg`` (the default configuration of ``node``'s
    root when None)."""
    return params.config_to_yaml(ROOTS[node]() if cfg is None else cfg, yaml_header(node),
                                 node_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", action="store_true", help="print the default params file")
    parser.add_argument("--check", metavar="FILE", help="validate a params file")
    parser.add_argument("--node", choices=sorted(ROOTS), default="mapping",
                        help="whose parameters: the mapping node's (default) or the "
                             "segmentation node's")
    args = parser.parse_args(argv)
    if args.check:
        try:
            load_config(args.check, ROOTS[args.node])
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check}: ok")
    if args.yaml or not args.check:
        sys.stdout.write(config_to_yaml(node=args.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
