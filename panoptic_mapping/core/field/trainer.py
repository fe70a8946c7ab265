"""Incremental training of the panoptic field from the keyframe buffer.

``step()`` draws rays from the keyframes (recent ones favoured, old ones never forgotten:
:meth:`KeyframeBuffer.sample_keyframes`), samples points along them (depth-guided where
depth is known, occupied space otherwise), renders colour, depth, semantics and instance
features, and takes one optimiser step. It runs for as long as it is called.

Keyframes without a depth camera (stereo depth, or none) spend the free-space samples of
their rays in the occupied voxels in front of the depth
(``SamplingConfig.free_space_occupied_samples``): where a view rendered later looks first,
and where a stereo outlier would otherwise leave a floater. They can also learn depth from
a ``depth_prior`` instead of their own: the mapper can pass the instance map's surfaces
drawn at the keyframe, which fuse every frame's stereo (``rgb_only_depth_targets``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from panoptic_mapping.params import param
from panoptic_mapping.core.field.panoptic_field import PanopticField
from panoptic_mapping.core.field.keyframes import Keyframe, KeyframeBuffer
from panoptic_mapping.core.field.renderer import render_rays
from panoptic_mapping.core.field.losses import depth_loss, instance_loss, rgb_loss, semantic_loss
from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.sampling import SamplingConfig, pixel_rays, sample_rays

__all__ = ["TrainerConfig", "Trainer", "RayBatch"]


@dataclass
class TrainerConfig:
    """Optimisation of the field."""

    rays_per_step: int = param(1024, "Rays per optimiser step (4096+ on a GPU).", minimum=16)
    learning_rate: float = param(1e-2, "Adam learning rate.", minimum=0.0)
    rgb_weight: float = param(1.0, "Weight of the colour loss.", minimum=0.0)
    depth_weight: float = param(0.5, "Weight of the depth loss [per metre].", minimum=0.0)
    depth_confidence: bool = param(True, "Weigh each ray's depth loss by its depth's "
                                   "confidence: stereo depth (frames without a depth "
                                   "camera) is a prior as good as the sweep's confidence "
                                   "in it; measured depth counts fully.")
    semantic_weight: float = param(0.2, "Weight of the semantic distillation loss.",
                                   minimum=0.0)
    instance_weight: float = param(0.2, "Weight of the instance label loss.", minimum=0.0)
    seed: int = param(0, "Seed of the ray and sample draws.")
    prior_refresh_steps: int = param(
        50, "Steps after which a keyframe's depth prior (frames without a depth camera) "
        "is drawn again from the map, which keeps growing.", minimum=1)
    prior_draws_per_step: int = param(
        4, "Most keyframes whose depth prior is drawn in one step (bounds a step's cost; "
        "the others keep their last prior, or their own depth, meanwhile).", minimum=1)


@dataclass
class RayBatch:
    """Rays drawn from keyframes with their targets.

    Attributes:
        origins, dirs: (R, 3); z_scale: (R,) optical depth per unit of ray length.
        rgb: (R, 3) in [0, 1]; depth: (R,) metres, 0 = unknown; depth_confidence: (R,)
            in [0, 1] (1 for measured depth).
        embedding: (R, D) unit target embeddings; has_embedding: (R,) bool.
        instance: (R,) int64 map instance ids (0 = none).
        estimated: (R,) bool, the ray's depth is an estimate (stereo or a prior), not
            measured; None: all measured.
    """

    origins: Tensor
    dirs: Tensor
    z_scale: Tensor
    rgb: Tensor
    depth: Tensor
    embedding: Tensor
    has_embedding: Tensor
    instance: np.ndarray
    depth_confidence: Tensor | None = None
    estimated: Tensor | None = None


# A keyframe -> (H, W) float32 depth to learn instead of its own (0 = none), or None.
DepthPrior = Callable[[Keyframe], "np.ndarray | None"]


class Trainer:
    """Owns the optimiser; one :meth:`step` = one batch of rays.

    Args:
        label_lut: callable returning an (n_ids,) int64 array mapping every instance id
            ever issued to its current id (0 for deleted ones), so keyframe labels written
            before merges still train the right prototype.
        depth_prior: for keyframes without measured depth, the depth to learn instead of
            their own (see the module docstring); None: their own.
    """

    def __init__(self, cfg: TrainerConfig, field: PanopticField, keyframes: KeyframeBuffer,
                 grid: OccupancyGrid, sampling: SamplingConfig,
                 label_lut: Callable[[], np.ndarray],
                 depth_prior: DepthPrior | None = None) -> None:
        self.cfg, self.field, self.keyframes = cfg, field, keyframes
        self.grid, self.sampling, self.label_lut = grid, sampling, label_lut
        self.optimizer = torch.optim.Adam(field.parameters(), lr=cfg.learning_rate,
                                          eps=1e-15)
        field.prototypes.on_grow = self._replace_parameter
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.steps = 0
        self.seconds = 0.0
        self.last_losses: dict[str, float] = {}
        self._cache: dict[int, tuple[int, dict[str, Tensor]]] = {}
        self.depth_prior = depth_prior
        # keyframe id -> (step it was drawn at, (H * W,) float32 prior depth or None:
        # nothing drawn)
        self._priors: dict[int, tuple[int, Tensor | None]] = {}

    # ------------------------------------------------------------------ optimiser

    def _replace_parameter(self, old: torch.nn.Parameter, new: torch.nn.Parameter) -> None:
        """Swap a grown parameter into Adam, keeping its moments for the old rows."""
        for group in self.optimizer.param_groups:
            for k, p in enumerate(group["params"]):
                if p is old:
                    group["params"][k] = new
        state = self.optimizer.state.pop(old, None)
        if state:
            pad = new.shape[0] - old.shape[0]
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state[key]
                state[key] = torch.cat([moment, moment.new_zeros(pad, *moment.shape[1:])])
            self.optimizer.state[new] = state

    # ------------------------------------------------------------------ data

    def _tensors(self, kf: Keyframe) -> dict[str, Tensor]:
        """Per-keyframe tensors, cached until the keyframe's labels change."""
        cached = self._cache.get(kf.id)
        if cached is not None and cached[0] == kf.version:
            return cached[1]
        f = kf.frame
        h, w = f.shape
        t = {"rgb": torch.from_numpy(f.rgb.reshape(-1, 3).astype(np.float32) / 255.0),
             "depth": torch.from_numpy((f.depth if f.depth is not None
                                        else np.zeros((h, w), np.float32)).reshape(-1)),
             "masks": torch.from_numpy((f.masks if f.masks is not None
                                        else np.zeros((h, w), np.int32)).reshape(-1).astype(np.int64)),
             "labels": torch.from_numpy((kf.labels if kf.labels is not None
                                         else np.zeros((h, w), np.int32)).reshape(-1).astype(np.int64)),
             "depth_confidence": torch.from_numpy(
                 (f.depth_confidence if f.depth_confidence is not None
                  else np.ones((h, w), np.float32)).reshape(-1)),
             "K": torch.as_tensor(f.K, dtype=torch.float32),
             "pose": torch.as_tensor(f.camera_to_world, dtype=torch.float32)}
        if f.mask_embeddings is not None:
            t["emb"] = torch.from_numpy(f.mask_embeddings)
        if f.seen is not None:  # an undistorted frame: rays only where the camera saw
            t["seen"] = torch.from_numpy(np.flatnonzero(f.seen))
        self._cache[kf.id] = (kf.version, t)
        return t

    def sample_batch(self) -> RayBatch | None:
        """Draw ``rays_per_step`` pixels from the keyframes (None when there are none)."""
        snapshot = {kf.id: kf for kf in self.keyframes.snapshot()}
        for stale in set(self._cache) - set(snapshot):
            del self._cache[stale]
        for stale in set(self._priors) - set(snapshot):
            del self._priors[stale]
        if not snapshot:
            return None
        ids = self.keyframes.sample_keyframes(self.cfg.rays_per_step, self.rng)
        drawn, counts = np.unique(ids, return_counts=True)
        self._refresh_priors([snapshot[int(k)] for k in drawn if int(k) in snapshot])
        parts = []
        for kid, count in zip(drawn, counts):
            kf = snapshot.get(int(kid))
            if kf is None:
                continue
            t = self._tensors(kf)
            estimated = not _measured(kf)
            prior = self._priors.get(kf.id)
            if prior is not None and prior[1] is not None:  # it replaces the own depth
                t = {**t, "depth": prior[1],
                     "depth_confidence": torch.ones_like(prior[1])}
            h, w = kf.frame.shape
            if "seen" in t:
                flat = t["seen"][torch.from_numpy(self.rng.integers(0, len(t["seen"]),
                                                                    size=count))]
            else:
                flat = torch.from_numpy(self.rng.integers(0, h * w, size=count))
            pix = torch.stack([(flat % w).float(), (flat // w).float()], dim=1)
            o, d, z = pixel_rays(t["K"], t["pose"], pix)
            m = t["masks"][flat]
            emb_dim = max(self.field.embedding_dim, 1)
            emb = torch.zeros(len(flat), emb_dim)
            has = torch.zeros(len(flat), dtype=torch.bool)
            if "emb" in t:
                has = m > 0
                emb[has] = t["emb"][m[has] - 1]
            parts.append((o, d, z, t["rgb"][flat], t["depth"][flat], emb, has,
                          t["labels"][flat].numpy(), t["depth_confidence"][flat],
                          torch.full((len(flat),), estimated, dtype=torch.bool)))
        if not parts:
            return None
        cat = lambda k: torch.cat([p[k] for p in parts])  # noqa: E731
        estimated = cat(9)
        return RayBatch(cat(0), cat(1), cat(2), cat(3), cat(4), cat(5), cat(6),
                        np.concatenate([p[7] for p in parts]), cat(8),
                        estimated if bool(estimated.any()) else None)

    def _refresh_priors(self, keyframes: list[Keyframe]) -> None:
        """Draw the depth priors of the batch's keyframes that have none yet, then of
        those drawn longest ago (older than ``prior_refresh_steps``), at most
        ``prior_draws_per_step`` of them."""
        if self.depth_prior is None:
            return
        due = []
        for kf in keyframes:
            if _measured(kf):
                continue
            at = self._priors[kf.id][0] if kf.id in self._priors else None
            if at is None or self.steps - at >= self.cfg.prior_refresh_steps:
                due.append((-1 if at is None else at, kf.id, kf))
        for _, _, kf in sorted(due, key=lambda d: d[:2])[:self.cfg.prior_draws_per_step]:
            depth = self.depth_prior(kf)
            if depth is None or not bool((depth > 0).any()):
                # nothing drawn there yet: the own depth, asked again when due
                self._priors[kf.id] = (self.steps, None)
                continue
            self._priors[kf.id] = (self.steps, torch.from_numpy(
                np.ascontiguousarray(depth, dtype=np.float32).reshape(-1)))

    # ------------------------------------------------------------------ step

    def step(self) -> dict[str, float]:
        """One optimiser step; returns the losses (empty when there is nothing to learn)."""
        t0 = time.perf_counter()
        batch = self.sample_batch()
        if batch is None:
            return {}
        dev = self.field.device
        o, d, z = batch.origins.to(dev), batch.dirs.to(dev), batch.z_scale.to(dev)
        depth = batch.depth.to(dev)
        has_depth = bool((depth > 0).any())
        samples = sample_rays(o, d, z, depth if has_depth else None, self.grid,
                              self.sampling, self.generator,
                              occupied_free=batch.estimated)
        out = render_rays(self.field, o, d, samples)
        losses = {"rgb": rgb_loss(out["rgb"], batch.rgb.to(dev)),
                  "depth": depth_loss(out["depth"] * z, depth, self._depth_weight(batch))}
        total = self.cfg.rgb_weight * losses["rgb"] + self.cfg.depth_weight * losses["depth"]
        if self.field.embedding_dim > 0 and bool(batch.has_embedding.any()):
            pred = self.field.decode_semantics(out["semantic"])
            losses["semantic"] = semantic_loss(pred, batch.embedding.to(dev),
                                               batch.has_embedding.to(dev))
            total = total + self.cfg.semantic_weight * losses["semantic"]
        target = self._instance_targets(batch.instance)
        if target is not None:
            rows, idx = target
            logits = self.field.instance_logits(out["instance"], rows)
            losses["instance"] = instance_loss(logits, torch.as_tensor(idx, device=dev))
            total = total + self.cfg.instance_weight * losses["instance"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.steps += 1
        self.seconds += time.perf_counter() - t0
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        return self.last_losses

    def _depth_weight(self, batch: RayBatch) -> Tensor | None:
        """(R,) confidence of each ray's depth target, or None (all count fully)."""
        if not self.cfg.depth_confidence or batch.depth_confidence is None:
            return None
        return batch.depth_confidence.to(self.field.device)

    def _instance_targets(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(prototype rows (K,), per-ray index into them (R,), -1 = none) or None."""
        lut = self.label_lut()
        ids = np.where(labels < len(lut), lut[np.minimum(labels, len(lut) - 1)], 0)
        present = np.unique(ids[ids > 0])
        if present.size == 0:
            return None
        protos = self.field.prototypes
        active_ids, _ = protos.active()
        # merged or deleted ids give their rows back; survivors keep learning
        protos.release(active_ids[lut[np.minimum(active_ids, len(lut) - 1)] != active_ids])
        protos.rows(present)  # rows for new ids (may grow the table)
        active_ids, active_rows = protos.active()
        pos = np.searchsorted(active_ids, ids)
        pos = np.minimum(pos, len(active_ids) - 1)
        idx = np.where((ids > 0) & (active_ids[pos] == ids), pos, -1)
        return active_rows, idx

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def _measured(kf: Keyframe) -> bool:
    """Whether the keyframe's depth came from a depth camera (stereo depth carries a
    confidence; a frame without depth has none to learn)."""
    return kf.frame.depth is not None and kf.frame.depth_confidence is None
