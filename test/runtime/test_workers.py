"""The node's bounded queues, threads and statistics, on their own (no ROS)."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from panoptic_mapping.runtime.workers import (
    LatencyWindow,
    LatestSlot,
    LockedModel,
    RateMeter,
    SlotWorker,
    ThreadCpu,
    Throttle,
    TrainingWorker,
    limit_blas_threads,
    process_memory_mb,
    set_switch_interval,
    torch_threads,
    training_pause_s,
)


def test_latest_slot_keeps_the_newest_and_counts_drops():
    slot = LatestSlot(2)
    assert slot.put(1) and slot.put(2)
    assert not slot.put(3)  # 1 dropped
    assert len(slot) == 2 and slot.dropped == 1 and slot.put_count == 3
    assert slot.get(0) == 2 and slot.get(0) == 3
    assert slot.get(timeout=0.01) is None
    slot.put(4)
    slot.close()
    assert slot.get() == 4 and slot.get() is None  # closed and empty: no blocking
    with pytest.raises(ValueError):
        LatestSlot(0)


def test_slot_worker_survives_a_failing_item():
    slot = LatestSlot(10)
    seen = []

    def handler(item):
        if item == "bad":
            raise RuntimeError("boom")
        seen.append(item)

    worker = SlotWorker(slot, handler, "test-worker").start()
    for item in ("a", "bad", "b"):
        slot.put(item)
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(2.0)
    assert seen == ["a", "b"] and worker.errors == 1 and worker.handled == 2


def test_slot_worker_takes_items_only_when_ready():
    """While ``ready`` says no the items stay in the slot, the newest replacing the older:
    the handler sees only the item current when its consumer had room."""
    slot, seen, room = LatestSlot(1), [], threading.Event()
    worker = SlotWorker(slot, seen.append, "test-worker", ready=room.wait).start()
    for item in range(5):
        slot.put(item)
    time.sleep(0.3)
    assert seen == [] and slot.dropped == 4
    room.set()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(2.0)
    assert seen == [4]


class FakeMapper:
    """Trains nothing until it has keyframes; counts its steps."""

    def __init__(self, trainable: bool = True) -> None:
        self.trainable = trainable
        self.steps = 0
        self.device = None

    def train(self, steps: int = 1) -> dict:
        if not self.trainable:
            return {}
        time.sleep(0.002)
        self.steps += steps
        return {"rgb": 0.1}


def test_training_worker_trains_the_current_mapper_and_idles():
    mappers = {"current": FakeMapper(trainable=False)}
    worker = TrainingWorker(lambda: mappers["current"], lambda: 1.0, idle_s=0.01).start()
    try:
        time.sleep(0.1)
        assert worker.steps == 0  # nothing to train yet: idles, does not spin
        assert not worker.training()  # so mapping has nothing to pause for
        mappers["current"] = FakeMapper()
        time.sleep(0.2)
        assert mappers["current"].steps > 10 and worker.steps == mappers["current"].steps
        assert worker.training()
        assert worker.pause(2.0)
        assert not worker.training()
        paused_at = mappers["current"].steps
        time.sleep(0.1)
        assert mappers["current"].steps <= paused_at + 1
        worker.resume()
        time.sleep(0.1)
        assert mappers["current"].steps > paused_at + 1
    finally:
        assert worker.stop(2.0)


def test_training_worker_duty_cycle_limits_the_share_of_time():
    full, third = FakeMapper(), FakeMapper()
    w1 = TrainingWorker(lambda: full, lambda: 1.0).start()
    w2 = TrainingWorker(lambda: third, lambda: 0.25).start()
    time.sleep(0.5)
    w1.stop(2.0)
    w2.stop(2.0)
    assert third.steps < 0.6 * full.steps


def test_training_worker_survives_a_failing_step():
    class Failing(FakeMapper):
        def train(self, steps=1):
            raise RuntimeError("out of memory")

    worker = TrainingWorker(lambda: Failing(), lambda: 1.0).start()
    time.sleep(0.1)
    assert worker.stop(3.0) and worker.errors >= 1


def test_rate_meter_latency_window_and_throttle():
    meter = RateMeter(window_s=10.0)
    for k in range(11):
        meter.tick(now=100.0 + 0.5 * k)
    assert meter.rate(now=105.0) == pytest.approx(2.0)
    assert meter.rate(now=200.0) == 0.0  # everything aged out
    window = LatencyWindow(window=3)
    assert np.isnan(window.summary()["p50_ms"])
    for s in (0.1, 0.2, 0.3, 0.4):
        window.add(s)
    summary = window.summary()
    assert summary["count"] == 4 and summary["p50_ms"] == pytest.approx(300.0)
    throttle = Throttle(5.0)
    assert throttle.ready("enc", now=0.0) == (True, 0)
    assert throttle.ready("enc", now=1.0) == (False, 0)
    assert throttle.ready("enc", now=2.0) == (False, 0)
    assert throttle.ready("pose", now=2.0) == (True, 0)  # per reason
    assert throttle.ready("enc", now=5.5) == (True, 2)  # says how many it stood for
    assert throttle.counts["enc"] == 4
    assert process_memory_mb() > 10


def test_locked_model_serialises_calls_and_passes_attributes():
    class Model:
        name = "fake"
        inside = 0
        overlaps = 0

        def segment(self, rgb, depth=None):
            Model.inside += 1
            if Model.inside > 1:
                Model.overlaps += 1
            time.sleep(0.01)
            Model.inside -= 1
            return rgb

    locked = LockedModel(Model(), ("segment",))
    assert locked.name == "fake"
    threads = [threading.Thread(target=lambda: [locked.segment(1) for _ in range(5)])
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Model.overlaps == 0


def test_torch_threads_default_to_half_the_cores():
    """0 asks for half the cores (the node's training, mapping and service threads share
    them), never fewer than one; a positive request is taken as given."""
    assert torch_threads(0, cores=2) == 1
    assert torch_threads(0, cores=16) == 8
    assert torch_threads(0, cores=1) == 1
    assert torch_threads(3, cores=2) == 3
    assert torch_threads(0) >= 1


def test_switch_interval_is_set_in_milliseconds_and_0_leaves_it():
    import sys

    before = sys.getswitchinterval()
    try:
        assert set_switch_interval(2.0) == pytest.approx(2.0)
        assert sys.getswitchinterval() == pytest.approx(0.002)
        assert set_switch_interval(0.0) == pytest.approx(2.0)  # left as it was
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def no_blas_variables(monkeypatch):
    """OPENBLAS_NUM_THREADS and MKL_NUM_THREADS unset during the test, as they were after."""
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "")  # so that the teardown restores it, set or not
        monkeypatch.delenv(name)


def test_blas_pools_capped_now_and_for_libraries_loaded_later(no_blas_variables):
    """numpy's OpenBLAS (and every other BLAS loaded) runs with the cap; the variables the
    libraries read when they load carry it to copies loaded later."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    before = threadpoolctl.threadpool_info()
    try:
        pools = limit_blas_threads(1)
        assert any("openblas" in name for name in pools)  # numpy's own, at least
        assert set(pools.values()) == {1}
        assert all(info["num_threads"] == 1 for info in threadpoolctl.threadpool_info()
                   if info["user_api"] == "blas")
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert limit_blas_threads(0) and os.environ["MKL_NUM_THREADS"] == "1"  # at least 1
    finally:
        for info in before:
            if info["user_api"] == "blas":
                threadpoolctl.threadpool_limits(limits=info["num_threads"], user_api="blas")


def test_blas_cap_without_threadpoolctl_says_why(no_blas_variables, monkeypatch):
    """No threadpoolctl (a ROS install without it): the reason comes back, nothing raises,
    and libraries loaded later still get the cap from the environment."""
    import builtins

    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError("No module named 'threadpoolctl'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    why = limit_blas_threads(2)
    assert isinstance(why, str) and "threadpoolctl" in why
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"


def _stat_line(tid: int, name: str, utime: int, stime: int) -> str:
    """A /proc/<pid>/task/<tid>/stat line: utime and stime are fields 14 and 15."""
    after = ["S", "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", str(utime),
             str(stime), "0", "0", "20", "0", "1", "0"]
    return f"{tid} ({name}) " + " ".join(after) + "\n"


def test_thread_cpu_worked_example(tmp_path, monkeypatch):
    """Ticks over an interval: 50 ticks of a 100 Hz clock in 1 s are 50 % of a core; the
    main thread under its name, an unknown thread id under 'native', a pool's numbered
    threads together."""
    import panoptic_mapping.runtime.workers as workers

    main_tid = threading.get_native_id()
    native_tid = 4_000_000  # no Python thread has it
    clock = iter([10.0, 11.0])
    monkeypatch.setattr(workers.time, "monotonic", lambda: next(clock))

    def write(main_ticks: tuple[int, int], native_ticks: tuple[int, int]) -> None:
        for tid, (u, s_) in ((main_tid, main_ticks), (native_tid, native_ticks)):
            (tmp_path / str(tid)).mkdir(exist_ok=True)
            (tmp_path / str(tid) / "stat").write_text(_stat_line(tid, "x (y)", u, s_))

    meter = ThreadCpu(str(tmp_path))
    meter._ticks_per_s = 100.0
    write((100, 20), (7, 3))
    assert meter.read() == {}  # the first reading only sets the start
    write((130, 40), (27, 3))
    shares = meter.read()
    main_name = threading.main_thread().name
    assert shares[main_name] == pytest.approx(50.0)  # (30 + 20) ticks in 1 s at 100 Hz
    assert shares[ThreadCpu.NATIVE] == pytest.approx(20.0)
    assert shares[ThreadCpu.TOTAL] == pytest.approx(70.0)
    assert ThreadCpu.group("ThreadPoolExecutor-1_3") == "ThreadPoolExecutor-1"
    assert ThreadCpu.group("frontend-worker") == "frontend-worker"
    assert ThreadCpu.group("a_b") == "a_b" and ThreadCpu.group("_1") == "_1"


def test_thread_cpu_names_a_busy_thread():
    """On this machine's own /proc: a thread that spins shows under its name."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("no /proc/self/task (not Linux)")
    meter = ThreadCpu()
    meter.read()
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=spin, name="spinner")
    t.start()
    try:
        time.sleep(0.4)
        shares = meter.read()  # while it runs: a thread that ended is gone from /proc
    finally:
        stop.set()
        t.join()
    assert shares.get("spinner", 0.0) > 20.0  # of one core; 2 busy CI cores still leave it
    assert shares[ThreadCpu.TOTAL] >= shares["spinner"]


def test_training_pause_keeps_the_share():
    """After a frame mapped in m seconds the pause p gives training p / (m + p) = share."""
    for share in (0.25, 0.5, 0.75):
        p = training_pause_s(0.4, share)
        assert p / (0.4 + p) == pytest.approx(share)
    assert training_pause_s(0.4, 0.0) == 0.0
