"""Training losses of the panoptic field (stateless; shapes in each docstring)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rgb_loss", "depth_loss", "semantic_loss", "instance_loss"]


def _masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return values.mean()
    n = valid.sum()
    if n == 0:
        return values.sum() * 0.0  # keeps the graph (and gradients of 0) alive
    return (values * valid).sum() / n


def rgb_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of (R, 3) colours in [0, 1]."""
    return ((pred - target) ** 2).mean()


def depth_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean absolute error [m] of (R,) depths over rays whose target is > 0 (known); with
    (R,) ``weight`` (a target's confidence in [0, 1]) the weighted mean over them."""
    valid = target > 0
    w = (valid.to(pred.dtype) if weight is None
         else torch.where(valid, weight, torch.zeros_like(weight)))
    # no known depth: 0 with gradients of 0 (and no device sync to ask)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1e-12)


def semantic_loss(pred_unit: Tensor, target_unit: Tensor, valid: Tensor) -> Tensor:
    """Mean cosine distance 1 - <p, t> of (R, D) unit embeddings over valid (R,) rays."""
    return _masked_mean(1.0 - (pred_unit * target_unit).sum(-1), valid)


def instance_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of (R, K) logits against (R,) class indices; index -1 is ignored."""
    valid = target >= 0
    if not valid.any():
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits[valid], target[valid])
