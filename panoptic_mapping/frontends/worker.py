"""The front-end worker: segmentation and embedding on a thread of their own.

ROS callbacks must return quickly, and a segmenter takes tens to thousands of
milliseconds; so callbacks only :meth:`SegmentationWorker.submit` frames, and one worker
thread runs the segmenter and the embedder and hands each result on, in submission order,
to a sink (e.g. :func:`mapper_sink`, the mapper's ``ingest``) or to a result queue read with
:meth:`SegmentationWorker.get`.

* Latest-only input: at most ``queue_size`` frames wait. A new frame that finds the queue
  full displaces the oldest waiting one; every drop is counted (:meth:`stats`, each
  result's ``dropped_total``) and logged at most every ``drop_report_period_s``.
* An exception in a model is logged with the frame's stamp; that frame's result carries
  the error and the worker goes on with the next frame.
* :meth:`stop` ends the thread cleanly (optionally after the waiting frames).
* Per-stage latency statistics (queue wait, segmentation, embedding, total, sink).
* The worker owns device placement: :meth:`from_config` puts each model on the GPU when
  one is present (``device: auto``), and the thread runs them (not the sink) under
  ``inference_mode``.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from panoptic_mapping.core.frames import Frame, FrameError
from panoptic_mapping.frontends.config import EmbedderConfig, SegmenterConfig, WorkerConfig
from panoptic_mapping.frontends.embeddings import OpenClipEmbedder
from panoptic_mapping.frontends.factory import make_segmenter
from panoptic_mapping.frontends.segmenters import Segmenter, segment_image

__all__ = ["FrontendResult", "LatencyStats", "SegmentationWorker", "mapper_sink"]

log = logging.getLogger("panoptic_mapping.frontends")

STAGES = ("queue", "segment", "embed", "sink", "total")


@dataclass
class FrontendResult:
    """The worker's output for one submitted frame.

    Attributes:
        seq: submission number (0, 1, ...); gaps are frames dropped from the queue.
        frame: the submitted frame with ``masks`` ((H, W) int32, ids 1..M),
            ``mask_scores`` ((M,) float32) and ``mask_embeddings`` ((M, D) float32, or None
            without an embedder) filled; all three None when no mask was found or a model
            failed.
        error: None, or what went wrong ("segment: ValueError: ...").
        timings: seconds per stage: "queue" (waiting), "segment", "embed", "total"
            (submit to result).
        dropped_total: frames dropped from the input queue up to now.
    """

    seq: int
    frame: Frame
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dropped_total: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class LatencyStats:
    """Thread-safe per-stage latency statistics over a sliding window of frames."""

    def __init__(self, window: int = 500) -> None:
        self._samples: dict[str, collections.deque] = {}
        self._counts: dict[str, int] = collections.Counter()
        self._window = int(window)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, collections.deque(maxlen=self._window)).append(
                float(seconds))
            self._counts[stage] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """stage -> {count (all time), mean_ms, p50_ms, p95_ms, max_ms (window)}."""
        with self._lock:
            items = {k: np.array(v) for k, v in self._samples.items()}
            counts = dict(self._counts)
        out = {}
        for stage, s in items.items():
            ms = s * 1e3
            out[stage] = {"count": counts[stage], "mean_ms": float(ms.mean()),
                          "p50_ms": float(np.percentile(ms, 50)),
                          "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}
        return out


@dataclass
class _Item:
    seq: int
    frame: Frame
    submitted: float


class SegmentationWorker:
    """Runs a segmenter (and optionally an embedder) on submitted frames, in a thread.

    Usage::

        worker = SegmentationWorker.from_config(seg_cfg, emb_cfg, worker_cfg,
                                                sink=mapper_sink(mapper))
        worker.start()
        worker.submit(frame)        # from a ROS callback: never blocks
        ...
        worker.stop()

    Without a sink, results wait in a bounded queue for :meth:`get`; with one, the sink
    is called on the worker thread, in submission order (a slow sink slows the worker,
    and the input queue then drops frames, counted).
    """

    def __init__(self, segmenter: Segmenter, embedder: OpenClipEmbedder | None = None,
                 cfg: WorkerConfig | None = None,
                 sink: Callable[[FrontendResult], None] | None = None,
                 name: str = "frontend-worker") -> None:
        self.segmenter = segmenter
        self.embedder = embedder
        self.cfg = cfg or WorkerConfig()
        self.sink = sink
        self.name = name
        self.latency = LatencyStats(self.cfg.stats_window)
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._results: collections.deque[FrontendResult] = collections.deque()
        self._results_cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._drain = False
        self._seq = 0
        self._counts = collections.Counter()
        self._unreported_drops = 0
        self._last_drop_report = -float("inf")
        self._last_dropped_stamp = float("nan")

    @classmethod
    def from_config(cls, segmenter_cfg: SegmenterConfig | None = None,
                    embedder_cfg: EmbedderConfig | None = None,
                    cfg: WorkerConfig | None = None,
                    sink: Callable[[FrontendResult], None] | None = None) -> "SegmentationWorker":
        """Build the configured models (at start-up: weights are checked and loaded here,
        so a missing file stops start-up with :class:`MissingWeightsError`)."""
        segmenter = make_segmenter(segmenter_cfg or SegmenterConfig())
        embedder_cfg = embedder_cfg or EmbedderConfig()
        embedder = OpenClipEmbedder(embedder_cfg) if embedder_cfg.enabled else None
        return cls(segmenter, embedder, cfg, sink)

    # ------------------------------------------------------------------ control

    def start(self) -> "SegmentationWorker":
        if self._thread is not None:
            raise RuntimeError("worker already started")
        # Daemon: a model stuck in a call must not keep the process alive after stop().
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        log.info("%s: started (segmenter %s on %s%s)", self.name, self.segmenter.name,
                 self.segmenter.device, "" if self.embedder is None else
                 f", embedder {self.embedder.cfg.model_name} on {self.embedder.device}")
        return self

    def stop(self, timeout: float | None = None, drain: bool = False) -> bool:
        """Stop the thread after the frame in progress (and the waiting ones if ``drain``).

        Frames still waiting are discarded (counted as ``discarded_at_stop``). Returns
        True when the thread has ended within ``timeout`` (default ``stop_timeout_s``).
        """
        with self._cond:
            self._stopping, self._drain = True, drain
            self._cond.notify_all()
        with self._results_cond:
            self._results_cond.notify_all()
        if self._thread is None:  # never started: nothing will take the waiting frames
            with self._cond:
                self._counts["discarded_at_stop"] += len(self._queue)
                self._queue.clear()
            return True
        self._thread.join(self.cfg.stop_timeout_s if timeout is None else timeout)
        ended = not self._thread.is_alive()
        self._report_drops(force=True)
        if not ended:
            log.warning("%s: still busy in a model call after the stop timeout; it will "
                        "exit after that call", self.name)
        return ended

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "SegmentationWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ input/output

    def submit(self, frame: Frame) -> int:
        """Queue a frame (never blocks). Returns its sequence number.

        When ``queue_size`` frames are already waiting, the oldest waiting frame is dropped
        (counted, and logged at most every ``drop_report_period_s``).

        Raises:
            RuntimeError: after :meth:`stop`.
        """
        now = time.perf_counter()
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"{self.name} is stopped")
            seq = self._seq
            self._seq += 1
            self._counts["submitted"] += 1
            while len(self._queue) >= self.cfg.queue_size:
                old = self._queue.popleft()
                self._counts["dropped"] += 1
                self._unreported_drops += 1
                self._last_dropped_stamp = old.frame.stamp
            self._queue.append(_Item(seq, frame, now))
            self._cond.notify()
        self._report_drops()
        return seq

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until a submitted frame would drop none waiting: the
        input stage then prepares only frames the worker will take (under a 100 Hz camera
        the node decoded every synchronised frame, ~90 a second, to map about two). True
        once there is room, or once stopping (a submit then raises)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._stopping or len(self._queue) < self.cfg.queue_size, timeout)

    def get(self, timeout: float | None = None) -> FrontendResult | None:
        """The next result in submission order, or None after ``timeout`` / stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._results_cond:
            while not self._results:
                if self._stopping and not self.running:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._results_cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            result = self._results.popleft()
            self._results_cond.notify_all()
            return result

    def results(self) -> Iterator[FrontendResult]:
        """The results that are ready now, in order (does not wait)."""
        while (r := self.get(timeout=0)) is not None:
            yield r

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no frame is waiting or in progress (for tests and replay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                idle = not self._queue and self._counts["in_progress"] == 0
            if idle:
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict:
        """Counters (submitted, processed, dropped, failed, sink_errors, discarded_at_stop,
        queued) and per-stage latency (see :meth:`LatencyStats.summary`)."""
        with self._cond:
            counts = {k: int(self._counts[k]) for k in (
                "submitted", "processed", "dropped", "failed", "sink_errors",
                "discarded_at_stop", "results_discarded")}
            counts["queued"] = len(self._queue)
        return {**counts, "latency": self.latency.summary()}

    def format_stats(self) -> str:
        s = self.stats()
        lat = " ".join(f"{k} {v['mean_ms']:.0f}/{v['p95_ms']:.0f} ms"
                       for k, v in s["latency"].items() if k in STAGES)
        return (f"{self.name}: {s['processed']} processed, {s['dropped']} dropped, "
                f"{s['failed']} failed of {s['submitted']} submitted; mean/p95 {lat}")

    def _report_drops(self, force: bool = False) -> None:
        """Log the drops since the last report (rate limited; counting never is)."""
        now = time.monotonic()
        with self._cond:
            n = self._unreported_drops
            due = force or now - self._last_drop_report >= self.cfg.drop_report_period_s
            if n == 0 or not due:
                return
            self._unreported_drops = 0
            self._last_drop_report = now
            total, stamp = self._counts["dropped"], self._last_dropped_stamp
        seg = self.latency.summary().get("segment", {}).get("mean_ms", float("nan"))
        log.warning("%s: dropped %d frame(s) (total %d, last stamp %.6f): the front-end "
                    "(segmentation %.0f ms per frame) is slower than the input", self.name,
                    n, total, stamp, seg)

    # ------------------------------------------------------------------ thread

    def _next_item(self) -> _Item | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping and not (self._drain and self._queue):
                self._counts["discarded_at_stop"] += len(self._queue)
                if self._queue:
                    log.info("%s: %d waiting frame(s) discarded at stop", self.name,
                             len(self._queue))
                self._queue.clear()
                return None
            self._counts["in_progress"] += 1
            item = self._queue.popleft()
            self._cond.notify_all()  # room for the next frame (wait_for_room)
            return item

    def _run(self) -> None:
        devices = {self.segmenter.device} | (
            set() if self.embedder is None else {self.embedder.device})
        for dev in devices:
            if dev.type == "cuda":
                torch.cuda.set_device(dev)  # this thread's default GPU
        while (item := self._next_item()) is not None:
            try:
                with torch.inference_mode():  # the models only: the sink (the mapper) trains
                    result = self._process(item)
                self._deliver(result)
            finally:
                with self._cond:
                    self._counts["in_progress"] -= 1
        log.info("%s: stopped; %s", self.name, self.format_stats())

    def _process(self, item: _Item) -> FrontendResult:
        """Segment and embed one frame; a model exception becomes the result's error."""
        t0 = time.perf_counter()
        timings = {"queue": t0 - item.submitted}
        frame = dataclasses.replace(item.frame, masks=None, mask_scores=None,
                                    mask_embeddings=None)
        error = None
        stage = "segment"
        try:
            seg = segment_image(self.segmenter, frame.rgb, frame.depth, frame.K)
            timings["segment"] = time.perf_counter() - t0
            if seg.num_masks > 0:
                masks, scores, emb = seg.labels, seg.scores, None
                if self.embedder is not None:
                    stage = "embed"
                    t1 = time.perf_counter()
                    emb = self.embedder.embed_masks(frame.rgb, masks)
                    timings["embed"] = time.perf_counter() - t1
                frame.masks, frame.mask_scores, frame.mask_embeddings = masks, scores, emb
        except Exception as exc:  # a model failure must not end the worker
            error = f"{stage}: {type(exc).__name__}: {exc}"
            with self._cond:
                self._counts["failed"] += 1
            log.error("%s: %s failed on the frame with stamp %.6f (seq %d): %s\n%s",
                      self.name, stage, frame.stamp, item.seq, error,
                      traceback.format_exc())
        timings["total"] = time.perf_counter() - item.submitted
        for stage_name, seconds in timings.items():
            self.latency.add(stage_name, seconds)
        with self._cond:
            self._counts["processed"] += 1
            dropped = self._counts["dropped"]
        return FrontendResult(item.seq, frame, error, timings, dropped)

    def _deliver(self, result: FrontendResult) -> None:
        """Hand the result to the sink, or queue it for get() (waiting while full)."""
        if self.sink is not None:
            t0 = time.perf_counter()
            try:
                self.sink(result)
            except Exception:
                with self._cond:
                    self._counts["sink_errors"] += 1
                log.exception("%s: the result sink failed on the frame with stamp %.6f",
                              self.name, result.frame.stamp)
            self.latency.add("sink", time.perf_counter() - t0)
            return
        with self._results_cond:
            while len(self._results) >= self.cfg.result_queue_size:
                if self._stopping:  # nobody may read any more; do not hang the stop
                    with self._cond:
                        self._counts["results_discarded"] += 1
                    return
                self._results_cond.wait(0.1)
            self._results.append(result)
            self._results_cond.notify_all()


def mapper_sink(mapper, on_report: Callable | None = None) -> Callable[[FrontendResult], None]:
    """A sink that ingests every successful result into ``mapper`` (a core Mapper).

    Failed frames are skipped (their error is already logged); a frame the mapper refuses
    is logged with its stamp. ``on_report(result, report)`` receives each IngestReport.
    """

    def sink(result: FrontendResult) -> None:
        if not result.ok:
            return
        try:
            report = mapper.ingest(result.frame)
        except FrameError as exc:
            log.error("mapper refused the frame with stamp %.6f: %s", result.frame.stamp, exc)
            return
        if on_report is not None:
            on_report(result, report)

    return sink
