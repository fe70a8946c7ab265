"""Data shared by the benchmark's scenes, front-ends, baselines and metrics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SceneFrame", "Scene", "MaskFrame", "VOID"]

VOID = 0  # id of "no ground truth" in instance and semantic images


@dataclass
class SceneFrame:
    """One view (rendered or recorded) with its ground truth, when it has any.

    Attributes:
        index: position in the trajectory.
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 metric depth along the optical axis; 0 where nothing was hit.
        instance: (H, W) int32 ground-truth instance id; VOID (0) = no ground truth.
            Ids are unique per scene over things and stuff alike. None for a recorded
            sequence without ground truth (see :attr:`Scene.has_ground_truth`).
        semantic: (H, W) int32 ground-truth class id (index into Scene.classes); VOID = none.
            None when ``instance`` is None.
        K: (3, 3) float64 pinhole intrinsics.
        camera_to_world: (4, 4) float64, OpenCV optical convention (x right, y down,
            z forward).
        stamp: seconds since the start of the sequence.
    """

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray | None
    semantic: np.ndarray | None
    K: np.ndarray
    camera_to_world: np.ndarray
    stamp: float


@dataclass
class Scene:
    """A rendered scene: a training trajectory, held-out novel views and the label tables.

    Attributes:
        name: scene family and parameters, e.g. "tabletop-seed0".
        frames: the trajectory the mapper ingests, in order.
        novel_frames: held-out views (a second trajectory) for InstanceLoc and novel-view
            metrics.
        classes: class names; classes[0] == "void".
        thing_classes: ids of classes that are countable objects (the rest are stuff).
        instance_class: ground-truth instance id -> class id.
        config: every parameter the scene was made with (JSON-serialisable).
    """

    name: str
    frames: list[SceneFrame]
    novel_frames: list[SceneFrame]
    classes: list[str]
    thing_classes: set[int]
    instance_class: dict[int, int]
    config: dict = field(default_factory=dict)

    @property
    def has_ground_truth(self) -> bool:
        """True when every frame (training and held-out) carries instance and semantic
        ground truth; an imported recording (``bench.importers``) has none."""
        return all(f.instance is not None and f.semantic is not None
                   for f in (*self.frames, *self.novel_frames))


@dataclass
class MaskFrame:
    """What a 2D front-end produced for one frame.

    Attributes:
        labels: (H, W) int32 non-overlapping class-agnostic masks, 0 = no mask, ids 1..M
            compact and meaningless across frames.
        scores: (M,) float32 confidence per mask (index i belongs to label i + 1).
        embeddings: (M, D) float32 L2-normalised vision-language embedding per mask, or None.
    """

    labels: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray | None = None
