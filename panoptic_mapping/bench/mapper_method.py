"""The mapping core behind the benchmark's Method interface."""
from __future__ import annotations

import time

import numpy as np

from panoptic_mapping.bench.types import MaskFrame, Scene, SceneFrame
from panoptic_mapping.core.frames import Frame
from panoptic_mapping.bench import metrics
from panoptic_mapping.bench.lens import parse_lens, scene_lens
from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.core.lens import LensDistortion, undistortion_for
from panoptic_mapping.core.mapper import Mapper, MapperConfig
from panoptic_mapping.core.semantics import LABEL_SOURCES
from panoptic_mapping.params import config_from_flat

__all__ = ["MapperMethod"]


def to_frame(frame: SceneFrame, masks: MaskFrame, use_depth: bool,
             lens: LensDistortion | None = None) -> Frame:
    """The mapper's input for a benchmark frame: images, pose and front-end output only
    (and the lens its images carry, when the mapper is told)."""
    return Frame(rgb=frame.rgb, K=frame.K, camera_to_world=frame.camera_to_world,
                 stamp=frame.stamp, depth=frame.depth if use_depth else None,
                 masks=masks.labels if masks.labels.max() > 0 else None,
                 mask_embeddings=masks.embeddings if masks.labels.max() > 0 else None,
                 mask_scores=masks.scores if masks.labels.max() > 0 else None, lens=lens)


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
        # a step budget instead (train_steps): the same training on any machine and load
        self.train_steps = cfg.train_steps
        self.steps_per_frame = (0.0 if not self.train_steps
                                else self.train_steps * self.ONLINE_SHARE / max(cfg.frames, 1))
        self._step_credit = 0.0
        # label ids 1..C of the vocabulary are the scene's classes 1..C
        self.mapper.vocabulary.set(scene.classes[1:], text_embeddings)
        self.scene = scene
        # views of a distorted scene (--lens) or a recording's raw images (its
        # scene.json's lens): told to the mapper, or not (--lens-mode ignore)
        lens = parse_lens(cfg.lens) if getattr(cfg, "lens", None) else scene_lens(scene)
        self.lens = lens if getattr(cfg, "lens_mode", "undistort") == "undistort" else None

    def _undistortion(self, frame: SceneFrame):
        """The maps between the view's raw pixels and the map's pinhole ones, or None."""
        return (None if self.lens is None
                else undistortion_for(frame.K, self.lens, frame.rgb.shape[:2]))

    def ingest(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.ingest(to_frame(frame, masks, self.cfg.use_depth,
                                           self.lens)).labels

    def between_frames(self) -> None:
        # A step may take longer than a frame's share of the budget (a 320x240 step on 2
        # CPU cores: ~2 s against a 0.3 s share): the overshoot is paid back by the frames
        # that follow, so the stream trains for its budget, not for one step per frame.
        if self.train_steps:
            self._step_credit += self.steps_per_frame
            steps = int(self._step_credit)
            if steps > 0:
                self.mapper.train(steps)
                self._step_credit -= steps
            return
        self._train_credit_s += self.train_per_frame_s
        if self._train_credit_s > 0:
            t0 = time.perf_counter()
            self.mapper.train_for(self._train_credit_s)
            self._train_credit_s -= time.perf_counter() - t0

    def finish(self, budget_s: float) -> dict:
        t0 = time.perf_counter()
        if self.train_steps:
            done = int(self.mapper.stats()["training_steps"])
            self.mapper.train(max(self.train_steps - done, 0))
        else:
            self.mapper.train_for(budget_s * (1.0 - self.ONLINE_SHARE))
        stats = self.mapper.stats()
        return {"train_steps": stats["training_steps"],
                "train_steps_per_s": stats["training_steps_per_s"],
                "train_after_stream_s": time.perf_counter() - t0,
                "keyframes": stats["keyframes"], "final_losses": stats["losses"]}

    def instance_image(self, frame: SceneFrame) -> np.ndarray:
        depth = frame.depth if self.cfg.use_depth else None
        return self.mapper.render_instances(frame.K, frame.camera_to_world, depth,
                                            frame.rgb.shape[:2], self.lens)

    def semantic_image(self, frame: SceneFrame, instances: np.ndarray) -> np.ndarray:
        sem = self.mapper.semantic_image(instances)
        sem[sem > len(self.scene.classes) - 1] = 0  # "other" is no benchmark class
        return sem

    def localize(self, frame: SceneFrame, masks: MaskFrame) -> np.ndarray:
        return self.mapper.localize(to_frame(frame, masks, self.cfg.use_depth,
                                             self.lens)).ids

    def labeled_cloud(self):
        """The map's labeled cloud (what RViz and get_instance show)."""
        return self.mapper.labeled_cloud()

    def extra_metrics(self, frames: list[SceneFrame]) -> dict:
        """Novel-view PSNR and depth error of the field, and the instance map's counts.

        An untrained field (``--train-seconds 0``) is not rendered: its views say nothing
        and cost tens of seconds each on the CPU.
        """
        stereo = {} if self.mapper.stereo is None else {"stereo": self.mapper.stereo.stats()}
        sem = self.semantic_metrics(frames)
        if self.mapper.stats()["training_steps"] == 0:
            return {"instances": self.mapper.instances.stats(), **stereo, **sem}
        psnr, depth_mae = [], []
        t0 = time.perf_counter()
        for f in frames:
            u = self._undistortion(f)
            if u is None:
                rgb, depth = self.mapper.render_rgbd(f.K, f.camera_to_world, f.rgb.shape[:2])
            else:  # the scene's views are raw images
                rgb, depth = self.mapper.render_rgbd(u.K_pinhole, f.camera_to_world,
                                                     u.pinhole_shape)
                rgb, depth = u.image_to_raw(rgb), u.to_raw(depth)
            psnr.append(metrics.psnr(rgb, f.rgb))
            depth_mae.append(metrics.depth_errors(depth, f.depth, (f.depth > 0) & (depth > 0))["mae"])
        return {"novel_psnr": float(np.mean(psnr)), "novel_depth_mae": float(np.nanmean(depth_mae)),
                "render_ms_per_view": 1000 * (time.perf_counter() - t0) / max(len(frames), 1),
                "instances": self.mapper.instances.stats(), **stereo, **sem}

    def semantic_metrics(self, frames: list[SceneFrame]) -> dict:
        """Both label sources side by side, and per-point text queries, on held-out views.

        * ``mIoU_masks`` / ``mIoU_voxels``: semantic mIoU of the map's instances rendered
          at the views, labelled from each source (:meth:`Mapper.instance_embeddings`).
        * ``point_query_IoU``: for each class present, the points (the views' pixels at
          ground-truth depth) whose relevance to the class's name reaches
          ``semantics.query_threshold`` against the class's points; mean over classes
          (``point_query_IoU_per_class`` by name).
        * ``point_query_ms_200k``: one query over 200k points of the labeled cloud
          (repeated to 200k), the features' copy already taken.
        """
        n_cls = len(self.scene.classes)
        if not frames or self.mapper.instances.features is None:
            return {}
        inst = [self.instance_image(f) for f in frames]
        gt = [f.semantic for f in frames]
        out = {}
        for source in LABEL_SOURCES:
            sem = []
            for i in inst:
                s = self.mapper.semantic_image(i, source)
                s[s > n_cls - 1] = 0
                sem.append(s)
            out[f"mIoU_{source}"] = metrics.mean_iou(sem, gt, n_cls)["mIoU"]
        pts, cls = [], []
        for f in frames:
            p, flat = backproject(f.depth, f.K, f.camera_to_world)
            pts.append(p)
            cls.append(f.semantic.reshape(-1)[flat])
        pts, cls = np.concatenate(pts), np.concatenate(cls)
        text = self.mapper.vocabulary.text_embeddings()
        thr = self.mapper.cfg.semantics.query_threshold
        per_class = {}
        for c in range(1, n_cls):
            truth = cls == c
            if not truth.any():
                continue
            hit = self.mapper.point_relevance(pts, text[c - 1]) >= thr
            per_class[self.scene.classes[c]] = float((hit & truth).sum() / (hit | truth).sum())
        out["point_query_IoU"] = float(np.mean(list(per_class.values()))) if per_class else 0.0
        out["point_query_IoU_per_class"] = per_class
        # the map's own points, as the query service asks about them
        cloud = self.mapper.labeled_cloud().xyz
        many = cloud[np.resize(np.arange(len(cloud)), 200_000)] if len(cloud) else pts
        t0 = time.perf_counter()
        self.mapper.point_relevance(many, text[0])
        out["point_query_ms_200k"] = 1000 * (time.perf_counter() - t0)
        return out
