"""Depth for posed RGB frames as they stream in.

A frame without depth is matched (:func:`plane_sweep`) against a few earlier posed
frames: the recent ones this object remembers and the keyframes the caller passes in.
Sources are chosen for parallax without losing overlap: a baseline of at least
``min_baseline_m`` and at most ``max_baseline_ratio`` of the scene depth, the optical axes
within ``max_view_angle_deg``, the baselines whose disparity at the scene depth is nearest
``target_disparity_px`` first (the scene depth is the median of recent estimates; before
the first, the geometric mean of the configured depth range). The sweep covers the scene
depth divided and multiplied by ``depth_range_ratio``, so its planes are spent where the
scene is.

What is kept: pixels whose confidence reaches ``min_confidence``, whose own colour
matches where their depth puts them in the sources (:func:`photometric_residual`: a window
straddling an outline gives the background beside an object the object's depth, in every
view alike) and, where a source has depth of its own, that a source's depth confirms
(:func:`consistency_filter`: a wrong match lands on a point no other view saw at that
distance). Sources remember their confident (unfiltered) depth, so the check does not
shrink from frame to frame. With the frame's masks, a pixel is matched on its own mask's
texture only (``mask_windows``: a window across an object's outline gives the flat surface
beside it the object's depth), and each mask's pixels without depth are then filled from a
plane fit to its kept ones where they agree on one and determine it
(:func:`complete_in_masks`); a mask with too little depth of its own is fitted to what its
pixels' whole windows found (``completion_borrow``), which is never kept by itself.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.stereo.completion import complete_in_masks
from panoptic_mapping.core.stereo.plane_sweep import (
    StereoConfig,
    SweepResult,
    consistency_filter,
    photometric_residual,
    plane_sweep,
)

__all__ = ["SourceView", "StereoEstimate", "StereoDepth"]

# Estimates whose median depth makes up the scene depth.
_SCENE_DEPTH_WINDOW = 16


@dataclass(frozen=True)
class SourceView:
    """A posed image stereo can match against.

    Attributes:
        rgb: (H, W, 3) uint8. K: (3, 3). camera_to_world: (4, 4).
        depth: (H, W) float32 depth to check consistency against (0 = none), or None.
        stamp: seconds; with the pose, tells two copies of one frame apart from two frames.
        seen: (H, W) bool of the pixels the camera saw (``Frame.seen``), or None (all).
    """

    rgb: np.ndarray
    K: np.ndarray
    camera_to_world: np.ndarray
    depth: np.ndarray | None
    stamp: float
    seen: np.ndarray | None = None

    @staticmethod
    def of(frame: Frame, depth: np.ndarray | None = None) -> "SourceView":
        return SourceView(frame.rgb, np.asarray(frame.K, np.float64),
                          np.asarray(frame.camera_to_world, np.float64),
                          frame.depth if depth is None else depth, float(frame.stamp),
                          frame.seen)

    def key(self) -> tuple:
        return (self.stamp, self.camera_to_world.tobytes())


@dataclass
class StereoEstimate:
    """One frame's stereo result.

    Attributes:
        depth: (H, W) float32 depth kept for mapping (confident and consistent), 0 = none.
        confidence: (H, W) float32 plane-sweep confidence in [0, 1].
        sources: number of source views matched.
        seconds: wall time of the estimate.
    """

    depth: np.ndarray
    confidence: np.ndarray
    sources: int
    seconds: float

    @property
    def kept_share(self) -> float:
        return float((self.depth > 0).mean())


class StereoDepth:
    """Stereo depth for a stream of posed frames; remembers the last ``cfg.history``.

    Thread-safe: the sweep runs outside the lock, which only guards the memory.
    """

    def __init__(self, cfg: StereoConfig | None = None, device: str | torch.device = "cpu"):
        self.cfg = cfg or StereoConfig()
        self.device = device
        self._lock = threading.Lock()
        self._recent: deque[SourceView] = deque(maxlen=self.cfg.history)
        self._medians: deque[float] = deque(maxlen=_SCENE_DEPTH_WINDOW)
        self._seconds: deque[float] = deque(maxlen=256)
        self._kept: deque[float] = deque(maxlen=256)
        self.estimated = 0
        self.without_sources = 0

    def scene_depth(self) -> float:
        """Median depth of recent estimates [m] (before the first: the geometric mean of
        the configured range)."""
        with self._lock:
            if self._medians:
                return float(np.median(self._medians))
        return math.sqrt(self.cfg.min_depth_m * self.cfg.max_depth_m)

    def sweep_config(self) -> StereoConfig:
        """The configuration with the depth range narrowed around the scene depth."""
        cfg, r = self.cfg, self.cfg.depth_range_ratio
        if r <= 1.0:
            return cfg
        scene = self.scene_depth()
        near = min(max(cfg.min_depth_m, scene / r), cfg.max_depth_m / 2)
        far = max(min(cfg.max_depth_m, scene * r), 2 * near)
        return dataclasses.replace(cfg, min_depth_m=near, max_depth_m=far)

    def choose_sources(self, K: np.ndarray, camera_to_world: np.ndarray,
                       candidates: Sequence[SourceView]) -> list[SourceView]:
        """The candidates to match a view against, best first (at most ``max_sources``).

        Args:
            K: (3, 3) reference intrinsics: its focal length turns the target disparity
                into a baseline.
            camera_to_world: (4, 4) reference pose.
            candidates: posed views; duplicates (same stamp and pose) count once.
        """
        cfg = self.cfg
        scene = self.scene_depth()
        center, axis = camera_to_world[:3, 3], camera_to_world[:3, 2]
        cos_max = math.cos(math.radians(cfg.max_view_angle_deg))
        focal = 0.5 * (abs(float(K[0, 0])) + abs(float(K[1, 1])))
        target = cfg.target_disparity_px * scene / max(focal, 1e-9)
        scored, seen = [], set()
        for view in candidates:
            key = view.key()
            if key in seen:
                continue
            seen.add(key)
            baseline = float(np.linalg.norm(view.camera_to_world[:3, 3] - center))
            cos = float(axis @ view.camera_to_world[:3, 2])
            if baseline < max(cfg.min_baseline_m, 1e-9) \
                    or baseline > cfg.max_baseline_ratio * scene or cos < cos_max:
                continue
            scored.append((abs(baseline - target), len(scored), view))
        scored.sort(key=lambda s: s[:2])
        return [v for _, _, v in scored[:cfg.max_sources]]

    def estimate(self, frame: Frame, keyframes: Sequence[SourceView] = ()
                 ) -> StereoEstimate | None:
        """Depth of ``frame`` from the remembered frames and ``keyframes``; None when fewer
        than ``min_sources`` are usable (the frame is remembered either way)."""
        with self._lock:
            recent = list(self._recent)
        sources = self.choose_sources(frame.K, frame.camera_to_world, recent + list(keyframes))
        if len(sources) < self.cfg.min_sources:
            with self._lock:
                self.without_sources += 1
                self._recent.append(SourceView.of(frame))
            return None
        t0 = time.perf_counter()
        sweep = self.sweep_config()
        views = [(s.rgb, s.K, s.camera_to_world) for s in sources]
        seen = [s.seen for s in sources]
        sweep_result = plane_sweep(frame.rgb, frame.K, frame.camera_to_world, views, sweep,
                                   self.device, segments=frame.masks, ref_seen=frame.seen,
                                   src_seen=seen)
        depth = sweep_result.depth
        conf = self._colour_checked(frame, depth, sweep_result.confidence, views, seen)
        confident = np.where(conf >= self.cfg.min_confidence, depth, 0.0).astype(np.float32)
        kept = self._consistent(frame, depth, confident, conf, sources)
        if self.cfg.complete_in_masks and frame.masks is not None:
            c = self.cfg
            kept = complete_in_masks(kept, frame.masks, c.completion_min_support,
                                     c.completion_min_support_share, c.completion_tol_rel,
                                     c.completion_min_inlier_share,
                                     (sweep.min_depth_m, sweep.max_depth_m),
                                     c.completion_max_error_share,
                                     self._borrowed(frame, sweep_result, confident, views,
                                                    seen),
                                     c.completion_borrowed_on_share, c.completion_border_px)
        seconds = time.perf_counter() - t0
        result = StereoEstimate(kept, conf, len(sources), seconds)
        with self._lock:
            self.estimated += 1
            self._seconds.append(seconds)
            self._kept.append(result.kept_share)
            if (confident > 0).any():
                self._medians.append(float(np.median(confident[confident > 0])))
            self._recent.append(SourceView.of(frame, confident))
        return result

    def _borrowed(self, frame: Frame, result: SweepResult, own: np.ndarray, views: list,
                  seen: list) -> np.ndarray | None:
        """(H, W) depth the whole windows found confidently where the pixel's own segment
        did not (0 elsewhere), colour-checked; None without mask windows or borrowing."""
        if result.window_depth is None or not self.cfg.completion_borrow:
            return None
        conf = self._colour_checked(frame, result.window_depth, result.window_confidence,
                                    views, seen)
        use = (conf >= self.cfg.min_confidence) & (own <= 0)
        return np.where(use, result.window_depth, 0.0).astype(np.float32)

    def _colour_checked(self, frame: Frame, depth: np.ndarray, conf: np.ndarray,
                        views: list, seen: list | None = None) -> np.ndarray:
        """(H, W) confidence, 0 where the pixel's colour is not where its depth puts it in
        the sources (the median over them: one occluded source does not veto a pixel).
        ``seen``: per source, the pixels its camera saw (None: all)."""
        residual = photometric_residual(frame.rgb, frame.K, frame.camera_to_world, depth,
                                        views, self.device, seen)
        seen = np.isfinite(residual).any(0)  # unseen pixels have confidence 0 already
        typical = np.zeros(seen.shape, np.float32)
        typical[seen] = np.nanmedian(residual[:, seen], 0)
        return np.where(typical > self.cfg.max_pixel_residual, 0.0, conf).astype(np.float32)

    def _consistent(self, frame: Frame, depth: np.ndarray, confident: np.ndarray,
                    conf: np.ndarray, sources: list[SourceView]) -> np.ndarray:
        """(H, W) depth of the confident pixels the sources' own depth confirms (all of
        them when no source has depth)."""
        checked = [s for s in sources if s.depth is not None and (s.depth > 0).any()]
        if checked:
            conf = consistency_filter(
                [confident] + [s.depth for s in checked],
                [conf] + [(s.depth > 0).astype(np.float32) for s in checked],
                [frame.K] + [s.K for s in checked],
                [frame.camera_to_world] + [s.camera_to_world for s in checked], 0, self.cfg)
        return np.where(conf >= self.cfg.min_confidence, depth, 0.0).astype(np.float32)

    def remember(self, frame: Frame) -> None:
        """Keep a frame (with its own depth, if any) as a source for later frames."""
        with self._lock:
            self._recent.append(SourceView.of(frame))

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()
            self._medians.clear()

    def stats(self) -> dict:
        """Frames estimated, frames without enough sources, and per-frame cost and kept
        share (p50 over the last 256 estimates)."""
        with self._lock:
            return {"estimated": self.estimated, "without_sources": self.without_sources,
                    "seconds_p50": float(np.median(self._seconds)) if self._seconds else None,
                    "kept_share_p50": float(np.median(self._kept)) if self._kept else None}
