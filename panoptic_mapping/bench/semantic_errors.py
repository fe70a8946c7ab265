"""Systematic (view-consistent) errors of the SIMULATED vision-language embeddings.

The benchmark's :class:`~panoptic_mapping.bench.frontends.SimulatedEmbeddingSpace` embeds a
mask as its class vector plus independent per-view noise: the easy case for fusion, since
averaging views removes the noise. Real open-vocabulary masks (CLIP on FastSAM crops) are
wrong *systematically*: a mug seen next to a cup-like shadow is "cup" from every side, a
small part is labelled as what it sits on, a crop's background leaks into its embedding.
:class:`SemanticErrorModel` adds three such kinds beside the per-view noise, so label
sources (per-mask averaging, 3D-fused features) can be compared where averaging cannot help:

* **confusion** - a share of the thing instances is embedded, in every view, as a similar
  class: one of the ``confusion_top_k`` other thing classes closest to its own in the
  embedding space (a seeded choice per instance).
* **support** - a share of the small thing instances (largest bounding-box edge at most
  ``support_max_size_m``) is embedded, in every view, as the class of the surface it rests
  on (a duck on the table -> "table", a ball in a tray -> "tray"); see
  :func:`find_supports` for how the support is found.
* **background** - every mask's embedding, in every view, is pulled toward the class that
  dominates a ring of pixels around the mask *in that view* (the ground-truth classes of
  the ring, void excluded), the more the smaller the mask is against its ring: what CLIP
  sees around an object in its crop, and how much of the crop it fills, change with the
  view, and so does this bias (a far, small view of an object is dominated by its
  surroundings, a close one hardly).

Which instances are confused or take their support's class, and as what, is decided once
per scene from ``seed``, the scene's seed and the ground-truth instance ids only
(:class:`SemanticErrorPlan`): identical in every view, for the training and the held-out
front-ends, across runs, and independent of the mask front-end's seeds
(``MaskErrorModel.systematic_seed``, the front-end seed). A mask takes the errors of the
ground-truth instance under most of its pixels, so split parts of a confused object are
confused alike. The per-view noise stays what it is without these errors: the random
draws are the same, only the vectors they perturb differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
from scipy import ndimage

from .types import VOID, Scene

__all__ = ["SemanticErrorModel", "SemanticErrorPlan", "find_supports", "plan_semantic_errors",
           "background_classes"]

# Leading key of every random generator here: keeps the choices independent of the mask
# front-end's (MaskErrorModel seeds its choices with (systematic_seed, kind, id)).
_SALT = 0x53454D  # "SEM"
_CONFUSE, _CONFUSE_TARGET, _SUPPORT = 1, 2, 3

# Tolerance of the support test on bounding boxes [m] (resting heights are exact in the
# rendered scenes; a centimetre absorbs mesh and rounding slop).
_SUPPORT_TOL_M = 0.01


@dataclass
class SemanticErrorModel:
    """Systematic errors of the SIMULATED mask embeddings (see the module docstring).

    Every kind is off at rate/weight 0; ``mode="none"`` turns all off and leaves the
    embeddings exactly as without this model.

    Attributes:
        mode: "none" (default: today's embeddings, per-view noise only) or "systematic".
        confusion_rate: share of the scene's thing instances embedded as a similar class in
            every view: ``round(confusion_rate * N)`` of the N things, picked by a seeded
            uniform number per instance (the smallest win), so a higher rate adds instances
            without reshuffling the ones already chosen. Instances chosen for ``support``
            are not picked again.
        confusion_top_k: the similar class is a seeded choice among the k thing classes
            (other than the instance's own) whose class vectors have the highest cosine to
            its own; 1 = always the most similar one.
        confusion_weight: ``w`` of the blend ``unit((1 - w) * own + w * similar)`` before
            the per-view noise; above 0.5 the similar class wins, and the own class stays
            second (a real model's top-2).
        support_rate: share of the eligible small things embedded as their support's class
            in every view (rounded count, seeded per instance like ``confusion_rate``).
            Eligible: things with a support (:func:`find_supports`) of another class and a
            largest bounding-box edge of at most ``support_max_size_m``.
        support_max_size_m: "small" for the support kind [m].
        support_weight: ``w`` of the blend toward the support's class.
        background_weight: largest weight of the blend toward the class dominating the
            mask's ring in that view (0 = off); a view's weight is ``background_weight *
            min(1, ring pixels / mask pixels)``: the full weight for a mask no larger than
            its ring (small or thin in that view), less for a large one. Applied after the
            per-instance kinds, before the noise; at 0.5 a small mask is embedded halfway
            between its class and its background's, and the noise decides.
        background_ring_px: width of the ring around a mask [px] (scale it with the image
            size; 3 px at 160x120).
        seed: seeds every per-instance choice, together with the scene's own seed
            (salted: independent of the mask errors' seeds).
    """

    mode: str = "none"
    confusion_rate: float = 0.2
    confusion_top_k: int = 3
    confusion_weight: float = 0.8
    support_rate: float = 0.3
    support_max_size_m: float = 0.25
    support_weight: float = 0.8
    background_weight: float = 0.5
    background_ring_px: int = 3
    seed: int = 0

    MODES = ("none", "systematic")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"semantic error mode must be one of {self.MODES}, "
                             f"got {self.mode!r}")
        for name in ("confusion_rate", "support_rate", "confusion_weight", "support_weight",
                     "background_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.confusion_top_k < 1 or self.background_ring_px < 1:
            raise ValueError("confusion_top_k and background_ring_px must be >= 1")

    @property
    def active(self) -> bool:
        """Whether any embedding changes (mode systematic with some kind switched on)."""
        return self.mode == "systematic" and (
            (self.confusion_rate > 0 and self.confusion_weight > 0)
            or (self.support_rate > 0 and self.support_weight > 0)
            or self.background_weight > 0)

    def to_dict(self) -> dict:
        """JSON-serialisable parameters (for the benchmark's run record)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SemanticErrorPlan:
    """The per-instance decisions of a :class:`SemanticErrorModel` for one scene.

    Attributes:
        confused: thing instance id -> class id it is embedded as (a similar class).
        supported: small thing instance id -> class id of its support.
        supports: thing instance id -> support instance id, for every thing that has one
            (chosen or not), from :func:`find_supports`.
        n_things: thing instances the confusion share is taken of.
        n_support_eligible: instances the support share is taken of.
        support_source: "layout" (the scene's recorded bounding boxes) or "none" (no
            layout: no support errors).
    """

    confused: dict[int, int] = field(default_factory=dict)
    supported: dict[int, int] = field(default_factory=dict)
    supports: dict[int, int] = field(default_factory=dict)
    n_things: int = 0
    n_support_eligible: int = 0
    support_source: str = "none"

    def target(self, instance_id: int, model: SemanticErrorModel) -> tuple[int, float, str] | None:
        """(class id, blend weight, kind) of the per-instance error of ``instance_id``."""
        if instance_id in self.supported:
            return self.supported[instance_id], model.support_weight, "support"
        if instance_id in self.confused:
            return self.confused[instance_id], model.confusion_weight, "confusion"
        return None

    def to_dict(self, classes: Sequence[str]) -> dict:
        """JSON-serialisable summary with class names (for the run record)."""
        return {
            "confused": {str(g): classes[c] for g, c in sorted(self.confused.items())},
            "supported": {str(g): classes[c] for g, c in sorted(self.supported.items())},
            "supports": {str(g): s for g, s in sorted(self.supports.items())},
            "n_things": self.n_things, "n_support_eligible": self.n_support_eligible,
            "support_source": self.support_source,
        }


def _key(seed: int, scene: Scene, kind: int, instance_id: int) -> tuple[int, ...]:
    """Random-generator key of one per-instance choice. The scene's own seed
    (``scene.config["seed"]``, 0 if absent) is mixed in: the rendered scenes number their
    fixed core of objects alike (the tray is instance 7 in every tabletop seed), and the
    same model seed should not pick the same core objects in every scene."""
    scene_seed = scene.config.get("seed", 0) if isinstance(scene.config, dict) else 0
    scene_seed = scene_seed if isinstance(scene_seed, int) and scene_seed >= 0 else 0
    return (_SALT, int(seed), scene_seed, kind, int(instance_id))


def _uniform(seed: int, scene: Scene, kind: int, instance_id: int) -> float:
    """A uniform number fixed by (seed, scene seed, kind, instance id): the same in every
    view."""
    return float(np.random.default_rng(_key(seed, scene, kind, instance_id)).random())


def _pick_share(ids: Sequence[int], rate: float, seed: int, scene: Scene,
                kind: int) -> list[int]:
    """``round(rate * len(ids))`` of ``ids`` (halves up): those with the smallest seeded
    uniforms."""
    n = int(np.floor(rate * len(ids) + 0.5))
    if n <= 0:
        return []
    return sorted(sorted(ids, key=lambda g: (_uniform(seed, scene, kind, g), g))[:n])


def find_supports(scene: Scene, tol: float = _SUPPORT_TOL_M) -> dict[int, int]:
    """Thing instance id -> id of the instance it rests on, from the scene's layout.

    Uses the world bounding boxes that ``make_scene`` records in
    ``scene.config["layout"]`` (kept by save_scene/load_scene). An instance S supports a
    thing T when T's footprint centre (xy) lies inside S's box, S starts below T (S's bottom
    under T's by more than ``tol``) and reaches up to it (S's top at least T's bottom
    minus ``tol``); of several, the one whose bottom is highest (the nearest below: a tray
    rather than the table under it). Objects resting side by side on one surface share
    their bottom height, so none supports the other, however their boxes overlap. In the
    rendered scenes this gives: a thing on the table -> the table, the object in the tray
    -> the tray, the upper jenga block -> the lower one, a mug on a room's table -> that
    table, furniture and things on the floor -> the floor. Walls never contain a footprint
    centre inside the room.

    Returns:
        {} when the scene has no layout (e.g. a scene folder written by hand).
    """
    layout = scene.config.get("layout") if isinstance(scene.config, dict) else None
    if not layout:
        return {}
    boxes = {int(r["instance"]): (np.asarray(r["aabb_min"], float),
                                  np.asarray(r["aabb_max"], float)) for r in layout}
    out: dict[int, int] = {}
    for t, (tlo, thi) in boxes.items():
        if scene.instance_class.get(t) not in scene.thing_classes:
            continue
        centre = (tlo[:2] + thi[:2]) / 2
        best, best_bottom = None, -np.inf
        for s, (slo, shi) in boxes.items():
            if s == t or not np.all((slo[:2] <= centre) & (centre <= shi[:2])):
                continue
            if slo[2] < tlo[2] - tol and shi[2] >= tlo[2] - tol and slo[2] > best_bottom:
                best, best_bottom = s, slo[2]
        if best is not None:
            out[t] = best
    return out


def _similar_classes(own: int, candidates: Sequence[int], classes: Sequence[str],
                     space) -> list[int]:
    """``candidates`` other than ``own``, most similar first (cosine of class vectors)."""
    ref = space.class_embedding(classes[own]).astype(np.float64)
    others = [c for c in candidates if c != own]
    cos = [float(ref @ space.class_embedding(classes[c])) for c in others]
    order = sorted(range(len(others)), key=lambda i: (-cos[i], others[i]))
    return [others[i] for i in order]


def plan_semantic_errors(model: SemanticErrorModel, scene: Scene,
                         space) -> SemanticErrorPlan:
    """Decide, once per scene, which instances are confused or take their support's class.

    Args:
        model: the error model (its mode is not checked here).
        scene: uses ``instance_class``, ``thing_classes``, ``classes`` and the layout.
        space: the :class:`SimulatedEmbeddingSpace` whose class vectors define "similar".
    """
    things = sorted(g for g, c in scene.instance_class.items() if c in scene.thing_classes)
    supports = find_supports(scene)
    layout = {int(r["instance"]): r for r in (scene.config.get("layout") or [])}
    plan = SemanticErrorPlan(supports=supports, n_things=len(things),
                             support_source="layout" if layout else "none")
    eligible = []
    for g in things:
        s = supports.get(g)
        if s is None or scene.instance_class.get(s) in (None, scene.instance_class[g]):
            continue
        size = np.asarray(layout[g]["aabb_max"], float) - np.asarray(layout[g]["aabb_min"], float)
        if float(size.max()) <= model.support_max_size_m:
            eligible.append(g)
    plan.n_support_eligible = len(eligible)
    for g in _pick_share(eligible, model.support_rate, model.seed, scene, _SUPPORT):
        plan.supported[g] = scene.instance_class[supports[g]]
    thing_classes = sorted(scene.thing_classes)
    pool = [g for g in things if g not in plan.supported]
    n_confused = int(np.floor(model.confusion_rate * len(things) + 0.5))
    ranked = sorted(pool, key=lambda g: (_uniform(model.seed, scene, _CONFUSE, g), g))
    for g in sorted(ranked[:n_confused]):
        similar = _similar_classes(scene.instance_class[g], thing_classes, scene.classes,
                                   space)[:model.confusion_top_k]
        if not similar:
            continue
        pick = np.random.default_rng(_key(model.seed, scene, _CONFUSE_TARGET, g)).integers(
            len(similar))
        plan.confused[g] = similar[int(pick)]
    return plan


def background_classes(labels: np.ndarray, semantic: np.ndarray, n_masks: int,
                       ring_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth class dominating a ring of ``ring_px`` pixels around each mask, and
    how large that ring is against the mask.

    The ring is the mask dilated by ``ring_px`` (4-connected steps) minus the mask itself,
    within the image; void pixels do not vote for the class (ties go to the lower class
    id) but count in the ring's size.

    Args:
        labels: (H, W) mask ids 1..n_masks (0 = no mask).
        semantic: (H, W) ground-truth class ids.

    Returns:
        (n_masks,) int64 class ids, -1 where the ring has no labelled pixel; (n_masks,)
        float64 ``min(1, ring pixels / mask pixels)`` (0 for a mask without pixels).
    """
    out = np.full(n_masks, -1, np.int64)
    share = np.zeros(n_masks, np.float64)
    if n_masks == 0:
        return out, share
    cross = ndimage.generate_binary_structure(2, 1)
    h, w = labels.shape
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=n_masks), start=1):
        if sl is None:
            continue
        r0, r1 = max(sl[0].start - ring_px, 0), min(sl[0].stop + ring_px, h)
        c0, c1 = max(sl[1].start - ring_px, 0), min(sl[1].stop + ring_px, w)
        mask = labels[r0:r1, c0:c1] == i
        ring = ndimage.binary_dilation(mask, cross, iterations=ring_px) & ~mask
        share[i - 1] = min(1.0, float(ring.sum()) / float(mask.sum()))
        values = semantic[r0:r1, c0:c1][ring]
        values = values[values != VOID]
        if values.size:
            out[i - 1] = int(np.bincount(values.astype(np.int64)).argmax())
    return out, share
