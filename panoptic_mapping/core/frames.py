"""The mapper's input: one posed camera frame with its front-end output, validated at the door."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.core.geometry import check_intrinsics, check_rigid
from panoptic_mapping.core.lens import LensDistortion, Undistortion, undistortion_for

__all__ = ["Frame", "FrameError", "validate_frame", "undistort_frame"]


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
        lens: the lens distortion the images (rgb, depth, masks) still carry, with K
            their intrinsics; None = pinhole images. The mapper undistorts such a frame
            as it takes it in (:func:`undistort_frame`) and answers at its raw pixels.
        seen: (H, W) bool, the pixels the camera saw; None = all of them. An undistorted
            frame's pinhole image reaches beyond its raw one: its other pixels hold no
            colour, so stereo never matches them and training never draws them.
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
    lens: LensDistortion | None = None
    seen: np.ndarray | None = None

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
                  self.depth_confidence, self.seen)
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
    lens = frame.lens
    if lens is not None and not isinstance(lens, LensDistortion):
        raise FrameError(f"lens must be a LensDistortion or None, got {type(lens).__name__}")
    seen = frame.seen
    if seen is not None:
        seen = np.asarray(seen)
        if seen.shape != (h, w) or seen.dtype != bool:
            raise FrameError(f"seen must be an (H, W) bool image of shape {(h, w)}, got "
                             f"{seen.shape} {seen.dtype}")
        if seen.all():
            seen = None
    return Frame(rgb=rgb, K=K, camera_to_world=pose, stamp=float(frame.stamp), depth=depth,
                 masks=masks, mask_embeddings=emb, mask_scores=scores,
                 depth_confidence=confidence,
                 lens=None if lens is None or lens.is_identity else lens, seen=seen)


def undistort_frame(frame: Frame) -> tuple[Frame, Undistortion | None]:
    """A valid frame's pinhole version, and the maps that made it (None: it was one).

    The pinhole image keeps the focal lengths and may be wider than the raw one
    (:class:`~panoptic_mapping.core.lens.Undistortion`: its K and size); ``seen`` marks
    the pixels the raw image covers. Colour is resampled bilinearly; depth, masks and
    depth confidence at the nearest raw pixel. Mask ids keep their numbers (a caller's answers name its own masks); a mask
    that falls wholly outside the pinhole image is simply absent, and a frame left with
    no mask pixel has no masks.
    """
    if frame.lens is None:
        return frame, None
    u = undistortion_for(frame.K, frame.lens, frame.shape)
    depth = None if frame.depth is None else u.nearest(frame.depth)
    confidence = (None if frame.depth_confidence is None
                  else u.nearest(frame.depth_confidence))
    masks, emb, scores = frame.masks, frame.mask_embeddings, frame.mask_scores
    if masks is not None:
        masks = u.nearest(masks)
        top = int(masks.max())
        if top == 0:
            masks = emb = scores = None
        else:
            emb = None if emb is None else emb[:top]
            scores = None if scores is None else scores[:top]
    seen = u.seen if frame.seen is None else u.nearest(frame.seen)
    return Frame(rgb=u.image(frame.rgb), K=u.K_pinhole, camera_to_world=frame.camera_to_world,
                 stamp=frame.stamp, depth=depth, masks=masks, mask_embeddings=emb,
                 mask_scores=scores, depth_confidence=confidence,
                 seen=None if seen.all() else seen), u
