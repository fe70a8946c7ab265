"""The input subscriptions' reliability: reliable exactly when every publisher offers it."""
from __future__ import annotations

import pytest

from panoptic_mapping.runtime.reliability import subscription_reliability


def test_auto_is_reliable_only_when_every_publisher_offers_it():
    assert subscription_reliability("auto", ["reliable"]) == "reliable"
    assert subscription_reliability("auto", ["reliable", "reliable"]) == "reliable"
    # one best-effort publisher: a reliable subscription would not match it
    assert subscription_reliability("auto", ["reliable", "best_effort"]) == "best_effort"
    assert subscription_reliability("auto", ["reliable", "unknown"]) == "best_effort"
    # no publisher yet: best effort matches whatever comes
    assert subscription_reliability("auto", []) == "best_effort"


def test_fixed_modes_ignore_the_publishers():
    assert subscription_reliability("reliable", ["best_effort"]) == "reliable"
    assert subscription_reliability("best_effort", ["reliable"]) == "best_effort"
    with pytest.raises(ValueError, match="unknown reliability 'fast'"):
        subscription_reliability("fast", [])
