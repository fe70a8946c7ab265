"""2D front-ends: class-agnostic segmenters, vision-language embeddings, the worker thread.

ROS-free (``test/test_layers.py`` checks it): numpy, torch, scipy and
scikit-image at import; ultralytics (FastSAM), segment-anything (SAM) and open_clip only
inside the constructors that need them, so each stays an optional extra.

* :mod:`.config` - ``SegmenterConfig``, ``EmbedderConfig``, ``WorkerConfig``.
* :mod:`.segmenters` - ``Segmenter`` interface, ``ClassicalSegmenter``, ``FastSAMSegmenter``,
  ``SAMSegmenter``, ``make_segmenter``, ``MissingWeightsError``.
* :mod:`.postprocess` - the mask post-processing all segmenters share.
* :mod:`.embeddings` - ``OpenClipEmbedder`` (per-mask image and cached text embeddings).
* :mod:`.worker` - ``SegmentationWorker`` (latest-only queue, ordered results, stats).
* :mod:`.benchmark` - ``python -m panoptic_mapping.tools.frontend_benchmark``: per-frame latency.
"""
from panoptic_mapping.frontends.config import (
    EmbedderConfig,
    SegmenterConfig,
    WorkerConfig,
)
from panoptic_mapping.frontends.segmenters import (
    ClassicalSegmenter,
    FastSAMSegmenter,
    MissingWeightsError,
    SAMSegmenter,
    Segmentation,
    Segmenter,
    make_segmenter,
)

__all__ = [
    "EmbedderConfig",
    "SegmenterConfig",
    "WorkerConfig",
    "ClassicalSegmenter",
    "FastSAMSegmenter",
    "MissingWeightsError",
    "SAMSegmenter",
    "Segmentation",
    "Segmenter",
    "make_segmenter",
]
