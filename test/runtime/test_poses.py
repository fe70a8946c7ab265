"""The pose buffer that stands in for tf2: interpolation, tolerances, waiting, bounds."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from panoptic_mapping.config import ConfigError, InputConfig
from panoptic_mapping.core.geometry import interpolate_pose, pose_from_xyz_quat, pose_matrix, slerp
from panoptic_mapping.runtime.poses import (
    BackwardJump,
    PoseBuffer,
    PoseLookupError,
    PoseNotYetError,
    clock_offset_reason,
)

S = 1_000_000_000  # ns


def yaw_pose(x: float, yaw: float) -> np.ndarray:
    return pose_matrix([x, 0.0, 0.0], [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


def test_exact_and_interpolated_lookup():
    buf = PoseBuffer(capacity=10, max_gap_s=1.0, tolerance_s=0.0)
    buf.add(0, yaw_pose(0.0, 0.0))
    buf.add(S, yaw_pose(2.0, math.pi / 2))
    np.testing.assert_allclose(buf.lookup(0), yaw_pose(0.0, 0.0), atol=1e-12)
    mid = buf.lookup(S // 2)
    np.testing.assert_allclose(mid, yaw_pose(1.0, math.pi / 4), atol=1e-9)
    quarter = buf.lookup(S // 4)
    np.testing.assert_allclose(quarter, yaw_pose(0.5, math.pi / 8), atol=1e-9)


def test_out_of_order_insert_and_capacity_bound():
    buf = PoseBuffer(capacity=3, max_gap_s=10.0)
    for t in (3, 1, 2, 5, 4):
        buf.add(t * S, yaw_pose(float(t), 0.0))
    assert len(buf) == 3
    assert buf.span() == (3 * S, 5 * S)
    np.testing.assert_allclose(buf.lookup(int(3.5 * S))[:3, 3], [3.5, 0, 0], atol=1e-12)
    with pytest.raises(PoseLookupError, match="older than the oldest"):
        buf.lookup(1 * S)


def test_tolerance_at_the_ends_and_no_extrapolation():
    buf = PoseBuffer(capacity=10, max_gap_s=1.0, tolerance_s=0.05)
    buf.add(S, yaw_pose(1.0, 0.0))
    buf.add(2 * S, yaw_pose(2.0, 0.0))
    np.testing.assert_allclose(buf.lookup(int(2.04 * S))[:3, 3], [2, 0, 0])  # nearest
    with pytest.raises(PoseNotYetError, match="newer than the newest"):
        buf.lookup(int(2.1 * S))
    np.testing.assert_allclose(buf.lookup(int(0.96 * S))[:3, 3], [1, 0, 0])
    with pytest.raises(PoseLookupError, match="older"):
        buf.lookup(int(0.9 * S))


def test_gap_larger_than_max_is_refused():
    buf = PoseBuffer(capacity=10, max_gap_s=0.5, tolerance_s=0.01)
    buf.add(0, yaw_pose(0.0, 0.0))
    buf.add(2 * S, yaw_pose(1.0, 0.0))
    with pytest.raises(PoseLookupError, match="apart"):
        buf.lookup(S)
    np.testing.assert_allclose(buf.lookup(int(0.005 * S))[:3, 3], [0, 0, 0])


def test_empty_buffer_says_so_and_wait_lookup_waits_for_a_later_pose():
    buf = PoseBuffer(capacity=10, max_gap_s=1.0)
    with pytest.raises(PoseNotYetError, match="no pose received yet"):
        buf.lookup(0)
    buf.add(0, yaw_pose(0.0, 0.0))

    def later():
        time.sleep(0.1)
        buf.add(S, yaw_pose(1.0, 0.0))

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    pose = buf.wait_lookup(S // 2, timeout_s=5.0)
    assert time.monotonic() - t0 < 4.0
    np.testing.assert_allclose(pose[:3, 3], [0.5, 0, 0], atol=1e-12)
    with pytest.raises(PoseNotYetError):
        buf.wait_lookup(3 * S, timeout_s=0.05)


def test_slerp_takes_the_short_way_and_interpolate_pose_is_rigid():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = -np.array([0.0, 0.0, math.sin(0.2), math.cos(0.2)])  # same rotation, flipped sign
    mid = slerp(q0, q1, 0.5)
    assert abs(abs(mid[2]) - math.sin(0.1)) < 1e-9
    T = interpolate_pose(yaw_pose(0, 0.3), pose_matrix([0, 1, 2], [0.3, -0.2, 0.5, 0.8]), 0.37)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert abs(np.linalg.det(R) - 1) < 1e-9


def test_rep103_body_to_optical_constant():
    """Optical z (forward) = body x, optical x (right) = -body y, optical y (down) = -body z."""
    T = pose_from_xyz_quat(InputConfig.BODY_TO_OPTICAL_REP103)
    R = T[:3, :3]  # columns: optical axes in body coordinates
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)


def test_body_to_optical_is_validated():
    with pytest.raises(ConfigError, match="body_to_optical"):
        InputConfig(body_to_optical=[0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ConfigError, match="body_to_optical"):
        InputConfig(body_to_optical=[0.0] * 7)


def test_a_clock_jumping_back_clears_the_pose_buffer():
    """A bag played again: its poses must not be interpolated with the first run's."""
    s = 10**9
    buf = PoseBuffer(capacity=100, max_gap_s=1.0, tolerance_s=0.0, jump_back_s=1.0)
    for k in range(5):
        assert not buf.add(100 * s + k * s // 2, np.eye(4))
    assert not buf.add(101 * s, np.eye(4))  # out of order by less than the threshold
    assert buf.span() == (100 * s, 102 * s)
    assert buf.add(50 * s, pose_matrix([1.0, 0, 0], [0, 0, 0, 1]))  # 52 s back: cleared
    assert buf.span() == (50 * s, 50 * s)
    with pytest.raises(PoseNotYetError):
        buf.lookup(101 * s)  # the first run's stamps are gone
    never = PoseBuffer(capacity=10, jump_back_s=0.0)
    never.add(100 * s, np.eye(4))
    assert not never.add(1 * s, np.eye(4)) and len(never) == 2


def test_backward_jump_worked_example():
    j = BackwardJump(1.0)
    # 1.5 s is 0.5 s back (no jump), 0.5 s is 2.5 s back (a jump, and the new newest)
    assert [j.seen(t * 10**8) for t in (10, 20, 15, 30, 5, 6)] == [
        False, False, False, False, True, False]
    assert j.jumps == 1 and j.newest == 6 * 10**8
    assert not BackwardJump(0.0).seen(0)


def test_clock_offset_worked_example():
    """Stamps within max_offset_s of the clock either way pass; beyond it the reason names
    the side, the distance and the parameter; 0 accepts anything; a clock at 0 (sim time
    before the first /clock) refuses a stamp far from it with that reason."""
    now = 1_765_000_000 * 10**9
    assert clock_offset_reason(now - 299 * 10**9, now, 300.0) is None
    assert clock_offset_reason(now + 299 * 10**9, now, 300.0) is None
    early = clock_offset_reason(10**9, now, 300.0)
    assert early.startswith("stamped 1.000 s, 1764999999 s before the node's clock")
    assert "input.max_clock_offset_s = 300 s" in early
    late = clock_offset_reason(now + 301 * 10**9, now, 300.0)
    assert "301 s after the node's clock" in late
    assert clock_offset_reason(10**9, now, 0.0) is None
    assert "no /clock message" in clock_offset_reason(now, 0, 300.0)
    assert clock_offset_reason(10**8, 0, 300.0) is None  # a replayed clock starting at 0
