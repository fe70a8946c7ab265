"""``replay``: play a recorded sequence into a live mapping node, at real time or a multiple.

Two kinds of recording:

* a **scene folder** as the benchmark writes it (``bench.scenes.save_scene``: scene.json,
  frames/*_rgb.png, *_depth.npy), with or without ground truth (a recording imported with
  ``python -m panoptic_mapping.bench.importers`` has none; only images, depth, intrinsics,
  poses and stamps are published): each frame is published as an Image (rgb8, bgr8 or
  mono8), a CameraInfo (from its intrinsics), a depth Image (32FC1 in m or 16UC1 in mm)
  and the camera pose as a PoseStamped (the optical frame in ``map``) or an Odometry;
  with ``--compressed`` the image and depth go out as sensor_msgs/CompressedImage as
  image_transport's plugins publish them, on ``<image topic>/compressed`` (jpeg or png,
  ``--compressed-format``) and ``<depth topic>/compressedDepth`` (png, 16UC1 or 32FC1 by
  ``--depth-encoding``; 32FC1 is quantised as inverse depth), for a node with
  ``input.image_transport: compressed`` and ``input.depth_transport: compressedDepth``;
* a **ROS 2 bag** (a rosbag2 folder, .db3 or .mcap; read with ``rosbags``): every message
  is published unchanged (raw CDR bytes) on its topic, or on the topic given by ``--remap
  FROM:=TO``.

Pacing follows the recorded stamps divided by ``--rate`` (1 = real time, 0.5 = half speed).
Recorded stamps (a bag's, or a scene's with ``--stamps recorded``) lie far from a live
node's clock, which refuses them (``input.max_clock_offset_s``): ``--clock`` publishes
/clock at the recorded time for a node started with ``use_sim_time:=true``.
Publishers are reliable (keep last 5), which best-effort (sensor-data) subscribers accept.
Before the first message the tool waits until the node has subscribed (discovery).

    ros2 run panoptic_mapping replay out/demo/scene --rate 0.5
    ros2 run panoptic_mapping replay out/demo/scene --compressed --compressed-format png
    ros2 run panoptic_mapping replay my_bag/ --remap /camera/color/image_raw:=/image --clock
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "scene_frame_messages", "camera_info_msg"]


def _msg_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the generated message class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def camera_info_msg(K: np.ndarray, width: int, height: int, header):
    """CameraInfo of an undistorted pinhole camera."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64)
    msg = CameraInfo(header=header, width=int(width), height=int(height))
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


def pose_msg(camera_to_map: np.ndarray, header):
    """PoseStamped of a camera-to-map transform (4, 4)."""
    from geometry_msgs.msg import PoseStamped

    from panoptic_mapping.core.geometry import rotation_to_quaternion

    T = np.asarray(camera_to_map, dtype=np.float64)
    msg = PoseStamped(header=header)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in rotation_to_quaternion(T[:3, :3]))
    return msg


def scene_frame_messages(frame, stamp, *, map_frame: str = "map",
                         camera_frame: str = "camera_color_optical_frame",
                         color_encoding: str = "rgb8", depth_encoding: str | None = "32FC1",
                         odometry: bool = False, compressed: str | None = None,
                         jpeg_quality: int = 90) -> dict:
    """The messages of one benchmark frame: image, camera_info, depth (or None), pose.

    Args:
        frame: a ``SceneFrame`` (rgb, depth, K, camera_to_world).
        stamp: builtin_interfaces/Time of every message.
        compressed: None (Image messages), or 'jpeg' / 'png': the image becomes a
            CompressedImage of that codec (``color_encoding`` rgb8/bgr8 give the same
            colour stream, mono8 a grey one) and the depth a compressedDepth one of
            ``depth_encoding``.
    """
    from std_msgs.msg import Header

    from panoptic_mapping.ros.conversions import numpy_to_image

    cam = Header(stamp=stamp, frame_id=camera_frame)
    rgb = np.asarray(frame.rgb, np.uint8)
    if color_encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif color_encoding == "mono8":
        pixels = np.round(rgb.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    else:
        pixels = rgb
    h, w = rgb.shape[:2]
    if compressed is not None:
        from panoptic_mapping.ros.compressed import depth_to_compressed, rgb_to_compressed

        image = rgb_to_compressed(pixels if color_encoding == "mono8" else rgb, compressed,
                                  quality=jpeg_quality, header=cam)
    else:
        image = numpy_to_image(pixels, color_encoding, cam)
    out = {"image": image, "camera_info": camera_info_msg(frame.K, w, h, cam), "depth": None}
    if depth_encoding is not None and frame.depth is not None:
        depth = np.asarray(frame.depth, np.float32)
        if depth_encoding == "16UC1":
            depth = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
        out["depth"] = (numpy_to_image(depth, depth_encoding, cam) if compressed is None
                        else depth_to_compressed(depth, depth_encoding, header=cam))
    pose = pose_msg(frame.camera_to_world, Header(stamp=stamp, frame_id=map_frame))
    if odometry:
        from nav_msgs.msg import Odometry

        odom = Odometry(header=pose.header, child_frame_id=camera_frame)
        odom.pose.pose = pose.pose
        out["odometry"] = odom
    else:
        out["pose"] = pose
    return out


# ---------------------------------------------------------------------------- players


def _wait_for_subscribers(publishers, timeout_s: float, count: int = 1) -> bool:
    """True once each publisher has ``count`` subscribers (discovery), False after the
    timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() >= count for p in publishers):
            return True
        time.sleep(0.05)
    return False


def _pace(t0_wall: float, t_rec: float, rate: float) -> None:
    delay = t0_wall + t_rec / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _wait_for_acks(publishers, timeout_s: float = 5.0) -> None:
    """Let subscribers acknowledge what was sent: exiting right after the last publish
    tore the reliable publishers down before the last message was delivered (seen in the
    bag replay test, about one run in six)."""
    from rclpy.duration import Duration

    for p in publishers:
        p.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9)))


def play_scene(node, folder: Path, args) -> int:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.time import Time
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from panoptic_mapping.bench.scenes import load_scene
    # scene_frame_messages needs these (they load torch, seconds): import them before the
    # clock starts, or the first frame goes out seconds late and the rest in a burst
    from panoptic_mapping.ros.conversions import numpy_to_image  # noqa: F401
    if args.compressed:
        from panoptic_mapping.ros import compressed  # noqa: F401

    scene = load_scene(folder)
    frames = scene.novel_frames if args.novel else scene.frames
    if args.limit:
        frames = frames[:args.limit]
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pose_type = "odometry" if args.odometry else "pose"
    if args.odometry:
        from nav_msgs.msg import Odometry as PoseType
    else:
        from geometry_msgs.msg import PoseStamped as PoseType
    # image_transport's names for the compressed streams
    image_type, image_topic = ((CompressedImage, args.image_topic.rstrip("/") + "/compressed")
                               if args.compressed else (Image, args.image_topic))
    depth_type, depth_topic = ((CompressedImage,
                                args.depth_topic.rstrip("/") + "/compressedDepth")
                               if args.compressed else (Image, args.depth_topic))
    pubs = {"image": node.create_publisher(image_type, image_topic, qos),
            "camera_info": node.create_publisher(CameraInfo, args.camera_info_topic, qos),
            pose_type: node.create_publisher(PoseType, args.pose_topic if not args.odometry
                                             else args.odometry_topic, qos)}
    depth_encoding = None if args.no_depth else args.depth_encoding
    if depth_encoding:
        pubs["depth"] = node.create_publisher(depth_type, depth_topic, qos)
    if not _wait_for_subscribers([pubs["image"]], args.wait_subscribers, args.subscribers):
        print(f"replay: fewer than {args.subscribers} subscribed to "
              f"{pubs['image'].topic_name} within {args.wait_subscribers} s; publishing "
              "anyway", file=sys.stderr)
    time.sleep(0.3)  # let the other topics' subscriptions match as well
    print(f"replay: {len(frames)} frames of scene '{scene.name}' from {folder} at "
          f"{args.rate:g}x real time", flush=True)
    t0_wall, s0 = time.monotonic(), frames[0].stamp if frames else 0.0
    sent = 0
    clock = _clock_publisher(node) if args.clock else None
    for frame in frames:
        _pace(t0_wall, frame.stamp - s0, args.rate)
        if clock is not None:
            clock(int(round(frame.stamp * 1e9)))
        if args.stamps == "recorded" or clock is not None:
            stamp = Time(nanoseconds=int(round(frame.stamp * 1e9))).to_msg()
        else:
            stamp = node.get_clock().now().to_msg()
        msgs = scene_frame_messages(frame, stamp, map_frame=args.map_frame,
                                    camera_frame=args.camera_frame,
                                    color_encoding=args.color_encoding,
                                    depth_encoding=depth_encoding, odometry=args.odometry,
                                    compressed=(args.compressed_format if args.compressed
                                                else None),
                                    jpeg_quality=args.jpeg_quality)
        # the pose first: the node looks it up when the image arrives
        for key in (pose_type, "camera_info", "depth", "image"):
            if msgs.get(key) is not None and key in pubs:
                pubs[key].publish(msgs[key])
        sent += 1
    wall = time.monotonic() - t0_wall
    _wait_for_acks(pubs.values())
    print(f"replay: published {sent} frames in {wall:.1f} s "
          f"({sent / max(wall, 1e-9):.2f} frames/s)", flush=True)
    if args.summary:
        Path(args.summary).write_text(json.dumps({"frames": sent, "wall_s": wall}))
    return 0


def _clock_publisher(node):
    """``publish(stamp_ns)`` on /clock (rosgraph_msgs/Clock), as ``ros2 bag play --clock``
    does: a node with use_sim_time:=true then lives in the recording's time."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.time import Time
    from rosgraph_msgs.msg import Clock

    pub = node.create_publisher(Clock, "/clock",
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))

    def publish(stamp_ns: int) -> None:
        pub.publish(Clock(clock=Time(nanoseconds=int(stamp_ns)).to_msg()))

    return publish


def play_bag(node, path: Path, args) -> int:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    remap = dict(r.split(":=", 1) for r in args.remap)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    with AnyReader([path], default_typestore=get_typestore(Stores.LATEST)) as reader:
        connections = [c for c in reader.connections
                       if not args.topics or c.topic in args.topics]
        if not connections:
            print(f"replay: no matching topics in {path}", file=sys.stderr)
            return 1
        pubs = {}
        for c in connections:
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(_msg_class(c.msgtype),
                                                      remap.get(c.topic, c.topic), qos)
        _wait_for_subscribers(list(pubs.values())[:1], args.wait_subscribers,
                              args.subscribers)
        time.sleep(0.3)
        print(f"replay: {len(pubs)} topics from bag {path} at {args.rate:g}x real time: "
              + ", ".join(f"{t} -> {p.topic_name}" for t, p in pubs.items()), flush=True)
        t0_wall, t_first, sent = time.monotonic(), None, 0
        clock = _clock_publisher(node) if args.clock else None
        for connection, timestamp, raw in reader.messages(connections=connections):
            t_first = timestamp if t_first is None else t_first
            _pace(t0_wall, (timestamp - t_first) / 1e9, args.rate)
            if clock is not None:
                clock(timestamp)
            pubs[connection.topic].publish(bytes(raw))  # CDR bytes, published as they are
            sent += 1
            if args.limit and sent >= args.limit:
                break
    wall = time.monotonic() - t0_wall
    _wait_for_acks(pubs.values())
    print(f"replay: published {sent} messages in {wall:.1f} s", flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="replay", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="scene folder (scene.json) or ROS 2 bag")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed: 1 = real time, 2 = twice as fast (default 1)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many frames/messages")
    p.add_argument("--clock", action="store_true",
                   help="publish /clock at the recorded time of each frame or message (as "
                        "`ros2 bag play --clock`; a scene's frames then carry their recorded "
                        "stamps) for a node started with use_sim_time:=true; without it a "
                        "node refuses stamps more than input.max_clock_offset_s from its "
                        "own clock")
    p.add_argument("--wait-subscribers", type=float, default=20.0,
                   help="seconds to wait for the node's subscriptions (default 20)")
    p.add_argument("--subscribers", type=int, default=1,
                   help="subscribers of the image topic to wait for (2: a mapping node and "
                        "a segmentation node; default 1)")
    g = p.add_argument_group("scene folders")
    g.add_argument("--image-topic", default="/image")
    g.add_argument("--camera-info-topic", default="/camera_info")
    g.add_argument("--depth-topic", default="/depth")
    g.add_argument("--pose-topic", default="/pose")
    g.add_argument("--odometry-topic", default="/odometry")
    g.add_argument("--odometry", action="store_true",
                   help="publish poses as nav_msgs/Odometry instead of PoseStamped")
    g.add_argument("--no-depth", action="store_true", help="publish no depth images")
    g.add_argument("--depth-encoding", choices=("32FC1", "16UC1"), default="32FC1")
    g.add_argument("--color-encoding", choices=("rgb8", "bgr8", "mono8"), default="rgb8")
    g.add_argument("--compressed", action="store_true",
                   help="publish sensor_msgs/CompressedImage as image_transport does: the "
                        "image on IMAGE_TOPIC/compressed, the depth (compressedDepth, png, "
                        "--depth-encoding) on DEPTH_TOPIC/compressedDepth")
    g.add_argument("--compressed-format", choices=("jpeg", "png"), default="jpeg",
                   help="codec of the compressed image (default jpeg)")
    g.add_argument("--jpeg-quality", type=int, default=90,
                   help="JPEG quality 1-100 with --compressed (default 90)")
    g.add_argument("--map-frame", default="map")
    g.add_argument("--camera-frame", default="camera_color_optical_frame")
    g.add_argument("--stamps", choices=("now", "recorded"), default="now",
                   help="header stamps: the publish time (default) or the recorded ones")
    g.add_argument("--novel", action="store_true", help="play the held-out views instead")
    g.add_argument("--summary", help="write a JSON summary (frames, wall time) here")
    g = p.add_argument_group("bags")
    g.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="publish the bag's topic FROM on TO (repeatable)")
    g.add_argument("--topics", nargs="*", default=[], help="only these bag topics")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be > 0")
    if not 1 <= args.jpeg_quality <= 100:
        p.error("--jpeg-quality must be in 1..100")
    for r in args.remap:
        if ":=" not in r:
            p.error(f"--remap wants FROM:=TO, got {r!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = args.source
    if not source.exists():
        print(f"replay: {source} does not exist", file=sys.stderr)
        return 2
    rclpy.init(args=[])
    node = rclpy.create_node("panoptic_mapping_replay")
    try:
        if source.is_dir() and (source / "scene.json").is_file():
            return play_scene(node, source, args)
        return play_bag(node, source, args)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
