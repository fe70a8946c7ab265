"""Input subscriptions whose QoS reliability follows their publishers
(``input.reliability``; the decision: :mod:`panoptic_mapping.runtime.reliability`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from panoptic_mapping.runtime.reliability import subscription_reliability

__all__ = ["InputSubscriptions", "CHECK_PERIOD_S"]

# how often 'auto' looks at the inputs' publishers [s]
CHECK_PERIOD_S = 1.0

_POLICY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
_NAME = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best_effort"}


@dataclass
class _Input:
    msg_type: Any
    topic: str
    callback: Callable
    reliability: str
    subscription: Any


class InputSubscriptions:
    """The input subscriptions of a node, with sensor-data QoS (keep last 5, volatile)
    but the reliability ``mode`` chooses; :meth:`adapt` (periodically: :meth:`watch`)
    re-creates a subscription whose publishers changed what 'auto' chooses."""

    def __init__(self, node, mode: str, callback_group) -> None:
        self._node = node
        self._mode = mode
        self._group = callback_group
        self._inputs: list[_Input] = []
        self._timer = None

    def add(self, msg_type, topic: str, callback: Callable) -> None:
        """Subscribe ``callback`` to ``topic`` (as the node resolves it)."""
        reliability = self._wanted(topic)
        self._inputs.append(_Input(msg_type, topic, callback, reliability,
                                   self._subscribe(msg_type, topic, callback, reliability)))

    def watch(self) -> None:
        """With 'auto': :meth:`adapt` every ``CHECK_PERIOD_S``, in the inputs' callback
        group (so never while one of their callbacks runs), each change logged; until
        :meth:`destroy`."""
        if self._mode == "auto" and self._timer is None:
            self._timer = self._node.create_timer(CHECK_PERIOD_S, self._adapt_and_log,
                                                  callback_group=self._group)

    def _adapt_and_log(self) -> None:
        for change in self.adapt():
            self._node.get_logger().info(f"input reliability {change}")

    def adapt(self) -> list[str]:
        """Re-create the subscriptions whose wanted reliability changed; returns one line
        per change (for the log)."""
        changes = []
        for entry in self._inputs:
            wanted = self._wanted(entry.topic)
            if wanted == entry.reliability:
                continue
            self._node.destroy_subscription(entry.subscription)
            entry.subscription = self._subscribe(entry.msg_type, entry.topic, entry.callback,
                                                 wanted)
            changes.append(f"{self._node.resolve_topic_name(entry.topic)}: {entry.reliability}"
                           f" -> {wanted} (its publishers offer "
                           f"{', '.join(sorted(set(self._offered(entry.topic)))) or 'nothing'})")
            entry.reliability = wanted
        return changes

    def reliabilities(self) -> dict[str, str]:
        """Resolved topic -> the reliability its subscription asks for."""
        return {self._node.resolve_topic_name(e.topic): e.reliability for e in self._inputs}

    def destroy(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        for entry in self._inputs:
            self._node.destroy_subscription(entry.subscription)
        self._inputs.clear()

    def _offered(self, topic: str) -> list[str]:
        infos = self._node.get_publishers_info_by_topic(self._node.resolve_topic_name(topic))
        return [_NAME.get(info.qos_profile.reliability, "unknown") for info in infos]

    def _wanted(self, topic: str) -> str:
        if self._mode != "auto":
            return subscription_reliability(self._mode, [])
        return subscription_reliability(self._mode, self._offered(topic))

    def _subscribe(self, msg_type, topic: str, callback: Callable, reliability: str):
        qos = QoSProfile(history=qos_profile_sensor_data.history,
                         depth=qos_profile_sensor_data.depth,
                         durability=qos_profile_sensor_data.durability,
                         reliability=_POLICY[reliability])
        return self._node.create_subscription(msg_type, topic, callback, qos,
                                              callback_group=self._group)
