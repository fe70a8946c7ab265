"""Class-agnostic segmenters: one interface and three of its implementations.

* :class:`ClassicalSegmenter` - weights-free (scikit-image Felzenszwalb or SLIC, regions
  split across depth discontinuities, small regions merged). The default when no model
  file is configured.
* :class:`FastSAMSegmenter` - FastSAM through ultralytics (AGPL-3.0, optional extra
  ``fastsam``) from a local ``FastSAM-s.pt`` / ``FastSAM-x.pt``, "everything" mode only:
  the text-prompt path is never used (it downloads CLIP).
* :class:`SAMSegmenter` - Segment Anything's automatic mask generator (optional extra
  ``sam``) from a local ``sam_vit_{b,l,h}_*.pth``.
* ``GeometricSegmenter`` (:mod:`panoptic_mapping.frontends.geometric`) - weights-free, from
  depth alone. :mod:`panoptic_mapping.frontends.factory` builds the configured one.

All return a :class:`Segmentation` made by the shared post-processing of
:mod:`panoptic_mapping.frontends.postprocess`. Model packages are imported lazily, inside
the constructors, so this module imports without them. Nothing is ever downloaded: a
missing or unreadable weights file raises :class:`MissingWeightsError` naming the file,
the model it should hold and where to get it.
"""
from __future__ import annotations

import abc
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from panoptic_mapping.core.device import resolve_device
from panoptic_mapping.core.resolution import decimate_intrinsics, upsample_nearest
from panoptic_mapping.frontends.config import SegmenterConfig
from panoptic_mapping.frontends.postprocess import (
    compactness_scores,
    masks_to_labels,
    neighbour_pairs,
    postprocess_labels,
)
from panoptic_mapping.frontends.surfaces import refine_with_ids

__all__ = [
    "Segmentation",
    "Segmenter",
    "ClassicalSegmenter",
    "FastSAMSegmenter",
    "SAMSegmenter",
    "MissingWeightsError",
    "WEIGHT_SOURCES",
    "segment_image",
    "check_weights_file",
]

# Where to get each model's weights (shown in MissingWeightsError and README).
WEIGHT_SOURCES: dict[str, str] = {
    "FastSAM": (
        "FastSAM-s.pt or FastSAM-x.pt from the FastSAM release "
        "(https://github.com/CASIA-IVA-Lab/FastSAM, 'Model Checkpoints') or the ultralytics "
        "assets release (https://github.com/ultralytics/assets/releases: FastSAM-s.pt, "
        "FastSAM-x.pt)"),
    "SAM vit_b": ("sam_vit_b_01ec64.pth from "
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth "
                  "(facebookresearch/segment-anything README, 'Model Checkpoints')"),
    "SAM vit_l": ("sam_vit_l_0b3195.pth from "
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth "
                  "(facebookresearch/segment-anything README, 'Model Checkpoints')"),
    "SAM vit_h": ("sam_vit_h_4b8939.pth from "
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth "
                  "(facebookresearch/segment-anything README, 'Model Checkpoints')"),
}
WEIGHTS_DIR_HINT = "~/.cache/panoptic_mapping/weights/"


class MissingWeightsError(FileNotFoundError):
    """A model's weights file is missing or unreadable; start-up stops.

    The message names the file, the model it should hold and where to get it.

    Attributes:
        path: the configured path (may be empty).
        model: which model the file should hold, e.g. "FastSAM" or "SAM vit_b".
        source: where to download it (on a machine with internet).
        reason: what is wrong with the file.
    """

    def __init__(self, path: str | os.PathLike, model: str, source: str,
                 reason: str = "does not exist", config_key: str = "") -> None:
        self.path, self.model, self.source, self.reason = str(path), model, source, reason
        where = f" (set '{config_key}')" if config_key else ""
        shown = f"'{path}'" if str(path) else "no file configured"
        super().__init__(
            f"weights file {shown} for {model} {reason}{where}. This model's weights are "
            f"never downloaded at run time: get {source} on a machine with internet, put it "
            f"e.g. in {WEIGHTS_DIR_HINT} and set the path in the configuration "
            "(README.md, 'Front-ends and model weights').")


def check_weights_file(path: str, model: str, source: str, config_key: str = "") -> Path:
    """Resolve ``path`` (``~`` expanded) and check that it is a readable, non-empty file.

    Raises:
        MissingWeightsError: empty path, no such file, a directory, unreadable or empty.
    """
    if not path:
        raise MissingWeightsError(path, model, source, "is required", config_key)
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise MissingWeightsError(p, model, source, "does not exist", config_key)
    if not p.is_file():
        raise MissingWeightsError(p, model, source, "is not a file", config_key)
    if not os.access(p, os.R_OK):
        raise MissingWeightsError(p, model, source, "is not readable", config_key)
    if p.stat().st_size == 0:
        raise MissingWeightsError(p, model, source, "is empty", config_key)
    return p


# --------------------------------------------------------------------------- interface


@dataclass
class Segmentation:
    """A segmenter's output for one image.

    Attributes:
        labels: (H, W) int32 non-overlapping class-agnostic masks, 0 = none, ids 1..M
            (ids carry no meaning across frames).
        scores: (M,) float32 confidence of mask ``i + 1`` in [0, 1].
        is_plane: (M,) bool, True where mask ``i + 1`` is a large plane (floor, wall, table
            top: stuff), or None when the segmenter does not tell (all but 'geometric').
    """

    labels: np.ndarray
    scores: np.ndarray
    is_plane: np.ndarray | None = None

    @property
    def num_masks(self) -> int:
        return int(self.scores.shape[0])


class Segmenter(abc.ABC):
    """Image (and optional depth) -> non-overlapping label image with per-mask scores.

    Implementations are not required to be thread-safe: one thread (the
    :class:`~panoptic_mapping.frontends.worker.SegmentationWorker`) calls them.

    Attributes:
        name: short name for logs and statistics.
        device: where the model runs (the CPU for the classical segmenter).
        min_area: smallest output mask in pixels.
        refine_depth_edges, refine_jump_rel, refine_creases: the depth-edge refinement of
            the shared post-processing (``SegmenterConfig.refine_*``; off by default).
    """

    name: str = "segmenter"
    device: torch.device = torch.device("cpu")
    min_area: int = 1
    refine_depth_edges: bool = False
    refine_jump_rel: float = 0.03
    refine_creases: bool = False

    @abc.abstractmethod
    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                K: np.ndarray | None = None) -> Segmentation:
        """Masks of one image.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            depth: (H, W) float metric depth (0 = unknown), or None.
            K: (3, 3) pinhole intrinsics of the image, or None (segmenters that need
                them - 'geometric' - use the last ones they were given).

        Returns:
            Segmentation with (H, W) int32 labels and (M,) float32 scores.
        """

    def __call__(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                 K: np.ndarray | None = None) -> Segmentation:
        return self.segment(rgb, depth, K)

    def configure_refinement(self, cfg: SegmenterConfig) -> None:
        """Take the depth-edge refinement settings of ``cfg``."""
        self.refine_depth_edges = bool(cfg.refine_depth_edges)
        self.refine_jump_rel = float(cfg.refine_jump_rel)
        self.refine_creases = bool(cfg.refine_creases)

    def refine(self, labels: np.ndarray, scores: np.ndarray | None,
               depth: np.ndarray | None, K: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """The shared post-processing's last step: when ``refine_depth_edges`` is on and
        the frame has depth, masks are cut across depth discontinuities
        (:func:`panoptic_mapping.frontends.surfaces.refine_masks`); pieces keep their
        mask's score. Otherwise the input comes back unchanged."""
        if not self.refine_depth_edges or depth is None:
            return labels, scores
        depth = np.asarray(depth)
        if depth.shape != labels.shape or not np.any(depth > 0):
            return labels, scores
        labels, parent = refine_with_ids(
            labels, depth, K, self.refine_jump_rel, min_area=self.min_area,
            creases=self.refine_creases and K is not None)
        if scores is not None:
            scores = np.asarray(scores, np.float32)[parent - 1]
        return labels, scores


def _takes_intrinsics(segmenter: Any) -> bool:
    """Whether ``segmenter.segment`` accepts ``K`` (segmenters written before it was added
    do not); a wrapper with an ``inner`` model (runtime.LockedModel) is looked through."""
    inner = getattr(segmenter, "inner", None)
    if inner is not None and inner is not segmenter:
        return _takes_intrinsics(inner)
    try:
        params = inspect.signature(segmenter.segment).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "K" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def segment_image(segmenter: Any, rgb: np.ndarray, depth: np.ndarray | None = None,
                  K: np.ndarray | None = None) -> Segmentation:
    """``segmenter.segment(rgb, depth, K=K)``, without ``K`` for a segmenter that does not
    take it (the segmentation worker and the benchmark call segmenters through this)."""
    if K is not None and _takes_intrinsics(segmenter):
        return segmenter.segment(rgb, depth, K=K)
    return segmenter.segment(rgb, depth)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    return rgb


# --------------------------------------------------------------------------- classical


def _depth_compatible(d0: np.ndarray, d1: np.ndarray, jump_m: float,
                      jump_rel: float) -> np.ndarray:
    """Whether two neighbouring depths lie on one surface: |d0 - d1| <= abs + rel * min."""
    return np.abs(d0 - d1) <= jump_m + jump_rel * np.minimum(d0, d1)


def split_by_depth(seg: np.ndarray, depth: np.ndarray | None, valid: np.ndarray,
                   jump_m: float, jump_rel: float) -> np.ndarray:
    """Connected components of each region, not crossing depth discontinuities.

    Args:
        seg: (H, W) region ids from the colour segmentation.
        depth: (H, W) metric depth, or None to only split disconnected regions.
        valid: (H, W) bool; invalid pixels get label 0.

    Returns:
        (H, W) int64 labels 1..N (0 on invalid pixels).
    """
    h, w = seg.shape
    idx = np.arange(h * w).reshape(h, w)
    rows, cols = [], []
    for sl0, sl1 in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                     ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        keep = (seg[sl0] == seg[sl1]) & valid[sl0] & valid[sl1]
        if depth is not None:
            keep &= _depth_compatible(depth[sl0], depth[sl1], jump_m, jump_rel)
        rows.append(idx[sl0][keep])
        cols.append(idx[sl1][keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(h * w, h * w))
    _, comp = connected_components(graph, directed=False)
    comp = comp.reshape(h, w).astype(np.int64) + 1
    comp[~valid] = 0
    return comp


def _interior_counts(labels: np.ndarray) -> np.ndarray:
    """Per label, how many of its pixels have all four neighbours in the same label.

    Returns:
        (labels.max() + 1,) int64; 0 for regions at most 2 px wide everywhere.
    """
    pad = np.pad(labels, 1, mode="edge")
    inner = ((pad[:-2, 1:-1] == labels) & (pad[2:, 1:-1] == labels)
             & (pad[1:-1, :-2] == labels) & (pad[1:-1, 2:] == labels))
    return np.bincount(labels[inner], minlength=int(labels.max()) + 1)


def merge_small_regions(labels: np.ndarray, depth: np.ndarray | None, min_area: int,
                        jump_m: float, jump_rel: float, merge_thin: bool = True,
                        passes: int = 3) -> np.ndarray:
    """Merge regions under ``min_area`` into the neighbour they share most boundary with.

    Neighbours on the same surface (no depth jump across the shared edges) are preferred,
    so slivers from depth splitting join their own object, not the one behind it. With
    ``merge_thin``, regions at most 2 px wide (no interior pixel) count as small too: they
    are the blurred edge strips Felzenszwalb makes between flat-coloured areas. Regions
    without any neighbour stay (and are dropped by :func:`postprocess_labels` if small).

    Args:
        labels: (H, W) non-negative int region ids, 0 = no region.
        depth: (H, W) metric depth or None.

    Returns:
        (H, W) region ids (not compacted).
    """
    for _ in range(passes):
        sizes = np.bincount(labels.ravel())
        small = (sizes < min_area) & (sizes > 0)
        if merge_thin:
            small |= (_interior_counts(labels) == 0) & (sizes > 0)
        small[0] = False
        if not small.any():
            break
        a, b = neighbour_pairs(labels)
        if depth is not None:
            da, db = neighbour_pairs(depth)
            same = _depth_compatible(da, db, jump_m, jump_rel)
        else:
            same = np.ones_like(a, bool)
        m = (a != b) & (a != 0) & (b != 0)
        a, b, same = a[m], b[m], same[m]
        # Both directions: the small region is the one that moves.
        src = np.concatenate([a, b])
        dst = np.concatenate([b, a])
        same = np.concatenate([same, same])
        sel = small[src]
        if not sel.any():
            break
        src, dst, same = src[sel], dst[sel], same[sel]
        # Score per (src, dst): contacts on the same surface dominate, then any contact.
        key = src * (labels.max() + 1) + dst
        uniq, inv = np.unique(key, return_inverse=True)
        score = np.bincount(inv, weights=np.where(same, 1e6, 1.0))
        u_src, u_dst = uniq // (labels.max() + 1), uniq % (labels.max() + 1)
        order = np.lexsort((-score, u_src))
        first = np.ones(len(order), bool)
        first[1:] = u_src[order][1:] != u_src[order][:-1]
        best_src, best_dst = u_src[order][first], u_dst[order][first]
        lut = np.arange(labels.max() + 1)
        # Process smallest first; follow chains so two small neighbours end up together.
        for s in best_src[np.argsort(sizes[best_src], kind="stable")]:
            d = best_dst[np.searchsorted(best_src, s)]
            root = d
            while lut[root] != root:
                root = lut[root]
            if root != s:
                lut[s] = root
        # Resolve chains to their roots.
        for _ in range(len(lut)):
            nxt = lut[lut]
            if np.array_equal(nxt, lut):
                break
            lut = nxt
        labels = lut[labels]
    return labels


class ClassicalSegmenter(Segmenter):
    """Real, weights-free class-agnostic segmenter: scikit-image superpixels + depth.

    Steps: Felzenszwalb (or SLIC) on the RGB image; each region split into connected
    components that do not cross a depth discontinuity (neighbouring depths differ by more
    than ``depth_jump_m + depth_jump_rel * depth``); regions under ``min_area`` merged into
    the neighbour on the same surface they share most boundary with; pixels without depth
    left unlabelled; ids compacted. Scores are the regions' isoperimetric compactness
    (there is no model confidence). Runs on the CPU.

    Attributes:
        method: "felzenszwalb" or "slic".
        scale, sigma, fz_min_size: Felzenszwalb's parameters (bigger scale, bigger regions).
        n_segments, compactness: SLIC's parameters.
        min_area: smallest output mask in pixels.
        use_depth: split regions across depth discontinuities when the frame has depth.
        depth_jump_m, depth_jump_rel: depth discontinuity threshold, absolute (metres) and
            relative to the nearer depth.
        ignore_invalid_depth: pixels with depth <= 0 (nothing hit) get no mask.
        max_side_px: a larger image is segmented at the smallest integer downscale that
            fits and its masks scaled back (``ClassicalConfig.max_side_px``; 0: never).
    """

    name = "classical"

    def __init__(self, method: str = "felzenszwalb", *, scale: float = 150.0,
                 sigma: float = 0.5, fz_min_size: int = 30, n_segments: int = 100,
                 compactness: float = 10.0, min_area: int = 30, use_depth: bool = True,
                 depth_jump_m: float = 0.03, depth_jump_rel: float = 0.03,
                 ignore_invalid_depth: bool = True, max_side_px: int = 160) -> None:
        if method not in ("felzenszwalb", "slic"):
            raise ValueError(f"unknown method {method!r}")
        self.method = method
        self.scale, self.sigma, self.fz_min_size = float(scale), float(sigma), int(fz_min_size)
        self.n_segments, self.compactness = int(n_segments), float(compactness)
        self.min_area = int(min_area)
        self.use_depth = bool(use_depth)
        self.depth_jump_m, self.depth_jump_rel = float(depth_jump_m), float(depth_jump_rel)
        self.ignore_invalid_depth = bool(ignore_invalid_depth)
        self.max_side_px = int(max_side_px)
        self.device = torch.device("cpu")

    @classmethod
    def from_config(cls, cfg: SegmenterConfig) -> "ClassicalSegmenter":
        c = cfg.classical
        seg = cls(c.method, scale=c.scale, sigma=c.sigma, fz_min_size=c.fz_min_size,
                  n_segments=c.n_segments, compactness=c.compactness, min_area=cfg.min_area,
                  use_depth=c.use_depth, depth_jump_m=c.depth_jump_m,
                  depth_jump_rel=c.depth_jump_rel,
                  ignore_invalid_depth=c.ignore_invalid_depth, max_side_px=c.max_side_px)
        seg.configure_refinement(cfg)
        return seg

    def _colour_regions(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) region ids from scikit-image on a (H, W, 3) uint8 image."""
        # Imported here so importing this module does not pay scikit-image's import.
        from skimage.segmentation import felzenszwalb, slic

        if self.method == "felzenszwalb":
            return felzenszwalb(rgb, scale=self.scale, sigma=self.sigma,
                                min_size=self.fz_min_size)
        return slic(rgb, n_segments=self.n_segments, compactness=self.compactness,
                    start_label=1)

    def label_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """Masks of one image as a label image only.

        Args:
            rgb: (H, W, 3) uint8.
            depth: (H, W) float metric depth (0 = nothing hit), or None.

        Returns:
            (H, W) int32 non-overlapping labels, ids 1..M, every mask >= min_area pixels.
        """
        seg = self._colour_regions(np.asarray(rgb))
        valid = np.ones(seg.shape, bool)
        d = None
        if depth is not None:
            depth = np.asarray(depth, np.float64)
            if self.ignore_invalid_depth:
                valid = depth > 0
            if self.use_depth:
                d = depth
        regions = split_by_depth(seg, d, valid, self.depth_jump_m, self.depth_jump_rel)
        regions = merge_small_regions(regions, d, self.min_area, self.depth_jump_m,
                                      self.depth_jump_rel)
        return postprocess_labels(regions, self.min_area)

    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                K: np.ndarray | None = None) -> Segmentation:
        rgb = _check_rgb(rgb)
        s = downscale_factor(rgb.shape[:2], self.max_side_px)
        if s == 1:
            labels = self.label_image(rgb, depth)
            labels, _ = self.refine(labels, None, depth, K)
        else:  # segmented small, scaled back (see ClassicalConfig.max_side_px)
            small_depth = None if depth is None else sample_blocks(np.asarray(depth), s)
            labels = self.label_image(average_blocks(rgb, s), small_depth)
            labels, _ = self.refine(labels, None, small_depth,
                                    None if K is None else decimate_intrinsics(K, s))
            labels = upsample_nearest(labels, s, rgb.shape[:2])
            if depth is not None and self.ignore_invalid_depth:
                labels = np.where(np.asarray(depth) > 0, labels, 0).astype(np.int32)
        return Segmentation(labels, compactness_scores(labels, int(labels.max())))


def downscale_factor(shape: tuple[int, int], max_side_px: int) -> int:
    """Smallest integer s with max(H, W) / s <= ``max_side_px`` (1 for 0 or less)."""
    if max_side_px <= 0:
        return 1
    return max(1, -(-max(shape) // max_side_px))


def average_blocks(rgb: np.ndarray, s: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (ceil(H / s), ceil(W / s), 3) uint8 mean of each s x s block
    (the last blocks are the partial ones at the border): a downscale without aliasing.
    Block (i, j) covers the pixels that :func:`upsample_nearest` gives its label."""
    h, w = rgb.shape[:2]
    hp, wp = -(-h // s) * s, -(-w // s) * s
    padded = np.pad(rgb.astype(np.float32), ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    blocks = padded.reshape(hp // s, s, wp // s, s, 3).mean(axis=(1, 3))
    return np.clip(np.rint(blocks), 0, 255).astype(np.uint8)


def sample_blocks(depth: np.ndarray, s: int) -> np.ndarray:
    """(H, W) -> (ceil(H / s), ceil(W / s)): each block's pixel nearest its centre (depth
    is sampled, not averaged: an average across an object's edge is a surface nobody saw);
    border blocks take their nearest pixel inside the image."""
    h, w = depth.shape
    rows = np.minimum(np.arange(0, h, s) + s // 2, h - 1)
    cols = np.minimum(np.arange(0, w, s) + s // 2, w - 1)
    return np.ascontiguousarray(depth[rows[:, None], cols[None, :]])


# --------------------------------------------------------------------------- FastSAM


def _import_ultralytics_offline() -> Any:
    """Import ultralytics with every download and auto-install path switched off.

    ultralytics reads these variables at import time: ``YOLO_OFFLINE`` skips its online
    check (and with it analytics and asset downloads), ``YOLO_AUTOINSTALL=False`` stops it
    from pip-installing missing packages while the node runs.
    """
    os.environ["YOLO_OFFLINE"] = "True"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import ultralytics
        from ultralytics.utils import checks
    except ImportError as exc:
        raise ImportError(
            "the FastSAM segmenter needs ultralytics (AGPL-3.0, an optional extra): "
            "pip install 'panoptic_mapping[fastsam]' or pip install ultralytics") from exc
    # In case ultralytics was imported before these variables were set.
    import ultralytics.utils as uutils
    uutils.AUTOINSTALL = False
    uutils.ONLINE = False
    if hasattr(checks, "AUTOINSTALL"):
        checks.AUTOINSTALL = False
    return ultralytics


def _ultralytics_device(device: torch.device) -> str:
    """ultralytics names GPUs by index ("0"), the CPU "cpu"."""
    return "cpu" if device.type == "cpu" else str(device.index or 0)


class FastSAMSegmenter(Segmenter):
    """FastSAM in "everything" mode, from a local checkpoint (FastSAM-s.pt / FastSAM-x.pt).

    The image goes through ultralytics' FastSAM predictor (letterbox to ``imgsz``, YOLOv8
    segmentation head, NMS); the masks, at image resolution, go through the shared
    post-processing. Scores are the detection confidences.
    """

    name = "fastsam"

    def __init__(self, cfg: SegmenterConfig, device: torch.device | str | None = None) -> None:
        path = check_weights_file(cfg.checkpoint, "FastSAM", WEIGHT_SOURCES["FastSAM"],
                                  "frontend.segmenter.checkpoint")
        ultralytics = _import_ultralytics_offline()
        self.cfg = cfg
        self.min_area = int(cfg.min_area)
        self.configure_refinement(cfg)
        self.device = resolve_device(device if device is not None else cfg.device)
        try:
            self.model = ultralytics.FastSAM(str(path))
        except Exception as exc:  # unpickling errors, wrong format, truncated file...
            raise MissingWeightsError(path, "FastSAM", WEIGHT_SOURCES["FastSAM"],
                                      f"could not be read ({type(exc).__name__}: {exc})",
                                      "frontend.segmenter.checkpoint") from exc
        if getattr(self.model, "task", None) != "segment":
            raise MissingWeightsError(path, "FastSAM", WEIGHT_SOURCES["FastSAM"],
                                      f"holds a '{self.model.task}' model, not a "
                                      "segmentation model", "frontend.segmenter.checkpoint")

    def _predict_kwargs(self) -> dict[str, Any]:
        f = self.cfg.fastsam
        kwargs: dict[str, Any] = dict(
            imgsz=f.imgsz, conf=f.conf, iou=f.iou, retina_masks=f.retina_masks,
            max_det=f.max_det, device=_ultralytics_device(self.device), verbose=False,
            save=False)
        if f.half and self.device.type == "cuda":
            from ultralytics.utils import DEFAULT_CFG_DICT

            # Newer ultralytics replaced 'half' by 'quantize' (and warns about 'half').
            kwargs.update({"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True})
        return kwargs

    def raw_masks(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """FastSAM's masks before post-processing.

        Returns:
            (N, H, W) bool masks at the image's resolution (on the model's device) and
            (N,) float confidences.
        """
        h, w = rgb.shape[:2]
        # ultralytics takes numpy images as BGR (OpenCV's order).
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        result = self.model.predict(bgr, **self._predict_kwargs())[0]
        if result.masks is None or len(result) == 0:
            return (torch.zeros((0, h, w), dtype=torch.bool),
                    torch.zeros(0, dtype=torch.float32))
        masks = result.masks.data
        if masks.shape[1:] != (h, w):
            # Without retina masks they are at the letterboxed network size.
            from ultralytics.utils.ops import scale_masks
            masks = scale_masks(masks[None].float(), (h, w))[0]
        return masks > 0.5, result.boxes.conf.float()

    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                K: np.ndarray | None = None) -> Segmentation:
        masks, scores = self.raw_masks(_check_rgb(rgb))
        labels, scores = masks_to_labels(masks, scores, self.min_area, self.cfg.fill_holes)
        return Segmentation(*self.refine(labels, scores, depth, K))


# --------------------------------------------------------------------------- SAM


class SAMSegmenter(Segmenter):
    """Segment Anything's automatic mask generator from a local checkpoint.

    A grid of ``points_per_side**2`` point prompts is decoded against one image-encoder
    pass (SAM resizes every image to 1024 px, so the encoder's cost does not depend on the
    input size); the masks go through the shared post-processing. Scores are SAM's
    predicted IoUs (clipped to [0, 1]).
    """

    name = "sam"

    def __init__(self, cfg: SegmenterConfig, device: torch.device | str | None = None,
                 model: torch.nn.Module | None = None) -> None:
        """Load ``cfg.checkpoint`` into ``cfg.sam.model_type``'s architecture.

        Args:
            cfg: the segmenter configuration.
            device: overrides ``cfg.device``.
            model: an already built ``segment_anything.modeling.Sam`` to use instead of the
                checkpoint (tests use a random-weight network of the same classes).
        """
        try:
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
        except ImportError as exc:
            raise ImportError("the SAM segmenter needs segment-anything (optional extra "
                              "'sam'): pip install 'panoptic_mapping[sam]'") from exc
        self.cfg = cfg
        self.min_area = int(cfg.min_area)
        self.configure_refinement(cfg)
        self.device = resolve_device(device if device is not None else cfg.device)
        if model is None:
            model = self._load(cfg, sam_model_registry)
        self.model = model.to(self.device).eval()
        s = cfg.sam
        self.generator = SamAutomaticMaskGenerator(
            self.model, points_per_side=s.points_per_side, points_per_batch=s.points_per_batch,
            pred_iou_thresh=s.pred_iou_thresh, stability_score_thresh=s.stability_score_thresh,
            box_nms_thresh=s.box_nms_thresh, crop_n_layers=s.crop_n_layers,
            # Small regions are handled by the shared post-processing (SAM's own needs cv2).
            min_mask_region_area=0, output_mode="binary_mask")

    @staticmethod
    def _load(cfg: SegmenterConfig, registry: dict) -> torch.nn.Module:
        model_name = f"SAM {cfg.sam.model_type}"
        source = WEIGHT_SOURCES[model_name]
        path = check_weights_file(cfg.checkpoint, model_name, source, "frontend.segmenter.checkpoint")
        try:
            return registry[cfg.sam.model_type](checkpoint=str(path))
        except Exception as exc:  # not a state dict, truncated, or another model_type's
            raise MissingWeightsError(
                path, model_name, source,
                f"could not be loaded as {model_name} ({type(exc).__name__}: "
                f"{str(exc)[:300]}); check 'frontend.segmenter.sam.model_type'",
                "frontend.segmenter.checkpoint") from exc

    def raw_masks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM's masks before post-processing: (N, H, W) bool and (N,) float32 scores."""
        h, w = rgb.shape[:2]
        with torch.inference_mode():
            records = self.generator.generate(rgb)
        if not records:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        masks = np.stack([r["segmentation"] for r in records]).astype(bool)
        scores = np.clip([r["predicted_iou"] for r in records], 0.0, 1.0).astype(np.float32)
        return masks, scores

    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                K: np.ndarray | None = None) -> Segmentation:
        masks, scores = self.raw_masks(_check_rgb(rgb))
        labels, scores = masks_to_labels(masks, scores, self.min_area, self.cfg.fill_holes)
        return Segmentation(*self.refine(labels, scores, depth, K))
