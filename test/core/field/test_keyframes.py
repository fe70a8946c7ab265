"""Keyframe buffer: selection rules on worked examples, budget, coverage-keeping eviction,
recent-favoured sampling and thread safety.

The synthetic camera: 32x24 pixels, fx = fy = 24, principal point at the image centre.
It stands in a corridor whose walls are 2 m in front (+z) and 2 m behind (-z); facing
either wall every pixel has depth 2 m, so the image covers 2 * 32 / 24 = 2.67 m of wall
horizontally, and a sideways move of d metres leaves about 1 - d / 2.67 of it in view.
"""
from __future__ import annotations

import math
import random
import sys
import threading
import time

import numpy as np
import pytest

from helpers import make_frame

from panoptic_mapping.config import ConfigError
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.field.keyframes import (
    BYTES_PER_MB,
    Keyframe,
    KeyframeBuffer,
    KeyframeConfig,
)

W, H, F = 32, 24, 24.0
K = np.array([[F, 0.0, (W - 1) / 2], [0.0, F, (H - 1) / 2], [0.0, 0.0, 1.0]])
VIEW_WIDTH_M = 2.0 * W / F  # wall width seen at 2 m


def rot_y(deg: float) -> np.ndarray:
    """Rotation about the optical y axis (down): positive yaw turns z towards +x."""
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def corridor_view(x: float = 0.0, yaw_deg: float = 0.0, depth: float | None = 2.0,
                  y: float = 0.0, z: float = 0.0, stamp: float = 0.0) -> Frame:
    """The camera at (x, y, z), turned by yaw_deg, every pixel at ``depth`` (None: RGB-only)."""
    pose = np.eye(4)
    pose[:3, :3] = rot_y(yaw_deg)
    pose[:3, 3] = (x, y, z)
    return make_frame(K.copy(), (H, W), rgb=128, depth=depth, camera_to_world=pose,
                      stamp=stamp)


def keyframe_cost(cfg: KeyframeConfig | None = None) -> int:
    """Bytes one synthetic keyframe takes in the buffer (frame + overlap cache)."""
    buf = KeyframeBuffer(cfg or KeyframeConfig())
    buf.add(corridor_view())
    return buf.nbytes()


def cfg_for(n_keyframes: int, **kw) -> KeyframeConfig:
    """A config whose budget holds exactly ``n_keyframes`` synthetic keyframes."""
    cost = keyframe_cost(KeyframeConfig(**kw))
    return KeyframeConfig(budget_mb=n_keyframes * cost / BYTES_PER_MB + 1e-9, **kw)


# ------------------------------------------------------------------ config


def test_config_defaults_and_validation():
    cfg = KeyframeConfig()
    assert (cfg.budget_mb, cfg.min_translation_m, cfg.min_rotation_deg, cfg.max_overlap,
            cfg.overlap_samples, cfg.recent_window, cfg.recent_fraction) == \
        (256.0, 0.05, 5.0, 0.9, 256, 8, 0.5)
    assert cfg.budget_bytes == 256_000_000
    with pytest.raises(ConfigError, match="max_overlap"):
        KeyframeConfig(max_overlap=1.5)
    with pytest.raises(ConfigError, match="overlap_samples"):
        KeyframeConfig(overlap_samples=2.5)


# ------------------------------------------------------------------ selection examples


def test_first_frame_is_accepted():
    buf = KeyframeBuffer()
    assert buf.consider(corridor_view()) == (True, "first frame")
    kf = buf.add(corridor_view())
    assert isinstance(kf, Keyframe) and kf.id == 0 and kf.version == 0 and kf.labels is None
    assert len(buf) == 1 and buf.ids() == [0]


def test_identical_pose_is_redundant():
    buf = KeyframeBuffer()
    buf.add(corridor_view())
    accept, reason = buf.consider(corridor_view())
    # Every sampled point re-projects to its own pixel at the same depth: overlap 1.
    assert not accept
    assert reason == "redundant (overlap 1.00, moved 0.00 m, turned 0.0 deg)"
    assert buf.add(corridor_view()) is None
    assert buf.stats()["rejections"] == {"redundant": 1}
    assert len(buf) == 1


def test_translation_beyond_threshold_is_a_novel_pose():
    buf = KeyframeBuffer()
    buf.add(corridor_view())
    # 0.12 m sideways keeps ~1 - 0.12 / 2.67 = 95.5 % of the wall in view: covered content,
    # but the camera moved more than min_translation_m = 0.05 m.
    assert buf.overlap(corridor_view(x=0.12)) >= 0.9
    assert buf.consider(corridor_view(x=0.12)) == (True, "novel pose (0.12 m, 0.0 deg)")
    # 0.03 m is below the threshold and the content is covered (a 0.36 pixel shift at 2 m
    # keeps every sampled point inside the image): redundant.
    assert buf.consider(corridor_view(x=0.03)) == (
        False, "redundant (overlap 1.00, moved 0.03 m, turned 0.0 deg)")
    # A 6 degree turn on the spot is a novel pose too (min_rotation_deg = 5).
    accept, reason = buf.consider(corridor_view(yaw_deg=6.0))
    assert accept and reason.startswith(("novel pose (0.00 m, 6.0 deg)", "low overlap"))


def test_rotation_of_90_degrees_is_low_overlap():
    buf = KeyframeBuffer()
    buf.add(corridor_view())
    # Turned to face the side wall: its points lie beside the first camera's image plane.
    assert buf.consider(corridor_view(yaw_deg=90.0)) == (True, "low overlap (0.00)")
    assert buf.add(corridor_view(yaw_deg=90.0)) is not None
    assert buf.stats()["accepted"] == {"first frame": 1, "low overlap": 1}


def test_half_shifted_view_overlaps_half():
    buf = KeyframeBuffer()
    buf.add(corridor_view())
    # Shifting by half the view width: the right half of the new image is new wall.
    assert buf.overlap(corridor_view(x=VIEW_WIDTH_M / 2)) == pytest.approx(0.5, abs=0.08)
    accept, reason = buf.consider(corridor_view(x=VIEW_WIDTH_M / 2))
    assert accept and reason.startswith("low overlap (0.")


def test_overlap_is_coverage_by_the_union_of_keyframes():
    buf = KeyframeBuffer()
    buf.add(corridor_view(x=-VIEW_WIDTH_M / 2), force=True)
    buf.add(corridor_view(x=+VIEW_WIDTH_M / 2), force=True)
    # Each keyframe sees one half of the middle view; together they see all of it.
    assert buf.overlap(corridor_view(x=0.0)) > 0.95


def test_occlusion_and_depth_tolerance():
    buf = KeyframeBuffer()
    buf.add(corridor_view(depth=2.0))
    # Something appeared 1 m in front of the camera at the same pose: the keyframe saw
    # through it (free space), so nothing of it is covered.
    assert buf.consider(corridor_view(depth=1.0)) == (True, "low overlap (0.00)")
    # 2.08 m vs 2.0 m: within the 5 % (0.10 m) tolerance.
    assert buf.overlap(corridor_view(depth=2.08)) == 1.0
    # Unknown depth (0) in the keyframe: the measured point is not covered there.
    half = corridor_view(depth=2.0)
    half.depth[:, : W // 2] = 0.0
    buf2 = KeyframeBuffer()
    buf2.add(half)
    assert buf2.overlap(corridor_view()) == pytest.approx(0.5, abs=0.08)


def test_rgb_only_frames_use_a_frustum_proxy():
    buf = KeyframeBuffer()
    buf.add(corridor_view(depth=None))
    assert not buf.consider(corridor_view(depth=None))[0]
    assert buf.consider(corridor_view(depth=None, yaw_deg=90.0)) == (True, "low overlap (0.00)")
    # Nominal depth 2 m (no depth seen yet): a half-width shift overlaps half.
    assert buf.overlap(corridor_view(depth=None, x=VIEW_WIDTH_M / 2)) == pytest.approx(
        0.5, abs=0.08)
    # With a depth keyframe seeing 4 m, the proxy samples at 4 m where the view is twice
    # as wide: the same shift keeps 1 - 1.33 / 5.33 = 75 % in view.
    buf2 = KeyframeBuffer()
    buf2.add(corridor_view(depth=4.0))
    assert buf2.overlap(corridor_view(depth=None, x=VIEW_WIDTH_M / 2)) == pytest.approx(
        0.75, abs=0.08)
    # A depth image without a single valid pixel falls back to the same proxy.
    empty = corridor_view(depth=0.0)
    assert buf.overlap(empty) == 1.0


def test_mixed_resolutions_and_depth_availability():
    # The same camera at twice the resolution sees the same wall.
    big = corridor_view()
    big.rgb = np.zeros((2 * H, 2 * W, 3), np.uint8)
    big.depth = np.full((2 * H, 2 * W), 2.0, np.float32)
    big.K = np.array([[2 * F, 0, (2 * W - 1) / 2], [0, 2 * F, (2 * H - 1) / 2], [0, 0, 1]])
    buf = KeyframeBuffer()
    buf.add(big)
    assert buf.overlap(corridor_view()) > 0.95
    assert buf.consider(corridor_view())[0] is False
    # An RGB-only keyframe checks a depth frame's points by frustum only.
    rgb_only = KeyframeBuffer()
    rgb_only.add(corridor_view(depth=None))
    assert rgb_only.overlap(corridor_view(depth=1.0)) == 1.0
    assert rgb_only.overlap(corridor_view(depth=1.0, yaw_deg=180.0)) == 0.0
    buf.add(corridor_view(depth=None, yaw_deg=180.0), force=True)
    buf._check_invariants()


# ------------------------------------------------------------------ budget and eviction


def corridor_stream(n: int = 2000, step: float = 0.01):
    """Walk n/2 frames along the corridor facing the +z wall, turn, and walk back."""
    half = n // 2
    for i in range(half):
        yield corridor_view(x=i * step, yaw_deg=0.0, stamp=i)
    for i in range(half):
        yield corridor_view(x=(half - 1 - i) * step, yaw_deg=180.0, stamp=half + i)


def test_budget_is_never_exceeded_over_a_2000_frame_stream():
    cfg = cfg_for(24)
    buf = KeyframeBuffer(cfg)
    cost = keyframe_cost()
    for n, frame in enumerate(corridor_stream(2000)):
        assert buf.add(frame, force=True) is not None
        assert buf.nbytes() <= cfg.budget_bytes
        assert len(buf) <= cfg.budget_bytes // cost == 24
        if n % 500 == 0:
            buf._check_invariants()
    buf._check_invariants()
    stats = buf.stats()
    assert stats["added"] == 2000 and stats["evictions"] == 2000 - 24 and stats["count"] == 24
    assert stats["accepted"] == {"forced": 2000}
    assert stats["mb_used"] <= stats["budget_mb"]
    # Coverage kept: the keyframes still span both walls over the whole 10 m corridor
    # (FIFO would hold only the last 24 frames: 0.24 m of the way back).
    poses = np.array([kf.frame.camera_to_world for kf in buf.snapshot()])
    facing_out = poses[:, 2, 2] > 0
    for side in (facing_out, ~facing_out):
        xs = poses[side, 0, 3]
        assert xs.min() < 1.5 and xs.max() > 8.5, xs


def test_selective_stream_rejects_most_frames():
    buf = KeyframeBuffer(cfg_for(40, min_translation_m=0.5, min_rotation_deg=30.0))
    added = [buf.add(f) for f in corridor_stream(400, step=0.02)]
    kept = sum(a is not None for a in added)
    assert 2 <= kept < 100, kept
    assert buf.stats()["rejections"]["redundant"] == 400 - kept


class FifoBuffer(KeyframeBuffer):
    """The same buffer with FIFO replacement: evicts the oldest keyframe."""

    def _choose_victim(self, protect: int) -> int | None:
        return next((i for i in self._entries if i != protect), None)


def dwell_at_a_visit_b(buf: KeyframeBuffer) -> tuple[list[int], int]:
    """3 frames at place A, one at B (facing the other wall), then 20 more at A."""
    rng = np.random.default_rng(1)

    def at_a() -> int:  # sub-millimetre jitter: the A frames see the same wall
        return buf.add(corridor_view(x=rng.normal(0, 0.002)), force=True).id

    a_ids = [at_a() for _ in range(3)]
    b_id = buf.add(corridor_view(yaw_deg=180.0), force=True).id
    a_ids += [at_a() for _ in range(20)]
    return a_ids, b_id


def test_eviction_keeps_the_lone_view_of_b_where_fifo_drops_it():
    # Budget for 6 keyframes, 2 of them protected as recent.
    cfg = cfg_for(6, recent_window=2)
    fifo = FifoBuffer(cfg)
    _, b_fifo = dwell_at_a_visit_b(fifo)
    assert b_fifo not in fifo.ids()  # FIFO keeps the 6 newest: all at A, B is lost
    buf = KeyframeBuffer(cfg)
    a_ids, b_id = dwell_at_a_visit_b(buf)
    # Coverage-keeping eviction: B is the only view of its wall (redundancy 0); the A
    # frames cover each other (redundancy ~1) and are evicted instead.
    ids = buf.ids()
    assert b_id in ids and len(ids) == 6
    assert buf.stats()["evictions"] == 24 - 6
    assert set(ids) - {b_id} <= set(a_ids)
    buf._check_invariants()


def test_equally_redundant_keyframes_are_evicted_oldest_first():
    buf = KeyframeBuffer(cfg_for(6, recent_window=2))
    ids = [buf.add(corridor_view(), force=True).id for _ in range(10)]
    assert buf.ids() == ids[-6:]


def test_recent_window_is_protected_unless_nothing_else_is_left():
    # recent_window larger than what fits: the protected set is everything, so eviction
    # falls back to the most redundant of all (never the one being inserted).
    buf = KeyframeBuffer(cfg_for(3, recent_window=8))
    first = buf.add(corridor_view(yaw_deg=180.0), force=True).id
    for _ in range(5):
        new = buf.add(corridor_view(), force=True).id
        assert new in buf.ids()
    assert first in buf.ids() and len(buf) == 3
    # Outside the window, the oldest duplicates go and the lone side view stays.
    buf2 = KeyframeBuffer(cfg_for(4, recent_window=2))
    lone = buf2.add(corridor_view(yaw_deg=90.0), force=True).id
    dupes = [buf2.add(corridor_view(), force=True).id for _ in range(5)]
    assert buf2.ids() == [lone, *dupes[-3:]]


def test_oversize_frame_raises_naming_both_sizes():
    cost = keyframe_cost()
    buf = KeyframeBuffer(KeyframeConfig(budget_mb=0.01))
    with pytest.raises(ValueError, match=rf"{cost} bytes.*10000 bytes \(0\.01 MB\)"):
        buf.add(corridor_view())
    assert len(buf) == 0 and buf.nbytes() == 0
    assert buf.stats()["rejections"] == {"oversize": 1}


def test_eviction_time_for_100_keyframes():
    # 100 keyframes along the corridor, 1 cm apart; each further add evicts one.
    buf = KeyframeBuffer(cfg_for(100))
    for i in range(100):
        buf.add(corridor_view(x=0.01 * i), force=True)
    frames = [corridor_view(x=1.0 + 0.01 * i) for i in range(20)]
    t0 = time.perf_counter()
    for frame in frames:
        buf.add(frame, force=True)
    per_add = (time.perf_counter() - t0) / len(frames)
    assert buf.stats()["evictions"] == 20 and len(buf) == 100
    # Eviction alone: choose the victim and update the other keyframes' cover counts.
    t0 = time.perf_counter()
    with buf._lock:
        for _ in range(20):
            buf._remove_entry(buf._choose_victim(protect=-1))
    per_eviction = (time.perf_counter() - t0) / 20
    print(f"\nwith ~100 keyframes: add + evict {per_add * 1e3:.2f} ms, "
          f"eviction {per_eviction * 1e3:.2f} ms")
    assert per_eviction < 0.1 and per_add < 0.25  # generous: both measure a few ms
    buf._check_invariants()


# ------------------------------------------------------------------ labels and accessors


def test_labels_versions_and_snapshots():
    buf = KeyframeBuffer()
    kf = buf.add(corridor_view())
    before = buf.nbytes()
    snap = buf.snapshot()
    labels = np.arange(H * W, dtype=np.int64).reshape(H, W)
    assert buf.set_labels(kf.id, labels) == 1
    assert buf.nbytes() == before + H * W * 4
    got = buf.get(kf.id)
    assert got.version == 1 and got.labels.dtype == np.int32
    assert np.array_equal(got.labels, labels) and not got.labels.flags.writeable
    assert got.nbytes() == got.frame.nbytes() + H * W * 4
    # The earlier snapshot is a copy: its labels and version did not change under it.
    assert snap[0].labels is None and snap[0].version == 0
    assert buf.set_labels(kf.id, None) == 2 and buf.nbytes() == before
    with pytest.raises(ValueError, match="labels"):
        buf.set_labels(kf.id, np.zeros((H, W + 1), np.int32))
    with pytest.raises(ValueError, match="labels"):
        buf.set_labels(kf.id, np.zeros((H, W), np.float32))
    assert buf.set_labels(12345, labels) is None


def test_labels_that_exceed_the_budget_evict_other_keyframes():
    buf = KeyframeBuffer(cfg_for(3, recent_window=0))
    ids = [buf.add(corridor_view(), force=True).id for _ in range(3)]
    assert buf.set_labels(ids[0], np.ones((H, W), np.int32)) == 1
    assert buf.nbytes() <= buf.budget_bytes
    assert ids[0] in buf.ids() and len(buf) == 2  # the labelled one is protected
    buf._check_invariants()
    # Labels that make a keyframe alone larger than the budget are refused.
    single = KeyframeBuffer(cfg_for(1))
    kf = single.add(corridor_view())
    with pytest.raises(ValueError, match=r"keyframe 0 with labels needs \d+ bytes"):
        single.set_labels(kf.id, np.ones((H, W), np.int32))
    assert single.get(kf.id).version == 0


def test_remove_get_clear_stats():
    buf = KeyframeBuffer()
    a = buf.add(corridor_view(), force=True).id
    b = buf.add(corridor_view(yaw_deg=180.0)).id
    assert buf.remove(a) and not buf.remove(a)
    assert buf.get(a) is None and buf.get(b).id == b
    buf._check_invariants()
    buf.clear()
    assert len(buf) == 0 and buf.nbytes() == 0 and buf.ids() == []
    c = buf.add(corridor_view()).id
    assert c > b  # ids are never reused
    s = buf.stats()
    assert (s["count"], s["added"], s["removed"]) == (1, 3, 1)
    assert s["accepted"] == {"forced": 1, "low overlap": 1, "first frame": 1}


# ------------------------------------------------------------------ sampling


def test_sampling_favours_recent_keyframes_and_forgets_none():
    buf = KeyframeBuffer(KeyframeConfig(recent_window=8, recent_fraction=0.5))
    for i in range(40):
        buf.add(corridor_view(x=0.5 * i), force=True)
    ids = np.array(buf.ids())
    draws = buf.sample_keyframes(20000, np.random.default_rng(0))
    assert draws.shape == (20000,) and draws.dtype == np.int64
    # P(recent) = 0.5 + 0.5 * 8 / 40 = 0.6.
    assert np.isin(draws, ids[-8:]).mean() == pytest.approx(0.6, abs=0.015)
    counts = {i: int((draws == i).sum()) for i in ids}
    assert min(counts.values()) > 0  # every keyframe sampled
    # Per-keyframe rates: 0.5 / 8 + 0.5 / 40 = 0.075 for recent, 0.0125 for the others.
    assert counts[ids[-1]] / 20000 == pytest.approx(0.075, abs=0.01)
    assert counts[ids[0]] / 20000 == pytest.approx(0.0125, abs=0.005)
    assert KeyframeBuffer().sample_keyframes(10, np.random.default_rng(0)).shape == (0,)
    no_recent = KeyframeBuffer(KeyframeConfig(recent_window=0))
    no_recent.add(corridor_view())
    assert (no_recent.sample_keyframes(5) == 0).all()


# ------------------------------------------------------------------ threads


def test_concurrent_add_remove_snapshot_keeps_invariants():
    cfg = cfg_for(10, recent_window=3)
    buf = KeyframeBuffer(cfg)
    cost = keyframe_cost()
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    def adder(seed: int):
        rng = random.Random(seed)
        for i in range(150):
            frame = corridor_view(x=rng.uniform(0, 5), yaw_deg=rng.choice([0.0, 90.0, 180.0]))
            kf = buf.add(frame, force=rng.random() < 0.5)
            assert kf is None or kf.frame is frame

    def remover():
        rng = random.Random(7)
        while not stop.is_set():
            ids = buf.ids()
            if ids:
                victim = rng.choice(ids)
                if rng.random() < 0.5:
                    buf.remove(victim)
                else:
                    buf.set_labels(victim, np.full((H, W), victim, np.int32))

    def reader():
        rng = np.random.default_rng(3)
        while not stop.is_set():
            snap = buf.snapshot()
            ids = [kf.id for kf in snap]
            assert ids == sorted(set(ids)) and len(ids) <= 10
            assert sum(kf.nbytes() for kf in snap) <= cfg.budget_bytes
            assert buf.nbytes() <= cfg.budget_bytes
            for kf in snap:
                assert kf.labels is None or (kf.version > 0 and kf.labels[0, 0] == kf.id)
            drawn = buf.sample_keyframes(32, rng)
            assert drawn.size in (0, 32)
            buf.stats()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # more interleavings
    try:
        workers = [threading.Thread(target=guarded(lambda s=s: adder(s))) for s in (1, 2)]
        others = [threading.Thread(target=guarded(f)) for f in (remover, reader)]
        for t in workers + others:
            t.start()
        for t in workers:
            t.join(timeout=60)
        stop.set()
        for t in others:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert buf.nbytes() <= cfg.budget_bytes and len(buf) <= cfg.budget_bytes // cost
    buf._check_invariants()
    s = buf.stats()
    assert s["count"] == s["added"] - s["evictions"] - s["removed"]
