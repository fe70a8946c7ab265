"""The mapping core behind the benchmark's Method interface."""
from __future__ import annotations

import time

import numpy as np

from panoptic_mapping.bench.types import MaskFrame, Scene, SceneFrame
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.bench import metrics
from panoptic_mapping.core.mapper import Mapper, MapperConfig
from panoptic_mapping.params import config_from_flat

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

    # share of the training budget spent while the frames stream in (the rest after)
    ONLINE_SHARE = 0.5

    def __init__(self, cfg, scene: Scene, text_embeddings: np.ndarray) -> None:
        self.cfg = cfg
        mcfg = config_from_flat({**cfg.mapper_set, "device": cfg.device}, MapperConfig)
        self.mapper = Mapper(mcfg, embedding_dim=text_embeddings.shape[1])
        self.train_per_frame_s = cfg.train_seconds * self.ONLINE_SHARE / max(cfg.frames, 1)
        self._train_credit_s = 0.0
        # label ids 1..C of the vocabulary are the scene's classes 1..C
        self.mapper.vocabulary.set(scene.classes[1:], text_embeddings)
        self.scene = scene

    def ingest(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.ingest(to_frame(frame, masks, self.cfg.use_depth)).labels

    def between_frames(self) -> None:
        # A step may take longer than a frame's share of the budget (a 320x240 step on 2
        # CPU cores: ~2 s against a 0.3 s share): the overshoot is paid back by the frames
        # that follow, so the stream trains for its budget, not for one step per frame.
        self._train_credit_s += self.train_per_frame_s
        if self._train_credit_s > 0:
            t0 = time.perf_counter()
            self.mapper.train_for(self._train_credit_s)
            self._train_credit_s -= time.perf_counter() - t0

    def finish(self, budget_s: float) -> dict:
        t0 = time.perf_counter()
        self.mapper.train_for(budget_s * (1.0 - self.ONLINE_SHARE))
        stats = self.mapper.stats()
        return {"train_steps": stats["training_steps"],
                "train_steps_per_s": stats["training_steps_per_s"],
                "train_after_stream_s": time.perf_counter() - t0,
                "keyframes": stats["keyframes"], "final_losses": stats["losses"]}

    def instance_image(self, frame: SceneFrame) -> np.ndarray:
        depth = frame.depth if self.cfg.use_depth else None
        return self.mapper.render_instances(frame.K, frame.camera_to_world, depth,
                                            frame.rgb.shape[:2])

    def semantic_image(self, frame: SceneFrame, instances: np.ndarray) -> np.ndarray:
        sem = self.mapper.semantic_image(instances)
        sem[sem > len(self.scene.classes) - 1] = 0  # "other" is no benchmark class
        return sem

    def localize(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.localize(to_frame(frame, masks, self.cfg.use_depth)).ids

    def labeled_cloud(self):
        """The map's labeled cloud (what RViz and get_instance show)."""
        return self.mapper.labeled_cloud()

    def extra_metrics(self, frames: list[SceneFrame]) -> dict:
        """Novel-view PSNR and depth error of the field, and the instance map's counts.

        An untrained field (``--train-seconds 0``) is not rendered: its views say nothing
        and cost tens of seconds each on the CPU.
        """
        stereo = {} if self.mapper.stereo is None else {"stereo": self.mapper.stereo.stats()}
        if self.mapper.stats()["training_steps"] == 0:
            return {"instances": self.mapper.instances.stats(), **stereo}
        psnr, depth_mae = [], []
        t0 = time.perf_counter()
        for f in frames:
            rgb, depth = self.mapper.render_rgbd(f.K, f.camera_to_world, f.rgb.shape[:2])
            psnr.append(metrics.psnr(rgb, f.rgb))
            depth_mae.append(metrics.depth_errors(depth, f.depth, (f.depth > 0) & (depth > 0))["mae"])
        return {"novel_psnr": float(np.mean(psnr)), "novel_depth_mae": float(np.nanmean(depth_mae)),
                "render_ms_per_view": 1000 * (time.perf_counter() - t0) / max(len(frames), 1),
                "instances": self.mapper.instances.stats(), **stereo}
