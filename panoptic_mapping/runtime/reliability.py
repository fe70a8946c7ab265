"""Which delivery an input subscription asks for, from what its publishers offer.

Best-effort subscriptions match every publisher, but on one machine Fast DDS (ROS 2's
default middleware) delivers no best-effort message larger than its shared-memory
segment, about 0.5 MB (ros2/rmw_fastrtps#739): not one 640x480 colour image of 20 arrived
here. Reliable subscriptions receive them, but match only reliable publishers. 'auto' asks
for reliable delivery exactly when every publisher of the topic offers it.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["RELIABILITY_MODES", "subscription_reliability"]

RELIABILITY_MODES = ("auto", "best_effort", "reliable")


def subscription_reliability(mode: str, offered: Iterable[str]) -> str:
    """'reliable' or 'best_effort' for a subscription.

    Args:
        mode: one of :data:`RELIABILITY_MODES`; 'best_effort' and 'reliable' are kept.
        offered: the reliability each current publisher of the topic offers
            ('reliable', 'best_effort', or anything else for unknown).
    Returns:
        For 'auto': 'reliable' when there is at least one publisher and every one offers
        'reliable' (a reliable subscription would not match the others), else
        'best_effort' (which matches any publisher that appears later).
    """
    if mode not in RELIABILITY_MODES:
        raise ValueError(f"unknown reliability {mode!r}: one of {', '.join(RELIABILITY_MODES)}")
    if mode != "auto":
        return mode
    offered = list(offered)
    return "reliable" if offered and all(o == "reliable" for o in offered) else "best_effort"
