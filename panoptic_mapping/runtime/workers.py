"""The node's threads and bounded queues (ROS-free, unit-tested on their own).

* :class:`LatestSlot` - a bounded hand-over queue that keeps the newest items: a put into a
  full slot drops the oldest (counted). ROS callbacks only put into such slots.
* :class:`SlotWorker` - a thread that takes items from a slot and handles them (the node's
  frame assembler: pose lookup, decoding, hand-over to the segmentation worker).
* :class:`TrainingWorker` - the one thread that trains the map (and so owns the GPU):
  calls ``mapper.train(1)`` continuously, releasing the mapper's lock between steps so that
  ingestion, publishers and services get their turn; idles when there is nothing to train;
  can be paused (reset, load) and throttled to a duty cycle (CPU-only machines).
* :class:`RateMeter`, :class:`LatencyWindow`, :class:`Throttle` - bounded statistics and
  rate-limited logging.
* :class:`LockedModel` - serialises a segmenter or embedder between the segmentation worker
  and the localize service (models are not required to be thread-safe).
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["LatestSlot", "SlotWorker", "TrainingWorker", "RateMeter", "LatencyWindow",
           "Throttle", "LockedModel", "process_memory_mb",
           "torch_threads", "training_pause_s", "set_switch_interval", "limit_blas_threads",
           "ThreadCpu"]

log = logging.getLogger("panoptic_mapping.ros")


class LatestSlot:
    """Bounded queue keeping the newest ``capacity`` items (thread-safe).

    ``put`` never blocks: when full, the oldest item is dropped and counted.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Add ``item``; returns False when an older item was dropped to make room."""
        with self._cond:
            self.put_count += 1
            dropped = False
            while len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self._cond.notify()
            return not dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """Oldest waiting item, or None after ``timeout`` or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class SlotWorker:
    """A thread handling the items of a :class:`LatestSlot` one by one.

    An exception in ``handler`` is logged and the thread goes on with the next item.
    ``ready(timeout) -> bool``, when given, is asked before each item is taken: while it
    says no, items stay in the slot (the newest replacing the older), so the handler only
    sees items whoever it hands them to can take.
    """

    def __init__(self, slot: LatestSlot, handler: Callable[[Any], None], name: str,
                 ready: Callable[[float], bool] | None = None) -> None:
        self.slot = slot
        self.handler = handler
        self.name = name
        self.ready = ready
        self.handled = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "SlotWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        self.slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.ready is not None and not self.ready(0.2):
                continue
            item = self.slot.get(timeout=0.2)
            if item is None:
                continue
            try:
                self.handler(item)
                self.handled += 1
            except Exception:  # the input path must survive anything one frame does
                self.errors += 1
                log.exception("%s: failed on an item", self.name)


class RateMeter:
    """Events per second over the last ``window_s`` seconds (bounded memory)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 1000) -> None:
        self.window_s = float(window_s)
        self._times: collections.deque = collections.deque(maxlen=max_events)
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)
            self.count += 1

    def rate(self, now: float | None = None) -> float:
        """Mean event rate [1/s] of the events in the window (0 with fewer than two)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def last(self) -> float | None:
        with self._lock:
            return self._times[-1] if self._times else None


class LatencyWindow:
    """Sliding window of durations (seconds) with percentiles in milliseconds."""

    def __init__(self, window: int = 500) -> None:
        self._samples: collections.deque = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(float(seconds))
            self.count += 1

    def summary(self) -> dict[str, float]:
        """count, p50_ms, p95_ms, max_ms (NaN when empty)."""
        with self._lock:
            s = np.array(self._samples, dtype=np.float64) * 1e3
        if s.size == 0:
            return {"count": self.count, "p50_ms": float("nan"), "p95_ms": float("nan"),
                    "max_ms": float("nan")}
        return {"count": self.count, "p50_ms": float(np.percentile(s, 50)),
                "p95_ms": float(np.percentile(s, 95)), "max_ms": float(s.max())}


class Throttle:
    """Rate limit per key: ``ready(key)`` is True at most once per ``period_s``.

    Counts every call, so a throttled log line can say how many it stands for.
    """

    def __init__(self, period_s: float) -> None:
        self.period_s = float(period_s)
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def ready(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """(whether to log now, how many occurrences were suppressed since the last log)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.counts[key] += 1
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] += 1
                return False, 0
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
            return True, n


class LockedModel:
    """A model shared by several threads, one call of the named methods at a time.

    Segmenters and embedders are not required to be thread-safe; the segmentation worker
    and the localize service both use them. Other attributes pass through.
    """

    def __init__(self, inner, methods: tuple[str, ...] = ("segment",)) -> None:
        self.inner = inner
        self._methods = set(methods)
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        value = getattr(self.inner, name)
        if name not in self._methods:
            return value

        def locked(*args, **kwargs):
            with self._lock, torch.inference_mode():
                return value(*args, **kwargs)

        return locked

    def __call__(self, *args, **kwargs):
        return self.segment(*args, **kwargs)


class TrainingWorker:
    """The thread that trains the current map continuously.

    Args:
        get_mapper: returns the mapper to train now (it may be replaced by reset/load).
        duty_cycle: returns the share of wall time to train (1 = always).
        idle_s: sleep when the mapper has nothing to train yet.
    """

    def __init__(self, get_mapper: Callable[[], Any], duty_cycle: Callable[[], float],
                 idle_s: float = 0.1, name: str = "training-worker") -> None:
        self.get_mapper = get_mapper
        self.duty_cycle = duty_cycle
        self.idle_s = float(idle_s)
        self.name = name
        self.steps = 0
        self.errors = 0
        self.busy_s = 0.0
        self.rate = RateMeter(window_s=10.0, max_events=2000)
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.device: torch.device | None = None
        self._has_work = False  # the last step found something to train

    def training(self) -> bool:
        """Whether the thread trains now: running, not paused, and its last step had
        something to train."""
        return self._thread.is_alive() and self._resume.is_set() and self._has_work

    def start(self) -> "TrainingWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        self._resume.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def pause(self, timeout: float = 30.0) -> bool:
        """Stop training after the current step; True once the thread is between steps."""
        self._resume.clear()
        return self._idle.wait(timeout) if self._thread.is_alive() else True

    def resume(self) -> None:
        self._resume.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._resume.is_set():
                self._idle.set()
                self._resume.wait(0.2)
                continue
            self._idle.clear()
            mapper = self.get_mapper()
            device = getattr(mapper, "device", None)
            if device is not None and device != self.device:
                self.device = device
                if device.type == "cuda" and device.index is not None:
                    torch.cuda.set_device(device)  # this thread owns the map's GPU
            t0 = time.perf_counter()
            try:
                losses = mapper.train(1)
            except Exception:
                self.errors += 1
                log.exception("%s: training step failed", self.name)
                losses = {}
                time.sleep(1.0)
            dt = time.perf_counter() - t0
            self._has_work = bool(losses)
            if not losses:
                self._idle.set()
                self._stop.wait(self.idle_s)
                continue
            self.steps += 1
            self.busy_s += dt
            self.rate.tick()
            duty = min(max(float(self.duty_cycle()), 0.01), 1.0)
            if duty < 1.0:
                self._idle.set()
                self._stop.wait(dt * (1.0 - duty) / duty)
        self._idle.set()


def training_pause_s(mapping_s: float, training_share: float) -> float:
    """How long to wait after a frame that took ``mapping_s`` to map (training shares the
    cores with it meanwhile, or waits for it when frames are not mapped beside training)
    for training to have ``training_share`` of the time to itself: ``mapping_s * share /
    (1 - share)``; 0 for a share of 0."""
    if training_share <= 0:
        return 0.0
    return float(mapping_s) * training_share / (1.0 - training_share)


def torch_threads(requested: int, cores: int | None = None) -> int:
    """Threads for torch's operations: ``requested``, or for 0 half of ``cores`` (default:
    the cores this process may run on), at least 1. The node runs training, mapping and
    service calls at once; each taking every core makes them queue for each other."""
    if requested > 0:
        return int(requested)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    return max(1, int(cores) // 2)


# Environment variables the BLAS libraries read when they load (OpenBLAS falls back to
# OMP_NUM_THREADS, which would also set torch's pool, so it is left alone).
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int) -> dict[str, int] | str:
    """Cap the thread pool of every BLAS library loaded in this process (numpy's and
    scipy's own OpenBLAS, an MKL) at ``threads``; copies loaded later start with it too.
    Returns the loaded pools' sizes now, by library file name, or why the loaded ones
    could not be capped (threadpoolctl missing or failing; copies loaded later still are).

    Why: numpy and scipy each load an OpenBLAS whose pool takes every core, beside torch's
    pool (``torch_threads``) and the node's own threads; between the many small calls of
    segmentation and mapping its workers spin, waiting for the next. In the node on 2
    cores under a 100 Hz camera, with mapping nearly paused, numpy's pool thread took 43 %
    of a core while training ran 2.4 steps/s (6.6 idle); capped at 1, 3.8-4.8 (7.4-7.6
    idle), in one run before and three after (BENCHMARKS.md)."""
    threads = max(1, int(threads))
    for name in _BLAS_THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "threadpoolctl is not installed (pip install threadpoolctl)"
    try:
        threadpool_limits(limits=threads, user_api="blas")
        return {os.path.basename(info["filepath"]): int(info["num_threads"])
                for info in threadpool_info() if info.get("user_api") == "blas"}
    except Exception as exc:  # a library threadpoolctl cannot drive must not stop the node
        return f"threadpoolctl failed: {type(exc).__name__}: {exc}"


def set_switch_interval(interval_ms: float) -> float:
    """Make a thread running Python code offer the interpreter lock to waiting threads
    every ``interval_ms`` (CPython's default: 5 ms); 0 leaves it as it is. Returns the
    interval now in force [ms].

    Why: the node's training thread runs Python between its torch operations; a thread
    that wants the lock back after a C call (the mapping thread between array
    operations, the executor taking a message) waits for the holder to offer it, up to
    the interval each time, many times per frame. The setting is process-wide."""
    if interval_ms > 0:
        sys.setswitchinterval(float(interval_ms) / 1000.0)
    return sys.getswitchinterval() * 1000.0


class ThreadCpu:
    """CPU time of this process's threads between readings, by thread name (Linux /proc).

    Python threads count under their names, a pool's numbered threads ("ThreadPoolExecutor-
    1_0", "..._1") together under the pool's; threads that are no Python thread (the BLAS
    and OpenMP pools, the middleware's) together under ``native``; ``process`` is the sum.
    Shares are percent of one core (two busy cores: 200). The node's CPU was a guess before:
    a census like this found numpy's BLAS pool spinning at 43 % of a core (BENCHMARKS.md)."""

    NATIVE = "native"
    TOTAL = "process"

    def __init__(self, task_dir: str = "/proc/self/task") -> None:
        self._task_dir = task_dir
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._last: dict[int, int] = {}
        self._last_s: float | None = None

    @staticmethod
    def group(name: str) -> str:
        """A pool's numbered thread counts as its pool: 'ThreadPoolExecutor-1_3' ->
        'ThreadPoolExecutor-1'; other names stay as they are."""
        head, sep, tail = name.rpartition("_")
        return head if sep and head and tail.isdigit() else name

    def _ticks(self) -> dict[int, int]:
        """user + system clock ticks of every thread of the process, by thread id."""
        out: dict[int, int] = {}
        try:
            tids = os.listdir(self._task_dir)
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"{self._task_dir}/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(tid)] = int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, ValueError, IndexError):  # a thread that just ended
                continue
        return out

    def read(self) -> dict[str, float]:
        """Percent of one core each thread group used since the last call ({} on the first
        call, or where /proc is missing). A thread that ended meanwhile is not counted."""
        now = time.monotonic()
        ticks = self._ticks()
        last, last_s = self._last, self._last_s
        self._last, self._last_s = ticks, now
        if last_s is None or not ticks or now <= last_s:
            return {}
        names = {t.native_id: self.group(t.name) for t in threading.enumerate()
                 if t.native_id is not None}
        scale = 100.0 / (self._ticks_per_s * (now - last_s))
        shares: dict[str, float] = {}
        for tid, n in ticks.items():
            used = (n - last.get(tid, 0)) * scale
            key = names.get(tid, self.NATIVE)
            shares[key] = shares.get(key, 0.0) + used
        shares[self.TOTAL] = sum(shares.values())
        return shares


def process_memory_mb() -> float:
    """Resident memory of this process in MB (10^6 bytes)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
