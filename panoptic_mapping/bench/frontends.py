"""2D front-ends for the benchmark: what the mapper sees instead of a real FastSAM + CLIP.

Three pieces:

* :class:`SimulatedMaskFrontend` - a SIMULATION of a class-agnostic segmenter (FastSAM/SAM)
  built from the ground truth with controllable error modes (:class:`MaskErrorModel`):
  over-segmentation, merges of touching objects, missed (small) objects, boundary jitter,
  spurious fragments and per-frame random ids.
* :class:`SimulatedEmbeddingSpace` - a SIMULATION of a vision-language embedding space:
  one fixed random unit vector per class name, a matching "text tower", per-view noise and
  configurable confusions between classes. It is not a real model and knows nothing about
  language; it only makes open-vocabulary queries testable without weights. Its per-view
  noise is the easy case for fusion; :class:`SemanticErrorModel`
  (:mod:`panoptic_mapping.bench.semantic_errors`) adds view-consistent errors: chosen
  instances embedded as a similar class or as their support, embeddings pulled toward the
  class around the mask.
* :class:`SegmenterFrontend` (:func:`classical_frontend`) - a real segmenter, e.g. the weights-free one (Felzenszwalb or
  SLIC from scikit-image, split across depth discontinuities, tiny regions merged away).

All of them return :class:`~panoptic_mapping.bench.types.MaskFrame` and share
:func:`postprocess_labels`.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.frontends.postprocess import (
    CROSS,
    neighbour_pairs,
    postprocess_labels,
    postprocess_with_ids,
)
from panoptic_mapping.frontends.config import GeometricConfig
from panoptic_mapping.frontends.geometric import GeometricSegmenter
from panoptic_mapping.frontends.segmenters import ClassicalSegmenter, Segmenter, segment_image

from .semantic_errors import (
    SemanticErrorModel,
    SemanticErrorPlan,
    background_classes,
    plan_semantic_errors,
)
from .types import VOID, MaskFrame, Scene, SceneFrame

__all__ = [
    "MaskErrorModel",
    "SemanticErrorModel",
    "SimulatedMaskFrontend",
    "SimulatedEmbeddingSpace",
    "SegmenterFrontend",
    "classical_frontend",
    "geometric_frontend",
    "postprocess_labels",
    "DEFAULT_PROMPT_TEMPLATES",
]

# The shared post-processing (postprocess_labels, re-exported here) and the classical
# segmenter live in panoptic_mapping.frontends: the node uses them too.


# --------------------------------------------------------------------------------------
# Label-image helpers
# --------------------------------------------------------------------------------------

def _contacts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which non-zero labels touch, and along how many pixel edges.

    Returns:
        (Q, 2) pairs ``(lo, hi)`` with lo < hi, and (Q,) contact lengths in pixel edges.
    """
    a, b = neighbour_pairs(labels)
    m = (a != b) & (a != 0) & (b != 0)
    if not m.any():
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    pairs = np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], axis=1)
    pairs, counts = np.unique(pairs, axis=0, return_counts=True)
    return pairs.astype(np.int64), counts


def _majority(labels: np.ndarray, values: np.ndarray, n_labels: int,
              ignore_value: int | None = VOID) -> np.ndarray:
    """Most frequent non-negative ``value`` under each label 1..n_labels.

    Args:
        labels: (H, W) ids 0..n_labels (0 is skipped).
        values: (H, W) non-negative ints, e.g. class ids.
        n_labels: number of labels.
        ignore_value: value that only wins when nothing else is under the label.

    Returns:
        (n_labels,) int64 majority value per label; -1 where a label has no pixels or only
        ``ignore_value`` pixels.
    """
    m = labels > 0
    lab = labels[m].astype(np.int64) - 1
    val = values[m].astype(np.int64)
    if n_labels == 0:
        return np.zeros(0, np.int64)
    n_val = int(val.max()) + 1 if val.size else 1
    hist = np.bincount(lab * n_val + val, minlength=n_labels * n_val).reshape(n_labels, n_val)
    if ignore_value is not None and 0 <= ignore_value < n_val:
        hist[:, ignore_value] = 0
    out = hist.argmax(axis=1)
    out[hist.max(axis=1) == 0] = -1
    return out


# --------------------------------------------------------------------------------------
# Simulated vision-language embeddings
# --------------------------------------------------------------------------------------

DEFAULT_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}", "a photo of an {}", "a photo of the {}", "a photo of {}",
    "a picture of a {}", "a picture of an {}", "a picture of the {}",
    "an image of a {}", "an image of an {}", "an image of the {}",
    "a rendering of a {}", "a rendering of an {}", "a 3d rendering of a {}",
    "a {} in the scene", "there is a {} in the scene",
    "a {}", "an {}", "the {}",
)


def _normalize_text(text: str) -> str:
    """Lower-case, '_'/'-' as spaces, single spaces, no trailing punctuation."""
    text = re.sub(r"[_\-]+", " ", text.strip().lower())
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .!?,;:")


def _unit(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """``v`` divided by its L2 norm along ``axis`` (zero vectors stay zero)."""
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


class SimulatedEmbeddingSpace:
    """SIMULATION of a vision-language embedding space (image tower + text tower).

    Not a real model: each (normalised) class name gets a fixed random unit vector of
    dimension ``dim``, seeded by hashing the name together with ``seed``, so the same name
    always maps to the same vector and unrelated names are nearly orthogonal (cosine about
    N(0, 1/dim)). An image embedding of an object is its class vector, sometimes pulled
    toward a confusable class, plus Gaussian per-view noise, re-normalised. A text prompt
    maps to the vector of the class name it contains (templates such as
    "a photo of a {}" are stripped), so text-image retrieval works like with a real model
    without any weights. Unknown prompts get their own deterministic random vector.

    Attributes:
        dim: embedding dimension D.
        seed: mixes into every class vector; two spaces with different seeds are unrelated.
        noise_std: expected L2 norm of the per-view noise added to a unit class vector
            (each component has std ``noise_std / sqrt(dim)``); the expected cosine to the
            clean vector is about ``1 / sqrt(1 + noise_std**2)`` (0.96 for 0.3).
        confusions: class name -> confusable class name, e.g. ``{"duck": "teddy"}``: some
            image embeddings of a duck are pulled toward the teddy's vector.
        confusion_rate: probability that one image embedding of a class in ``confusions``
            is pulled toward its confusable class.
        confusion_strength: weight ``s`` of the pull, ``(1 - s) * own + s * other``
            (re-normalised); above 0.5 the confused view is closer to the other class.
        templates: prompt templates with one ``{}`` stripped by :meth:`normalize_prompt`.
    """

    def __init__(self, dim: int = 64, seed: int = 0, noise_std: float = 0.3,
                 confusions: dict[str, str] | None = None, confusion_rate: float = 0.2,
                 confusion_strength: float = 0.6,
                 templates: Sequence[str] = DEFAULT_PROMPT_TEMPLATES) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim = int(dim)
        self.seed = int(seed)
        self.noise_std = float(noise_std)
        self.confusions = {_normalize_text(k): _normalize_text(v)
                           for k, v in (confusions or {}).items()}
        self.confusion_rate = float(confusion_rate)
        self.confusion_strength = float(confusion_strength)
        self.templates = tuple(templates)
        # Longest templates first so "a photo of a {}" wins over "a {}".
        self._template_res = [
            re.compile("^" + re.escape(_normalize_text(t)).replace(r"\{\}", "(.+)") + "$")
            for t in sorted(self.templates, key=len, reverse=True)
        ]
        self._cache: dict[str, np.ndarray] = {}

    def normalize_prompt(self, prompt: str) -> str:
        """The class name inside a prompt: "A photo of a Teddy_Bear." -> "teddy bear"."""
        text = _normalize_text(prompt)
        for pattern in self._template_res:
            match = pattern.match(text)
            if match and match.group(1).strip():
                return match.group(1).strip()
        return text

    def class_embedding(self, class_name: str) -> np.ndarray:
        """Noise-free unit vector of a class (the centre of its image embeddings).

        Returns:
            (D,) float32, L2 norm 1, deterministic in (normalised name, seed, dim).
        """
        key = _normalize_text(class_name)
        vec = self._cache.get(key)
        if vec is None:
            digest = hashlib.sha256(f"{self.seed}\x00{self.dim}\x00{key}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
            vec = _unit(rng.standard_normal(self.dim)).astype(np.float32)
            self._cache[key] = vec
        return vec.copy()

    def sample_image_embedding(self, class_name: str, rng: np.random.Generator,
                               bias: Sequence[tuple[str, float]] = ()
                               ) -> tuple[np.ndarray, str | None]:
        """One simulated view's embedding, and the class it was confused with (or None).

        Args:
            class_name: the object's class.
            rng: per-view randomness (one uniform for the per-view confusion, then the
                noise; the same draws whatever ``bias`` is).
            bias: (class name, weight w) pulls applied in order after the per-view
                confusion and before the noise, each ``unit((1 - w) * vec + w * other)``:
                the systematic errors of :mod:`panoptic_mapping.bench.semantic_errors`.

        Returns:
            (D,) float32 unit vector, and the confusable class name when this view was
            pulled toward it.
        """
        key = _normalize_text(class_name)
        vec = self.class_embedding(key).astype(np.float64)
        confused = None
        other = self.confusions.get(key)
        # Always draw, so whether a confusion happens does not shift later random draws.
        u = rng.random()
        if other is not None and u < self.confusion_rate:
            s = self.confusion_strength
            vec = _unit((1.0 - s) * vec + s * self.class_embedding(other))
            confused = other
        for name, w in bias:
            if w > 0:
                vec = _unit((1.0 - w) * vec + w * self.class_embedding(name))
        if self.noise_std > 0:
            vec = vec + rng.normal(0.0, self.noise_std / np.sqrt(self.dim), self.dim)
        return _unit(vec).astype(np.float32), confused

    def image_embedding(self, class_name: str, rng: np.random.Generator) -> np.ndarray:
        """SIMULATED image-tower embedding of one view of an object of ``class_name``.

        Returns:
            (D,) float32 unit vector.
        """
        return self.sample_image_embedding(class_name, rng)[0]

    def text_embeddings(self, prompts: Iterable[str]) -> np.ndarray:
        """SIMULATED text tower: each prompt -> the vector of the class name it contains.

        Args:
            prompts: N strings, e.g. ["a photo of a duck", "teddy bear"].

        Returns:
            (N, D) float32 unit rows; an unknown name gets its own deterministic vector.
        """
        rows = [self.class_embedding(self.normalize_prompt(p)) for p in prompts]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32)


def _mask_embeddings(labels: np.ndarray, semantic: np.ndarray, n_masks: int,
                     classes: Sequence[str], space: SimulatedEmbeddingSpace,
                     rng: np.random.Generator,
                     systematic: "_SystematicSemantics | None" = None,
                     instance: np.ndarray | None = None) -> tuple[np.ndarray, int, dict]:
    """SIMULATED embedding per mask from the majority ground-truth class under it.

    A mask over only void pixels (a spurious fragment) gets a random non-void class.

    Args:
        labels: (H, W) compact mask ids 1..n_masks.
        semantic: (H, W) ground-truth class ids (indices into ``classes``).
        classes: class names, classes[0] == "void".
        systematic: the systematic semantic errors (model and per-scene plan), or None.
            Their pulls are added to each mask's embedding before the per-view noise; the
            random draws stay the same, so with None (or an inactive model) the result is
            exactly that of no model.
        instance: (H, W) ground-truth instance ids; needed with ``systematic`` (the
            per-instance errors follow the majority instance under each mask).

    Returns:
        (n_masks, D) float32 unit rows, how many of them were confused (per view, by the
        space's ``confusions``), and counts of the systematic errors applied
        (``sem_confused``, ``sem_support``: masks whose majority instance is chosen;
        ``sem_background``: masks pulled toward another class than their own).
    """
    majority = _majority(labels, semantic, n_masks)
    out = np.zeros((n_masks, space.dim), np.float32)
    n_confused = 0
    counts = dict.fromkeys(_SEM_STAT_KEYS, 0)
    on = systematic is not None and systematic.model.active
    if on:
        model, plan = systematic.model, systematic.plan
        if instance is None:
            raise ValueError("systematic semantic errors need the ground-truth instances")
        owner = _majority(labels, np.asarray(instance), n_masks)
        around, context = (
            background_classes(labels, semantic, n_masks, model.background_ring_px)
            if model.background_weight > 0 else (np.full(n_masks, -1), np.zeros(n_masks)))
    for i, cls in enumerate(majority):
        if cls < 0 or cls >= len(classes):
            cls = int(rng.integers(1, len(classes))) if len(classes) > 1 else 0
        bias: list[tuple[str, float]] = []
        if on:
            target = plan.target(int(owner[i]), model) if owner[i] > 0 else None
            if target is not None:
                bias.append((classes[target[0]], target[1]))
                counts["sem_confused" if target[2] == "confusion" else "sem_support"] += 1
            bg = int(around[i])
            if 0 < bg < len(classes) and bg != cls and context[i] > 0:
                bias.append((classes[bg], model.background_weight * float(context[i])))
                counts["sem_background"] += 1
        out[i], confused = space.sample_image_embedding(classes[cls], rng, bias)
        n_confused += confused is not None
    return out, n_confused, counts


@dataclass
class _SystematicSemantics:
    """A SemanticErrorModel with its plan for one scene (see _systematic_semantics)."""

    model: SemanticErrorModel
    plan: SemanticErrorPlan


_SEM_STAT_KEYS = ("sem_confused", "sem_support", "sem_background")


class _SemanticErrorsMixin:
    """The systematic semantic errors of a front-end with SIMULATED embeddings: the model,
    and its plan, made once per (scene, embedding space)."""

    semantic_errors: SemanticErrorModel | None
    embedding_space: SimulatedEmbeddingSpace | None

    def _systematic_semantics(self, scene: Scene) -> _SystematicSemantics | None:
        model = self.semantic_errors
        if model is None or not model.active or self.embedding_space is None:
            return None
        cached = getattr(self, "_semantic_plan_cache", None)
        if cached is not None and cached[0] is scene and cached[1] is self.embedding_space:
            return cached[2]
        value = _SystematicSemantics(model, plan_semantic_errors(model, scene,
                                                                 self.embedding_space))
        self._semantic_plan_cache = (scene, self.embedding_space, value)
        return value

    def semantic_plan(self, scene: Scene | None = None) -> SemanticErrorPlan | None:
        """The per-instance decisions for ``scene`` (default: the front-end's), or None
        when no systematic semantic errors are on."""
        scene = scene if scene is not None else getattr(self, "scene", None)
        if scene is None:
            return None
        sem = self._systematic_semantics(scene)
        return sem.plan if sem is not None else None


# --------------------------------------------------------------------------------------
# Simulated class-agnostic masks
# --------------------------------------------------------------------------------------

@dataclass
class MaskErrorModel:
    """Error modes of the SIMULATED class-agnostic segmenter, modelled on FastSAM/SAM.

    Every rate is a probability in [0, 1]; the defaults are moderate errors similar to a
    real FastSAM on 160x120 renders. :meth:`none` gives a perfect segmenter (ground truth up
    to a per-frame permutation of ids, which is always applied).

    Attributes:
        split_rate: probability that a thing segment is over-segmented into 2-3 parts
            (cut along a random line through its centroid, or k-means on pixel coordinates).
        stuff_split_rate: the same for stuff segments (floor, table, wall), which a real
            segmenter splits more often because they are large and shaded.
        split_parts: (min, max) number of parts of a split.
        merge_rate: probability that a segment is merged with one segment it touches in the
            image (at least ``merge_min_contact_px`` shared pixel edges); each segment takes
            part in at most one merge, so a merge always joins exactly two segments.
        merge_stuff: also merge things with stuff and stuff with stuff (by default only two
            touching things merge, e.g. stacked or neighbouring objects).
        merge_min_contact_px: shared boundary length for two segments to count as touching.
        miss_small_rate: probability that a segment smaller than ``small_area_px`` is missed.
        small_area_px: area threshold of "small" in pixels (scale it with the image size).
        miss_rate: probability that any other segment is missed.
        boundary_jitter_px: maximum dilation/erosion of a jittered mask in pixels.
        jitter_rate: probability that a mask is dilated or eroded (by 1..boundary_jitter_px,
            only into ground-truth non-void pixels).
        boundary_flip_rate: probability that a pixel on a mask boundary takes the label of a
            random 4-neighbour (ragged edges).
        spurious_rate: probability, per stuff segment and for the void region, of one
            spurious fragment (a random elliptic blob clipped to that region).
        spurious_area_px: (min, max) area of a spurious blob before clipping.
        min_area: masks smaller than this after all errors are dropped (FastSAM's own
            small-mask filter); splits that would leave a part below it are not made.
        mode: "independent" draws every error anew in every view (per-view noise, the
            easy case for fusion); "systematic" makes the view-dependent errors a real
            segmenter makes the same way in every view: ``split_rate`` of the things are
            chosen once and always cut by the same 3D plane through their centre,
            ``stuff_split_rate`` of the stuff segments are always cut into the same
            ``tile_m`` world tiles, ``merge_rate`` of the touching thing pairs are chosen
            once and merged wherever they touch, ``miss_small_rate`` of the things are
            missed whenever they cover fewer than ``small_area_px`` pixels (far away);
            ``miss_rate`` and ``spurious_rate`` stay per view, as do boundary jitter and
            flips (a real segmenter's edges do wander). Choices depend on
            ``systematic_seed`` and the ground-truth ids only, so held-out views get the
            same errors.
        tile_m: edge of the world tiles a tiled stuff segment is cut into [m].
        systematic_seed: seeds the systematic choices.
    """

    split_rate: float = 0.15
    stuff_split_rate: float = 0.3
    split_parts: tuple[int, int] = (2, 3)
    merge_rate: float = 0.15
    merge_stuff: bool = False
    merge_min_contact_px: int = 3
    miss_small_rate: float = 0.3
    small_area_px: int = 150
    miss_rate: float = 0.02
    boundary_jitter_px: int = 1
    jitter_rate: float = 0.5
    boundary_flip_rate: float = 0.05
    spurious_rate: float = 0.1
    spurious_area_px: tuple[int, int] = (15, 80)
    min_area: int = 8
    mode: str = "independent"
    tile_m: float = 0.5
    systematic_seed: int = 0

    MODES = ("independent", "systematic")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"error mode must be one of {self.MODES}, got {self.mode!r}")

    @classmethod
    def none(cls, **overrides) -> "MaskErrorModel":
        """No errors at all (ids are still permuted per frame); ``overrides`` set fields."""
        zero = dict(split_rate=0.0, stuff_split_rate=0.0, merge_rate=0.0, miss_small_rate=0.0,
                    miss_rate=0.0, boundary_jitter_px=0, jitter_rate=0.0,
                    boundary_flip_rate=0.0, spurious_rate=0.0, min_area=1)
        zero.update(overrides)
        return cls(**zero)

    def to_dict(self) -> dict:
        """JSON-serialisable parameters (for the benchmark's run record)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


# Kinds of origin of an output mask, see SimulatedMaskFrontend.last_origin.
_GT, _SPLIT, _MERGE, _SPURIOUS = "gt", "split", "merge", "spurious"

_STAT_KEYS = ("frames", "gt_segments", "masks", "splits", "merges", "missed_small", "missed",
              "jittered", "flipped_px", "spurious", "confusions", *_SEM_STAT_KEYS)


@dataclass
class _Work:
    """Mutable state while the errors of one frame are applied.

    labels: (H, W) int64 internal mask ids (0 = none); provenance/origin keyed by them.
    """

    labels: np.ndarray
    provenance: dict[int, list[int]] = field(default_factory=dict)
    origin: dict[int, str] = field(default_factory=dict)
    next_id: int = 1

    def new_id(self, gt_ids: list[int], origin: str) -> int:
        i = self.next_id
        self.next_id += 1
        self.provenance[i] = list(gt_ids)
        self.origin[i] = origin
        return i


def _segment_classes(instance: np.ndarray, semantic: np.ndarray,
                     gt_ids: np.ndarray) -> dict[int, int]:
    """Majority semantic class of every ground-truth instance id in ``gt_ids``."""
    index = np.searchsorted(gt_ids, instance)
    index = np.where(instance == VOID, 0, index + 1)
    majority = _majority(index, semantic, len(gt_ids))
    return {int(g): int(c) for g, c in zip(gt_ids, majority)}


def _kmeans_parts(coords: np.ndarray, k: int, rng: np.random.Generator,
                  iters: int = 8) -> np.ndarray:
    """Assign (N, 2) pixel coordinates to k clusters (Lloyd, k-means++ start).

    Returns:
        (N,) int cluster index in 0..k-1.
    """
    sample = coords if len(coords) <= 2000 else coords[rng.choice(len(coords), 2000, False)]
    centres = [sample[rng.integers(len(sample))]]
    for _ in range(1, k):
        d2 = np.min([((sample - c) ** 2).sum(1) for c in centres], axis=0)
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(sample[rng.choice(len(sample), p=p)])
    centres = np.array(centres, np.float64)
    for _ in range(iters):
        assign = np.argmin(((sample[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = sample[assign == j].mean(0)
    return np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)


def _split_parts(coords: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cut a segment's (N, 2) pixel coordinates into k parts.

    Two parts: half the time a random line through the centroid (straight cut), else
    k-means; three parts: k-means (compact blobs like SAM's part-level masks).

    Returns:
        (N,) int part index in 0..k-1.
    """
    coords = coords.astype(np.float64)
    if k == 2 and rng.random() < 0.5:
        theta = rng.uniform(0.0, np.pi)
        normal = np.array([np.cos(theta), np.sin(theta)])
        return ((coords - coords.mean(0)) @ normal > 0).astype(np.int64)
    return _kmeans_parts(coords, k, rng)


def _paint(work: _Work, instance: np.ndarray, gt_ids: list[int], mask_ids: list[int]
           ) -> None:
    """Give the pixels of ground-truth ids ``gt_ids`` (sorted) their masks ``mask_ids``."""
    if gt_ids:
        gt = np.asarray(gt_ids)
        pos = np.clip(np.searchsorted(gt, instance), 0, len(gt) - 1)
        hit = gt[pos] == instance
        work.labels[hit] = np.asarray(mask_ids)[pos[hit]]


class SimulatedMaskFrontend(_SemanticErrorsMixin):
    """SIMULATION of a class-agnostic 2D segmenter (FastSAM/SAM) from the ground truth.

    Per frame, on the ground-truth instance image (things and stuff alike, void excluded)
    it applies, in this order: misses, merges of touching segments, splits, spurious
    fragments, boundary jitter, boundary label flips, the small-mask filter and a random
    permutation of the ids. Everything is drawn from ``np.random.default_rng((seed,
    frame.index))``, so a frame's output depends only on (seed, frame index, content).

    Optionally fills ``MaskFrame.embeddings`` from a :class:`SimulatedEmbeddingSpace`
    (majority ground-truth class under each mask), with systematic errors when a
    :class:`SemanticErrorModel` is given. That needs the class names, so pass a ``scene``
    to the constructor or the call.

    Attributes:
        errors: the error model.
        seed: random seed mixed with the frame index.
        scene: default scene for thing/stuff decisions and class names (may be None: then
            every segment is treated as a thing and no embeddings can be made).
        embedding_space: when set, masks get SIMULATED vision-language embeddings.
        semantic_errors: systematic (view-consistent) errors of those embeddings, or None
            (per-view noise only); decided per scene, independent of ``seed`` and of the
            mask errors.
        last_provenance: output mask id -> ground-truth instance ids it came from, for the
            last frame (a merge lists two ids, a fragment on void lists none).
        last_origin: output mask id -> "gt", "split", "merge" or "spurious".
        last_stats: counts of the errors applied to the last frame.
        stats: the same counts summed over all frames since construction / reset_stats().
    """

    def __init__(self, errors: MaskErrorModel | None = None, seed: int = 0, *,
                 scene: Scene | None = None,
                 embedding_space: SimulatedEmbeddingSpace | None = None,
                 semantic_errors: SemanticErrorModel | None = None) -> None:
        self.errors = errors if errors is not None else MaskErrorModel()
        self.seed = int(seed)
        self.scene = scene
        self.embedding_space = embedding_space
        self.semantic_errors = semantic_errors
        self.last_provenance: dict[int, list[int]] = {}
        self.last_origin: dict[int, str] = {}
        self.last_stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        # scene -> world centroid of each ground-truth id (systematic splits), see _centroids
        self._centroid_cache: tuple[Scene | None, dict[int, np.ndarray]] | None = None

    def reset_stats(self) -> None:
        """Zero the cumulative error counts."""
        self.stats = dict.fromkeys(_STAT_KEYS, 0)

    def format_stats(self) -> str:
        """The cumulative counts as text, e.g. "82 splits, 50 merges, ..."."""
        s = self.stats
        text = (f"{s['frames']} frames, {s['gt_segments']} GT segments -> {s['masks']} masks: "
                f"{s['splits']} splits, {s['merges']} merges, {s['missed_small']} small missed, "
                f"{s['missed']} other missed, {s['spurious']} spurious, {s['jittered']} "
                f"jittered, {s['flipped_px']} px flipped, {s['confusions']} embedding "
                f"confusions")
        if self.semantic_errors is not None and self.semantic_errors.active:
            text += (f"; systematic semantics: {s['sem_confused']} masks as a similar class, "
                     f"{s['sem_support']} as their support, {s['sem_background']} pulled "
                     f"toward their background")
        return text

    # -- the pipeline -------------------------------------------------------------------

    def __call__(self, frame: SceneFrame, scene: Scene | None = None) -> MaskFrame:
        """Simulated masks (and optionally embeddings) for one frame.

        Args:
            frame: the rendered view; uses ``instance``, ``semantic`` and ``index``.
            scene: overrides the constructor's scene for this call.

        Returns:
            MaskFrame with (H, W) int32 labels 1..M, (M,) float32 scores and, when an
            embedding space is set, (M, D) float32 unit embeddings.
        """
        scene = scene if scene is not None else self.scene
        rng = np.random.default_rng((self.seed, int(frame.index)))
        err = self.errors
        stats = dict.fromkeys(_STAT_KEYS, 0)
        instance = np.asarray(frame.instance)
        semantic = np.asarray(frame.semantic)
        void = instance == VOID

        gt_ids, areas = np.unique(instance[~void], return_counts=True)
        seg_class = _segment_classes(instance, semantic, gt_ids)
        is_thing = self._thing_lookup(seg_class, scene)
        stats["frames"], stats["gt_segments"] = 1, len(gt_ids)

        work = _Work(labels=np.zeros(instance.shape, np.int64))
        if err.mode == "systematic":
            self._systematic_misses(work, instance, gt_ids, areas, is_thing, rng, stats)
            self._systematic_merges(work, is_thing, stats)
            self._systematic_splits(work, frame, is_thing, scene, stats)
        else:
            self._apply_misses(work, instance, gt_ids, areas, rng, stats)
            self._apply_merges(work, is_thing, rng, stats)
            self._apply_splits(work, is_thing, rng, stats)
        self._apply_spurious(work, instance, gt_ids, is_thing, rng, stats)
        self._apply_jitter(work, void, rng, stats)
        self._apply_flips(work, void, rng, stats)

        # Only spurious fragments may cover void pixels.
        spurious_ids = [i for i, o in work.origin.items() if o == _SPURIOUS]
        work.labels[void & ~np.isin(work.labels, spurious_ids)] = 0

        labels, old_ids = postprocess_with_ids(work.labels, err.min_area)
        labels, old_ids = self._permute(labels, old_ids, rng)
        n = len(old_ids)
        self.last_provenance = {i + 1: sorted(work.provenance[int(o)]) for i, o in
                                enumerate(old_ids)}
        self.last_origin = {i + 1: work.origin[int(o)] for i, o in enumerate(old_ids)}
        scores = self._scores(rng)

        embeddings = None
        if self.embedding_space is not None:
            if scene is None:
                raise ValueError("simulated embeddings need the scene's class names")
            embeddings, stats["confusions"], sem = _mask_embeddings(
                labels, semantic, n, scene.classes, self.embedding_space, rng,
                self._systematic_semantics(scene), instance)
            stats.update(sem)

        stats["masks"] = n
        self.last_stats = stats
        for k, v in stats.items():
            self.stats[k] += v
        return MaskFrame(labels=labels, scores=scores, embeddings=embeddings)

    @staticmethod
    def _thing_lookup(seg_class: dict[int, int], scene: Scene | None) -> dict[int, bool]:
        """GT id -> is a thing; without a scene every segment counts as a thing."""
        if scene is None:
            return {g: True for g in seg_class}
        return {g: c in scene.thing_classes for g, c in seg_class.items()}

    def _apply_misses(self, work: _Work, instance: np.ndarray, gt_ids: np.ndarray,
                      areas: np.ndarray, rng: np.random.Generator, stats: dict) -> None:
        """Give every GT segment a mask unless it is missed (small ones more often)."""
        err = self.errors
        # One draw per segment in id order, so a rate change does not reshuffle the others.
        draws = rng.random(len(gt_ids))
        lut_gt, lut_id = [], []
        for g, area, u in zip(gt_ids, areas, draws):
            small = area < err.small_area_px
            if u < (err.miss_small_rate if small else err.miss_rate):
                stats["missed_small" if small else "missed"] += 1
                continue
            lut_gt.append(g)
            lut_id.append(work.new_id([int(g)], _GT))
        _paint(work, instance, lut_gt, lut_id)

    def _apply_merges(self, work: _Work, is_thing: dict[int, bool],
                      rng: np.random.Generator, stats: dict) -> None:
        """Merge pairs of touching segments (each segment in at most one merge)."""
        err = self.errors
        if err.merge_rate <= 0 or work.next_id <= 2:
            return
        pairs, contact = _contacts(work.labels)
        pairs = pairs[contact >= err.merge_min_contact_px]
        if not err.merge_stuff:
            thing = np.array([is_thing[work.provenance[int(a)][0]] and
                              is_thing[work.provenance[int(b)][0]] for a, b in pairs], bool)
            pairs = pairs[thing] if len(pairs) else pairs
        if len(pairs) == 0:
            return
        neighbours: dict[int, list[int]] = {}
        for a, b in pairs:
            neighbours.setdefault(int(a), []).append(int(b))
            neighbours.setdefault(int(b), []).append(int(a))
        used: set[int] = set()
        lut = np.arange(work.next_id, dtype=np.int64)
        for a in rng.permutation(sorted(neighbours)):
            a = int(a)
            if a in used or rng.random() >= err.merge_rate:
                continue
            free = [b for b in neighbours[a] if b not in used]
            if not free:
                continue
            b = free[int(rng.integers(len(free)))]
            used.update((a, b))
            m = work.new_id(work.provenance[a] + work.provenance[b], _MERGE)
            lut = np.append(lut, m)
            lut[a] = lut[b] = m
            stats["merges"] += 1
        work.labels = lut[work.labels]

    def _apply_splits(self, work: _Work, is_thing: dict[int, bool],
                      rng: np.random.Generator, stats: dict) -> None:
        """Over-segment masks into 2-3 parts (merged masks can be split again)."""
        err = self.errors
        if err.split_rate <= 0 and err.stuff_split_rate <= 0:
            return
        lo, hi = err.split_parts
        objects = ndimage.find_objects(work.labels)
        for i, sl in enumerate(objects, start=1):
            if sl is None:
                continue
            thing = all(is_thing[g] for g in work.provenance[i])
            rate = err.split_rate if thing else err.stuff_split_rate
            if rng.random() >= rate:
                continue
            crop = work.labels[sl]
            rr, cc = np.nonzero(crop == i)
            k = int(rng.integers(lo, hi + 1))
            part = _split_parts(np.stack([rr, cc], 1), k, rng)
            sizes = np.bincount(part, minlength=k)
            if (sizes < max(err.min_area, 1)).any():
                continue  # a sliver would be dropped later and leave a hole; no split
            origin = _SPLIT if work.origin[i] == _GT else work.origin[i]
            for j in range(1, k):
                new = work.new_id(work.provenance[i], origin)
                crop[rr[part == j], cc[part == j]] = new
            work.origin[i] = origin
            stats["splits"] += 1

    # -- systematic (view-consistent) errors --------------------------------------------

    def _chosen(self, rate: float, *key: int) -> bool:
        """A choice made once per ground-truth id (or id pair), the same in every view."""
        u = np.random.default_rng((self.errors.systematic_seed, *key)).random()
        return bool(u < rate)

    def _systematic_misses(self, work: _Work, instance: np.ndarray, gt_ids: np.ndarray,
                           areas: np.ndarray, is_thing: dict[int, bool],
                           rng: np.random.Generator, stats: dict) -> None:
        """Chosen small things are missed whenever small in the view; others per view."""
        err = self.errors
        draws = rng.random(len(gt_ids))
        lut_gt, lut_id = [], []
        for g, area, u in zip(gt_ids, areas, draws):
            g = int(g)
            if (is_thing[g] and area < err.small_area_px
                    and self._chosen(err.miss_small_rate, 1, g)):
                stats["missed_small"] += 1
                continue
            if u < err.miss_rate:
                stats["missed"] += 1
                continue
            lut_gt.append(g)
            lut_id.append(work.new_id([g], _GT))
        _paint(work, instance, lut_gt, lut_id)

    def _systematic_merges(self, work: _Work, is_thing: dict[int, bool],
                           stats: dict) -> None:
        """Chosen touching pairs merge wherever they touch (a chain merges together)."""
        err = self.errors
        if err.merge_rate <= 0 or work.next_id <= 2:
            return
        pairs, contact = _contacts(work.labels)
        pairs = pairs[contact >= err.merge_min_contact_px]
        parent = {}

        def root(a: int) -> int:
            while parent.get(a, a) != a:
                a = parent[a]
            return a

        for a, b in pairs:
            ga, gb = work.provenance[int(a)][0], work.provenance[int(b)][0]
            things = is_thing[ga] and is_thing[gb]
            if not (things or err.merge_stuff):
                continue
            if self._chosen(err.merge_rate, 2, min(ga, gb), max(ga, gb)):
                ra, rb = root(int(a)), root(int(b))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, list[int]] = {}
        for a in list(parent):
            groups.setdefault(root(a), []).append(a)
        lut = np.arange(work.next_id, dtype=np.int64)
        for r, members in groups.items():
            ids = [r] + members
            m = work.new_id(sorted(g for i in ids for g in work.provenance[i]), _MERGE)
            lut = np.append(lut, m)
            lut[ids] = m
            stats["merges"] += 1
        work.labels = lut[work.labels]

    def _centroids(self, scene: Scene | None) -> dict[int, np.ndarray]:
        """World centroid of every ground-truth id over the scene's frames (cached)."""
        if self._centroid_cache is not None and self._centroid_cache[0] is scene:
            return self._centroid_cache[1]
        sums: dict[int, np.ndarray] = {}
        for f in (scene.frames if scene is not None else []):
            pts, pix = backproject(f.depth, f.K, f.camera_to_world)
            ids = np.asarray(f.instance).reshape(-1)[pix]
            for g in np.unique(ids[ids != VOID]):
                sel = ids == g
                acc = sums.setdefault(int(g), np.zeros(4))
                acc[:3] += pts[sel].sum(0)
                acc[3] += sel.sum()
        cent = {g: a[:3] / a[3] for g, a in sums.items()}
        self._centroid_cache = (scene, cent)
        return cent

    def _systematic_splits(self, work: _Work, frame: SceneFrame, is_thing: dict[int, bool],
                           scene: Scene | None, stats: dict) -> None:
        """Chosen things are cut by their own fixed 3D plane, chosen stuff into world
        tiles: the same cut in every view (parts too small to keep are not made)."""
        err = self.errors
        pts, pix = backproject(frame.depth, frame.K, frame.camera_to_world)
        if not len(pix):
            return
        flat = work.labels.reshape(-1)
        centroids = self._centroids(scene)
        for i in np.unique(flat[pix]):
            i = int(i)
            if i == 0 or len(work.provenance[i]) != 1:
                continue  # merged masks stay merged
            g = work.provenance[i][0]
            sel = flat[pix] == i
            if is_thing[g]:
                if not self._chosen(err.split_rate, 3, g) or g not in centroids:
                    continue
                n = np.random.default_rng((err.systematic_seed, 4, g)).normal(size=3)
                part = ((pts[sel] - centroids[g]) @ n > 0).astype(np.int64)
            else:
                if not self._chosen(err.stuff_split_rate, 5, g):
                    continue
                cell = np.floor(pts[sel] / err.tile_m).astype(np.int64)
                _, part = np.unique(cell, axis=0, return_inverse=True)
                part = part.reshape(-1)
            if part.max() == 0:
                continue
            where = pix[sel]
            for j in range(1, int(part.max()) + 1):
                if (part == j).any():
                    flat[where[part == j]] = work.new_id([g], _SPLIT)
            work.origin[i] = _SPLIT
            stats["splits"] += 1

    def _apply_spurious(self, work: _Work, instance: np.ndarray, gt_ids: np.ndarray,
                        is_thing: dict[int, bool], rng: np.random.Generator,
                        stats: dict) -> None:
        """Small random blobs on stuff segments and on the void region."""
        err = self.errors
        if err.spurious_rate <= 0:
            return
        hosts = [VOID] + [int(g) for g in gt_ids if not is_thing[int(g)]]
        h, w = instance.shape
        for host in hosts:
            if rng.random() >= err.spurious_rate:
                continue
            rr, cc = np.nonzero(instance == host)
            if len(rr) < err.min_area:
                continue
            c = int(rng.integers(len(rr)))
            blob = _ellipse_mask((h, w), (rr[c], cc[c]), rng.uniform(*err.spurious_area_px),
                                 rng)
            blob &= instance == host
            if blob.sum() < max(err.min_area, 1):
                continue
            work.labels[blob] = work.new_id([] if host == VOID else [host], _SPURIOUS)
            stats["spurious"] += 1

    def _apply_jitter(self, work: _Work, void: np.ndarray, rng: np.random.Generator,
                      stats: dict) -> None:
        """Dilate or erode random masks by 1..boundary_jitter_px pixels."""
        err = self.errors
        n_px = int(err.boundary_jitter_px)
        if n_px <= 0 or err.jitter_rate <= 0:
            return
        # Dilate/erode the masks as they were before any jitter, so a pixel moves at most
        # boundary_jitter_px from an original boundary however the masks interact.
        before = work.labels.copy()
        objects = ndimage.find_objects(before)
        for i in rng.permutation(len(objects)) + 1:
            sl = objects[i - 1]
            if sl is None or rng.random() >= err.jitter_rate:
                continue
            r = int(rng.integers(1, n_px + 1)) * (1 if rng.random() < 0.5 else -1)
            # Crop with a margin of r pixels so the dilation can reach outside the bbox.
            sl = tuple(slice(max(s.start - n_px, 0), s.stop + n_px) for s in sl)
            crop, crop_void = work.labels[sl], void[sl]
            mask = before[sl] == i
            if r > 0:
                grown = ndimage.binary_dilation(mask, CROSS, iterations=r) & ~mask & ~crop_void
                crop[grown] = i
            else:
                kept = ndimage.binary_erosion(mask, CROSS, iterations=-r, border_value=1)
                if kept.sum() < max(err.min_area, mask.sum() // 2):
                    continue  # would erase the mask; jitter is meant to move boundaries
                crop[mask & ~kept & (crop == i)] = 0
            stats["jittered"] += 1

    def _apply_flips(self, work: _Work, void: np.ndarray, rng: np.random.Generator,
                     stats: dict) -> None:
        """Boundary pixels take the label of a random 4-neighbour with probability p."""
        rate = self.errors.boundary_flip_rate
        if rate <= 0:
            return
        lab = work.labels
        pad = np.pad(lab, 1, mode="edge")  # edge padding: the image border never flips
        neigh = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
        pick = rng.integers(0, 4, size=lab.shape)
        other = np.take_along_axis(neigh, pick[None], axis=0)[0]
        flip = (other != lab) & (rng.random(lab.shape) < rate) & ~void
        lab[flip] = other[flip]
        stats["flipped_px"] += int(flip.sum())

    @staticmethod
    def _permute(labels: np.ndarray, old_ids: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random per-frame ids: new id of label l is perm[l - 1]; old_ids follow."""
        n = len(old_ids)
        perm = rng.permutation(n) + 1
        lut = np.concatenate([[0], perm]).astype(np.int32)
        reordered = np.empty_like(old_ids)
        reordered[perm - 1] = old_ids
        return lut[labels], reordered

    def _scores(self, rng: np.random.Generator) -> np.ndarray:
        """(M,) float32 confidences: erroneous masks score lower on average, overlapping.

        Real FastSAM scores are only weakly informative, so the ranges overlap.
        """
        n = len(self.last_origin)
        lo_hi = {_GT: (0.6, 1.0), _SPLIT: (0.4, 0.9), _MERGE: (0.4, 0.9),
                 _SPURIOUS: (0.3, 0.7)}
        bounds = np.array([lo_hi[self.last_origin[i + 1]] for i in range(n)]).reshape(n, 2)
        return rng.uniform(bounds[:, 0], bounds[:, 1]).astype(np.float32)


def _ellipse_mask(shape: tuple[int, int], centre: tuple[int, int], area: float,
                  rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool random ellipse of about ``area`` pixels (aspect 1..2.5, any angle)."""
    aspect = rng.uniform(1.0, 2.5)
    a = np.sqrt(area * aspect / np.pi)
    b = a / aspect
    theta = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


# --------------------------------------------------------------------------------------
# Real weights-free segmenter
# --------------------------------------------------------------------------------------

class SegmenterFrontend(_SemanticErrorsMixin):
    """The benchmark's wrapper of a real segmenter
    (:class:`panoptic_mapping.frontends.segmenters.Segmenter`: the weights-free classical
    one, FastSAM or SAM), returning :class:`MaskFrame`.

    No embeddings, unless a :class:`SimulatedEmbeddingSpace` is passed: then each mask gets
    the SIMULATED embedding of the majority ground-truth class under it (an oracle for
    semantics, used only to run open-vocabulary metrics on real masks).

    Attributes:
        segmenter: the segmenter doing the work.
        embedding_space, scene: optional SIMULATED embeddings (both needed).
        semantic_errors: systematic errors of those embeddings, or None (per-view noise
            only), as in :class:`SimulatedMaskFrontend`.
        seed: seeds the embedding noise with the frame index.
    """

    def __init__(self, segmenter: Segmenter, *,
                 embedding_space: SimulatedEmbeddingSpace | None = None,
                 scene: Scene | None = None, seed: int = 0,
                 semantic_errors: SemanticErrorModel | None = None) -> None:
        self.segmenter = segmenter
        self.embedding_space = embedding_space
        self.scene = scene
        self.seed = int(seed)
        self.semantic_errors = semantic_errors

    def segment(self, rgb: np.ndarray, depth: np.ndarray | None = None,
                K: np.ndarray | None = None) -> np.ndarray:
        """(H, W) int32 non-overlapping class-agnostic labels of one image, ids 1..M.

        Args:
            rgb: (H, W, 3) uint8. depth: (H, W) float metric depth (0 = nothing hit), or None.
            K: (3, 3) intrinsics or None.
        """
        return segment_image(self.segmenter, rgb, depth, K).labels

    def __call__(self, frame: SceneFrame, scene: Scene | None = None) -> MaskFrame:
        """Masks for one frame (uses rgb and depth; the ground truth only for SIMULATED
        embeddings).

        Returns:
            MaskFrame with (H, W) int32 labels, (M,) float32 scores and (M, D)
            embeddings or None.
        """
        seg = segment_image(self.segmenter, frame.rgb, frame.depth, frame.K)
        labels, n = seg.labels, seg.num_masks
        embeddings = None
        scene = scene if scene is not None else self.scene
        # oracle embeddings read the ground-truth classes: none without ground truth
        if self.embedding_space is not None and np.ndim(frame.semantic) == 2:
            if scene is None:
                raise ValueError("simulated embeddings need the scene's class names")
            rng = np.random.default_rng((self.seed, int(frame.index)))
            embeddings, _, _ = _mask_embeddings(
                labels, np.asarray(frame.semantic), n, scene.classes, self.embedding_space,
                rng, self._systematic_semantics(scene), frame.instance)
        return MaskFrame(labels=labels, scores=seg.scores, embeddings=embeddings)


def classical_frontend(method: str = "felzenszwalb", *,
                       embedding_space: SimulatedEmbeddingSpace | None = None,
                       scene: Scene | None = None, seed: int = 0,
                       semantic_errors: SemanticErrorModel | None = None,
                       **params) -> SegmenterFrontend:
    """The real, weights-free segmenter in the benchmark: scikit-image superpixels split
    across depth discontinuities, small regions merged; scores are the regions'
    compactness. ``params``: :class:`ClassicalSegmenter`'s (scale, sigma, min_area,
    use_depth, ...)."""
    return SegmenterFrontend(ClassicalSegmenter(method, **params),
                             embedding_space=embedding_space, scene=scene, seed=seed,
                             semantic_errors=semantic_errors)


def geometric_frontend(*, embedding_space: SimulatedEmbeddingSpace | None = None,
                       scene: Scene | None = None, seed: int = 0, min_area: int = 30,
                       use_depth: bool = True,
                       semantic_errors: SemanticErrorModel | None = None,
                       **params) -> SegmenterFrontend:
    """The real, weights-free geometric RGB-D segmenter in the benchmark
    (:class:`panoptic_mapping.frontends.geometric.GeometricSegmenter`): depth
    discontinuities, support planes as masks of their own (concave creases when
    ``concave=True``). It needs depth: frames without depth, and ``use_depth=False``
    (an RGB-only run), get the classical segmenter, as in the node. ``params``:
    :class:`GeometricConfig`'s fields (jump_rel, planes, plane_min_fraction, ...)."""
    if not use_depth:
        return classical_frontend(use_depth=False, min_area=min_area,
                                  embedding_space=embedding_space, scene=scene, seed=seed,
                                  semantic_errors=semantic_errors)
    return SegmenterFrontend(GeometricSegmenter(GeometricConfig(**params), min_area=min_area),
                             embedding_space=embedding_space, scene=scene, seed=seed,
                             semantic_errors=semantic_errors)
