"""The front-end worker thread: latest-only queue bound, drop counting, error recovery,
ordering, sinks, statistics and shutdown (with scripted segmenters), and the classical
segmenter running through it."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from helpers import make_frame

from panoptic_mapping.core.frames import Frame, validate_frame
from panoptic_mapping.frontends.config import EmbedderConfig, SegmenterConfig, WorkerConfig
from panoptic_mapping.frontends.segmenters import ClassicalSegmenter, Segmentation, Segmenter
from panoptic_mapping.frontends.worker import FrontendResult, SegmentationWorker

H, W = 24, 32
K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
FAIL = 13  # a frame whose first pixel has this value makes ScriptedSegmenter raise


def numbered_frame(i: int, fail: bool = False) -> Frame:
    """Frame i (stamp 100 + i) of a red patch on a wall 2 m away."""
    rgb = np.full((H, W, 3), 50, np.uint8)
    rgb[4:16, 4:20] = (200, 30, 30)
    rgb[0, 0, 0] = FAIL if fail else i % 10
    return make_frame(K, (H, W), rgb=rgb, depth=2.0, stamp=100.0 + i)


class ScriptedSegmenter(Segmenter):
    """Two masks per frame; optionally blocks on a gate, sleeps, or raises on FAIL."""

    name = "scripted"

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay, self.gate = delay, gate
        self.started = threading.Event()
        self.calls = 0

    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> Segmentation:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10.0)
        time.sleep(self.delay)
        if rgb[0, 0, 0] == FAIL:
            raise RuntimeError("model blew up")
        labels = np.zeros(rgb.shape[:2], np.int32)
        labels[4:16, 4:20] = 1
        labels[18:, :] = 2
        return Segmentation(labels, np.array([0.9, 0.5], np.float32))


def drain(worker: SegmentationWorker, n: int, timeout: float = 10.0) -> list[FrontendResult]:
    out = []
    for _ in range(n):
        r = worker.get(timeout=timeout)
        assert r is not None, f"only {len(out)} of {n} results"
        out.append(r)
    return out


def test_results_in_order_with_masks_filled():
    with SegmentationWorker(ScriptedSegmenter(), cfg=WorkerConfig(queue_size=50)) as worker:
        seqs = [worker.submit(numbered_frame(i)) for i in range(20)]
        results = drain(worker, 20)
    assert seqs == list(range(20))
    assert [r.seq for r in results] == seqs
    assert [r.frame.stamp for r in results] == [100.0 + i for i in range(20)]
    for r in results:
        assert r.ok and r.error is None and r.dropped_total == 0
        f = validate_frame(r.frame)  # what the mapper will accept
        assert f.masks.dtype == np.int32 and f.num_masks == 2
        assert r.frame.mask_scores.shape == (2,) and r.frame.mask_embeddings is None
        assert set(r.timings) == {"queue", "segment", "total"}
    assert worker.stats()["processed"] == 20 and not worker.running


def test_queue_bound_drops_oldest_and_counts(caplog):
    gate = threading.Event()
    seg = ScriptedSegmenter(gate=gate)
    worker = SegmentationWorker(seg, cfg=WorkerConfig(queue_size=2, drop_report_period_s=0.0))
    worker.start()
    try:
        worker.submit(numbered_frame(0))
        assert seg.started.wait(5.0)  # frame 0 is in the model, the queue is empty
        with caplog.at_level(logging.WARNING, "panoptic_mapping.frontends"):
            for i in range(1, 7):
                worker.submit(numbered_frame(i))
        stats = worker.stats()
        assert stats["queued"] == 2 and stats["dropped"] == 4  # frames 1..4
        assert "dropped 1 frame(s)" in caplog.text and "last stamp 104.000000" in caplog.text
        gate.set()
        results = drain(worker, 3)
    finally:
        gate.set()
        worker.stop()
    assert [r.seq for r in results] == [0, 5, 6]  # latest frames kept, order kept
    assert results[-1].dropped_total == 4
    assert worker.stats()["submitted"] == 7 and worker.stats()["processed"] == 3


def test_wait_for_room_until_the_worker_takes_the_waiting_frame():
    """The input stage asks for room before preparing a frame: none while queue_size
    frames wait (one in the model does not count), room as soon as the worker takes the
    waiting frame, and never a hang once the worker stops."""
    gate = threading.Event()
    seg = ScriptedSegmenter(gate=gate)
    worker = SegmentationWorker(seg, cfg=WorkerConfig(queue_size=1))
    worker.start()
    try:
        assert worker.wait_for_room(0)
        worker.submit(numbered_frame(0))
        assert seg.started.wait(5.0)  # frame 0 in the model: the queue is empty again
        assert worker.wait_for_room(1.0)
        worker.submit(numbered_frame(1))
        assert not worker.wait_for_room(0.2)  # frame 1 waits
        gate.set()  # frame 0 done, frame 1 taken up
        assert worker.wait_for_room(5.0)
    finally:
        gate.set()
        worker.stop()
    assert worker.wait_for_room(0)  # stopped: room reported at once, a submit raises
    with pytest.raises(RuntimeError):
        worker.submit(numbered_frame(2))
    assert worker.stats()["dropped"] == 0


def test_drop_reports_are_rate_limited_but_every_drop_counted(caplog):
    gate = threading.Event()
    seg = ScriptedSegmenter(gate=gate)
    worker = SegmentationWorker(seg, cfg=WorkerConfig(queue_size=1, drop_report_period_s=60))
    worker.start()
    try:
        worker.submit(numbered_frame(0))
        assert seg.started.wait(5.0)
        with caplog.at_level(logging.WARNING, "panoptic_mapping.frontends"):
            for i in range(1, 12):
                worker.submit(numbered_frame(i))
            assert worker.stats()["dropped"] == 10
            assert caplog.text.count("dropped") == 1  # first drop reported at once
            gate.set()
            drain(worker, 2)
            worker.stop()
            # The remaining 9 drops are reported at stop, never silently lost.
            assert "dropped 9 frame(s) (total 10" in caplog.text
    finally:
        gate.set()
        worker.stop()


def test_model_exception_is_logged_with_stamp_and_worker_goes_on(caplog):
    worker = SegmentationWorker(ScriptedSegmenter(), cfg=WorkerConfig(queue_size=10))
    with caplog.at_level(logging.ERROR, "panoptic_mapping.frontends"):
        with worker:
            for i in range(5):
                worker.submit(numbered_frame(i, fail=(i == 2)))
            results = drain(worker, 5)
    assert [r.ok for r in results] == [True, True, False, True, True]
    bad = results[2]
    assert "segment: RuntimeError: model blew up" in bad.error
    assert bad.frame.masks is None and bad.frame.mask_scores is None
    assert "stamp 102.000000" in caplog.text and "model blew up" in caplog.text
    assert worker.stats()["failed"] == 1 and worker.stats()["processed"] == 5


def test_embedder_exception_is_recovered_too():
    class BrokenEmbedder:
        cfg = EmbedderConfig(model_name="broken")
        device = ClassicalSegmenter().device
        calls = 0

        def embed_masks(self, rgb, labels):
            self.calls += 1
            if self.calls == 1:
                raise MemoryError("out of memory")
            return np.tile(np.eye(1, 4, dtype=np.float32), (int(labels.max()), 1))

    with SegmentationWorker(ScriptedSegmenter(), BrokenEmbedder(),
                            WorkerConfig(queue_size=5)) as worker:
        worker.submit(numbered_frame(0))
        worker.submit(numbered_frame(1))
        first, second = drain(worker, 2)
    assert first.error.startswith("embed: MemoryError") and first.frame.masks is None
    assert second.ok and second.frame.mask_embeddings.shape == (2, 4)
    assert set(second.timings) == {"queue", "segment", "embed", "total"}


def test_stop_waits_for_the_frame_in_progress_and_discards_the_rest():
    seg = ScriptedSegmenter(delay=0.3)
    worker = SegmentationWorker(seg, cfg=WorkerConfig(queue_size=5)).start()
    for i in range(4):
        worker.submit(numbered_frame(i))
    assert seg.started.wait(5.0)
    t0 = time.monotonic()
    assert worker.stop(timeout=5.0)
    assert time.monotonic() - t0 < 2.0
    assert not worker.running
    stats = worker.stats()
    assert stats["processed"] == 1 and stats["discarded_at_stop"] == 3
    assert worker.get(timeout=0.1).seq == 0
    assert worker.get(timeout=0.1) is None  # stopped: returns instead of waiting
    with pytest.raises(RuntimeError, match="stopped"):
        worker.submit(numbered_frame(9))


def test_stop_with_drain_processes_waiting_frames():
    worker = SegmentationWorker(ScriptedSegmenter(delay=0.05),
                                cfg=WorkerConfig(queue_size=5)).start()
    for i in range(4):
        worker.submit(numbered_frame(i))
    assert worker.stop(timeout=5.0, drain=True)
    assert [r.seq for r in worker.results()] == [0, 1, 2, 3]


def test_stop_does_not_hang_when_nobody_reads_results():
    worker = SegmentationWorker(ScriptedSegmenter(),
                                cfg=WorkerConfig(queue_size=10, result_queue_size=2)).start()
    for i in range(6):
        worker.submit(numbered_frame(i))
    time.sleep(0.3)
    assert worker.stop(timeout=3.0, drain=True)
    assert len(list(worker.results())) == 2
    assert worker.stats()["results_discarded"] >= 1


def test_sink_gets_results_in_order_and_its_errors_are_contained():
    got = []

    def sink(result: FrontendResult) -> None:
        got.append(result.seq)
        if result.seq == 1:
            raise ValueError("sink failed")

    worker = SegmentationWorker(ScriptedSegmenter(), cfg=WorkerConfig(queue_size=10),
                                sink=sink).start()
    for i in range(5):
        worker.submit(numbered_frame(i))
    assert worker.wait_idle(10.0)
    worker.stop()
    assert got == [0, 1, 2, 3, 4]
    assert worker.stats()["sink_errors"] == 1
    assert worker.get(timeout=0.05) is None  # a sink replaces the result queue


def test_latency_statistics():
    with SegmentationWorker(ScriptedSegmenter(delay=0.02), cfg=WorkerConfig(
            queue_size=10, stats_window=3)) as worker:
        for i in range(5):
            worker.submit(numbered_frame(i))
        drain(worker, 5)
        lat = worker.stats()["latency"]
        text = worker.format_stats()
    assert set(lat) == {"queue", "segment", "total"}
    seg = lat["segment"]
    assert seg["count"] == 5 and 15 <= seg["p50_ms"] <= seg["p95_ms"] <= seg["max_ms"]
    assert lat["total"]["mean_ms"] >= seg["mean_ms"]
    assert "5 processed, 0 dropped, 0 failed of 5 submitted" in text


def test_double_start_is_refused():
    worker = SegmentationWorker(ScriptedSegmenter()).start()
    try:
        with pytest.raises(RuntimeError):
            worker.start()
    finally:
        worker.stop()


def test_classical_segmenter_through_worker_from_config():
    worker = SegmentationWorker.from_config(SegmenterConfig(min_area=10), None,
                                            WorkerConfig(queue_size=4))
    assert isinstance(worker.segmenter, ClassicalSegmenter) and worker.embedder is None
    with worker:
        for i in range(3):
            worker.submit(numbered_frame(i))
        results = drain(worker, 3)
    for r in results:
        assert r.ok
        f = validate_frame(r.frame)
        assert f.num_masks >= 2 and f.mask_scores.shape == (f.num_masks,)
        # The red box is one mask.
        assert len(np.unique(f.masks[5:15, 5:19])) == 1


def test_stop_before_start_discards_waiting_frames():
    worker = SegmentationWorker(ScriptedSegmenter(), cfg=WorkerConfig(queue_size=3))
    worker.submit(numbered_frame(0))
    worker.submit(numbered_frame(1))
    assert worker.stop()
    assert worker.stats()["discarded_at_stop"] == 2 and worker.stats()["queued"] == 0
