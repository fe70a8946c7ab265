"""Benchmark inputs from outside the renderer: scene folders (``--scene-dir``, e.g. an
imported recording without ground truth) and masks recorded from any segmenter
(``--masks-dir``).

Recorded masks (``--masks-dir DIR``), one file per frame the benchmark uses:

* ``DIR/NNNNNN.png`` - the masks of training frame NNNNNN, where NNNNNN is the frame's
  0-based position in scene.json's ``frames`` list, 6 digits (the number in its image's
  name ``frames/NNNNNN_rgb.png``); ``DIR/novel/NNNNNN.png`` likewise for the held-out
  views (``novel/NNNNNN_rgb.png``; not needed with ``--novel-frames 0``). A single-channel
  8-bit or 16-bit PNG (mode L, P or I;16) of the frame's size: 0 = no mask, 1..M = mask
  ids (they need not be compact; they are renumbered 1..K in order).
* ``DIR/NNNNNN.npy`` (and ``DIR/novel/NNNNNN.npy``), optional: (M, D) float embeddings
  (float32; float16/64 are cast), row k = mask id k + 1, M >= the largest id in the
  PNG. Either every PNG has one or none does. Rows are L2-normalised here.
* ``DIR/text_embeddings.npy``, optional: (C, D) text embeddings of the scene's classes
  1..C (``scene.json``'s ``classes[1:]``, in order) from the same model, so that semantics
  can be scored. A scene with ground truth and recorded embeddings needs it; without
  recorded embeddings, such a scene gets SIMULATED oracle embeddings (the majority
  ground-truth class under each mask, as the classical front-end does).

Masks carry no scores (every score is 1). Every problem raises :class:`MasksDirError`
naming the file: a missing PNG or .npy, a size that differs from the frame's, a colour
(RGB) or otherwise wrong image mode, a non-float or non-2-D embedding array, too few rows,
a D that differs between files.

A scene without ground truth is measured by :func:`evaluate_without_gt`; the fields of
its results are listed in :data:`REPORT_FIELDS`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from panoptic_mapping.bench import metrics
from panoptic_mapping.bench.frontends import SimulatedEmbeddingSpace, SimulatedMaskFrontend
from panoptic_mapping.bench.report import metric_table
from panoptic_mapping.bench.scenes import load_scene
from panoptic_mapping.bench.types import MaskFrame, Scene, SceneFrame
from panoptic_mapping.core.geometry import backproject

__all__ = ["MasksDirError", "RecordedMasks", "REPORT_FIELDS", "load_scene_dir",
           "load_masks_dir", "read_label_image", "read_embeddings",
           "check_frontends_without_gt", "evaluate_without_gt", "id_churn",
           "reprojection_id_consistency", "format_report_without_gt"]

MASK_FILE = "{:06d}.png"
EMBEDDING_FILE = "{:06d}.npy"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
NOVEL_DIR = "novel"
_LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
PROBE_VIEWS = 8  # training views re-rendered at every checkpoint (id churn)

#: Per-method result fields of a scene without ground truth (``evaluate_without_gt``).
REPORT_FIELDS = {
    "confirmed_instances": "map instances at the end: the mapper's confirmed ids (seen in "
                           "two frames); other methods: distinct ids they assigned",
    "ids_assigned": "distinct non-zero ids the method gave the training frames online",
    "instances_over_time": "every --eval-every frames and after the stream: frame, "
                           "stream_s, ids_assigned, confirmed (mapper), ids_at_probes "
                           "(distinct ids rendered at the probe views), churn, churn_pixels",
    "id_churn_mean": "mean over checkpoints of the share of probe-view pixels whose map id "
                     "changed since the previous checkpoint (pixels labelled at both; the "
                     "probe views are up to 8 training views spread over the sequence, "
                     "rendered at sensor depth); only for methods that render a map",
    "id_churn_late": "the same over the second half of the stream's checkpoints",
    "id_churn_after_training": "churn between the end of the stream and after the training "
                               "that follows it",
    "frame_to_frame_id_consistency": "share of co-visible pixels of consecutive training "
                                     "frames (warped with depth and poses, depth agreeing "
                                     "within 5 %) whose online ids agree; needs depth",
    "consistency_pixels": "pixels that share was computed on",
    "novel_depth_mae": "field depth rendered at the held-out views vs their sensor depth: "
                       "mean absolute error [m] (mean over views, as with ground truth); "
                       "the novel_* fields need depth at the held-out views and a trained "
                       "field (none with --train-seconds 0)",
    "novel_depth_abs_rel": "pooled mean |d - d_sensor| / d_sensor",
    "novel_depth_rmse": "pooled RMSE [m]",
    "novel_depth_delta1": "pooled share with max(d/d_s, d_s/d) < 1.25",
    "novel_depth_coverage": "share of sensor-depth pixels where the field rendered depth",
    "novel_psnr": "field colour rendered at the held-out views vs their images [dB]",
    "loc_ms_p50": "InstanceLoc latency on the held-out views (median, ms); also loc_ms_p95",
    "loc_coverage": "share of held-out pixels InstanceLoc gave a map id",
    "ingest_fps": "frames ingested per second (ingestion only); also ingest_ms_p50",
}


class MasksDirError(ValueError):
    """A recorded-masks folder the benchmark cannot use, with the file and the reason."""


# ----------------------------------------------------------------------------- scenes


def load_scene_dir(cfg) -> tuple[Scene, object]:
    """The scene in ``cfg.scene_dir`` cut to ``cfg.frames`` / ``cfg.novel_frames`` (None:
    all), and ``cfg`` with its frame counts, size and scene name set from the scene."""
    scene = load_scene(cfg.scene_dir)
    if cfg.frames is not None:
        scene.frames = scene.frames[:cfg.frames]
    if cfg.novel_frames is not None:
        scene.novel_frames = scene.novel_frames[:cfg.novel_frames]
    if not scene.frames:
        raise ValueError(f"{cfg.scene_dir}: the scene has no training frames")
    h, w = scene.frames[0].rgb.shape[:2]
    return scene, dataclasses.replace(cfg, scene=scene.name, frames=len(scene.frames),
                                      novel_frames=len(scene.novel_frames), width=w, height=h)


def check_frontends_without_gt(*frontends) -> None:
    """Make front-ends fit a scene without ground truth: a simulated one (built from the
    ground truth) is refused; SIMULATED oracle embeddings (the majority ground-truth class)
    are switched off, so real segmenters give masks without embeddings."""
    for fe in frontends:
        if isinstance(fe, SimulatedMaskFrontend):
            raise ValueError("the simulated front-ends (simulated, gt) are made from ground "
                             "truth, which this scene does not have; use --frontend "
                             "classical or --masks-dir")
        if getattr(fe, "embedding_space", None) is not None:
            fe.embedding_space = None


# ----------------------------------------------------------------------------- masks


def read_label_image(path: Path, shape: tuple[int, int], what: str = "") -> np.ndarray:
    """(H, W) int32 ids of a recorded label PNG, checked against the frame's (H, W)."""
    what = f" ({what})" if what else ""
    if not path.is_file():
        raise MasksDirError(f"{path}: missing{what}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in _LABEL_MODES:
                hint = (" - a colour-coded mask? Write the ids as grey values (8- or 16-bit)"
                        if mode in ("RGB", "RGBA", "LA") else "")
                raise MasksDirError(f"{path}: a label image must be single-channel 8-bit or "
                                    f"16-bit (PNG mode L, P or I;16), got mode {mode}{hint}")
            labels = np.asarray(im)
    except OSError as exc:
        raise MasksDirError(f"{path}: cannot read it as an image ({exc})") from exc
    if labels.shape != tuple(shape):
        raise MasksDirError(f"{path}: {labels.shape[1]}x{labels.shape[0]} pixels but the "
                            f"frame{what} is {shape[1]}x{shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFF):
        raise MasksDirError(f"{path}: ids must lie in 0..65535")
    return labels.astype(np.int32)


def read_embeddings(path: Path, max_id: int, dim: int | None = None) -> np.ndarray:
    """(M, D) float32 embeddings of a recorded .npy file, checked: float, 2-D, finite,
    M >= ``max_id`` (row k = mask id k + 1), D == ``dim`` when given."""
    if not path.is_file():
        raise MasksDirError(f"{path}: missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise MasksDirError(f"{path}: not a readable .npy array ({exc})") from exc
    if arr.dtype.kind != "f":
        raise MasksDirError(f"{path}: dtype {arr.dtype}; expected float32 (M, D) embeddings")
    if arr.ndim != 2:
        raise MasksDirError(f"{path}: shape {arr.shape}; expected (M, D) embeddings")
    if arr.shape[0] < max_id:
        raise MasksDirError(f"{path}: {arr.shape[0]} rows but the label image has mask id "
                            f"{max_id} (row k is mask id k + 1)")
    if dim is not None and arr.shape[1] != dim:
        raise MasksDirError(f"{path}: D = {arr.shape[1]}, other files have D = {dim}")
    if not np.isfinite(arr).all():
        raise MasksDirError(f"{path}: contains NaN or inf")
    return arr.astype(np.float32)


def _compact(labels: np.ndarray, embeddings: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids renumbered 1..K in order, the embedding rows of the ids present, unit length."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    out = lut[labels]
    if embeddings is not None:
        embeddings = embeddings[ids - 1]
        embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1,
                                                            keepdims=True), 1e-12)
        embeddings = embeddings.astype(np.float32)
    return out, embeddings


def _oracle_embeddings(labels: np.ndarray, semantic: np.ndarray, classes: list[str],
                       space: SimulatedEmbeddingSpace, rng: np.random.Generator
                       ) -> np.ndarray:
    """SIMULATED embedding per mask of the majority ground-truth class under it (a mask on
    void only gets a random class)."""
    n, c = int(labels.max(initial=0)), len(classes)
    valid = (labels > 0) & (semantic > 0) & (semantic < c)
    counts = np.bincount(labels[valid].astype(np.int64) * c + semantic[valid],
                         minlength=(n + 1) * c).reshape(n + 1, c)
    out = np.zeros((n, space.dim), np.float32)
    for i in range(1, n + 1):
        cls = int(np.argmax(counts[i])) if counts[i].any() else \
            (int(rng.integers(1, c)) if c > 1 else 0)
        out[i - 1] = space.sample_image_embedding(classes[cls], rng)[0]
    return out


@dataclass
class RecordedMasks:
    """Masks read from a ``--masks-dir``.

    Attributes:
        train, novel: one MaskFrame per training frame / held-out view, in order.
        embedding_dim: D of the recorded embeddings, None when there are none.
        text_embeddings: (C, D) text embeddings of the scene's classes 1..C to use, or None
            (then the benchmark's SIMULATED ones).
        info: what was read (for the record).
    """

    train: list[MaskFrame]
    novel: list[MaskFrame]
    embedding_dim: int | None = None
    text_embeddings: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def load_masks_dir(directory: str | Path, scene: Scene,
                   embedding_space: SimulatedEmbeddingSpace | None = None,
                   seed: int = 0) -> RecordedMasks:
    """Read and check the recorded masks of every frame of ``scene`` (layout: module
    docstring). ``embedding_space`` gives a scene with ground truth SIMULATED oracle
    embeddings when no .npy files were recorded.

    Raises:
        MasksDirError: with the offending file and the reason.
    """
    root = Path(directory)
    if not root.is_dir():
        raise MasksDirError(f"{root}: not a folder")
    jobs = [(root / MASK_FILE.format(i), f, f"frames/{i:06d}_rgb.png", "train", i)
            for i, f in enumerate(scene.frames)]
    jobs += [(root / NOVEL_DIR / MASK_FILE.format(i), f, f"novel/{i:06d}_rgb.png", "novel", i)
             for i, f in enumerate(scene.novel_frames)]
    missing = [str(p) for p, *_ in jobs if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise MasksDirError(f"{missing[0]}: missing{more} (masks-dir needs NNNNNN.png for "
                            f"each of the {len(scene.frames)} training frames, NNNNNN = the "
                            f"frame's position, and novel/NNNNNN.png for each of the "
                            f"{len(scene.novel_frames)} held-out views; --frames and "
                            "--novel-frames limit them)")
    with_npy = [p.with_suffix(".npy").is_file() for p, *_ in jobs]
    if any(with_npy) and not all(with_npy):
        have = next(p for (p, *_), w in zip(jobs, with_npy) if w)
        lack = next(p for (p, *_), w in zip(jobs, with_npy) if not w)
        raise MasksDirError(f"{lack.with_suffix('.npy')}: missing, but {have.with_suffix('.npy')}"
                            " exists (give embeddings for every mask image or for none)")
    recorded = all(with_npy)
    dim = None
    train, novel = [], []
    for path, frame, name, split, i in jobs:
        labels = read_label_image(path, frame.rgb.shape[:2], name)
        emb = None
        if recorded:
            emb = read_embeddings(path.with_suffix(".npy"), int(labels.max(initial=0)), dim)
            dim = emb.shape[1]
        labels, emb = _compact(labels, emb)
        n = int(labels.max(initial=0))
        if emb is None and embedding_space is not None and frame.semantic is not None:
            rng = np.random.default_rng((seed, 0 if split == "train" else 1, i))
            emb = _oracle_embeddings(labels, frame.semantic, scene.classes, embedding_space,
                                     rng)
        (train if split == "train" else novel).append(
            MaskFrame(labels=labels, scores=np.ones(n, np.float32), embeddings=emb))
    text = None
    text_path = root / TEXT_EMBEDDINGS_FILE
    n_classes = len(scene.classes) - 1
    if text_path.is_file():
        if not recorded:
            raise MasksDirError(f"{text_path}: text embeddings without mask embeddings "
                                "(NNNNNN.npy)")
        text = read_embeddings(text_path, n_classes, dim)
        if text.shape[0] != n_classes:
            raise MasksDirError(f"{text_path}: {text.shape[0]} rows, the scene has "
                                f"{n_classes} classes (scene.json classes[1:])")
    elif recorded:
        if scene.has_ground_truth and n_classes > 0:
            raise MasksDirError(f"{text_path}: missing; recorded mask embeddings need the text "
                                f"embeddings of the scene's {n_classes} classes "
                                f"({', '.join(scene.classes[1:4])}...) from the same model to "
                                "score semantics (or remove the .npy files to use SIMULATED "
                                "oracle embeddings)")
        text = np.zeros((n_classes, dim), np.float32)  # no ground truth: semantics unscored
    embeddings = ("recorded" if recorded else
                  "SIMULATED oracle (majority ground-truth class under each mask)"
                  if scene.has_ground_truth and embedding_space is not None else "none")
    info = {"masks_dir": str(root), "files": len(jobs), "embeddings": embeddings,
            "embedding_dim": dim, "masks_per_frame": masks_per_frame(train)}
    return RecordedMasks(train, novel, dim, text, info)


# ----------------------------------------------------------------------------- measures


def masks_per_frame(masks: list[MaskFrame]) -> float:
    """Mean number of masks a frame (0.0 for no frames)."""
    return float(np.mean([m.labels.max(initial=0) for m in masks])) if masks else 0.0


def id_churn(previous: list[np.ndarray], current: list[np.ndarray]) -> tuple[float, int]:
    """Share of pixels whose id changed between two snapshots of the same views, over the
    pixels labelled (non-zero) in both; (NaN, 0) when there is none."""
    changed = both = 0
    for a, b in zip(previous, current):
        m = (a > 0) & (b > 0)
        both += int(m.sum())
        changed += int((a[m] != b[m]).sum())
    return (changed / both if both else float("nan")), both


def reprojection_id_consistency(a: SceneFrame, ids_a: np.ndarray, b: SceneFrame,
                                ids_b: np.ndarray, rel_tol: float = 0.05
                                ) -> tuple[int, int]:
    """(agreeing, compared) pixels of frame ``b`` warped into frame ``a`` with b's depth and
    both poses: a pixel is compared when it lands inside a, a's depth there agrees with
    its depth in a's camera within ``rel_tol`` (visible, not occluded) and both frames gave
    it a non-zero id; it agrees when the ids are equal."""
    pts, pix = backproject(b.depth, b.K, b.camera_to_world)
    if pix.size == 0:
        return 0, 0
    T = a.camera_to_world
    cam = (pts - T[:3, 3]) @ T[:3, :3]  # world -> camera a
    z = cam[:, 2]
    ok = z > 1e-6
    u = np.full(z.shape, -1, np.int64)
    v = np.full(z.shape, -1, np.int64)
    u[ok] = np.round(a.K[0, 0] * cam[ok, 0] / z[ok] + a.K[0, 2]).astype(np.int64)
    v[ok] = np.round(a.K[1, 1] * cam[ok, 1] / z[ok] + a.K[1, 2]).astype(np.int64)
    h, w = a.depth.shape
    ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z, pix = u[ok], v[ok], z[ok], pix[ok]
    da = a.depth[v, u]
    seen = (da > 0) & (np.abs(da - z) <= rel_tol * z)
    id_a = ids_a[v, u][seen]
    id_b = ids_b.reshape(-1)[pix[seen]]
    both = (id_a > 0) & (id_b > 0)
    return int((id_a[both] == id_b[both]).sum()), int(both.sum())


def _map_stats(method) -> dict | None:
    """The instance map's counts of a method that wraps the mapping core, else None."""
    mapper = getattr(method, "mapper", None)
    return None if mapper is None else dict(mapper.instances.stats())


def _nanmean(values) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _field_errors(method, frames: list[SceneFrame]) -> dict:
    """Colour and depth of the method's field rendered at ``frames`` vs the sensor's."""
    mapper = getattr(method, "mapper", None)
    # an untrained field (--train-seconds 0) says nothing and takes seconds per view to
    # render on a CPU: left out, as MapperMethod.extra_metrics does with ground truth
    if mapper is None or not frames or mapper.stats()["training_steps"] == 0:
        return {}
    psnr, mae, pred, sensor = [], [], [], []
    covered = total = 0
    t0 = time.perf_counter()
    for f in frames:
        rgb, depth = mapper.render_rgbd(f.K, f.camera_to_world, f.rgb.shape[:2])
        psnr.append(metrics.psnr(rgb, f.rgb))
        has = f.depth > 0
        total += int(has.sum())
        valid = has & (depth > 0)
        covered += int(valid.sum())
        if valid.any():
            mae.append(metrics.depth_errors(depth, f.depth, valid)["mae"])
            pred.append(depth[valid])
            sensor.append(f.depth[valid])
    out = {"novel_psnr": _nanmean(psnr),
           "render_ms_per_view": 1000 * (time.perf_counter() - t0) / len(frames)}
    if total == 0:  # no sensor depth at the held-out views
        return out
    out["novel_depth_coverage"] = covered / total
    if pred:
        pooled = metrics.depth_errors(np.concatenate(pred), np.concatenate(sensor))
        out.update(novel_depth_mae=float(np.mean(mae)), novel_depth_abs_rel=pooled["abs_rel"],
                   novel_depth_rmse=pooled["rmse"], novel_depth_delta1=pooled["delta1"],
                   novel_depth_pixels=pooled["n"])
    return out


def _without_depth(frame: SceneFrame) -> SceneFrame:
    return dataclasses.replace(frame, depth=np.zeros_like(frame.depth))


def evaluate_without_gt(method, scene: Scene, train_masks: list[MaskFrame],
                        novel_masks: list[MaskFrame], cfg, save_dir: Path | None = None,
                        probe_views: int = PROBE_VIEWS) -> dict:
    """Stream a scene without ground truth through ``method`` and measure what can be
    measured without it (fields: :data:`REPORT_FIELDS`). ``cfg``: the run's BenchConfig
    (use_depth, eval_every, train_seconds)."""
    frames = scene.frames if cfg.use_depth else [_without_depth(f) for f in scene.frames]
    novel = (scene.novel_frames if cfg.use_depth
             else [_without_depth(f) for f in scene.novel_frames])
    renders = bool(getattr(method, "renders_map", False))
    probes = sorted(set(np.linspace(0, len(frames) - 1, min(probe_views, len(frames)))
                        .round().astype(int).tolist()))
    assigned: set[int] = set()
    timeline: list[dict] = []
    previous: list[np.ndarray] | None = None
    ingest_s: list[float] = []
    stream_s = 0.0
    agree = compared = 0
    last_ids = None

    def checkpoint(frame_count: int) -> dict:
        nonlocal previous
        entry = {"frame": frame_count, "stream_s": stream_s, "ids_assigned": len(assigned)}
        stats = _map_stats(method)
        entry["confirmed"] = None if stats is None else stats.get("confirmed")
        if renders:
            snap = [np.asarray(method.instance_image(frames[p])) for p in probes]
            ids = set(np.unique(np.concatenate([s.reshape(-1) for s in snap])).tolist())
            entry["ids_at_probes"] = len(ids - {0})
            churn, n = id_churn(previous, snap) if previous is not None else (None, 0)
            entry["churn"] = None if churn is None or not np.isfinite(churn) else churn
            entry["churn_pixels"] = n
            previous = snap
        return entry

    for k, (frame, masks) in enumerate(zip(frames, train_masks)):
        t0 = time.perf_counter()
        ids = np.asarray(method.ingest(frame, masks))
        ingest_s.append(time.perf_counter() - t0)
        method.between_frames()
        stream_s += time.perf_counter() - t0
        assigned.update(np.unique(ids[ids > 0]).tolist())
        if cfg.use_depth and last_ids is not None:
            a, c = reprojection_id_consistency(frames[k - 1], last_ids, frame, ids)
            agree, compared = agree + a, compared + c
        last_ids = ids
        if (k + 1) % cfg.eval_every == 0 or k + 1 == len(frames):
            timeline.append(checkpoint(k + 1))
    streamed = [e.get("churn") for e in timeline]
    t0 = time.perf_counter()
    finish = method.finish(cfg.train_seconds)
    stream_s += time.perf_counter() - t0
    after = checkpoint(len(frames))
    after["after_training"] = True
    timeline.append(after)

    stats = _map_stats(method)
    result = {
        "confirmed_instances": stats["confirmed"] if stats is not None else len(assigned),
        "ids_assigned": len(assigned),
        "instances_over_time": timeline,
        "ingest_fps": len(ingest_s) / max(sum(ingest_s), 1e-9),
        "ingest_ms_p50": 1000 * float(np.median(ingest_s)),
        **finish,
    }
    if stats is not None:
        result["instances"] = stats
    if renders:
        result["id_churn_mean"] = _nanmean(streamed)
        result["id_churn_late"] = _nanmean(streamed[len(streamed) // 2:])
        result["id_churn_after_training"] = after.get("churn")
    if cfg.use_depth:
        result["frame_to_frame_id_consistency"] = agree / compared if compared else None
        result["consistency_pixels"] = compared
    loc = []
    if getattr(method, "supports_localization", False) and novel and novel_masks:
        loc_s, covered = [], 0
        for frame, masks in zip(novel, novel_masks):
            t0 = time.perf_counter()
            loc.append(np.asarray(method.localize(frame, masks)))
            loc_s.append(time.perf_counter() - t0)
            covered += int((loc[-1] > 0).sum())
        result.update(loc_ms_p50=1000 * float(np.percentile(loc_s, 50)),
                      loc_ms_p95=1000 * float(np.percentile(loc_s, 95)),
                      loc_coverage=covered / sum(f.rgb.shape[0] * f.rgb.shape[1]
                                                 for f in novel))
    # against the sensor, whatever the method was fed (RGB-only runs too)
    result.update(_field_errors(method, scene.novel_frames))
    if save_dir is not None:
        _save_ids(save_dir / method.name / "train", [method.instance_image(f) for f in frames])
        if loc:
            _save_ids(save_dir / method.name / "novel", loc)
    return result


def _save_ids(directory: Path, images: list[np.ndarray]) -> None:
    """NNNN_instance.png, 16-bit (ids above 65535 renumbered, 0 kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.max(initial=0) > 0xFFFF:
            uniq, inv = np.unique(img, return_inverse=True)
            img = (inv.reshape(img.shape) + (uniq[0] != 0)).astype(np.int64)
        Image.fromarray(img.astype(np.uint16)).save(directory / f"{i:04d}_instance.png")


# ----------------------------------------------------------------------------- report

_ROWS = ("confirmed_instances", "ids_assigned", "id_churn_mean", "id_churn_late",
         "id_churn_after_training", "frame_to_frame_id_consistency", "novel_depth_mae",
         "novel_depth_abs_rel", "novel_depth_rmse", "novel_depth_delta1",
         "novel_depth_coverage", "novel_psnr",
         "loc_coverage", "loc_ms_p50", "loc_ms_p95", "ingest_fps", "ingest_ms_p50",
         "train_steps", "train_steps_per_s")


def format_report_without_gt(record: dict) -> str:
    """Readable table of a run on a scene without ground truth, and the instance counts
    over time."""
    results = record["methods"]
    names = list(results)
    cfg, fe = record["config"], record["frontend"]
    source = f" from {fe['masks_dir']}" if fe.get("masks_dir") else ""
    if fe.get("masks_per_frame") is not None:
        source += f" ({fe['masks_per_frame']:.1f} masks a frame)"
    lines = [f"scene {record['scene']['name']} (no ground truth: PQ/mIoU not measured)  "
             f"frames {cfg['frames']} + {cfg['novel_frames']} held out at "
             f"{cfg['width']}x{cfg['height']}  depth {'on' if cfg['use_depth'] else 'off'}  "
             f"front-end {fe['name']}{source}"]
    lines += metric_table(results, [r for r in _ROWS if any(
        results[n].get(r) is not None for n in names)], 30)
    lines.append("")
    lines.append(f"instances over time (every {cfg['eval_every']} frames; frame:count, "
                 "A = after training; mapper: confirmed ids, others: ids assigned):")
    for n in names:
        parts = []
        for e in results[n].get("instances_over_time", []):
            count = e["confirmed"] if e.get("confirmed") is not None else e["ids_assigned"]
            parts.append(f"{'A' if e.get('after_training') else e['frame']}:{count}")
        lines.append(f"  {n}: " + " ".join(parts))
    lines.append(f"peak RSS {record['peak_rss_mb']:.0f} MB, total {record['total_s']:.1f} s")
    return "\n".join(lines)
