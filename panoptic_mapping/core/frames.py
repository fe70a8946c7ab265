"""The mapper's input: one posed camera frame with its front-end output, validated at the door."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.geometry import check_intrinsics, check_rigid

__all__ = ["Frame", "FrameError", "validate_frame"]


class FrameError(ValueError):
    """A frame the mapper refuses, with the reason; the map is left untouched."""


@dataclass
class Frame:
    """One posed camera frame and what the 2D front-end made of it.

    Attributes:
        rgb: (H, W, 3) uint8.
        K: (3, 3) float64 pinhole intrinsics.
        camera_to_world: (4, 4) float64 rigid transform, OpenCV optical convention
            (x right, y down, z forward).
        stamp: seconds (any monotonic origin).
        depth: (H, W) float32 metric depth along the optical axis, 0 = unknown; or None.
        masks: (H, W) int32 class-agnostic masks, 0 = no mask, ids 1..M (ids carry no
            meaning across frames); or None when the front-end gave nothing.
        mask_embeddings: (M, D) float32 L2-normalised vision-language embedding of mask
            i + 1; or None.
        mask_scores: (M,) float32 front-end confidence per mask; or None.
        depth_confidence: (H, W) float32 in [0, 1], how much each pixel's depth is
            trusted as the field's supervision (estimated depth: its confidence); None =
            measured, fully trusted.
    """

    rgb: np.ndarray
    K: np.ndarray
    camera_to_world: np.ndarray
    stamp: float = 0.0
    depth: np.ndarray | None = None
    masks: np.ndarray | None = None
    mask_embeddings: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    depth_confidence: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[:2]

    @property
    def num_masks(self) -> int:
        return 0 if self.masks is None else int(self.masks.max(initial=0))

    def nbytes(self) -> int:
        """Memory held by the frame's arrays (what a keyframe buffer budgets)."""
        arrays = (self.rgb, self.depth, self.masks, self.mask_embeddings, self.mask_scores,
                  self.depth_confidence)
        return sum(a.nbytes for a in arrays if a is not None) + self.K.nbytes + 128


def validate_frame(frame: Frame) -> Frame:
    """Check every field of ``frame``; return it with arrays in canonical dtypes.

    Raises:
        FrameError: wrong shapes or dtypes, NaN/inf, a non-rigid pose, bad intrinsics,
            masks without ids or inconsistent with the embeddings.
    """
    rgb = np.asarray(frame.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    try:
        K = check_intrinsics(frame.K, w, h)
        pose = check_rigid(frame.camera_to_world)
    except ValueError as exc:
        raise FrameError(str(exc)) from exc
    if not np.isfinite(frame.stamp):
        raise FrameError(f"stamp must be finite, got {frame.stamp}")
    depth = None
    if frame.depth is not None:
        depth = np.asarray(frame.depth, dtype=np.float32)
        if depth.shape != (h, w):
            raise FrameError(f"depth is {depth.shape}, image is {(h, w)}")
        if not np.isfinite(depth).all() or (depth < 0).any():
            raise FrameError("depth must be finite and >= 0 (0 = unknown)")
    confidence = None
    if frame.depth_confidence is not None:
        confidence = np.asarray(frame.depth_confidence, dtype=np.float32)
        if depth is None or confidence.shape != (h, w):
            raise FrameError(f"depth_confidence must be (H, W) = {(h, w)} beside depth, got "
                             f"{confidence.shape}")
        if not np.isfinite(confidence).all() or (confidence < 0).any() or (confidence > 1).any():
            raise FrameError("depth_confidence must be finite and in [0, 1]")
    masks, emb, scores = frame.masks, frame.mask_embeddings, frame.mask_scores
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (h, w) or not np.issubdtype(masks.dtype, np.integer):
            raise FrameError(f"masks must be an (H, W) integer image of shape {(h, w)}, got "
                             f"{masks.shape} {masks.dtype}")
        masks = masks.astype(np.int32)
        if masks.min() < 0:
            raise FrameError("mask ids must be >= 0")
        if masks.max() == 0:
            raise FrameError("masks are empty (no pixel carries a mask id)")
    num = 0 if masks is None else int(masks.max())
    if emb is not None:
        emb = np.asarray(emb, dtype=np.float32)
        if masks is None or emb.ndim != 2 or emb.shape[0] != num:
            raise FrameError(f"mask_embeddings must be (M, D) with M = {num} masks, got "
                             f"{emb.shape}")
        if not np.isfinite(emb).all():
            raise FrameError("mask_embeddings contain NaN or inf")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32)
        if masks is None or scores.shape != (num,) or not np.isfinite(scores).all():
            raise FrameError(f"mask_scores must be ({num},) finite, got {scores.shape}")
    return Frame(rgb=rgb, K=K, camera_to_world=pose, stamp=float(frame.stamp), depth=depth,
                 masks=masks, mask_embeddings=emb, mask_scores=scores,
                 depth_confidence=confidence)
