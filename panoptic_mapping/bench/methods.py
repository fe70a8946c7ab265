"""What the benchmark runs: a common interface over the baselines and the mapper.

Every method ingests the same frames with the same front-end masks, in order, and is then
asked for instance and semantic images at the training views (PQ_scene, mIoU), for an
instance image of held-out views given their masks (InstanceLoc), and for online ids
(id stability). Semantics of the baselines come from the masks' embeddings: each predicted
id accumulates the embeddings of the masks it covered (pixel-weighted) and takes the class
whose text embedding is most similar.
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from panoptic_mapping.bench.baselines import (
    Baseline,
    IoUTrackingBaseline,
    PerFrameMasksBaseline,
    VoxelFusionBaseline,
)
from panoptic_mapping.bench.types import MaskFrame, SceneFrame
from panoptic_mapping.core.geometry import count_pairs

__all__ = ["Method", "BaselineMethod", "EmbeddingLabeler", "make_baseline"]


class Method(Protocol):
    """The interface the benchmark measures."""

    name: str
    supports_localization: bool

    def ingest(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        """Take the next frame; return (H, W) int32 ids assigned to it online."""

    def between_frames(self) -> None:
        """Online work between two frames (the mapper trains); not counted as ingestion."""

    def finish(self, budget_s: float) -> dict:
        """Work left after the stream (the mapper trains); returns timing facts."""

    def instance_image(self, frame: SceneFrame) -> np.ndarray:
        """(H, W) int32 map instance ids at a training view (0 = none)."""

    def semantic_image(self, frame: SceneFrame, instances: np.ndarray) -> np.ndarray:
        """(H, W) int32 class ids at a training view (0 = none)."""

    def localize(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        """(H, W) int32 map instance ids of a held-out view, given its masks."""

    def extra_metrics(self, frames: list[SceneFrame]) -> dict:
        """Method-specific numbers (e.g. novel-view PSNR of a field)."""


class EmbeddingLabeler:
    """Labels predicted ids with classes from the embeddings of the masks they covered.

    Args:
        text_embeddings: (C, D) unit text embeddings of classes 1..C (class 0 is void).
    """

    def __init__(self, text_embeddings: np.ndarray) -> None:
        self.text = np.asarray(text_embeddings, dtype=np.float32)
        self._sums: dict[int, np.ndarray] = {}

    def observe(self, ids: np.ndarray, masks: MaskFrame) -> None:
        """Accumulate, for each (id, mask) overlap of c pixels, c * embedding(mask)."""
        if masks.embeddings is None:
            return
        valid = (ids > 0) & (masks.labels > 0)
        if not valid.any():
            return
        for pid, mid, c in zip(*count_pairs(ids[valid], masks.labels[valid])):
            contribution = c * masks.embeddings[mid - 1]
            acc = self._sums.get(int(pid))
            self._sums[int(pid)] = contribution if acc is None else acc + contribution

    def class_of(self, pid: int) -> int:
        acc = self._sums.get(int(pid))
        if acc is None:
            return 0
        return int(np.argmax(self.text @ acc)) + 1

    def label_image(self, ids: np.ndarray) -> np.ndarray:
        """(H, W) int32 class ids for an (H, W) id image."""
        uniq, inverse = np.unique(ids, return_inverse=True)
        classes = np.array([0 if u == 0 else self.class_of(u) for u in uniq], dtype=np.int32)
        return classes[inverse].reshape(ids.shape)


class BaselineMethod:
    """A :class:`~panoptic_mapping.bench.baselines.Baseline` behind the Method interface.

    The voxel map is re-rendered at the end (its majority votes may fix early errors);
    the per-frame and tracking baselines keep what they assigned online.
    """

    def __init__(self, baseline: Baseline, labeler: EmbeddingLabeler) -> None:
        self.baseline = baseline
        self.labeler = labeler
        self.name = baseline.name
        self.supports_localization = hasattr(baseline, "predict_with_masks")
        # only the voxel map can be rendered at views it has not ingested yet
        self.renders_map = isinstance(baseline, VoxelFusionBaseline)

    def ingest(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        ids = self.baseline.ingest(frame, masks)
        self.labeler.observe(ids, masks)
        return ids

    def between_frames(self) -> None:
        pass

    def finish(self, budget_s: float) -> dict:
        return {}

    def instance_image(self, frame: SceneFrame) -> np.ndarray:
        if isinstance(self.baseline, VoxelFusionBaseline):
            from panoptic_mapping.bench.baselines import FrameGeometry

            return self.baseline.predict(FrameGeometry.from_frame(frame))
        return self.baseline.prediction(frame.index)

    def semantic_image(self, frame: SceneFrame, instances: np.ndarray) -> np.ndarray:
        return self.labeler.label_image(instances)

    def localize(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.baseline.predict_with_masks(frame, masks)

    def extra_metrics(self, frames: list[SceneFrame]) -> dict:
        return {}


def make_baseline(name: str, text_embeddings: np.ndarray, voxel_size: float) -> BaselineMethod:
    """One of "per_frame_masks", "iou_tracking", "voxel_fusion"."""
    makers = {
        "per_frame_masks": PerFrameMasksBaseline,
        "iou_tracking": IoUTrackingBaseline,
        "voxel_fusion": lambda: VoxelFusionBaseline(voxel_size=voxel_size),
    }
    if name not in makers:
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(makers)})")
    return BaselineMethod(makers[name](), EmbeddingLabeler(text_embeddings))


def timed(fn, *args) -> tuple[object, float]:
    """(fn(*args), seconds)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0
