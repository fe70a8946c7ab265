"""The configured segmenter: ``frontend.segmenter.kind`` -> a :class:`Segmenter`.

Beside the segmenters rather than among them, so that each segmenter's module imports only
the interface (:mod:`panoptic_mapping.frontends.segmenters`) and this one imports them all.
"""
from __future__ import annotations

from pathlib import Path

import torch

from panoptic_mapping.frontends.config import SegmenterConfig
from panoptic_mapping.frontends.geometric import GeometricSegmenter
from panoptic_mapping.frontends.segmenters import (
    ClassicalSegmenter,
    FastSAMSegmenter,
    SAMSegmenter,
    Segmenter,
)

__all__ = ["make_segmenter", "segmenter_kind"]


def segmenter_kind(cfg: SegmenterConfig) -> str:
    """The kind 'auto' stands for: classical without a checkpoint, else by file suffix."""
    if cfg.kind != "auto":
        return cfg.kind
    if not cfg.checkpoint:
        return "classical"
    suffix = Path(cfg.checkpoint).suffix.lower()
    if suffix == ".pt":
        return "fastsam"
    if suffix == ".pth":
        return "sam"
    raise ValueError(f"frontend.segmenter.kind 'auto' cannot tell the model of '{cfg.checkpoint}' "
                     "(.pt = FastSAM, .pth = SAM); set frontend.segmenter.kind to fastsam or sam")


def make_segmenter(cfg: SegmenterConfig | None = None,
                   device: torch.device | str | None = None) -> Segmenter:
    """Build the configured segmenter (loads weights; call once at start-up).

    Raises:
        MissingWeightsError: the checkpoint of a model segmenter is missing or unreadable.
        ImportError: the model's optional package is not installed.
    """
    cfg = cfg or SegmenterConfig()
    kind = segmenter_kind(cfg)
    if kind == "classical":
        return ClassicalSegmenter.from_config(cfg)
    if kind == "fastsam":
        return FastSAMSegmenter(cfg, device)
    if kind == "sam":
        return SAMSegmenter(cfg, device)
    if kind == "geometric":
        return GeometricSegmenter.from_config(cfg)
    raise ValueError(f"unknown segmenter kind {kind!r}")
