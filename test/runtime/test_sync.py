"""The approximate time synchroniser (message_filters semantics, bounded queues)."""
from __future__ import annotations

import pytest

from panoptic_mapping.runtime.sync import ApproximateTimeSync

MS = 1_000_000  # ns


def test_matches_within_slop_and_emits_once():
    got = []
    sync = ApproximateTimeSync(["image", "info"], queue_size=5, slop_ns=10 * MS,
                               callback=lambda *m: got.append(m))
    assert sync.add(0, 100 * MS, "img@100") is None  # nothing to match yet
    assert sync.add(1, 105 * MS, "info@105") == ("img@100", "info@105")
    assert got == [("img@100", "info@105")]
    assert sync.pending() == {"image": 0, "info": 0}  # matched messages leave the queues
    assert sync.matched == 1


def test_beyond_slop_does_not_match():
    sync = ApproximateTimeSync(["a", "b"], queue_size=5, slop_ns=10 * MS)
    sync.add(0, 100 * MS, "a")
    assert sync.add(1, 111 * MS, "b") is None
    assert sync.pending() == {"a": 1, "b": 1}
    # exactly at the slop matches (inclusive)
    assert sync.add(1, 110 * MS, "b2") == ("a", "b2")


def test_closest_candidate_wins():
    sync = ApproximateTimeSync(["a", "b"], queue_size=5, slop_ns=50 * MS)
    sync.add(1, 80 * MS, "b@80")
    sync.add(1, 98 * MS, "b@98")
    sync.add(1, 130 * MS, "b@130")
    assert sync.add(0, 100 * MS, "a@100") == ("a@100", "b@98")
    assert sync.pending() == {"a": 0, "b": 2}


def test_three_inputs_need_all_within_slop_and_out_of_order_arrival():
    sync = ApproximateTimeSync(["image", "info", "depth"], queue_size=3, slop_ns=5 * MS)
    assert sync.add(2, 203 * MS, "depth") is None  # depth first
    assert sync.add(0, 200 * MS, "image") is None  # info still missing
    assert sync.add(1, 199 * MS, "info") == ("image", "info", "depth")
    # spread 8 ms > slop: pairs are each within 5 ms of the newcomer, the set is not
    sync.add(0, 300 * MS, "i")
    sync.add(2, 304 * MS, "d")
    assert sync.add(1, 296 * MS, "c") is None


def test_queues_are_bounded_and_drops_counted():
    sync = ApproximateTimeSync(["image", "info"], queue_size=3, slop_ns=1 * MS)
    for k in range(100):  # a flood of images whose camera_info never comes
        sync.add(0, k * 100 * MS, k)
    assert sync.pending()["image"] == 3
    assert sync.dropped["image"] == 97
    # the newest ones are kept
    assert sync.add(1, 99 * 100 * MS, "info") == (99, "info")


def test_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "b"], queue_size=0, slop_ns=1)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "b"], queue_size=1, slop_ns=-1)


def test_agrees_with_message_filters_where_installed():
    message_filters = pytest.importorskip(
        "message_filters", reason="message_filters is not installable from PyPI; the own "
        "synchroniser is what runs here")
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    stamps = [(0, 100), (1, 104), (0, 200), (1, 230), (1, 203), (0, 300), (1, 299)]
    theirs, ours = [], []
    inputs = [message_filters.SimpleFilter() for _ in range(2)]
    ts = message_filters.ApproximateTimeSynchronizer(inputs, 5, 0.01)
    ts.registerCallback(lambda a, b: theirs.append((a.stamp.nanosec, b.stamp.nanosec)))
    sync = ApproximateTimeSync(["a", "b"], 5, 10 * MS,
                               lambda a, b: ours.append((a.stamp.nanosec, b.stamp.nanosec)))
    for index, ms in stamps:
        h = Header(stamp=Time(sec=0, nanosec=ms * MS))
        inputs[index].signalMessage(type("M", (), {"header": h, "stamp": h.stamp})())
        sync.add(index, ms * MS, type("M", (), {"header": h, "stamp": h.stamp})())
    assert ours == theirs
