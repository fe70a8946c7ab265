"""Camera poses at image stamps without tf2 (ROS-free).

Where ``tf2_ros`` is importable the node looks poses up in tf. Without it, poses arrive on
a PoseStamped or Odometry topic and wait in a :class:`PoseBuffer`: a bounded, time-indexed
buffer that answers a stamp by interpolating between the two poses around it (linear in
translation, spherical-linear in rotation), like tf2's buffer core does between two
transforms, and that never extrapolates beyond a small tolerance.

Conventions: a pose is a (4, 4) transform ``map <- frame`` (it maps points of the frame to
the map). The received frame may be a body frame; :func:`pose_from_xyz_quat` builds the
static ``body <- optical`` transform from the 7 numbers of ``input.body_to_optical``, and
``camera_to_map = map_from_body @ body_from_optical``.
"""
from __future__ import annotations

import bisect
import threading
import time

import numpy as np

from panoptic_mapping.core.geometry import interpolate_pose

__all__ = ["PoseLookupError", "PoseNotYetError", "PoseBuffer", "BackwardJump",
           "clock_offset_reason"]


class PoseLookupError(LookupError):
    """No pose can be given for the stamp; the message says why."""


class PoseNotYetError(PoseLookupError):
    """The stamp is newer than the newest pose: the pose may still arrive."""


def clock_offset_reason(stamp_ns: int, now_ns: int, max_offset_s: float) -> str | None:
    """Why a message stamp is too far from the node's clock to be used, or None.

    A camera driver after a reset stamps 1970, a misconfigured one 2100, and a bag played
    without ``--clock`` and ``use_sim_time`` stamps the day it was recorded: matched with
    poses stamped now, or clearing the pose buffer as a jump in time, such a stamp would map
    a frame with another frame's pose. Stamps within ``max_offset_s`` of the clock (either
    way) pass; 0 turns the check off.

    Args:
        stamp_ns: the message's header stamp [ns].
        now_ns: the node's clock [ns] (ROS time: the simulated clock under use_sim_time).
        max_offset_s: the largest accepted distance [s] (``input.max_clock_offset_s``).
    """
    if max_offset_s <= 0:
        return None
    offset = (int(stamp_ns) - int(now_ns)) / 1e9
    if abs(offset) <= max_offset_s:
        return None
    if now_ns <= 0:
        return (f"stamped {int(stamp_ns) / 1e9:.3f} s while the node's clock reads 0: "
                "use_sim_time is set and no /clock message has arrived yet (play the bag "
                "with --clock)")
    side = "after" if offset > 0 else "before"
    return (f"stamped {int(stamp_ns) / 1e9:.3f} s, {abs(offset):.0f} s {side} the node's "
            f"clock (more than input.max_clock_offset_s = {max_offset_s:g} s): a driver "
            "clock reset, or a bag played without --clock and use_sim_time:=true (0 "
            "accepts any stamp)")


class BackwardJump:
    """Notices a clock that jumped back (a bag played again, a simulator reset).

    Args:
        threshold_s: a stamp this much older than the newest one seen is a jump (0: never).
    """

    def __init__(self, threshold_s: float) -> None:
        self.threshold_ns = int(round(threshold_s * 1e9))
        self.newest: int | None = None
        self.jumps = 0

    def seen(self, stamp_ns: int) -> bool:
        """Record a stamp; True when it is a jump back (the new stamp becomes the newest)."""
        stamp = int(stamp_ns)
        jumped = (self.threshold_ns > 0 and self.newest is not None
                  and stamp < self.newest - self.threshold_ns)
        if jumped:
            self.jumps += 1
        if jumped or self.newest is None or stamp > self.newest:
            self.newest = stamp
        return jumped


class PoseBuffer:
    """Bounded, time-ordered poses with interpolated lookup at any stamp (thread-safe).

    Args:
        capacity: poses kept; the oldest is dropped when a new one arrives at a full buffer.
        max_gap_s: two poses further apart than this are not interpolated between.
        tolerance_s: a stamp this close before the first or after the last pose gets that
            pose; further out the lookup fails (no extrapolation).
        jump_back_s: a pose stamped this much before the newest one means the clock jumped
            back: the buffer is cleared first (poses of two runs never mix; 0: never).
    """

    def __init__(self, capacity: int = 1000, max_gap_s: float = 0.5,
                 tolerance_s: float = 0.02, jump_back_s: float = 0.0) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.max_gap_ns = int(round(max_gap_s * 1e9))
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._cond = threading.Condition()
        self.received = 0
        self._jump = BackwardJump(jump_back_s)

    def __len__(self) -> int:
        with self._cond:
            return len(self._stamps)

    def add(self, stamp_ns: int, pose: np.ndarray) -> bool:
        """Insert a pose (out-of-order stamps are sorted in; an equal stamp replaces).
        Returns True when the clock jumped back and the buffer was cleared first."""
        pose = np.asarray(pose, dtype=np.float64).reshape(4, 4)
        with self._cond:
            self.received += 1
            jumped = self._jump.seen(stamp_ns)
            if jumped:
                self._stamps.clear()
                self._poses.clear()
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._poses[i] = pose
            else:
                self._stamps.insert(i, int(stamp_ns))
                self._poses.insert(i, pose)
            while len(self._stamps) > self.capacity:
                self._stamps.pop(0)
                self._poses.pop(0)
            self._cond.notify_all()
            return jumped

    def clear(self) -> None:
        with self._cond:
            self._stamps.clear()
            self._poses.clear()

    def span(self) -> tuple[int, int] | None:
        """(oldest, newest) stamp in ns, or None when empty."""
        with self._cond:
            return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def lookup(self, stamp_ns: int) -> np.ndarray:
        """The pose at ``stamp_ns``.

        Raises:
            PoseNotYetError: the stamp is newer than the newest pose (plus tolerance).
            PoseLookupError: no pose yet, the stamp is older than the buffer, or the poses
                around it are more than ``max_gap_s`` apart.
        """
        with self._cond:
            return self._lookup(int(stamp_ns))

    def wait_lookup(self, stamp_ns: int, timeout_s: float) -> np.ndarray:
        """:meth:`lookup`, waiting up to ``timeout_s`` for a pose newer than the stamp."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while True:
                try:
                    return self._lookup(int(stamp_ns))
                except PoseNotYetError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._cond.wait(remaining)

    def _lookup(self, stamp: int) -> np.ndarray:
        stamps = self._stamps
        if not stamps:
            raise PoseNotYetError("no pose received yet")
        if stamp > stamps[-1] + self.tolerance_ns:
            raise PoseNotYetError(f"stamp is {(stamp - stamps[-1]) / 1e9:.3f} s newer than "
                                  "the newest pose")
        if stamp < stamps[0] - self.tolerance_ns:
            raise PoseLookupError(f"stamp is {(stamps[0] - stamp) / 1e9:.3f} s older than the "
                                  f"oldest buffered pose ({len(stamps)} kept)")
        if stamp >= stamps[-1]:
            return self._poses[-1].copy()
        if stamp <= stamps[0]:
            return self._poses[0].copy()
        i = bisect.bisect_left(stamps, stamp)
        if stamps[i] == stamp:
            return self._poses[i].copy()
        t0, t1 = stamps[i - 1], stamps[i]
        if t1 - t0 > self.max_gap_ns:
            # still usable when the stamp is within tolerance of one of the two poses
            if stamp - t0 <= self.tolerance_ns:
                return self._poses[i - 1].copy()
            if t1 - stamp <= self.tolerance_ns:
                return self._poses[i].copy()
            raise PoseLookupError(f"the poses around the stamp are {(t1 - t0) / 1e9:.3f} s "
                                  f"apart (more than pose_max_gap_s "
                                  f"{self.max_gap_ns / 1e9:g} s)")
        return interpolate_pose(self._poses[i - 1], self._poses[i], (stamp - t0) / (t1 - t0))
