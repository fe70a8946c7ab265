"""The mapper: the one object the node and the benchmark talk to.

It validates frames, keeps the instance map and the vocabulary, and answers renderings,
InstanceLoc and text queries. Every public method is thread-safe (one lock; readers get
copies).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from panoptic_mapping.core.frames import Frame, validate_frame
from panoptic_mapping.core.instances import InstanceConfig, InstanceMap
from panoptic_mapping.core.semantics import SemanticConfig, Vocabulary

__all__ = ["MapperConfig", "Mapper", "IngestReport", "Localization"]


@dataclass
class MapperConfig:
    """Configuration of the mapping core."""

    instances: InstanceConfig = field(default_factory=InstanceConfig)
    semantics: SemanticConfig = field(default_factory=SemanticConfig)


@dataclass
class IngestReport:
    """What one frame did to the map.

    Attributes:
        labels: (H, W) int32 map ids assigned online to the frame's pixels (0 = none).
        new_ids: ids the frame created.
        integrated: False when the frame could not be fused (e.g. no depth and no field).
    """

    labels: np.ndarray
    new_ids: list[int]
    integrated: bool


@dataclass
class Localization:
    """InstanceLoc answer for one frame.

    Attributes:
        ids: (H, W) int32 map instance id per pixel (0 = none).
        matches: per localized mask: (mask id, map id, confidence = vote share).
    """

    ids: np.ndarray
    matches: list[tuple[int, int, float]]


class Mapper:
    """Online panoptic mapping core (ROS-free)."""

    def __init__(self, cfg: MapperConfig | None = None, embedding_dim: int | None = None):
        self.cfg = cfg or MapperConfig()
        self._lock = threading.RLock()
        self.instances = InstanceMap(self.cfg.instances, embedding_dim)
        self.vocabulary = Vocabulary(self.cfg.semantics)
        self.frames_ingested = 0

    # ------------------------------------------------------------------ input

    def ingest(self, frame: Frame) -> IngestReport:
        """Validate and fuse one frame. Raises FrameError (map untouched) on bad input."""
        frame = validate_frame(frame)
        with self._lock:
            self.frames_ingested += 1
            if frame.masks is None or frame.depth is None or not (frame.depth > 0).any():
                return IngestReport(np.zeros(frame.shape, np.int32), [], False)
            result = self.instances.process_frame(frame.masks, frame.depth, frame.K,
                                                  frame.camera_to_world, frame.mask_embeddings)
            return IngestReport(result.labels, result.new_ids, True)

    # ------------------------------------------------------------------ output

    def render_instances(self, K: np.ndarray, camera_to_world: np.ndarray,
                         depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) int32 confirmed map ids and (H, W) confidences at a view with depth."""
        return self.instances.render_view(depth, K, camera_to_world, confirmed_only=True)

    def instance_labels(self) -> dict[int, tuple[int, float]]:
        """Confirmed instance id -> (vocabulary label id, confidence)."""
        emb = self.instances.instance_embeddings()
        if not emb:
            return {}
        ids = list(emb)
        labels, conf = self.vocabulary.classify(np.stack([emb[i] for i in ids]))
        return {i: (int(l), float(c)) for i, l, c in zip(ids, labels, conf)}

    def semantic_image(self, instance_ids: np.ndarray) -> np.ndarray:
        """(H, W) int32 label ids of an instance-id image (0 where no instance)."""
        table = self.instance_labels()
        uniq, inv = np.unique(instance_ids, return_inverse=True)
        lut = np.array([table.get(int(u), (0, 0.0))[0] for u in uniq], dtype=np.int32)
        return lut[inv].reshape(instance_ids.shape)

    def localize(self, frame: Frame, min_share: float = 0.3) -> Localization:
        """InstanceLoc: which map instances the frame's masks show. Needs masks and depth."""
        frame = validate_frame(frame)
        if frame.masks is None or frame.depth is None:
            raise ValueError("localize needs the frame's masks and depth")
        ids, answers = self.instances.localize(frame.masks, frame.depth, frame.K,
                                               frame.camera_to_world, min_share)
        return Localization(ids, [(m, i, s) for m, (i, s) in sorted(answers.items())])
