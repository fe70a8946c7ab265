"""The ``mapping_node`` executable: the ROS 2 face of panoptic_mapping.

Threads and callback groups:
* input subscriptions (sensor-data QoS) only record the newest message of each stream
  into bounded, latest-only slots;
* services run in their own callback group, so a slow request never blocks the input path;
* a timer reports, as a log line, what has arrived and what the node is still waiting for.

Relative topic names (remap them, e.g. in ``launch/mapping.launch.py``):
``image`` (sensor_msgs/Image), ``camera_info`` (sensor_msgs/CameraInfo), ``depth``
(sensor_msgs/Image, when ``input.use_depth``), ``pose`` (geometry_msgs/PoseStamped) or
``odometry`` (nav_msgs/Odometry) when poses do not come from tf.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapping.core.config import ConfigError, PanopticMappingConfig
from panoptic_mapping.ros.conversions import InputError
from panoptic_mapping.ros.parameters import declare_config, runtime_validator
from panoptic_mapping.ros.requests import decode_localize_request
from panoptic_mapping.srv import LocalizeInstances, QueryInstances, ResetMap

try:  # present on a real ROS 2 install, not among the PyPI wheels
    import tf2_ros  # noqa: F401

    HAVE_TF2 = True
except ImportError:
    HAVE_TF2 = False

try:
    from nav_msgs.msg import Odometry
except ImportError:  # pragma: no cover - nav_msgs ships with every ROS 2 distribution
    Odometry = None

NODE_NAME = "panoptic_mapping"


@dataclass
class StreamState:
    """Bookkeeping of one input stream (guarded by the node's input lock)."""

    topic: str
    received: int = 0
    last_wall: float | None = None
    latest: object | None = None  # newest message only: the slot never grows


class MappingNode(Node):
    """Subscribes to posed images, serves the map's services, reports its state."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config: PanopticMappingConfig = declare_config(self)
        self._input_lock = threading.Lock()
        self.pose_source = self._resolve_pose_source()
        self.streams: dict[str, StreamState] = {}
        self._subscribe_inputs()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(LocalizeInstances, "~/localize_instances", self._on_localize,
                            callback_group=self._service_group)
        self.create_service(QueryInstances, "~/query_instances", self._on_query,
                            callback_group=self._service_group)
        self.create_service(ResetMap, "~/reset", self._on_reset, callback_group=self._service_group)
        self.add_on_set_parameters_callback(runtime_validator(self._apply_runtime_parameter))
        self._status_timer = self.create_timer(self.config.output.status_period_s,
                                               self.report_status)
        self.get_logger().info(
            f"started: pose from {self.pose_source}, depth "
            f"{'on' if self.config.input.use_depth else 'off'}, map frame "
            f"'{self.config.input.map_frame}'")

    # ------------------------------------------------------------------ inputs

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

    def _subscribe(self, msg_type, name: str) -> None:
        state = StreamState(topic=self.resolve_topic_name(name))
        self.streams[name] = state

        def callback(msg, state=state) -> None:
            with self._input_lock:
                state.received += 1
                state.last_wall = time.monotonic()
                state.latest = msg

        self.create_subscription(msg_type, name, callback, qos_profile_sensor_data)

    def _subscribe_inputs(self) -> None:
        self._subscribe(Image, "image")
        self._subscribe(CameraInfo, "camera_info")
        if self.config.input.use_depth:
            self._subscribe(Image, "depth")
        if self.pose_source == "pose":
            self._subscribe(PoseStamped, "pose")
        elif self.pose_source == "odometry":
            self._subscribe(Odometry, "odometry")

    def waiting_for(self) -> list[str]:
        """Inputs that have not delivered a single message yet (for the status report)."""
        with self._input_lock:
            missing = [f"{name} on {s.topic}" for name, s in self.streams.items()
                       if s.received == 0]
        if self.pose_source == "tf":
            missing.append(f"poses from tf ({self.config.input.map_frame} <- camera frame)")
        return missing

    def report_status(self) -> None:
        with self._input_lock:
            counts = ", ".join(f"{n} {s.received}" for n, s in self.streams.items())
        missing = self.waiting_for()
        if missing:
            self.get_logger().info(f"waiting for: {'; '.join(missing)} (received: {counts})")
        else:
            self.get_logger().info(f"receiving: {counts}; map: empty (no mapping core yet)")

    def _apply_runtime_parameter(self, name: str, value) -> None:
        section, leaf = name.split(".", 1)
        setattr(getattr(self.config, section), leaf, value)
        if name == "output.status_period_s":
            self._status_timer.cancel()
            self._status_timer = self.create_timer(value, self.report_status)

    # ------------------------------------------------------------------ services

    def _on_localize(self, request, response):
        try:
            decode_localize_request(request, self.config.input.map_frame)
        except InputError as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        response.success = False
        response.message = "no map yet: no keyframe has been mapped"
        return response

    def _on_query(self, request, response):
        if not request.query.strip():
            response.success, response.message = False, "bad request: the query text is empty"
            return response
        response.success, response.message = False, "no map yet: no instance to rank"
        return response

    def _on_reset(self, request, response):
        with self._input_lock:
            for state in self.streams.values():
                state.latest = None
        response.success, response.message = True, "map reset (it held no keyframes)"
        return response


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run panoptic_mapping mapping_node``."""
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = MappingNode()
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except ConfigError as exc:
        print(f"[{NODE_NAME}] configuration error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
