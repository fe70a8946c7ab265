"""Waiting on a running node from a test's rclpy client (shared by the loopback tests)."""
from __future__ import annotations

import time


def wait_until(client, predicate, timeout: float, what: str):
    """Spin ``client`` (a :class:`panoptic_mapping.tools.demo_client.Client`) until
    ``predicate()`` is truthy; returns its value, or fails naming ``what`` and the last
    status the node reported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.spin_for(0.1)
        value = predicate()
        if value:
            return value
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                         f"last status: {client.status}")
