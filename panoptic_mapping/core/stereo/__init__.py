"""Depth from posed RGB: ``plane_sweep`` (multi-view plane-sweep stereo, its multi-view
consistency filter and colour check, with :class:`StereoConfig`), ``completion`` (depth
filled inside the segmenter's masks) and ``stream`` (depth for frames as they arrive:
which earlier frames to match, and what to keep)."""
from panoptic_mapping.core.stereo.plane_sweep import (
    StereoConfig,
    consistency_filter,
    SweepResult,
    photometric_residual,
    plane_sweep,
    plane_sweep_depth,
)
from panoptic_mapping.core.stereo.stream import SourceView, StereoDepth, StereoEstimate

__all__ = ["StereoConfig", "SweepResult", "consistency_filter", "photometric_residual",
           "plane_sweep", "plane_sweep_depth",
           "SourceView", "StereoDepth", "StereoEstimate"]
