"""The mapper: the one object the node and the benchmark talk to.

It validates frames, fuses their masks into the instance map, keeps the keyframe buffer,
trains the panoptic field, and answers renderings, InstanceLoc and text queries.

The field sits in the association loop: new frames are associated against the map's
rendering, where the field fills what the voxels have not seen; while training, keyframes
are re-associated one by one against the current map (whose ids merge and clean up as
evidence accumulates), so the labels the field learns follow the map. RGB-only keyframes
get depth by multi-view stereo against earlier frames (``stereo``) and are then mapped as
if it were measured; frames stereo cannot serve yet (too few sources) join the instance map
once the field can render their depth. Views without depth (InstanceLoc, renders) meet the
map where its voxels' surfaces are (``render_without_depth``), or the field's.

Every public method is thread-safe: one lock for the field's side, the instance map's own
lock for a frame's association (training goes on meanwhile), one frame at a time; readers
get copies.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import math
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from panoptic_mapping.core.device import check_device_name, resolve_device
from panoptic_mapping.core.field.encoding import center_from_points
from panoptic_mapping.core.field.extent import SceneExtent
from panoptic_mapping.core.field.keyframes import Keyframe, KeyframeBuffer, KeyframeConfig
from panoptic_mapping.core.field.occupancy import OccupancyGrid
from panoptic_mapping.core.field.panoptic_field import FieldConfig, PanopticField
from panoptic_mapping.core.field.renderer import render_view
from panoptic_mapping.core.field.sampling import SamplingConfig
from panoptic_mapping.core.field.trainer import DepthPrior, Trainer, TrainerConfig
from panoptic_mapping.core.frames import Frame, undistort_frame, validate_frame
from panoptic_mapping.core.geometry import backproject, check_rigid, up_direction
from panoptic_mapping.core.io.export import (
    ExportConfig,
    InstanceRecord,
    LabeledCloud,
    downsample_labeled_points,
    instance_table,
    voxel_means,
)
from panoptic_mapping.core.io.persistence import MapFileError, load_map, save_map
from panoptic_mapping.core.io.reductions import ReductionCache
from panoptic_mapping.core.lens import LensDistortion, undistortion_for
from panoptic_mapping.core.map.changes import ChangeEvent
from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.edits import InstanceEditError, MovedPoints, Vacancy, WorldEdits
from panoptic_mapping.core.map.instances import InstanceMap
from panoptic_mapping.core.map.localize import vote_masks
from panoptic_mapping.core.map.observations import id_observations, label_counts
from panoptic_mapping.core.labels import (label_instances, resting_on, support_explains,
                                          voxel_relevance)
from panoptic_mapping.core.resolution import (
    decimate_frame,
    labels_at_full_resolution,
    median_depth,
    upsample_nearest,
    working_factor,
)
from panoptic_mapping.core.semantics import LABEL_SOURCES, SemanticConfig, Vocabulary
from panoptic_mapping.core.stereo import SourceView, StereoConfig, StereoDepth
from panoptic_mapping.params import config_from_dict, config_to_dict, param

__all__ = ["MapperConfig", "Mapper", "IngestReport", "Localization", "FieldInstanceFill",
           "MAP_SECTIONS"]

# sections every map file holds ("edits" is optional: maps saved before edits existed)
MAP_SECTIONS = ("config", "embedding_dim", "instances", "keyframes", "vocabulary", "field",
                "grid", "extent", "counters")


@dataclass
class MapperConfig:
    """Configuration of the mapping core."""

    device: str = param("auto", "Torch device of the field: 'auto' (CUDA when available), "
                        "'cpu', 'cuda', 'cuda:1', ...")
    reassociate_every: int = param(10, "Training steps between re-associations of one "
                                   "keyframe's masks against the current map.", minimum=1)
    rgb_only_min_steps: int = param(200, "Training steps before the field's depth is trusted "
                                    "to place RGB-only keyframes in the instance map.",
                                    minimum=0)
    stereo_occupancy_min_frames: int = param(
        2, "Frames whose stereo depth must put a point in an occupancy voxel before the "
        "field is sampled there: a lone wrong depth marks space in front of a surface where "
        "the field then grows a floater (1: every stereo point marks, as measured depth "
        "does).", minimum=1)
    rgb_only_depth_targets: str = param(
        "stereo", "What the field learns depth from on frames without a depth camera: "
        "'stereo' the frame's own stereo depth, weighted by its confidence; 'map' the "
        "instance map's surfaces drawn at the keyframe (every frame's stereo fused, as "
        "views without depth are drawn; the frame's own stereo until the map shows "
        "something there): closer depth on the benchmark's tabletops, worse instances in "
        "its room (BENCHMARKS.md).", choices=("map", "stereo"))
    field_fill_confidence: float = param(0.5, "Least probability for the field's instance "
                                         "label to fill a pixel the voxels do not cover.",
                                         minimum=0.0, maximum=1.0)
    localize_map_boundaries: bool = param(
        True, "InstanceLoc: where two objects the frame's masks show meet, take the map's "
        "boundary (fused over many views) where its vote share is >= "
        "instances.localize.boundary_confidence instead of the "
        "one frame's mask edge. Measured on the benchmark's simulated front-end at 160x120 "
        "(BENCHMARKS.md); turn off for masks sharper than the instance voxels.")
    render_without_depth: str = param(
        "map", "Where a view without depth (InstanceLoc, instance renders) meets the map: "
        "'map' draws the instance voxels' surfaces (z-buffered, milliseconds), 'field' "
        "volume-renders the field's depth (seconds on a CPU, and only once trained).",
        choices=("map", "field"))
    carve_free_space: str = param(
        "stereo", "Depth whose free space withdraws votes from the voxels it sees through "
        "(instances.carve_weight): 'stereo' (its outliers leave floating voxels that later "
        "views see through), 'all' (measured depth too), 'none'.",
        choices=("stereo", "all", "none"))
    surface_min_weight: float = param(
        3.0, "With render_without_depth 'map': votes a voxel needs to be drawn where the "
        "view sees it a pixel or more wide (one vote may be one frame's stereo outlier); "
        "farther away, fewer in proportion to the share of voxels a frame's pixels sample "
        "there.", minimum=0.0)
    surface_gap_m: float = param(
        0.04, "With render_without_depth 'map': gaps up to about this wide [m] in a near "
        "surface the map holds only sparsely (a textureless table where stereo found a "
        "voxel here and there) are closed when a view without depth is drawn, instead of "
        "showing the surface behind through them (0: never).", minimum=0.0)
    still_translation_m: float = param(
        0.005, "A frame whose camera moved less than this [m] (and turned less than "
        "still_rotation_deg) since the last frame mapped is 'still': it shows the map "
        "nothing new, so only one in still_keep_every is mapped.", minimum=0.0)
    still_rotation_deg: float = param(0.5, "See still_translation_m [degrees].", minimum=0.0)
    still_keep_every: int = param(
        5, "Of the still frames in a row, every this-many-th is mapped (a camera that stands "
        "still keeps watching: change detection needs its frames); 1 maps every frame.",
        minimum=1)
    reader_copy_period_s: float = param(
        0.25, "The field's readers (InstanceLoc's fill of undecided voxels) use a copy of "
        "it, refreshed after a training step at most this often [s], so that they never "
        "wait for a step; 0 refreshes after every step.", minimum=0.0)
    reader_map_copy: bool = param(
        True, "InstanceLoc (and the labels of its answer) reads a copy of the instance map "
        "taken after each frame is mapped, so that a call meeting a frame's association and "
        "integration answers from the map before that frame instead of waiting for it "
        "(measured in the node with a 10 Hz camera: localize p95 601 -> 175 ms). The copy "
        "costs memory as large as the votes and fused features (28 MB for 0.3 M voxels, "
        "70 MB for 0.9 M) and 2.5-11 ms a frame on 2 CPU cores; it is kept only while "
        "readers read (one in the last minute). false: readers wait for the frame.")
    associate_beside_training: bool = param(
        True, "A frame is mapped beside training instead of waiting for the training step "
        "under way: its association and integration hold the instance map's own lock, the "
        "occupancy grid and keyframe buffer take it as their one writer, and only the "
        "field's creation and removals of instances gone wait for the field's lock. The fill "
        "of undecided voxels then reads the readers' copy of the field, refreshed first when "
        "no step is under way (the field as it is), else at most reader_copy_period_s old. "
        "false: every frame waits for the step under way and training waits for the frame. "
        "A field that cannot be copied maps as with false.")
    working_pixels_per_voxel: float = param(
        0.75, "Working resolution of the instance map: frames (and InstanceLoc requests) "
        "are fused at the coarsest integer decimation at which a pixel still spans at most "
        "1/this instance voxel edges at the view's median depth, and answered at full "
        "resolution on the masks' own boundaries (core/resolution.py). At 0.75 a 640x480 "
        "tabletop view is fused at a third of its width with the full resolution's map "
        "quality; coarser (0.5-0.6) lost PQ there, and 160x120 views stay whole "
        "(BENCHMARKS.md). 0: always full resolution. Keyframes, training and stereo keep "
        "full resolution.", minimum=0.0)
    render_chunk_rays: int = param(16384, "Rays per chunk when rendering whole images.",
                                   minimum=64)
    render_tile_px: int = param(
        16, "Whole-view renders march each ray only where the occupancy grid's voxels "
        "project onto its tile of this many pixels square (empty space skipped; smaller: "
        "tighter windows, a costlier projection).", minimum=1)
    render_round_samples: int = param(
        8, "Whole-view renders composite this many samples per ray at a time, front to "
        "back, so that a ray that has become opaque stops.", minimum=1)
    render_stop_transmittance: float = param(
        1e-3, "A rendered ray stops once less than this share of light passes (early ray "
        "termination; colour and depth change by at most this share). 0: never.",
        minimum=0.0, maximum=0.5)
    render_smooth_levels: int = param(
        2, "Whole-view renders draw a lattice of every 2^levels-th pixel first, then, "
        "halving its spacing, interpolate the pixels between lattice rays that agree "
        "(render_smooth_depth_rel, render_smooth_rgb) and draw the rest (a 640x480 "
        "tabletop view: 2.9-3.8 s -> 0.8 s, 0.3 % of its pixels more than 8 levels off the "
        "full render; BENCHMARKS.md). A structure thinner than the lattice whose "
        "neighbours all agree is missed. 0: every pixel drawn.", minimum=0, maximum=4)
    render_smooth_depth_rel: float = param(
        0.02, "Lattice rays agree when all hit a surface and their depths lie within this "
        "share of each other.", minimum=0.0, maximum=1.0)
    render_smooth_rgb: int = param(
        16, "... and their colours within this many levels (of 255) in every channel.",
        minimum=0, maximum=255)
    render_min_opacity: float = param(0.5, "A rendered ray whose accumulated opacity is "
                                      "below this hit no surface: its depth is unknown "
                                      "(0) rather than pulled towards the camera by the "
                                      "misses.", minimum=0.0, maximum=1.0)
    # dataclasses.field spelled out: the section named "field" shadows it in this body
    instances: InstanceConfig = dataclasses.field(default_factory=InstanceConfig)
    semantics: SemanticConfig = dataclasses.field(default_factory=SemanticConfig)
    keyframes: KeyframeConfig = dataclasses.field(default_factory=KeyframeConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    stereo: StereoConfig = dataclasses.field(default_factory=StereoConfig)

    def __post_init__(self) -> None:
        check_device_name(self.device)  # 'tpu' fails when the file is read, not at start-up


@dataclass
class IngestReport:
    """What one frame did to the map.

    Attributes:
        labels: (H, W) int32 map ids assigned online to the frame's pixels (0 = none).
        new_ids: ids the frame created.
        integrated: False when the frame's masks could not be fused yet (no depth, and the
            field cannot render it yet); it may still have become a keyframe.
        keyframe: id of the keyframe it became, or None.
        depth_source: "measured", "stereo" or "none".
        stereo_s: seconds the stereo estimate took (None: none ran).
        removed: what change detection did in this frame: instances its depth showed
            gone (removed) and removed ones found elsewhere (moved; :mod:`~.map.changes`).
        skipped: a still frame (see ``MapperConfig.still_translation_m``): nothing mapped.
    """

    labels: np.ndarray
    new_ids: list[int]
    integrated: bool
    keyframe: int | None = None
    depth_source: str = "measured"
    stereo_s: float | None = None
    removed: list[ChangeEvent] = dataclasses.field(default_factory=list)
    skipped: bool = False


@dataclass
class Localization:
    """InstanceLoc answer for one frame.

    Attributes:
        ids: (H, W) int32 map instance id per pixel (0 = none).
        matches: per localized mask: (mask id, map id, confidence = vote share).
    """

    ids: np.ndarray
    matches: list[tuple[int, int, float]]


def _detached_copy(value):
    """A deep copy of a state's tensors and arrays (live parameters keep training)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _detached_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached_copy(v) for v in value)
    return value


class FieldInstanceFill:
    """The field as the instance map's :class:`~panoptic_mapping.core.map.instances.InstanceFill`.

    Answers with the field's most probable instance prototype among the map's living ids
    (only confirmed ones when ``confirmed``), and 0 where its probability is below
    ``min_confidence``.
    """

    def __init__(self, field: PanopticField, instances: InstanceMap, min_confidence: float,
                 confirmed_only: bool, edits: WorldEdits | None = None) -> None:
        self.field, self.instances = field, instances
        self.min_confidence, self.confirmed_only = min_confidence, confirmed_only
        self.edits = edits

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (N, 3) -> ids (N,) int32 and probabilities (N,), 0 where unsure and
        where an edit emptied the place (the field learnt it before)."""
        ids, prob = self.predict(points)
        keep = prob >= self.min_confidence
        if self.edits is not None and self.edits.vacancies:
            keep &= ~self.edits.vacated(points, self.instances.votes.voxel_size)
        return np.where(keep, ids, 0).astype(np.int32), np.where(keep, prob, 0.0)

    @torch.no_grad()
    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field instance ids (N,) and probabilities (N,) at surface points (N, 3)."""
        n = len(points)
        out_ids, out_p = np.zeros(n, np.int32), np.zeros(n, np.float32)
        active_ids, rows = self.field.prototypes.active()
        lut = self.instances.id_lut()
        alive = lut[active_ids] == active_ids
        if self.confirmed_only:
            alive &= np.isin(active_ids, self.instances.confirmed_ids())
        if n == 0 or not alive.any():
            return out_ids, out_p
        active_ids, rows = active_ids[alive], rows[alive]
        x = torch.as_tensor(points, dtype=torch.float32, device=self.field.device)
        feats = self.field.instance_features(x)
        prob = torch.softmax(self.field.instance_logits(feats, rows), dim=-1)
        p, k = prob.max(-1)
        out_ids[:] = active_ids[k.cpu().numpy()]
        out_p[:] = p.cpu().numpy()
        return out_ids, out_p


# what a loaded map does not replace: threads may be waiting on these
_OWN_SYNCHRONISATION = frozenset({"_lock", "_ingest_lock", "_foreground",
                                  "_foreground_done"})


class Mapper:
    """Online panoptic mapping core (ROS-free)."""

    def __init__(self, cfg: MapperConfig | None = None, embedding_dim: int | None = None):
        self.cfg = cfg or MapperConfig()
        self.device = resolve_device(self.cfg.device)
        self.embedding_dim = int(embedding_dim or 0)
        self._lock = threading.RLock()
        # one frame at a time, and no map edit, load or reset in the middle of one: with
        # associate_beside_training a frame's association runs without _lock
        self._ingest_lock = threading.RLock()
        # Foreground work (ingest, localize) waiting for the lock: training steps wait for
        # it to finish. A lock is no queue: the training thread releasing it and taking it
        # again for the next step wins over a thread already waiting, and a frame waited
        # through several steps (the node ingested at 1 s p50 against 70 ms in the bench).
        self._foreground = 0
        self._foreground_done = threading.Condition()
        self.instances = InstanceMap(self.cfg.instances, embedding_dim)
        self.vocabulary = Vocabulary(self.cfg.semantics)
        # (key, labels, support corrections) of instance_labels() for the configured source
        self._label_cache: tuple | None = None
        self.keyframes = KeyframeBuffer(self.cfg.keyframes)
        self.extent = SceneExtent()
        self.grid = OccupancyGrid.from_config(self.cfg.sampling, device=self.device)
        self.field: PanopticField | None = None
        self.trainer: Trainer | None = None
        self.frames_ingested = 0
        self._reassoc_cursor = 0
        self._unplaced: set[int] = set()  # RGB-only keyframes not yet in the instance map
        # (part, whole) -> frames_integrated when looks began finding it enclosed
        # (_enclosed_parts)
        self._enclosed_since: dict[tuple[int, int], int] = {}
        # where the camera stood in the latest frames mapped (an id whose box holds one
        # surrounds the viewer: a room's walls, not an object with parts inside)
        self._viewpoints: collections.deque[np.ndarray] = collections.deque(maxlen=256)
        self.edits = WorldEdits()  # instances removed or moved on request
        self._last_mapped_pose: np.ndarray | None = None  # camera of the last frame mapped
        self._still_run = 0  # still frames in a row
        self.frames_skipped_still = 0
        self._view_depth_m: float | None = None  # median depth of the last measured view
        # what a keyframe with measured depth gives the labeled cloud, reduced once (a
        # 640x480 keyframe holds 300k points; 30 of them made every cloud take 13 s)
        self._kf_points = ReductionCache(int(self.cfg.export.cloud_cache_mb * 1e6))
        self.working_decimation = 1  # of the last frame mapped
        self.stereo = StereoDepth(self.cfg.stereo, self.device) if self.cfg.stereo.enabled \
            else None
        # the field as its readers see it (see reader_copy_period_s); None: none to read
        self._reader_field: PanopticField | None = None
        self._reader_copied_s = -math.inf
        self._reader_steps = -1  # the trainer's steps when the readers' copy was taken
        self._reader_copy_error: str | None = None
        # the instance map as its readers see it (see reader_map_copy); None: the live one
        self._reader_map: InstanceMap | None = None
        self._map_read_s = -math.inf  # when a reader last asked for the instance map
        self._last_stats = self._read_stats()

    # ------------------------------------------------------------------ input

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """Work someone waits on, with or without the map's lock (a localize request from
        its segmentation to its answer): training starts no step until it is done (a
        step under way finishes)."""
        with self._foreground_done:
            self._foreground += 1
        try:
            yield
        finally:
            with self._foreground_done:
                self._foreground -= 1
                self._foreground_done.notify_all()

    @contextmanager
    def _foreground_lock(self) -> Iterator[None]:
        """The map's lock for work someone waits on; training yields to it."""
        with self.foreground(), self._lock:
            yield
            self._refresh_map_reader()
            # what stats() answers while training holds the lock (it never waits)
            self._last_stats = self._read_stats()

    def _yield_to_foreground(self, timeout_s: float = 5.0) -> None:
        """Wait (up to ``timeout_s``) until no foreground work (:meth:`foreground`, a map
        edit, a load) is under way or waiting for the lock."""
        with self._foreground_done:
            self._foreground_done.wait_for(lambda: self._foreground == 0, timeout_s)

    def ingest(self, frame: Frame) -> IngestReport:
        """Validate and take in one frame. Raises FrameError (map untouched) on bad input.

        A frame with a ``lens`` is undistorted first; its report's labels are at the raw
        image's pixels."""
        frame, lens = undistort_frame(validate_frame(frame))
        with self._ingest_lock:
            report = self._ingest(frame)
        if lens is not None:
            report = dataclasses.replace(report, labels=lens.to_raw(report.labels))
        return report

    def _ingest(self, frame: Frame) -> IngestReport:
        """:meth:`ingest` of a valid frame (the ingest lock held)."""
        if self._skip_still(frame):
            self.frames_ingested += 1
            self._last_stats = self._read_stats()
            return IngestReport(np.zeros(frame.shape, np.int32), [], False,
                                depth_source="none", skipped=True)
        frame, source, stereo_s = self._with_stereo_depth(frame)
        s = self._working_factor(frame, remember=True)
        work = decimate_frame(frame, s)
        fill, beside = self._ingest_fill()
        if not beside:  # the foreground lock's exit refreshes the readers' copy and stats
            with self._foreground_lock():
                return self._map_frame(frame, work, s, source, stereo_s, fill)
        report = self._map_frame(frame, work, s, source, stereo_s, fill)
        self._refresh_map_reader()
        self._last_stats = self._read_stats()
        return report

    def _map_frame(self, frame: Frame, work: Frame, s: int, source: str,
                   stereo_s: float | None, fill: FieldInstanceFill | None) -> IngestReport:
        """Map ``frame`` (``work``: at the working decimation ``s``). Under the foreground
        lock, or beside training (``associate_beside_training``): the occupancy grid and
        the keyframe buffer take one writer beside their readers, the instance map has its
        own lock, and what needs the field's lock (its creation, removals of instances
        gone) takes it."""
        self.frames_ingested += 1
        self.working_decimation = s
        if self.field is None:
            with self._foreground_lock():
                self._ensure_field(work)
        self._update_geometry(work, source)
        removed = self._detect_changes(work) if source == "measured" else []
        labels = np.zeros(frame.shape, np.int32)
        new_ids: list[int] = []
        integrated = work.masks is not None and _has_depth(work)
        if _has_depth(work) and (self.cfg.carve_free_space == "all" or (
                self.cfg.carve_free_space == "stereo" and source == "stereo")):
            self.instances.carve(work.depth, work.K, work.camera_to_world)
        if integrated:
            # one voxel search serves the reference and the integration
            result = self.instances.process_frame(
                work.masks, work.depth, work.K, work.camera_to_world,
                work.mask_embeddings, fill=fill, measured=source == "measured")
            labels = labels_at_full_resolution(result.labels, frame.masks, s)
            new_ids = result.new_ids
            self._pend_small_parts(result.split_from)
            self._viewpoints.append(np.asarray(work.camera_to_world, np.float64)[:3, 3])
            every = self.cfg.instances.merge_parts_every
            if every and self.instances.frames_integrated % every == 0:
                self._merge_resting_parts()
        kf = self.keyframes.add(frame)
        if kf is not None:
            self.keyframes.set_labels(kf.id, labels)
            if not integrated and frame.masks is not None:
                self._unplaced.add(kf.id)
        return IngestReport(labels, new_ids, integrated, None if kf is None else kf.id,
                            source, stereo_s, removed)

    def _ingest_fill(self) -> tuple[FieldInstanceFill | None, bool]:
        """The field's fill of a frame's association, and whether the frame is mapped
        beside training. Beside training the fill reads the readers' copy of the field,
        refreshed first when the field's lock is free (so, outside a training step, the
        field as it is), else as the last step left it (at most ``reader_copy_period_s``
        old); a field that cannot be copied is read under the lock, as without
        ``associate_beside_training``."""
        if not self.cfg.associate_beside_training:
            return self._field_fill(False), False
        steps = 0 if self.trainer is None else self.trainer.steps
        if not steps:  # untrained: no fill, nothing to copy
            return None, True
        if steps != self._reader_steps and self._lock.acquire(blocking=False):
            try:
                self._refresh_reader(force=True)
            finally:
                self._lock.release()
        if self._reader_copy_error is not None or self._reader_field is None:
            return self._field_fill(False), False
        return FieldInstanceFill(self._reader_field, self.instances,
                                 self.cfg.field_fill_confidence, False, self.edits), True

    def _working_factor(self, frame: Frame, remember: bool = False) -> int:
        """Decimation at which the map takes ``frame`` (``working_pixels_per_voxel``), from
        its median depth; a view without depth uses the last frame's that had one
        (``remember``: ``frame`` is being mapped: keep its depth for those)."""
        depth_m = median_depth(frame.depth) if _has_depth(frame) else None
        if depth_m is None:
            depth_m = self._view_depth_m if self._view_depth_m is not None \
                else self.cfg.keyframes.nominal_depth_m
        elif remember:
            self._view_depth_m = depth_m
        return working_factor(depth_m, frame.K, frame.shape, self.cfg.instances.voxel_size_m,
                              self.cfg.working_pixels_per_voxel)

    def _skip_still(self, frame: Frame) -> bool:
        """Whether to skip a frame whose camera has not moved since the last frame mapped
        (only one in ``still_keep_every`` of a still run is mapped). Costs one pose
        comparison."""
        cfg, last = self.cfg, self._last_mapped_pose
        T = frame.camera_to_world
        still = last is not None and (
            float(np.linalg.norm(T[:3, 3] - last[:3, 3])) < cfg.still_translation_m
            and _angle_deg(last[:3, :3].T @ T[:3, :3]) < cfg.still_rotation_deg)
        self._still_run = self._still_run + 1 if still else 0
        skip = still and self._still_run % cfg.still_keep_every != 0
        if skip:
            self.frames_skipped_still += 1
        else:
            self._last_mapped_pose = np.array(T, dtype=np.float64)
        return skip

    def _detect_changes(self, frame: Frame) -> list[ChangeEvent]:
        """Remove the instances a frame's measured depth shows gone (the foreground lock
        taken for the removals; stereo depth is too uncertain to take objects away)."""
        if not self.cfg.instances.changes.enabled:
            return []
        events = []
        gone = self.instances.gone_in_view(frame.depth, frame.K, frame.camera_to_world)
        with self._foreground_lock() if gone else nullcontext():  # keyframes, edits
            for i, shape in gone:
                # the event first: it takes the count of views the removal then forgets
                events.append(self.instances.changes.record(
                    i, self.frames_ingested, frame.stamp, shape,
                    born=int(self.instances.ids.first_frame[i])))
                self._remove(i)
        changes = self.instances.changes
        changes.prune_removed(self.frames_ingested, self.cfg.instances.changes.reid_frames)
        moved = self.instances.find_moved()
        with self._foreground_lock() if moved else nullcontext():
            for earlier, new_id, shape in moved:
                # keyframes before the re-identification show the old id where it was
                self._unlabel_keyframes(earlier.instance_id, removed=True)
                self.instances.reidentify(new_id, earlier.instance_id)
                events.append(changes.record_moved(earlier, new_id, self.frames_ingested,
                                                   frame.stamp, shape.centroid))
        return events

    def _with_stereo_depth(self, frame: Frame) -> tuple[Frame, str, float | None]:
        """The frame with stereo depth where it has none (and stereo finds some), the
        depth's source and the stereo's seconds. The sweep runs outside the map's lock:
        training and InstanceLoc go on meanwhile."""
        if _has_depth(frame):
            if self.stereo is not None:
                self.stereo.remember(frame)
            return frame, "measured", None
        if self.stereo is None:
            return frame, "none", None
        with self._lock:
            keyframes = [SourceView.of(kf.frame) for kf in self.keyframes.snapshot()]
        estimate = self.stereo.estimate(frame, keyframes)
        if estimate is None:
            return frame, "none", None
        if not (estimate.depth > 0).any():
            return frame, "none", estimate.seconds
        trust = np.where(estimate.depth > 0, np.clip(estimate.confidence,
                                                     self.cfg.stereo.min_confidence, 1.0), 0.0)
        return (dataclasses.replace(frame, depth=estimate.depth,
                                    depth_confidence=trust.astype(np.float32)),
                "stereo", estimate.seconds)

    def _ensure_field(self, frame: Frame) -> None:
        if self.field is not None:
            return
        if _has_depth(frame):
            pts, _ = backproject(frame.depth, frame.K, frame.camera_to_world)
            center = center_from_points(pts)
        else:  # RGB-only: a point a little in front of the first camera
            c2w = frame.camera_to_world
            center = tuple(c2w[:3, 3] + c2w[:3, 2])
        self.field = PanopticField(self.cfg.field, center, self.embedding_dim, self.device)
        self.trainer = Trainer(self.cfg.trainer, self.field, self.keyframes, self.grid,
                               self.cfg.sampling, self.instances.id_lut,
                               self._depth_prior())

    def _depth_prior(self) -> DepthPrior | None:
        """What keyframes without a depth camera learn depth from
        (``rgb_only_depth_targets``): None, their own stereo."""
        return self._map_surface_depth if self.cfg.rgb_only_depth_targets == "map" else None

    def _map_surface_depth(self, kf: Keyframe) -> np.ndarray:
        """(H, W) depth of the instance map's surfaces drawn at a keyframe (0 = none), as
        a view without depth meets the map."""
        f = kf.frame
        return self.instances.surface_depth(f.K, f.camera_to_world, f.shape,
                                            self.cfg.surface_min_weight,
                                            self.cfg.surface_gap_m)

    def _update_geometry(self, frame: Frame, source: str) -> None:
        """Grow the scene extent and mark occupied space from the frame's depth (stereo
        depth only where ``stereo_occupancy_min_frames`` frames agree)."""
        if _has_depth(frame):
            pts, _ = backproject(frame.depth, frame.K, frame.camera_to_world)
            pts_t = torch.as_tensor(pts, dtype=torch.float32, device=self.device)
            if source == "stereo":
                self.grid.mark_confirmed(pts_t, self.cfg.stereo_occupancy_min_frames)
            else:
                self.grid.mark_points(pts_t)
            self.extent.update_from_points(pts)
        else:
            self.extent.update_from_frustum(frame.K, frame.camera_to_world, frame.shape,
                                            (self.cfg.sampling.near_m, self.cfg.sampling.far_m))

    # ------------------------------------------------------------------ training

    def train(self, steps: int = 1) -> dict[str, float]:
        """Run ``steps`` optimiser steps (with re-association between them)."""
        losses: dict[str, float] = {}
        for _ in range(steps):
            self._yield_to_foreground()
            with self._lock:
                if self.trainer is None:
                    return {}
                losses = self.trainer.step()
                if not losses:
                    return {}
                self._refresh_reader()
                if self.trainer.steps % self.cfg.reassociate_every == 0:
                    self._reassociate_next()
                    self._refresh_map_reader()
        return losses

    def _refresh_reader(self, force: bool = False) -> None:
        """Copy the field for its readers (call under the lock) when the last copy is
        older than ``reader_copy_period_s``. A field that cannot be copied (a native
        accelerated module) leaves the readers on the lock, as before copies existed."""
        now = time.monotonic()
        if self.field is None or self._reader_copy_error is not None or (
                not force and now - self._reader_copied_s < self.cfg.reader_copy_period_s):
            return
        # the prototypes' growth hook moves the trainer's optimiser state: not the readers'
        hook = getattr(self.field.prototypes, "on_grow", None)
        try:
            reader = copy.deepcopy(self.field, {} if hook is None else {id(hook): None})
        except Exception as exc:  # noqa: BLE001 - whatever the backend raises, readers wait
            self._reader_copy_error = f"{type(exc).__name__}: {exc}"
            self._reader_field = None
            return
        reader.requires_grad_(False)
        self._reader_field, self._reader_copied_s = reader, now
        self._reader_steps = -1 if self.trainer is None else self.trainer.steps

    def _refresh_map_reader(self) -> None:
        """Copy the instance map for its readers (after a frame, or under the lock) when it changed
        since the last copy (``reader_map_copy``), while readers read (one asked in the
        last ``_READERS_ACTIVE_S``): a map nobody asks about keeps no copy (a 2000-frame
        room run: +210 MB resident)."""
        live, copied = self.instances, self._reader_map
        if not self.cfg.reader_map_copy or \
                time.monotonic() - self._map_read_s > _READERS_ACTIVE_S:
            self._reader_map = None
        elif copied is None or copied.lineage != live.lineage or copied.version != live.version:
            self._reader_map = live.reader_copy()

    @contextmanager
    def _map_for_reader(self) -> Iterator[InstanceMap]:
        """The instance map a reader should read: the readers' copy when it is the map as
        it is, or when a frame is being mapped into the map (the map before that frame:
        never a wait); else the map itself, its lock held through the block."""
        self._map_read_s = time.monotonic()
        live, copied = self.instances, self._reader_map
        if copied is not None and copied.lineage == live.lineage:
            if copied.version == live.version:
                yield copied
                return
            with live.hold(wait=False) as held:
                if held:  # changed outside the mapper's foreground work, now still
                    yield live
                    return
            yield copied
            return
        with live.hold():
            yield live

    def train_for(self, seconds: float) -> int:
        """Train until ``seconds`` have passed; returns the number of steps taken."""
        t_end, n = time.perf_counter() + seconds, 0
        while time.perf_counter() < t_end:
            if not self.train(1):
                break
            n += 1
        return n

    def _reassociate_next(self) -> None:
        """Relabel one keyframe from its own masks against the current map; none while a
        frame is being associated (the next turn does: training never waits for it)."""
        with self.instances.hold(wait=False) as held:
            if held:
                self._relabel_next_keyframe()

    def _relabel_next_keyframe(self) -> None:
        ids = self.keyframes.ids()
        if not ids:
            return
        self._reassoc_cursor = (self._reassoc_cursor + 1) % len(ids)
        kf = self.keyframes.get(ids[self._reassoc_cursor])
        if kf is None or kf.frame.masks is None:
            return
        f = kf.frame
        if kf.id in self._unplaced:
            self._place_rgb_only(kf)
            return
        if f.depth is None:
            return
        s = self._working_factor(f)
        w = decimate_frame(f, s)
        rendered, conf = self._reference(w.K, w.camera_to_world, w.depth, confirmed_only=True)
        labels, _ = vote_masks(w.masks, rendered, w.depth > 0, self.cfg.instances.localize,
                               self.cfg.instances.min_pixels, conf)
        self.keyframes.set_labels(kf.id, labels_at_full_resolution(labels, f.masks, s))

    def _place_rgb_only(self, kf) -> None:
        """Fuse an RGB-only keyframe's masks at the field's rendered depth."""
        if self.trainer is None or self.trainer.steps < self.cfg.rgb_only_min_steps:
            return
        f = kf.frame
        s = self._working_factor(f)
        w = decimate_frame(f, s)
        _, depth = self.render_rgbd(w.K, w.camera_to_world, w.shape)
        result = self.instances.process_frame(w.masks, depth, w.K, w.camera_to_world,
                                              w.mask_embeddings, measured=False)
        self._pend_small_parts(result.split_from)
        self.keyframes.set_labels(kf.id, labels_at_full_resolution(result.labels, f.masks, s))
        self._unplaced.discard(kf.id)

    # ------------------------------------------------------------------ rendering

    def _reference(self, K: np.ndarray, camera_to_world: np.ndarray, depth: np.ndarray,
                   confirmed_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) map ids and (H, W) confidences at measured depth: voxels first (vote
        share), the field (its probability) where they are silent.

        The field only interpolates: it fills surfaces the map has observed whose votes
        are undecided (no eligible id), never unseen territory, where its labels are an
        extrapolation (measured: filling unseen surfaces glued new objects to their
        neighbours and cost PQ, mIoU and InstanceLoc as training went on).
        """
        return self.instances.render_view(depth, K, camera_to_world, confirmed_only,
                                          fill=self._field_fill(confirmed_only))

    def _field_fill(self, confirmed_only: bool) -> FieldInstanceFill | None:
        """The field as the instance map's fill; None while the field is untrained (it
        has no opinion yet)."""
        if self.trainer is None or self.trainer.steps == 0:
            return None
        return FieldInstanceFill(self.field, self.instances, self.cfg.field_fill_confidence,
                                 confirmed_only, self.edits)

    def render_instances(self, K: np.ndarray, camera_to_world: np.ndarray,
                         depth: np.ndarray | None, shape: tuple[int, int] | None = None,
                         lens: LensDistortion | None = None) -> np.ndarray:
        """(H, W) int32 confirmed map ids at a view; without depth, where the view meets
        the map (``render_without_depth``). With ``lens``, K, ``depth`` and the ids are
        the raw image's: the map is drawn in its pinhole image and read at its pixels."""
        if lens is None or lens.is_identity:
            return self._render_instances(K, camera_to_world, depth, shape)[0]
        if shape is None:
            if depth is None:
                raise ValueError("a view through a lens needs its image size (shape or "
                                 "depth)")
            shape = depth.shape
        u = undistortion_for(K, lens, shape)
        pinhole_depth = None if depth is None else u.nearest(depth)
        return u.to_raw(self._render_instances(u.K_pinhole, camera_to_world, pinhole_depth,
                                               u.pinhole_shape)[0])

    def _render_instances(self, K: np.ndarray, camera_to_world: np.ndarray,
                          depth: np.ndarray | None, shape: tuple[int, int] | None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`render_instances` with the (H, W) confidences of the ids."""
        with self._lock:
            if depth is None or not (depth > 0).any():
                shape = shape if depth is None else depth.shape
                if self.cfg.render_without_depth == "map":
                    return self._render_surfaces(self.instances, K, camera_to_world, shape,
                                                 self._field_fill(True))
                depth = self._depth_without_sensor(K, camera_to_world, shape)
            return self._reference(K, camera_to_world, depth, confirmed_only=True)

    def _render_surfaces(self, instances: InstanceMap, K: np.ndarray,
                         camera_to_world: np.ndarray, shape: tuple[int, int],
                         fill: FieldInstanceFill | None) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) confirmed ids and confidences where a view without depth meets the map's
        surfaces (:meth:`InstanceMap.render_surfaces`)."""
        ids, conf, _ = instances.render_surfaces(K, camera_to_world, shape,
                                                 self.cfg.surface_min_weight,
                                                 self.cfg.surface_gap_m, True, fill)
        return ids, conf

    @contextmanager
    def _reader_lock(self) -> Iterator[None]:
        """What a reader of the map (InstanceLoc) holds: nothing of the mapper's when it can
        read the instance map (its own lock) and the field's copy; else the foreground
        lock (the field volume-rendered for views without depth, or a field that cannot
        be copied)."""
        if self._reads_without_lock():
            yield
        else:
            with self._foreground_lock():
                yield

    def _reads_without_lock(self) -> bool:
        return self.cfg.render_without_depth == "map" and self._reader_copy_error is None

    def _render_for_reader(self, instances: InstanceMap, K: np.ndarray,
                           camera_to_world: np.ndarray, depth: np.ndarray | None,
                           shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_render_instances` for readers: ``instances`` from
        :meth:`_map_for_reader`, the field's fill from its copy."""
        if not self._reads_without_lock():
            return self._render_instances(K, camera_to_world, depth, shape)
        field, edits = self._reader_field, self.edits
        fill = None if field is None else FieldInstanceFill(
            field, instances, self.cfg.field_fill_confidence, True, edits)
        if depth is None or not (depth > 0).any():
            return self._render_surfaces(instances, K, camera_to_world,
                                         shape if depth is None else depth.shape, fill)
        return instances.render_view(depth, K, camera_to_world, True, fill=fill)

    def _depth_without_sensor(self, K: np.ndarray, camera_to_world: np.ndarray,
                              shape: tuple[int, int]) -> np.ndarray:
        """(H, W) depth where a view without depth meets the map (0 = nothing there)."""
        if self.cfg.render_without_depth == "map":
            return self.instances.surface_depth(K, camera_to_world, shape,
                                                self.cfg.surface_min_weight,
                                                self.cfg.surface_gap_m)
        if self.trainer is None or self.trainer.steps == 0:
            return np.zeros(shape, np.float32)
        return self.render_rgbd(K, camera_to_world, shape)[1]

    @torch.no_grad()
    def render_rgbd(self, K: np.ndarray, camera_to_world: np.ndarray,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Field rendering of a whole view: RGB (H, W, 3) uint8 and depth (H, W) metres."""
        with self._lock:
            h, w = shape
            if self.field is None:
                return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.float32)
            c = self.cfg
            return render_view(self.field, self.grid, c.sampling, K, camera_to_world, shape,
                               c.render_chunk_rays, c.render_min_opacity,
                               tile_px=c.render_tile_px, round_samples=c.render_round_samples,
                               stop_transmittance=c.render_stop_transmittance,
                               smooth_depth_rel=(c.render_smooth_depth_rel
                                                 if c.render_smooth_levels else 0.0),
                               smooth_rgb=c.render_smooth_rgb,
                               smooth_levels=c.render_smooth_levels)

    # ------------------------------------------------------------------ semantics

    def instance_embeddings(self, source: str | None = None,
                            instances: InstanceMap | None = None) -> dict[int, np.ndarray]:
        """Confirmed instance id -> unit embedding (D,) from ``source`` ('voxels' or
        'masks'; default ``semantics.label_source``). 'voxels' pools the fused voxel
        features and falls back to the masks' mean for an instance without any."""
        source = source or self.cfg.semantics.label_source
        if source not in LABEL_SOURCES:
            raise ValueError(f"label source must be one of {LABEL_SOURCES}, got {source!r}")
        instances = self.instances if instances is None else instances
        emb = instances.instance_embeddings()
        if source == "voxels":
            pooled = instances.instance_voxel_embeddings()
            emb = {i: pooled.get(i, e) for i, e in emb.items()}
        return emb

    def instance_labels(self, source: str | None = None,
                        instances: InstanceMap | None = None) -> dict[int, tuple[int, float]]:
        """Confirmed instance id -> (vocabulary label id, confidence) (:mod:`.labels`), of
        ``instances`` (default: the map itself; a reader passes its copy)."""
        source = source or self.cfg.semantics.label_source
        instances = self.instances if instances is None else instances
        # a reader's copy and its original at the same version give the same labels
        key = (source, instances.lineage, instances.version, self.vocabulary.generation,
               dataclasses.astuple(self.cfg.semantics))
        cached = self._label_cache
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        emb = self.instance_embeddings(source, instances)
        sc = self.cfg.semantics
        labels = label_instances(self.vocabulary, sc, emb)
        supports = self._same_label_supports(labels, instances) \
            if sc.exclude_support_label else None
        corrected: dict[int, list[int]] = {}
        if supports:
            labels = label_instances(self.vocabulary, sc, emb, supports, corrected)
        if source == self.cfg.semantics.label_source:
            self._label_cache = (key, labels, corrected)
        return dict(labels)

    def _across_extents(self, instances: InstanceMap, ids: np.ndarray,
                        parts: bool = False) -> dict[int, float]:
        """Id -> its extent across the up axis [m], over the middle 90 % of its voxels
        (strays do not stretch it); ``parts``: pending parts apart from their parent."""
        axis, _ = up_direction(self.cfg.semantics.up_axis)
        across = [a for a in range(3) if a != axis]
        return {i: float((hi - lo)[across].max()) for i, (lo, hi) in
                instances.instance_boxes(0.05, ids, parts).items()}

    def _pend_small_parts(self, split_from: dict[int, int]) -> None:
        """Small new ids split off a settled id (``split_from``: new id -> that id) whose
        embedding is of that id's kind and is its label and nothing else
        (:func:`~panoptic_mapping.core.labels.support_explains`) become pending parts of
        it (``instances.small_parts_pending``): a board a segmenter cut off a shelf is a
        piece of the shelf until views show it apart, and the part rules judge it at the
        next look. A mug the table's mask had swallowed, or a duck whose masks, mostly
        floor, embed close to the floor, keeps a direction of its own: an object at
        once."""
        ic = self.cfg.instances
        if not ic.small_parts_pending or not split_from:
            return
        # the frame's merges may have absorbed either since the association named them
        split_from = {self.instances.resolve(n): self.instances.resolve(o)
                      for n, o in split_from.items()}
        emb, alike = self._pairs_of_one_kind(split_from)
        for new, old in alike:
            if support_explains(self.vocabulary, self.cfg.semantics, emb[new], emb[old]):
                self.instances.make_pending(new, old)

    def _pairs_of_one_kind(self, pairs: dict[int, int]
                           ) -> tuple[dict[int, np.ndarray], list[tuple[int, int]]]:
        """Id -> unit mean embedding of every id in ``pairs`` (a -> b) that has one, and
        the pairs (a, b) whose two embeddings agree (``instances.merge_min_cosine``), in
        the order of ``pairs``."""
        emb = self.instances.id_embeddings(sorted(set(pairs) | set(pairs.values())))
        cos = self.cfg.instances.merge_min_cosine
        return emb, [(a, b) for a, b in pairs.items()
                     if a in emb and b in emb and emb[a] @ emb[b] >= cos]

    def _merge_resting_parts(self) -> list[tuple[int, int]]:
        """Merge every shown id that rests only on ids of its own kind, is more than
        ``semantics.support_max_size_ratio`` as wide as each of them (or is their label
        and nothing else: ``instances.merge_parts_explained``) and holds at most
        ``instances.merge_parts_max_volume_ratio`` of their voxels, and every such
        smaller id of a kind another id shares lying mostly inside that id's box, or
        under it (``instances.merge_parts_min_inside``, ``instances.merge_parts_under``)
        (``instances.merge_parts_every``);
        returns the (part, whole) pairs merged.

        Contact as :meth:`_same_label_supports` finds it; "its own kind" is the mean mask
        embeddings' agreement that view consensus also asks for. The width test is the
        label rule's "larger" turned round: a mug resting on a table that every view
        calls "table" is narrow and keeps its id (that rule then keeps its label).

        With ``instances.merge_pending_parts`` the same rules judge each pending part
        against the id outputs show it as, first: a piece a segmenter cut off a settled
        object (a duck's head, a ball's textured half) that these rules would merge back
        once shown is merged while still shown as its parent, instead of being released
        on views that show it apart and merged a few frames later, changing the id of
        the object it lies on twice."""
        ic, instances = self.cfg.instances, self.instances
        merged = []
        pending = instances.pending_parts() if ic.merge_pending_parts else {}
        if pending:  # each pending part against its parent alone
            emb, alike = self._pairs_of_one_kind(pending)
            if alike:
                merged += self._parts_look(emb, {*alike, *((s, t) for t, s in alike)},
                                           pending)
        # only ids of a kind another id shares can be parts (the look under costs ~0.1 s
        # on a room's 1.2 M voxels)
        emb = instances.instance_embeddings()
        ids = np.array(sorted(emb), np.int64)
        same_kind: set[tuple[int, int]] = set()
        if ids.size >= 2:
            unit = np.stack([emb[i] for i in ids])
            alike_ids = unit @ unit.T >= ic.merge_min_cosine
            np.fill_diagonal(alike_ids, False)
            same_kind = {(int(ids[a]), int(ids[b])) for a, b in zip(*np.nonzero(alike_ids))}
        if not same_kind:
            self._enclosed_since = {}
            return merged
        return merged + self._parts_look(emb, same_kind, None)

    def _parts_look(self, emb: dict[int, np.ndarray], same_kind: set[tuple[int, int]],
                    pending: dict[int, int] | None) -> list[tuple[int, int]]:
        """One look of :meth:`_merge_resting_parts` over the (t, s) pairs of one kind in
        ``same_kind`` (both ways round; ``emb``: id -> unit embedding): among shown ids
        (``pending`` None), or pending parts (part -> the id they show as) and their
        parents, each part an id of its own; returns the (part, whole) pairs merged."""
        sc, ic, instances = self.cfg.semantics, self.cfg.instances, self.instances
        parts = pending is not None
        kin = np.array(sorted({i for pair in same_kind for i in pair}), np.int64)
        counts = instances.owned_voxel_counts(parts)
        contacts = instances.contacts_below(sc.up_axis, sc.support_gap_m, kin, parts)
        merges = self._enclosed_parts(instances, same_kind, counts, contacts, parts)
        if contacts:
            involved = np.array(sorted(set(contacts)
                                       | {s for b in contacts.values() for s in b}))
            sizes = self._across_extents(instances, involved, parts)
            on = resting_on(contacts, sizes, np.inf, sc.support_min_share)
            # narrow is a thing on its support unless its embedding is the support's and
            # nothing else (a piece of a mug resting on the mug: labels.support_explains)
            narrow_part = {(t, s) for t, ss in on.items() for s in ss
                           if ic.merge_parts_explained and (t, s) in same_kind
                           and support_explains(self.vocabulary, sc, emb[t], emb[s])}
            merges += [(t, s) for t, ss in sorted(on.items())
                       if all((sizes[t] > sc.support_max_size_ratio * sizes[s]
                               or (t, s) in narrow_part)
                              and counts[t] <= ic.merge_parts_max_volume_ratio * counts[s]
                              and (t, s) in same_kind for s in ss) for s in ss]
        if parts:  # only a pending part into its parent (a parent is never a part here)
            merges = [(t, s) for t, s in merges if pending.get(t) == s]
        return instances.merge_parts(merges) if merges else []

    def _enclosed_parts(self, instances: InstanceMap, same_kind: set[tuple[int, int]],
                        counts: np.ndarray,
                        contacts: dict[int, dict[int, int]] | None = None,
                        parts: bool = False) -> list[tuple[int, int]]:
        """(part, whole) pairs of ids of one kind where the part holds at most
        ``instances.merge_parts_max_volume_ratio`` of the whole's voxels and at least
        ``instances.merge_parts_min_inside`` of the part's voxels lie inside the whole's
        box (the middle 90 % of its voxels along each axis): a segmenter cuts a shelf's
        boards from its frame at the same concave creases in every view, or a table into
        pieces that each hold some of its top and legs, and the pieces lie within the
        extent of the largest. Things do
        not interpenetrate; two of a kind side by side or stacked each lie outside the
        other's box, and nested ones (a bowl in a bowl) are alike in size.

        With ``instances.merge_parts_under``, a part the whole rests on (``contacts``,
        whole -> {id under it: voxels}; the whole resting mostly on its own kind) that
        reaches lower than the whole's bottom counts what lies under the whole's box,
        within its footprint, as inside: a table top rests on its legs, a shelf's upper
        section on its lowest boards, and the legs stand beneath, not inside, the top's
        box. A thing stacked on another of its kind lies above it, two side by side on
        one support reach equally low, and a wall stands on the floor.

        Each part goes to the largest whole that encloses it, smallest parts first (a
        part of a part then follows its whole), once every look over
        ``instances.merge_parts_hold_frames`` frames mapped found it enclosed. An id
        whose box holds a viewpoint of the latest frames mapped surrounds the camera (a
        room's walls held as one id): what lies inside it is the room's content, not its
        parts, and it encloses nothing."""
        ic, sc = self.cfg.instances, self.cfg.semantics
        candidates = sorted((t, s) for t, s in same_kind
                            if 0 < counts[t] <= ic.merge_parts_max_volume_ratio * counts[s])
        if ic.merge_parts_min_inside <= 0 or not candidates:
            if not parts:
                self._enclosed_since = {}
            return []
        shares, boxes = instances.shares_inside(candidates, up_axis=sc.up_axis, parts=parts)
        views = np.array(self._viewpoints).reshape(-1, 3)
        wholes = {s for _, s in candidates}
        around = {s for s in wholes if s in boxes
                  and np.all((views >= boxes[s][0]) & (views <= boxes[s][1]), axis=1).any()}
        carried = self._carried_by_own_kind(contacts or {}, same_kind)
        enclosed = set()
        for (t, s), (inside, under) in zip(candidates, shares):
            if s in around:
                continue
            if inside < ic.merge_parts_min_inside and ic.merge_parts_under:
                if t not in carried.get(s, ()) or not self._reaches_below(boxes, t, s):
                    continue
                inside = under
            if inside >= ic.merge_parts_min_inside:
                enclosed.add((t, s))
        # only what looks have found so for merge_parts_hold_frames: a box a glued mask
        # stretched over a neighbour is back within a few frames, a part's place inside
        # its whole is not. A pending part is merged at the first look: it is shown as
        # its whole already, and waiting let views apart release it first, to be merged
        # back a look later (measured: classical tabletop 4 PQ_scene 0.889 -> 0.838)
        held = enclosed
        if not parts:
            now = instances.frames_integrated
            self._enclosed_since = {p: self._enclosed_since.get(p, now) for p in enclosed}
            held = {p for p, t0 in self._enclosed_since.items()
                    if now - t0 >= ic.merge_parts_hold_frames}
        best: dict[int, int] = {}
        for t, s in sorted(held):
            if t not in best or counts[s] > counts[best[t]]:
                best[t] = s
        return sorted(best.items(), key=lambda ts: (counts[ts[0]], ts[0]))

    @staticmethod
    def _carried_by_own_kind(contacts: dict[int, dict[int, int]],
                             same_kind: set[tuple[int, int]]) -> dict[int, set[int]]:
        """Id -> the ids of its own kind it rests on, for the ids whose contacts below
        (``contacts``: id -> {id under it: voxels}) are mostly with their own kind: a
        table top stands on its legs, a wall stands on the floor, whatever a glued mask
        lent it of a table in front of it."""
        out = {}
        for whole, below in contacts.items():
            own = {k for k in below if (k, whole) in same_kind}
            if 2 * sum(below[k] for k in own) > sum(below.values()):
                out[whole] = own
        return out

    def _reaches_below(self, boxes: dict[int, tuple[np.ndarray, np.ndarray]],
                       part: int, whole: int) -> bool:
        """Whether the part's box reaches lower than the whole's, along the up axis, by
        more than ``semantics.support_gap_m`` (what rests on one support reaches as low
        as its neighbours)."""
        if part not in boxes or whole not in boxes:
            return False
        d, sign = up_direction(self.cfg.semantics.up_axis)
        bottom = {i: min(sign * boxes[i][0][d], sign * boxes[i][1][d]) for i in (part, whole)}
        return bottom[part] < bottom[whole] - self.cfg.semantics.support_gap_m

    def _same_label_supports(self, labels: dict[int, tuple[int, float]],
                             instances: InstanceMap) -> dict[int, list[int]]:
        """Instance -> the larger instances of its own label it rests on
        (:func:`~panoptic_mapping.core.labels.resting_on`). Only instances sharing a label
        are looked at (the rule changes nothing else), so an error-free map costs little."""
        sc = self.cfg.semantics
        by_label: dict[int, list[int]] = {}
        for i, (l, _) in labels.items():
            if l != self.vocabulary.other_id:
                by_label.setdefault(l, []).append(i)
        shared = [i for ids in by_label.values() if len(ids) > 1 for i in ids]
        if not shared:
            return {}
        contacts = instances.contacts_below(sc.up_axis, sc.support_gap_m,
                                                 np.array(shared, np.int64))
        totals = {t: sum(below.values()) for t, below in contacts.items()}
        same = {t: {s: n for s, n in below.items() if labels.get(s, (0,))[0] == labels[t][0]}
                for t, below in contacts.items()}
        contacts = {t: below for t, below in same.items() if below}
        if not contacts:
            return {}
        involved = np.array(sorted(set(contacts) | {s for b in contacts.values() for s in b}))
        # a support spreads beyond what rests on it; a box's upper half, cut off by a
        # segmenter, is as wide as the lower half it "rests" on
        sizes = self._across_extents(instances, involved)
        return resting_on(contacts, sizes, sc.support_max_size_ratio, sc.support_min_share,
                          totals=totals)

    def instance_label_names(self, reader: bool = False) -> dict[int, tuple[str, float]]:
        """Confirmed instance id -> (vocabulary label name, confidence); ``reader``: of the
        map a reader sees (:meth:`_map_for_reader`: never waits for a frame being mapped,
        as InstanceLoc's answer must not)."""
        if reader:
            with self._map_for_reader() as instances:
                labels = self.instance_labels(instances=instances)
        else:
            labels = self.instance_labels()
        return {i: (self.vocabulary.name(l), c) for i, (l, c) in labels.items()}

    def semantic_image(self, instance_ids: np.ndarray, source: str | None = None
                       ) -> np.ndarray:
        """(H, W) int32 label ids of an instance-id image (0 where no instance)."""
        table = self.instance_labels(source)
        uniq, inv = np.unique(instance_ids, return_inverse=True)
        lut = np.array([table.get(int(u), (0, 0.0))[0] for u in uniq], dtype=np.int32)
        return lut[inv].reshape(instance_ids.shape)

    # ------------------------------------------------------------------ InstanceLoc

    def localize(self, frame: Frame, fill_unmasked: bool = True) -> Localization:
        """InstanceLoc: which map instances the frame's masks show.

        With depth the masks vote with the map at the measured surface; without it, where
        the view meets the map (``render_without_depth``). Pixels no mask covers (objects
        the front-end missed) take the map's own rendering when ``fill_unmasked``. A frame
        with a ``lens`` is undistorted first and answered at its raw pixels.
        """
        frame = validate_frame(frame)
        if frame.masks is None:
            raise ValueError("localize needs the frame's masks")
        frame, lens = undistort_frame(frame)
        if frame.masks is None:
            raise ValueError("none of the frame's masks lies inside its undistorted image")
        loc = self._localize(frame, fill_unmasked)
        return loc if lens is None else Localization(lens.to_raw(loc.ids), loc.matches)

    def _localize(self, frame: Frame, fill_unmasked: bool) -> Localization:
        """:meth:`localize` of a valid pinhole frame with masks."""
        s = self._working_factor(frame)
        work = decimate_frame(frame, s)
        with self._reader_lock(), self._map_for_reader() as instances:
            depth = work.depth
            rendered, conf = self._render_for_reader(instances, work.K, work.camera_to_world,
                                                     depth, work.shape)
            valid = rendered > 0 if depth is None else depth > 0
            ids, answers = vote_masks(work.masks, rendered, valid, self.cfg.instances.localize,
                                      self.cfg.instances.min_pixels, conf,
                                      self.cfg.localize_map_boundaries)
            ids = labels_at_full_resolution(ids, frame.masks, s)
            if fill_unmasked:
                unmasked = frame.masks == 0
                ids[unmasked] = upsample_nearest(rendered, s, frame.shape)[unmasked]
            return Localization(ids, [(m, i, c) for m, (i, c) in sorted(answers.items())])

    # ------------------------------------------------------------------ queries and export

    def point_relevance(self, points: np.ndarray, text_embedding: np.ndarray,
                        negatives: np.ndarray | None = None) -> np.ndarray | None:
        """Relevance (N,) in [0, 1] of world points (N, 3) to a phrase's text embedding
        (D,): :meth:`Vocabulary.relevance` of the fused voxel features nearest each point
        (:meth:`VoxelFeatures.slots_at`; 0 where none), with the support corrections of
        the labels. Runs on a copy of the features taken once per map change: the map's
        lock is held only to take that copy (and the labels), never while scoring. None
        when the map keeps no voxel features."""
        got = self.instances.features_copy()
        if got is None:
            return None
        features, owners = got
        self.instance_labels()  # the support corrections of the labels, cached
        cached = self._label_cache
        corrected = cached[2] if cached is not None else {}
        return voxel_relevance(features, self.vocabulary, np.asarray(points, np.float64),
                               text_embedding, negatives, self.cfg.instances.search_radius,
                               owners, corrected)

    def query(self, text_embedding: np.ndarray) -> list[tuple[int, float]]:
        """Confirmed instances ranked by cosine similarity to a text embedding (D,), each
        instance's embedding from ``semantics.label_source``."""
        emb = self.instance_embeddings()
        if not emb:
            return []
        ids = list(emb)
        sim = self.vocabulary.similarity(np.stack([emb[i] for i in ids]), text_embedding)
        order = np.argsort(-sim, kind="stable")
        return [(ids[k], float(sim[k])) for k in order]

    def labeled_cloud(self) -> LabeledCloud:
        """The map as labeled points from every keyframe, voxel-downsampled.

        Positions from the keyframes' depth (the field's depth for RGB-only ones, once
        trained), instance ids and vote confidences from the instance map, semantic ids
        from the instances' labels. Points a later edit vacated are left out; a moved
        instance not seen since adds its carried points (:mod:`~.map.edits`).
        """
        # Under the lock only what the cloud is made from: the edits, the keyframes and
        # the labels. The rest (seconds for many large keyframes) reads the instance map
        # under its own lock, so training and frames go on meanwhile; a frame mapped
        # during it may show in the cloud, whose snapshot is then rebuilt anyway.
        with self._lock:
            self._prune_edits()
            edits = self.edits.copy()
            keyframes = self.keyframes.snapshot()
            labels = self.instance_labels()
            shown = set(self.instances.confirmed_ids().tolist())
        xyz, rgb, ids, conf = [], [], [], []
        for _, pts, colours, i, c in self._keyframe_points(edits=edits, keyframes=keyframes):
            xyz.append(pts)
            rgb.append(colours)
            ids.append(i)
            conf.append(c)
        for m in edits.moved.values():
            if m.instance_id in shown:
                xyz.append(m.xyz.astype(np.float64))
                rgb.append(m.rgb)
                ids.append(np.full(len(m.xyz), m.instance_id, np.int32))
                conf.append(m.confidence)
        if not xyz:
            return LabeledCloud.empty()
        ids_all = np.concatenate(ids)
        uniq, inv = np.unique(ids_all, return_inverse=True)
        sem = np.array([labels.get(int(u), (0, 0.0))[0] for u in uniq], np.int64)[inv]
        return downsample_labeled_points(np.concatenate(xyz), np.concatenate(rgb), ids_all,
                                         sem, np.concatenate(conf),
                                         self.cfg.export.voxel_size_m)

    def _keyframe_points(self, box: tuple[np.ndarray, np.ndarray] | None = None,
                         edits: WorldEdits | None = None, keyframes: list | None = None
                         ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray,
                                             np.ndarray]]:
        """Per keyframe: its id, points (P, 3) not vacated by a later edit (only those
        inside ``box``, (lo, hi) corners, when given), their colours (P, 3), confirmed
        map ids (P,) and confidences (P,). A keyframe gives one point per cloud voxel it
        sees (the mean of its pixels there): a voxel's label is then voted by the views
        that saw it, not by how many pixels each gave it. ``edits`` and ``keyframes``:
        copies taken under the lock (default: the map's own, the lock held)."""
        edits = self.edits if edits is None else edits
        keyframes = self.keyframes.snapshot() if keyframes is None else keyframes
        self._kf_points.keep_only({kf.id for kf in keyframes})
        for kf in keyframes:
            got = self._keyframe_voxel_points(kf.id, kf.frame)
            if got is None:
                continue
            pts, rgb = got
            if box is not None:
                inside = ((pts >= box[0]) & (pts <= box[1])).all(1)
                pts, rgb = pts[inside], rgb[inside]
            if edits.vacancies:
                keep = ~edits.vacated(pts, self.instances.votes.voxel_size, kf.id)
                pts, rgb = pts[keep], rgb[keep]
            i, c = self.instances.render_points(pts, confirmed_only=True)
            yield kf.id, pts, rgb, i, c

    def _keyframe_voxel_points(self, kf_id: int, f: Frame
                               ) -> tuple[np.ndarray, np.ndarray] | None:
        """A keyframe's points reduced to one per cloud voxel: (M, 3) positions, (M, 3)
        uint8 colours. Measured depth is reduced once and kept; a keyframe without depth
        is drawn by the field each time (its depth changes as it trains), None before
        ``rgb_only_min_steps``."""
        cached = self._kf_points.get(kf_id, f, f.camera_to_world)
        if cached is not None:
            return cached[0].astype(np.float64), cached[1]
        depth = f.depth
        if depth is None:
            if self.trainer is None or self.trainer.steps < self.cfg.rgb_only_min_steps:
                return None
            _, depth = self.render_rgbd(f.K, f.camera_to_world, f.shape)
        pts, flat = backproject(depth, f.K, f.camera_to_world)
        pts, rgb = voxel_means(pts, f.rgb.reshape(-1, 3)[flat], self.cfg.export.voxel_size_m)
        if f.depth is not None:
            # float32 halves what the reductions keep (a 640x480 keyframe: ~130k voxels)
            pts = pts.astype(np.float32)
            self._kf_points.put(kf_id, f, f.camera_to_world, pts, rgb)
            return pts.astype(np.float64), rgb
        return pts, rgb

    # ------------------------------------------------------------------ world edits

    def remove_instance(self, instance_id: int) -> int:
        """Forget an instance the world no longer holds (picked up, put away).

        Its votes and pending parts go at once; the keyframes taken before keep their
        depth, but the labeled cloud leaves out the surface it showed until a new
        keyframe sees that place again.

        Returns:
            voxels vacated.
        Raises:
            InstanceEditError: the map does not show ``instance_id`` (the message says why).
        """
        with self._ingest_lock, self._foreground_lock():
            return self._remove(int(instance_id))

    def _remove(self, instance_id: int) -> int:
        """Remove an instance and vacate its surface (lock held); returns voxels vacated."""
        keys = self.instances.remove_instance(instance_id)
        self.edits.forget_instance(instance_id)
        self.edits.record(Vacancy(self.keyframes.next_id, keys))
        return int(keys.size)

    def move_instance(self, instance_id: int, transform: np.ndarray) -> int:
        """Tell the map an instance was moved (pick-and-place).

        Args:
            transform: (4, 4) rigid, map frame: the instance's new points are
                ``transform @ old``.
        Returns:
            voxels vacated at the old place.
        Raises:
            ValueError: ``transform`` is not rigid; InstanceEditError (a ValueError): the
            map does not show ``instance_id``.
        """
        T = check_rigid(transform)
        with self._ingest_lock, self._foreground_lock():
            # refuses an id the map does not show before anything changes
            bounds = self.instances.voxel_bounds(instance_id)
            xyz, rgb, conf = self._instance_points(int(instance_id), bounds)
            keys = self.instances.move_instance(instance_id, T)
            self._unlabel_keyframes(int(instance_id))
            moved = MovedPoints(int(instance_id), self.keyframes.next_id,
                                (xyz @ T[:3, :3].T + T[:3, 3]).astype(np.float32), rgb, conf)
            self.edits.record(Vacancy(self.keyframes.next_id, keys), moved)
            return int(keys.size)

    def voxel_records(self, instance_ids) -> dict[int, InstanceRecord]:
        """Instance records (centroid, oriented box, points) of ``instance_ids`` from the
        voxels each holds in the instance map (:meth:`InstanceMap.held_voxel_centres`),
        thinned to the labeled cloud's resolution: for an instance newer than the last
        labeled cloud, without building one (a labeled cloud of every keyframe under the
        lock). Read from the readers' copy: never waits for a frame or a training step.
        Ids the map does not show, or with fewer than ``export.min_points_per_instance``
        points, are left out. Labels and confidences are not filled in (the caller has
        them)."""
        clouds = []
        with self._map_for_reader() as instances:
            for i in instance_ids:
                try:
                    centres = instances.held_voxel_centres(int(i))
                except InstanceEditError:
                    continue
                n = len(centres)
                clouds.append(downsample_labeled_points(
                    centres, np.zeros((n, 3), np.uint8), np.full(n, int(i), np.int64),
                    np.zeros(n, np.int64), np.ones(n, np.float32),
                    self.cfg.export.voxel_size_m))
        if not clouds:
            return {}
        cloud = LabeledCloud(*(np.concatenate([getattr(c, k) for c in clouds]) for k in
                               ("xyz", "rgb", "instance", "semantic", "confidence")))
        return {r.id: r for r in instance_table(cloud, {}, {}, self.cfg.export)}

    def _instance_points(self, instance_id: int,
                         bounds: tuple[np.ndarray, np.ndarray] | None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The points (N, 3), colours (N, 3) and confidences (N,) the labeled cloud shows
        for one instance (under the lock); ``bounds``: its voxels' (lo, hi), or None."""
        xyz, rgb, conf = [], [], []
        # only points near the instance's voxels can show it (saves looking up the rest)
        margin = (self.instances.cfg.max_search_radius + 1) * self.instances.votes.voxel_size
        box = ((bounds[0] - margin, bounds[1] + margin) if bounds is not None
               else (np.zeros(3), -np.ones(3)))
        for _, pts, colours, i, c in self._keyframe_points(box):
            sel = i == instance_id
            xyz.append(pts[sel])
            rgb.append(colours[sel])
            conf.append(c[sel])
        old = self.edits.moved.get(instance_id)
        if old is not None:  # moved before and not seen since
            xyz.append(old.xyz.astype(np.float64))
            rgb.append(old.rgb)
            conf.append(old.confidence)
        if not xyz:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
        cloud = downsample_labeled_points(
            np.concatenate(xyz), np.concatenate(rgb), np.full(sum(map(len, xyz)), 1, np.int64),
            np.zeros(sum(map(len, xyz)), np.int64), np.concatenate(conf),
            self.cfg.export.voxel_size_m)
        return cloud.xyz.astype(np.float64), cloud.rgb, cloud.confidence

    def _unlabel_keyframes(self, instance_id: int, removed: bool = False) -> None:
        """Keyframes taken before a move show the instance where it no longer is: their
        pixels of it become unlabelled (the field stops learning it there). ``removed``:
        the instance was removed (its ids are dead), found again elsewhere."""
        ids = self.instances.ids
        if removed:  # the id and the pending parts it was shown with
            lut = ids.alias_lut()
            lut = np.where((lut == instance_id) | (ids.parent[lut] == instance_id),
                           instance_id, 0)
        else:
            lut = ids.display_lut()
        for kf in self.keyframes.snapshot():
            if kf.labels is None:
                continue
            hit = lut[np.clip(kf.labels, 0, lut.size - 1)] == instance_id
            if hit.any():
                self.keyframes.set_labels(kf.id, np.where(hit, 0, kf.labels))

    def _prune_edits(self) -> None:
        """Drop vacancies no kept keyframe predates and stand-ins seen since (lock held)."""
        if not (self.edits.vacancies or self.edits.moved):
            return
        ids = self.keyframes.ids()
        seen: dict[int, int] = {}
        if self.edits.moved:  # the newest keyframe showing each moved instance
            kfs = self.keyframes.snapshot()
            empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            obs = id_observations(
                [empty if kf.labels is None else label_counts(kf.labels) for kf in kfs],
                [kf.id for kf in kfs], self.instances.ids.display_lut(),
                self.cfg.instances.min_pixels)
            for i in self.edits.moved:
                newest = obs.of(i)[1]
                seen[i] = -1 if newest is None else int(newest)
        self.edits.prune(ids[0] if ids else None, seen, self.instances.ids.alive)

    def instance_table(self, cloud: LabeledCloud | None = None) -> list[InstanceRecord]:
        """Id, label, confidences, centroid, oriented box and point count per instance."""
        cloud = self.labeled_cloud() if cloud is None else cloud
        labels = {i: (self.vocabulary.name(l), l, c)
                  for i, (l, c) in self.instance_labels().items()}
        return instance_table(cloud, labels, {}, self.cfg.export)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """The whole map: instance map, keyframes, field, occupancy, vocabulary, edits,
        counters."""
        with self._ingest_lock, self._lock:  # a frame mapped beside training: whole or not
            self._prune_edits()
            kfs = []
            for kf in self.keyframes.snapshot():
                f = kf.frame
                kfs.append({k: v for k, v in {
                    "rgb": f.rgb, "K": f.K, "camera_to_world": f.camera_to_world,
                    "stamp": f.stamp, "depth": f.depth, "masks": f.masks,
                    "mask_embeddings": f.mask_embeddings, "mask_scores": f.mask_scores,
                    "depth_confidence": f.depth_confidence, "seen": f.seen,
                    "labels": kf.labels,
                    "unplaced": kf.id in self._unplaced}.items()
                    if v is not None})
            field_state = None
            if self.field is not None:
                protos = self.field.prototypes
                field_state = {"center": list(self.field.center),
                               "weights": self.field.state_dict(),
                               "prototype_rows": np.array(sorted(protos.row_of.items()),
                                                          dtype=np.int64).reshape(-1, 2),
                               "steps": self.trainer.steps if self.trainer else 0}
            return {"config": config_to_dict(self.cfg), "embedding_dim": self.embedding_dim,
                    "instances": self.instances.state(), "keyframes": kfs,
                    "vocabulary": {"prompts": self.vocabulary.prompts,
                                   "text": self.vocabulary.text_embeddings()},
                    "field": field_state, "grid": self.grid.state_dict(),
                    "extent": self.extent.state_dict(),
                    "edits": self.edits.state([kf.id for kf in self.keyframes.snapshot()]),
                    "counters": {"frames_ingested": self.frames_ingested}}

    def save(self, path) -> int:
        """Write the map atomically to ``path`` (versioned format); returns bytes written.

        The state is copied under the lock, so training may go on while the file is written.
        """
        with self._ingest_lock, self._lock:
            state = _detached_copy(self.state_dict())
        return save_map(path, state)

    def load(self, path) -> None:
        """Replace the map by the one in ``path``.

        The file is read and rebuilt into a new map first; only a complete, valid map is
        swapped in, so a corrupt or incompatible file leaves the running map untouched.

        Raises:
            MapFileError: missing, corrupt or incompatible file (the message says which).
        """
        loaded = Mapper.from_file(path, device=self.cfg.device)
        with self._ingest_lock, self._lock:
            for name, value in vars(loaded).items():
                if name not in _OWN_SYNCHRONISATION:
                    setattr(self, name, value)

    @classmethod
    def from_file(cls, path, device: str = "auto") -> "Mapper":
        """A new mapper holding the map saved at ``path``, on ``device``.

        Raises:
            MapFileError: missing, corrupt or incompatible file (the message says which).
        """
        state = load_map(path, MAP_SECTIONS)
        try:
            return cls.from_state_dict(state, device=device)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise MapFileError(f"map file {path}: incompatible content ({exc})") from exc

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "auto") -> "Mapper":
        """A mapper rebuilt from :meth:`state_dict` output, on ``device``."""
        cfg = config_from_dict(state["config"], MapperConfig)
        cfg.device = device
        mapper = cls(cfg, embedding_dim=state["embedding_dim"] or None)
        mapper.instances = InstanceMap.from_state(state["instances"], cfg.instances)
        vocab = state["vocabulary"]
        if vocab["prompts"]:
            mapper.vocabulary.set(list(vocab["prompts"]), vocab["text"])
        for kf_state in state["keyframes"]:
            frame = Frame(**{k: kf_state.get(k) for k in (
                "rgb", "K", "camera_to_world", "stamp", "depth", "masks", "mask_embeddings",
                "mask_scores", "depth_confidence", "seen")})
            kf = mapper.keyframes.add(validate_frame(frame), force=True)
            if kf is not None:
                mapper.keyframes.set_labels(kf.id, kf_state.get("labels"))
                if kf_state.get("unplaced"):
                    mapper._unplaced.add(kf.id)
        mapper.edits = WorldEdits.from_state(state.get("edits"), mapper.keyframes.ids(),
                                             mapper.keyframes.next_id)
        mapper.grid.load_state_dict(state["grid"])
        mapper.extent.load_state_dict(state["extent"])
        if state["field"] is not None:
            mapper._restore_field(state["field"])
            mapper._refresh_reader(force=True)
        mapper.frames_ingested = int(state["counters"]["frames_ingested"])
        mapper._last_stats = mapper._read_stats()
        return mapper

    def _restore_field(self, fs: dict) -> None:
        self.field = PanopticField(self.cfg.field, tuple(fs["center"]), self.embedding_dim,
                                   self.device)
        protos = self.field.prototypes
        capacity = fs["weights"]["prototypes.weight"].shape[0]
        protos.weight = torch.nn.Parameter(torch.zeros(capacity, protos.weight.shape[1],
                                                       device=self.device))
        self.field.load_state_dict(fs["weights"])
        protos.row_of = {int(i): int(r) for i, r in fs["prototype_rows"]}
        used = set(protos.row_of.values())
        protos._free = [r for r in range(capacity - 1, -1, -1) if r not in used]
        self.trainer = Trainer(self.cfg.trainer, self.field, self.keyframes, self.grid,
                               self.cfg.sampling, self.instances.id_lut,
                               self._depth_prior())
        self.trainer.steps = int(fs["steps"])

    def stats(self) -> dict:
        """Counts and rates for status reports. Never waits for the map: when ingest or
        training holds it, the counts as the last foreground operation (ingest, edit,
        localize) left them are returned with the live training counters (a status report
        or a service must not wait behind a training step: under a 100 Hz flood ~/status
        was silent for 38 periods, waiting here, and localize_instances took 0.5 s in an
        idle node, of which 5 ms was localizing)."""
        if not self._lock.acquire(blocking=False):
            t = self.trainer
            return {**self._last_stats,
                    "training_steps": 0 if t is None else t.steps,
                    "training_steps_per_s": 0.0 if t is None else t.steps_per_second}
        try:
            self._last_stats = self._read_stats()
            return dict(self._last_stats)
        finally:
            self._lock.release()

    def _read_stats(self) -> dict:
        """The counts behind :meth:`stats` (lock held)."""
        t = self.trainer
        return {"frames": self.frames_ingested, "keyframes": len(self.keyframes),
                "frames_skipped_still": self.frames_skipped_still,
                "working_decimation": self.working_decimation,
                "edits": self.edits.count,
                "keyframe_mb": self.keyframes.nbytes() / 1e6,
                "cloud_cache_mb": self._kf_points.nbytes / 1e6,
                "occupied_voxels": self.grid.num_occupied,
                "training_steps": 0 if t is None else t.steps,
                "training_steps_per_s": 0.0 if t is None else t.steps_per_second,
                "losses": {} if t is None else dict(t.last_losses),
                **{f"instances_{k}": v for k, v in self.instances.stats().items()},
                **({} if self.stereo is None else
                   {f"stereo_{k}": v for k, v in self.stereo.stats().items()})}


# a reader that asked for the instance map this recently keeps the readers' copy updated
_READERS_ACTIVE_S = 60.0


def _angle_deg(R: np.ndarray) -> float:
    """Rotation angle [degrees] of a (3, 3) rotation."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def _has_depth(frame: Frame) -> bool:
    return frame.depth is not None and bool((frame.depth > 0).any())
