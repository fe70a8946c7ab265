"""2D front-ends: class-agnostic segmenters, vision-language embeddings, the worker thread.

ROS-free (``test/test_layers.py`` checks it): numpy, torch, scipy and
scikit-image at import; ultralytics (FastSAM), segment-anything (SAM) and open_clip only
inside the constructors that need them, so each stays an optional extra.

* :mod:`.config` - ``SegmenterConfig``, ``EmbedderConfig``, ``WorkerConfig``.
* :mod:`.segmenters` - ``Segmenter`` interface, ``ClassicalSegmenter``, ``FastSAMSegmenter``,
  ``SAMSegmenter``, ``MissingWeightsError``.
* :mod:`.geometric` - ``GeometricSegmenter``: weights-free, from depth (discontinuities,
  concave creases, support planes as stuff).
* :mod:`.factory` - ``make_segmenter``: the configured segmenter of any kind.
* :mod:`.surfaces` - normals, geometric boundaries, planes, ``refine_masks`` (depth-edge
  refinement of any segmenter's masks).
* :mod:`.postprocess` - the mask post-processing all segmenters share.
* :mod:`.embeddings` - ``OpenClipEmbedder`` (per-mask image and cached text embeddings).
* :mod:`.worker` - ``SegmentationWorker`` (latest-only queue, ordered results, stats).
"""
from panoptic_mapping.frontends.config import (
    EmbedderConfig,
    SegmenterConfig,
    WorkerConfig,
)
from panoptic_mapping.frontends.factory import make_segmenter
from panoptic_mapping.frontends.geometric import GeometricSegmenter
from panoptic_mapping.frontends.segmenters import (
    ClassicalSegmenter,
    FastSAMSegmenter,
    MissingWeightsError,
    SAMSegmenter,
    Segmentation,
    Segmenter,
    segment_image,
)
from panoptic_mapping.frontends.surfaces import refine_masks

__all__ = [
    "EmbedderConfig",
    "SegmenterConfig",
    "WorkerConfig",
    "ClassicalSegmenter",
    "FastSAMSegmenter",
    "GeometricSegmenter",
    "MissingWeightsError",
    "SAMSegmenter",
    "Segmentation",
    "Segmenter",
    "make_segmenter",
    "refine_masks",
    "segment_image",
]
