"""The panoptic feature field: geometry + colour, a semantic branch and an instance branch.

Each branch has its own multiresolution hash grid (:mod:`panoptic_mapping.core.field.encoding`)
and a small MLP:

* geometry: grid -> MLP -> density (softplus, bounded below by 0) and a geometry feature;
  colour from the geometry feature (sigmoid, in [0, 1]);
* semantics (PVLFF-style distillation): grid -> MLP -> a compact feature (``semantic_dim``)
  that is composited along the ray and only then decoded by a linear layer to the
  vision-language embedding space and normalised (rendering 16 numbers instead of 512);
* instances: grid -> MLP -> a unit feature; an open-ended table of unit prototypes, one
  per map instance id, turns a rendered feature into bounded probabilities
  (softmax of cosine / temperature). The table grows as ids appear (no maximum count).

Neither the semantic nor the instance branch reads the geometry feature, and the trainer
composites them with detached weights, so no gradient from them reaches density
(Panoptic Lifting).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from panoptic_mapping.params import param
from panoptic_mapping.core.field.encoding import HashGridConfig, make_hash_grid

__all__ = ["FieldConfig", "PanopticField", "InstancePrototypes"]


@dataclass
class FieldConfig:
    """Sizes of the panoptic feature field."""

    geometry_grid: HashGridConfig = field(default_factory=HashGridConfig)
    semantic_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=8, log2_hashmap_size=14, finest_cell_m=0.04))
    instance_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=10, log2_hashmap_size=15, finest_cell_m=0.01))
    hidden_dim: int = param(64, "Width of the hidden layer of every branch's MLP.", minimum=8)
    geometry_feature_dim: int = param(15, "Geometry feature passed to the colour head.",
                                      minimum=1)
    semantic_dim: int = param(16, "Compact semantic feature rendered per ray, then decoded "
                              "to the embedding space.", minimum=2)
    instance_dim: int = param(16, "Dimension of the unit instance features and prototypes.",
                              minimum=2)
    instance_temperature: float = param(0.1, "Softmax temperature over cosine similarities "
                                        "of instance features and prototypes.", minimum=1e-3)
    density_scale: float = param(50.0, "Density = density_scale * softplus(raw - 1) [1/m].",
                                 minimum=1e-3)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))


class InstancePrototypes(nn.Module):
    """Unit prototype vectors for an open-ended set of map instance ids.

    Rows are handed out as ids appear; capacity doubles when full (the trainer moves the
    optimiser state along, see :meth:`grow`). Merged or deleted ids release their rows.
    """

    def __init__(self, dim: int, capacity: int = 64) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(capacity, dim) * 0.1)
        self.row_of: dict[int, int] = {}
        self._free: list[int] = list(range(capacity - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return self.weight.shape[0]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows (N,) int64 of instance ids (N,), creating rows for new ids; -1 for id 0."""
        out = np.full(len(ids), -1, dtype=np.int64)
        for k, i in enumerate(ids.tolist()):
            if i <= 0:
                continue
            row = self.row_of.get(i)
            if row is None:
                if not self._free:
                    self.grow()
                row = self._free.pop()
                self.row_of[i] = row
                with torch.no_grad():  # a fresh id starts from a random direction
                    self.weight[row] = torch.randn_like(self.weight[row]) * 0.1
            out[k] = row
        return out

    def release(self, ids: list[int]) -> None:
        """Forget ids (merged into others or deleted); their rows become free."""
        for i in ids:
            row = self.row_of.pop(int(i), None)
            if row is not None:
                self._free.append(row)

    def active(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids (K,), rows (K,)) of the ids holding a row, sorted by id."""
        items = sorted(self.row_of.items())
        return (np.array([i for i, _ in items], dtype=np.int64),
                np.array([r for _, r in items], dtype=np.int64))

    def grow(self) -> tuple[nn.Parameter, nn.Parameter]:
        """Double the capacity; returns (old, new) parameters for the optimiser."""
        old = self.weight
        extra = torch.randn(old.shape[0], old.shape[1], device=old.device) * 0.1
        self.weight = nn.Parameter(torch.cat([old.detach(), extra]))
        self._free = list(range(self.weight.shape[0] - 1, old.shape[0] - 1, -1)) + self._free
        self.on_grow(old, self.weight)
        return old, self.weight

    def on_grow(self, old: nn.Parameter, new: nn.Parameter) -> None:
        """Hook the trainer replaces to carry optimiser state over."""

    def unit(self, rows: np.ndarray | Tensor) -> Tensor:
        """(K, dim) unit prototypes of the given rows."""
        rows_t = torch.as_tensor(rows, device=self.weight.device)
        return nn.functional.normalize(self.weight[rows_t], dim=-1)


class PanopticField(nn.Module):
    """Geometry, colour, semantic and instance fields over world space (metres).

    Args:
        cfg: sizes.
        center: (3,) centre of the hash grids' cube, from the first frame's data.
        embedding_dim: dimension of the vision-language embeddings (0: no semantics).
        device: where the parameters live.
    """

    def __init__(self, cfg: FieldConfig, center: tuple[float, float, float],
                 embedding_dim: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.center = tuple(float(c) for c in center)
        self.embedding_dim = int(embedding_dim)
        h = cfg.hidden_dim
        self.geo_grid = make_hash_grid(cfg.geometry_grid, center, device)
        self.geo_mlp = _mlp(self.geo_grid.output_dim, h, 1 + cfg.geometry_feature_dim)
        self.color_mlp = _mlp(cfg.geometry_feature_dim, h, 3)
        self.sem_grid = make_hash_grid(cfg.semantic_grid, center, device)
        self.sem_mlp = _mlp(self.sem_grid.output_dim, h, cfg.semantic_dim)
        self.sem_decoder = nn.Linear(cfg.semantic_dim, max(self.embedding_dim, 1))
        self.inst_grid = make_hash_grid(cfg.instance_grid, center, device)
        self.inst_mlp = _mlp(self.inst_grid.output_dim, h, cfg.instance_dim)
        self.prototypes = InstancePrototypes(cfg.instance_dim)
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.geo_mlp[0].weight.device

    def geometry(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3) points -> density (N,) >= 0 [1/m] and geometry features (N, F)."""
        out = self.geo_mlp(self.geo_grid(x))
        sigma = self.cfg.density_scale * nn.functional.softplus(out[:, 0] - 1.0)
        return sigma, out[:, 1:]

    def density(self, x: Tensor) -> Tensor:
        """(N, 3) -> (N,) density, for occupancy refreshes."""
        return self.geometry(x)[0]

    def color(self, geo_features: Tensor) -> Tensor:
        """(N, F) geometry features -> (N, 3) RGB in [0, 1]."""
        return torch.sigmoid(self.color_mlp(geo_features))

    def semantic_features(self, x: Tensor) -> Tensor:
        """(N, 3) -> (N, semantic_dim) compact semantic features (composited, then decoded)."""
        return self.sem_mlp(self.sem_grid(x))

    def decode_semantics(self, features: Tensor) -> Tensor:
        """(R, semantic_dim) rendered features -> (R, embedding_dim) unit embeddings."""
        return nn.functional.normalize(self.sem_decoder(features), dim=-1)

    def instance_features(self, x: Tensor) -> Tensor:
        """(N, 3) -> (N, instance_dim) unit instance features."""
        return nn.functional.normalize(self.inst_mlp(self.inst_grid(x)), dim=-1)

    def instance_logits(self, features: Tensor, rows: np.ndarray | Tensor) -> Tensor:
        """(R, D) rendered unit features, prototype rows (K,) -> (R, K) logits.

        Cosine similarities divided by the temperature: bounded in [-1/T, 1/T].
        """
        return features @ self.prototypes.unit(rows).T / self.cfg.instance_temperature
