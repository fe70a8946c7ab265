"""Approximate time synchronisation of several message streams (ROS-free).

The fallback for ``message_filters.ApproximateTimeSynchronizer`` (not installable from
PyPI), with the same semantics as its Python implementation:

* one queue per input, keyed by stamp, holding at most ``queue_size`` messages (the
  oldest is dropped when a new one arrives at a full queue);
* when a message arrives, the other queues are searched for messages whose stamps lie
  within ``slop`` of it; the first combination (closest stamps first) whose whole spread
  is below ``slop`` is emitted, and its messages leave their queues.

Bounded by construction: ``len(inputs) * queue_size`` messages at most. Drops are
counted per input (:attr:`ApproximateTimeSync.dropped`).
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Sequence

__all__ = ["ApproximateTimeSync"]


class ApproximateTimeSync:
    """Match messages of ``n`` inputs whose stamps agree within ``slop_ns``.

    Args:
        names: one name per input (for statistics).
        queue_size: messages kept per input.
        slop_ns: largest stamp spread of a matched set, in nanoseconds.
        callback: called with the matched messages (in input order) when a set is
            complete; also returned by :meth:`add`.
    """

    def __init__(self, names: Sequence[str], queue_size: int, slop_ns: int,
                 callback: Callable[..., None] | None = None) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {slop_ns}")
        self.names = list(names)
        self.queue_size = int(queue_size)
        self.slop_ns = int(slop_ns)
        self.callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in self.names]
        self._lock = threading.Lock()
        self.matched = 0
        self.dropped = {name: 0 for name in self.names}

    def add(self, index: int, stamp_ns: int, msg: Any) -> tuple | None:
        """Add ``msg`` of input ``index`` with its stamp; returns the matched set, if any."""
        stamp = int(stamp_ns)
        with self._lock:
            queue = self._queues[index]
            if stamp in queue:
                self.dropped[self.names[index]] += 1  # replaced by the newer message
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.dropped[self.names[index]] += 1
            others = [i for i in range(len(self._queues)) if i != index]
            candidates = []
            for i in others:
                near = sorted((abs(s - stamp), s) for s in self._queues[i]
                              if abs(s - stamp) <= self.slop_ns)
                if not near:
                    return None
                candidates.append([s for _, s in near])
            matched = None
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                stamps.insert(index, stamp)
                if max(stamps) - min(stamps) <= self.slop_ns:
                    matched = tuple(self._queues[i].pop(s) for i, s in enumerate(stamps))
                    self.matched += 1
                    break
        if matched is not None and self.callback is not None:
            self.callback(*matched)
        return matched

    def pending(self) -> dict[str, int]:
        """Unmatched messages waiting per input."""
        with self._lock:
            return {name: len(q) for name, q in zip(self.names, self._queues)}

    def clear(self) -> None:
        with self._lock:
            for q in self._queues:
                q.clear()
