"""The mapping core behind the benchmark's Method interface."""
from __future__ import annotations

import time

import numpy as np

from panoptic_mapping.bench.types import MaskFrame, Scene, SceneFrame
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.mapper import Mapper

__all__ = ["MapperMethod"]


def to_frame(frame: SceneFrame, masks: MaskFrame, use_depth: bool) -> Frame:
    """The mapper's input for a benchmark frame: images, pose and front-end output only."""
    return Frame(rgb=frame.rgb, K=frame.K, camera_to_world=frame.camera_to_world,
                 stamp=frame.stamp, depth=frame.depth if use_depth else None,
                 masks=masks.labels if masks.labels.max() > 0 else None,
                 mask_embeddings=masks.embeddings if masks.labels.max() > 0 else None,
                 mask_scores=masks.scores if masks.labels.max() > 0 else None)


class MapperMethod:
    """Runs :class:`~panoptic_mapping.core.mapper.Mapper` in the benchmark."""

    name = "mapper"
    supports_localization = True
    renders_map = True

    def __init__(self, cfg, scene: Scene, text_embeddings: np.ndarray) -> None:
        self.cfg = cfg
        self.mapper = Mapper(embedding_dim=text_embeddings.shape[1])
        # label ids 1..C of the vocabulary are the scene's classes 1..C
        self.mapper.vocabulary.set(scene.classes[1:], text_embeddings)
        self.scene = scene

    def ingest(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.ingest(to_frame(frame, masks, self.cfg.use_depth)).labels

    def finish(self, budget_s: float) -> dict:
        return {}

    def instance_image(self, frame: SceneFrame) -> np.ndarray:
        ids, _ = self.mapper.render_instances(frame.K, frame.camera_to_world, frame.depth)
        return ids

    def semantic_image(self, frame: SceneFrame, instances: np.ndarray) -> np.ndarray:
        sem = self.mapper.semantic_image(instances)
        sem[sem > len(self.scene.classes) - 1] = 0  # "other" is no benchmark class
        return sem

    def localize(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.localize(to_frame(frame, masks, True)).ids

    def extra_metrics(self, frames: list[SceneFrame]) -> dict:
        return {"instances": self.mapper.instances.stats()}
