"""``python -m panoptic_mapping.bench``: render a scene, run a front-end, feed every method
the same frames, and print/write metrics, baselines, ratios and timings."""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from panoptic_mapping.bench.frontends import (
    MaskErrorModel,
    SemanticErrorModel,
    SimulatedEmbeddingSpace,
    SimulatedMaskFrontend,
    classical_frontend,
    geometric_frontend,
)
from panoptic_mapping.bench import external
from panoptic_mapping.bench.lens import NAMED_LENSES, distort_scene, parse_lens
from panoptic_mapping.bench.methods import Method, make_baseline
from panoptic_mapping.bench.report import metric_table
from panoptic_mapping.bench.moved import MoveTracker
from panoptic_mapping.bench.scenes import make_scene
from panoptic_mapping.bench.types import MaskFrame, Scene, SceneFrame
from panoptic_mapping.bench import metrics
from panoptic_mapping.core.mapper import MapperConfig
from panoptic_mapping.params import ConfigError, config_from_flat

BASELINES = ("per_frame_masks", "iou_tracking", "voxel_fusion")
# Metrics where larger is better; the table's "wins" column and ratios use this.
HIGHER_IS_BETTER = {"PQ_scene": True, "PQ_things": True, "PQ_stuff": True, "SQ": True,
                    "RQ": True, "mIoU": True, "matched_mIoU": True, "loc_PQ": True,
                    "loc_matched_mIoU": True, "late_id_changes": False,
                    "id_changes_per_object": False}


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on (written into the JSON record)."""

    scene: str = "tabletop"
    seed: int = 0
    frames: int = 60
    novel_frames: int = 10
    width: int = 160
    height: int = 120
    trajectory: str = "orbit"
    num_objects: int | None = None
    frontend: str = "simulated"  # simulated | classical | geometric | gt
    errors: dict = field(default_factory=dict)  # MaskErrorModel overrides
    embedding_noise: float = 0.3
    embedding_dim: int = 64
    # SemanticErrorModel overrides ("mode": "systematic" turns the systematic errors of the
    # SIMULATED embeddings on; {} = none, per-view noise only)
    semantic_errors: dict = field(default_factory=dict)
    use_depth: bool = True
    train_seconds: float = 120.0
    # a number of training steps instead of train_seconds (None: the time budget): the
    # same training whatever else runs on the machine, for comparisons of the field
    train_steps: int | None = None
    device: str = "cpu"
    methods: tuple[str, ...] = ("mapper", *BASELINES)
    voxel_size: float = 0.01
    eval_every: int = 10  # frames between PQ_scene evaluations (time-to-90% curve)
    # an object moved before this training frame (tabletop; None: nothing moves), and the
    # first frame PQ_scene_from_frame is scored on (None: the move's frame, or not at all)
    move_at: int | None = None
    pq_from_frame: int | None = None
    # inputs from outside (bench/external.py): a scene folder instead of a rendered scene
    # (frames / novel_frames None = all of its frames), recorded masks instead of a front-end
    scene_dir: str | None = None
    masks_dir: str | None = None
    # mapper configuration overrides, dotted names below MapperConfig ("instances.x": v)
    mapper_set: dict = field(default_factory=dict)
    # every view seen through a distorting lens (bench/lens.py: a name or MODEL:c1,...;
    # None: pinhole images), and whether the mapper is told ('undistort': Frame.lens) or
    # takes the raw images for pinhole ones ('ignore', what a node ignoring
    # camera_info.d does)
    lens: str | None = None
    lens_mode: str = "undistort"


# --------------------------------------------------------------------------- front-ends


def build_frontends(cfg: BenchConfig, scene: Scene, space: SimulatedEmbeddingSpace):
    """(front-end for the training frames, front-end for the held-out views)."""
    # the same model (and so the same per-instance choices) for training and held-out views
    sem = SemanticErrorModel(**cfg.semantic_errors)
    if cfg.frontend in ("simulated", "gt"):
        errors = MaskErrorModel.none() if cfg.frontend == "gt" else MaskErrorModel(**cfg.errors)
        # The held-out views get their own seed: frame indices restart at 0 there.
        return (SimulatedMaskFrontend(errors, cfg.seed, scene=scene, embedding_space=space,
                                      semantic_errors=sem),
                SimulatedMaskFrontend(errors, cfg.seed + 7919, scene=scene,
                                      embedding_space=space, semantic_errors=sem))
    if cfg.frontend == "classical":
        make = lambda seed: classical_frontend(  # noqa: E731
            use_depth=cfg.use_depth, embedding_space=space, scene=scene, seed=seed,
            semantic_errors=sem)
        return make(cfg.seed), make(cfg.seed + 7919)
    if cfg.frontend == "geometric":
        make = lambda seed: geometric_frontend(  # noqa: E731
            use_depth=cfg.use_depth, embedding_space=space, scene=scene, seed=seed,
            semantic_errors=sem)
        return make(cfg.seed), make(cfg.seed + 7919)
    raise ValueError(f"unknown front-end {cfg.frontend!r} (simulated, classical, geometric, gt)")


def frontend_quality(frames: list[SceneFrame], masks: list[MaskFrame], scene: Scene,
                     text_embeddings: np.ndarray | None = None) -> dict:
    """Mean per-frame class-agnostic PQ of the masks against ground truth (things+stuff),
    the PQ_scene a perfect map of them would reach (the segmenter's share of the loss),
    and, with embeddings, the semantic mIoU of the views' consensus on perfect instances
    (:func:`metrics.semantic_ceiling`)."""
    every_class = set(range(1, len(scene.classes)))
    pq = [metrics.panoptic_quality_scene([m.labels], None, [f.instance], [f.semantic],
                                         every_class, class_agnostic=True)
          for f, m in zip(frames, masks)]
    ceiling = metrics.segmenter_ceiling([m.labels for m in masks], [f.instance for f in frames],
                                        [f.semantic for f in frames], scene.thing_classes)
    return {"PQ": float(np.mean([p["PQ"] for p in pq])),
            "SQ": float(np.mean([p["SQ"] for p in pq])),
            "RQ": float(np.mean([p["RQ"] for p in pq])),
            "masks_per_frame": float(np.mean([m.labels.max() for m in masks])),
            # the PQ_scene a perfect map of these masks would reach (metrics.segmenter_ceiling)
            "ceiling_PQ_scene": ceiling["PQ"], "ceiling_PQ_things": ceiling["PQ_th"],
            "things_never_shown": len(ceiling["unrevealed"]), "things": ceiling["things"],
            **semantic_ceiling(frames, masks, scene, text_embeddings)}


def semantic_ceiling(frames: list[SceneFrame], masks: list[MaskFrame], scene: Scene,
                     text_embeddings: np.ndarray | None) -> dict:
    """{"ceiling_mIoU": ...} when the masks carry embeddings, else {}."""
    if text_embeddings is None or all(m.embeddings is None or not len(m.embeddings)
                                      for m in masks):
        return {}
    sem = metrics.semantic_ceiling([m.labels for m in masks], [m.embeddings for m in masks],
                                   [f.instance for f in frames], [f.semantic for f in frames],
                                   text_embeddings, len(scene.classes))
    return {"ceiling_mIoU": sem["mIoU"]}


def drop_depth(frame: SceneFrame) -> SceneFrame:
    """The frame as an RGB-only camera delivers it (depth unknown everywhere)."""
    return dataclasses.replace(frame, depth=np.zeros_like(frame.depth))


# --------------------------------------------------------------------------- methods


def build_methods(cfg: BenchConfig, scene: Scene, text_emb: np.ndarray) -> list[Method]:
    methods: list[Method] = []
    for name in cfg.methods:
        if name == "mapper":
            try:
                from panoptic_mapping.bench.mapper_method import MapperMethod
            except ImportError as exc:
                print(f"bench: the mapper is not available yet ({exc}); running baselines only",
                      file=sys.stderr)
                continue
            methods.append(MapperMethod(cfg, scene, text_emb))
        else:
            methods.append(make_baseline(name, text_emb, cfg.voxel_size))
    return methods


def evaluate(method: Method, scene: Scene, train_masks: list[MaskFrame],
             novel_masks: list[MaskFrame], cfg: BenchConfig, save_dir: Path | None) -> dict:
    """Stream, finish, and measure one method."""
    frames = scene.frames if cfg.use_depth else [drop_depth(f) for f in scene.frames]
    novel = scene.novel_frames if cfg.use_depth else [drop_depth(f) for f in scene.novel_frames]
    snapshots, ingest_s, curve = [], [], []
    stream_s = 0.0  # ingestion + online work, without the evaluations
    moved = scene.config.get("moved")
    tracker = (MoveTracker(moved, scene.frames)
               if moved and moved["at_frame"] > 0 and hasattr(method, "labeled_cloud")
               else None)
    for k, (frame, masks) in enumerate(zip(frames, train_masks)):
        t0 = time.perf_counter()
        method.ingest(frame, masks)
        ingest_s.append(time.perf_counter() - t0)
        method.between_frames()
        stream_s += time.perf_counter() - t0
        if tracker is not None and tracker.wants(k):
            cloud = method.labeled_cloud()
            tracker.observe(k, cloud.xyz, cloud.instance)
        if getattr(method, "renders_map", False) and (k + 1) % cfg.eval_every == 0:
            curve.append((stream_s, scene_pq(method, frames, scene)))
        # a map snapshot: what the map says about the view it just took in
        snapshots.append(metrics.majority_mapping([method.instance_image(frame)],
                                                  [frame.instance]))
    t0 = time.perf_counter()
    finish = method.finish(cfg.train_seconds)
    stream_s += time.perf_counter() - t0
    if curve:
        final = scene_pq(method, frames, scene)
        reached = [t for t, pq in curve + [(stream_s, final)] if pq >= 0.9 * final]
        finish["time_to_90pct_pq_s"] = reached[0]
        finish["pq_curve"] = curve

    pred_inst = [method.instance_image(f) for f in frames]
    pred_sem = [method.semantic_image(f, i) for f, i in zip(frames, pred_inst)]
    gt_inst = [f.instance for f in scene.frames]
    gt_sem = [f.semantic for f in scene.frames]
    pq = metrics.panoptic_quality_scene(pred_inst, pred_sem, gt_inst, gt_sem,
                                        scene.thing_classes)
    miou = metrics.mean_iou(pred_sem, gt_sem, len(scene.classes))
    matched = metrics.matched_mask_miou(pred_inst, gt_inst)
    stability = metrics.id_stability(snapshots, k=5)
    start = cfg.pq_from_frame if cfg.pq_from_frame is not None else (
        moved["at_frame"] if moved else None)
    if start is not None:  # the map as it ends, scored on the views from ``start`` on
        pq_late = metrics.panoptic_quality_scene(pred_inst[start:], pred_sem[start:],
                                                 gt_inst[start:], gt_sem[start:],
                                                 scene.thing_classes)["PQ"]
    result = {
        "PQ_scene": pq["PQ"], "PQ_things": pq["PQ_th"], "PQ_stuff": pq["PQ_st"],
        "SQ": pq["SQ"], "RQ": pq["RQ"], "mIoU": miou["mIoU"],
        "matched_mIoU": matched["mIoU"], "matched_masks": matched["n_matched"],
        "gt_masks": matched["n_gt"],
        # PQ_scene is a mean over classes: one class a stray id is labelled as, with no
        # object of it in the scene, scores 0 and costs as much as a lost object class
        "PQ_per_class": pq_per_class(pq, scene.classes),
        "late_id_changes": stability["late_changes"],
        "id_changes_per_object": stability["mean_changes_per_object"],
        # which ground-truth objects changed id late (gt id -> changes), to trace them
        "late_id_changes_by_object": {str(g): n for g, n in
                                      stability["late_changes_per_object"].items() if n},
        **({} if start is None else {"PQ_scene_from_frame": pq_late, "pq_from_frame": start}),
        **({} if tracker is None else tracker.result()),
        "ingest_fps": len(ingest_s) / max(sum(ingest_s), 1e-9),
        "ingest_ms_p50": 1000 * float(np.median(ingest_s)),
        **finish,
    }
    if method.supports_localization:
        loc, loc_s = [], []
        for frame, masks in zip(novel, novel_masks):
            t0 = time.perf_counter()
            loc.append(method.localize(frame, masks))
            loc_s.append(time.perf_counter() - t0)
        novel_sem = [method.semantic_image(f, i) for f, i in zip(novel, loc)]
        loc_pq = metrics.panoptic_quality_scene(
            loc, novel_sem, [f.instance for f in scene.novel_frames],
            [f.semantic for f in scene.novel_frames], scene.thing_classes)
        loc_m = metrics.matched_mask_miou(loc, [f.instance for f in scene.novel_frames])
        result.update({"loc_PQ": loc_pq["PQ"], "loc_matched_mIoU": loc_m["mIoU"],
                       "loc_ms_p50": 1000 * float(np.percentile(loc_s, 50)),
                       "loc_ms_p95": 1000 * float(np.percentile(loc_s, 95))})
        if save_dir is not None:
            save_images(save_dir / method.name / "novel", loc, novel_sem)
    # the field is scored against the ground truth, whatever the method was fed
    result.update(method.extra_metrics(scene.novel_frames))
    if save_dir is not None:
        save_images(save_dir / method.name / "train", pred_inst, pred_sem)
    return result


def scene_pq(method: Method, frames: list[SceneFrame], scene: Scene) -> float:
    """PQ_scene of the method's map rendered at every training view (things and stuff)."""
    inst = [method.instance_image(f) for f in frames]
    sem = [method.semantic_image(f, i) for f, i in zip(frames, inst)]
    return metrics.panoptic_quality_scene(inst, sem, [f.instance for f in scene.frames],
                                          [f.semantic for f in scene.frames],
                                          scene.thing_classes)["PQ"]


def save_images(directory: Path, instances: list[np.ndarray], semantics: list[np.ndarray]) -> None:
    """16-bit PNGs: NNNN_instance.png and NNNN_semantic.png (ids >= 65536 wrap: remapped)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for i, (inst, sem) in enumerate(zip(instances, semantics)):
        for kind, img in (("instance", inst), ("semantic", sem)):
            img = np.asarray(img)
            if img.max(initial=0) > 65535:  # compact while keeping 0 = none
                uniq, inv = np.unique(img, return_inverse=True)
                img = (np.searchsorted(uniq, uniq)[inv] + (uniq[0] != 0)).reshape(img.shape)
                img[np.asarray(instances[i] if kind == "instance" else sem) == 0] = 0
            Image.fromarray(img.astype(np.uint16)).save(directory / f"{i:04d}_{kind}.png")


# --------------------------------------------------------------------------- report


def pq_per_class(pq: dict, classes: list[str]) -> dict[str, dict]:
    """Class name -> {PQ, TP, FP, FN} of a :func:`metrics.panoptic_quality_scene` result."""
    return {(classes[c] if 0 <= c < len(classes) else str(c)):
            {"PQ": v["PQ"], "TP": v["TP"], "FP": v["FP"], "FN": v["FN"]}
            for c, v in sorted(pq["per_class"].items())}


def pq_losses(per_class: dict[str, dict]) -> str:
    """The classes that cost PQ_scene, worst first: 'mug 0.00 (FN 1, FP 2), ...'."""
    lost = sorted((v["PQ"], name, v) for name, v in per_class.items()
                  if v["FP"] or v["FN"])
    return ", ".join(f"{name} {q:.2f} (" + ", ".join(f"{k} {v[k]}" for k in ("FN", "FP")
                                                    if v[k]) + ")"
                     for q, name, v in lost)


def format_report(record: dict) -> str:
    """Readable table: one column per method; the mapper's ratio to each baseline."""
    results = record["methods"]
    names = list(results)
    rows = ["PQ_scene", "PQ_scene_from_frame", "move_frames_to_follow", "move_id_kept",
            "PQ_things", "PQ_stuff", "SQ", "RQ", "mIoU", "mIoU_masks", "mIoU_voxels",
            "point_query_IoU", "point_query_ms_200k", "matched_mIoU",
            "matched_masks", "loc_PQ", "loc_matched_mIoU", "late_id_changes",
            "id_changes_per_object", "ingest_fps", "ingest_ms_p50", "loc_ms_p50", "loc_ms_p95",
            "train_steps_per_s", "train_steps", "time_to_90pct_pq_s", "novel_psnr", "novel_depth_mae",
            "render_ms_per_view"]
    rows = [r for r in rows if any(r in results[n] for n in names)]
    lines = [f"scene {record['scene']['name']}  frames {record['config']['frames']} at "
             f"{record['config']['width']}x{record['config']['height']}  depth "
             f"{'on' if record['config']['use_depth'] else 'off'}  front-end "
             f"{record['frontend']['name']} (PQ vs GT {record['frontend']['quality']['PQ']:.3f})"]
    q = record["frontend"]["quality"]
    if "ceiling_PQ_scene" in q:
        lines.append(f"a perfect map of these masks: PQ_scene {q['ceiling_PQ_scene']:.3f}, "
                     f"PQ_things {q['ceiling_PQ_things']:.3f} ({q['things_never_shown']} of "
                     f"{q['things']} things never shown whole by the front-end)"
                     + (f"; labelled by the views' consensus: mIoU {q['ceiling_mIoU']:.3f}"
                        if "ceiling_mIoU" in q else ""))
    lines += metric_table(results, rows, 24)
    if results.get("mapper", {}).get("PQ_per_class"):
        losses = pq_losses(results["mapper"]["PQ_per_class"])
        lines.append(f"mapper's PQ per class, where it loses: {losses or 'nowhere'}")
    if "mapper" in results:
        lines.append("")
        for b in (n for n in names if n != "mapper"):
            parts, losses = [], []
            for r, higher in HIGHER_IS_BETTER.items():
                m, v = results["mapper"].get(r), results[b].get(r)
                if m is None or v is None or not np.isfinite(m) or not np.isfinite(v):
                    continue
                if v and r not in ("late_id_changes", "id_changes_per_object"):
                    parts.append(f"{r} x{m / v:.2f}")
                if (v > m) if higher else (v < m):
                    losses.append(r)
            lines.append(f"mapper vs {b}: " + ", ".join(parts[:6]))
            if losses:
                lines.append(f"  {b} WINS on: {', '.join(losses)}")
    lines.append(f"peak RSS {record['peak_rss_mb']:.0f} MB, total {record['total_s']:.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry


def run(cfg: BenchConfig, save_dir: Path | None = None) -> dict:
    """Run one benchmark configuration; return the full record."""
    t_start = time.perf_counter()
    # the field's initial weights come from torch's global generator: same seed, same run
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if cfg.scene_dir:  # a scene folder: its frames, size and name (bench/external.py)
        scene, cfg = external.load_scene_dir(cfg)
    else:
        scene = make_scene(cfg.scene, seed=cfg.seed, num_frames=cfg.frames, width=cfg.width,
                           height=cfg.height, num_objects=cfg.num_objects,
                           trajectory=cfg.trajectory, num_novel_frames=cfg.novel_frames,
                           move_at=cfg.move_at)
    if cfg.lens:
        scene = distort_scene(scene, parse_lens(cfg.lens))
    render_s = time.perf_counter() - t0
    space = SimulatedEmbeddingSpace(dim=cfg.embedding_dim, seed=cfg.seed,
                                    noise_std=cfg.embedding_noise)
    text_emb = space.text_embeddings(scene.classes[1:])
    embeddings = "SIMULATED vision-language embeddings (not a real model)"
    if cfg.masks_dir and SemanticErrorModel(**cfg.semantic_errors).mode != "none":
        raise ValueError("systematic semantic errors apply to the front-ends' SIMULATED "
                         "embeddings, not to recorded masks (--masks-dir)")
    if cfg.masks_dir:  # masks recorded from any segmenter instead of a front-end
        recorded = external.load_masks_dir(cfg.masks_dir, scene, space, cfg.seed)
        train_masks, novel_masks = recorded.train, recorded.novel
        frontend = {"name": "recorded", **recorded.info}
        if recorded.embedding_dim is not None:
            text_emb = recorded.text_embeddings
            cfg = dataclasses.replace(cfg, embedding_dim=recorded.embedding_dim)
            embeddings = f"recorded with the masks ({recorded.info['masks_dir']})"
    else:
        train_fe, novel_fe = build_frontends(cfg, scene, space)
        if not scene.has_ground_truth:
            external.check_frontends_without_gt(train_fe, novel_fe)
        t0 = time.perf_counter()
        train_masks = [train_fe(f, scene) for f in scene.frames]
        frontend_s = (time.perf_counter() - t0) / max(len(scene.frames), 1)
        novel_masks = [novel_fe(f, scene) for f in scene.novel_frames]
        frontend = {"name": cfg.frontend, "ms_per_frame": 1000 * frontend_s,
                    "masks_per_frame": external.masks_per_frame(train_masks)}
        if isinstance(train_fe, SimulatedMaskFrontend):
            frontend["errors"] = train_fe.errors.to_dict()
            frontend["applied"] = train_fe.format_stats()
        plan = train_fe.semantic_plan(scene) if scene.has_ground_truth else None
        if plan is not None:  # which instances are embedded as what, in every view
            embeddings += ("; systematic semantic errors (bench/semantic_errors.py): "
                           f"{len(plan.confused)} instances as a similar class, "
                           f"{len(plan.supported)} as their support, background pull up to "
                           f"{train_fe.semantic_errors.background_weight}")
            frontend["semantic_errors"] = {**train_fe.semantic_errors.to_dict(),
                                           "plan": plan.to_dict(scene.classes)}
    if scene.has_ground_truth:
        frontend["quality"] = frontend_quality(scene.frames, train_masks, scene, text_emb)
    if save_dir is not None and scene.has_ground_truth:
        save_images(save_dir / "gt" / "train", [f.instance for f in scene.frames],
                    [f.semantic for f in scene.frames])
        save_images(save_dir / "gt" / "novel", [f.instance for f in scene.novel_frames],
                    [f.semantic for f in scene.novel_frames])
    results = {}
    # without ground truth: what can be measured without it (external.REPORT_FIELDS)
    measure = evaluate if scene.has_ground_truth else external.evaluate_without_gt
    for method in build_methods(cfg, scene, text_emb):
        results[method.name] = measure(method, scene, train_masks, novel_masks, cfg, save_dir)
    return {
        "config": dataclasses.asdict(cfg),
        "scene": {"name": scene.name, "classes": scene.classes,
                  "thing_classes": sorted(scene.thing_classes),
                  "instances": len(scene.instance_class), "render_s": render_s,
                  "layout": scene.config.get("layout"),
                  "ground_truth": scene.has_ground_truth, "source": cfg.scene_dir},
        "frontend": frontend,
        "embeddings": embeddings,
        "methods": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "total_s": time.perf_counter() - t_start,
    }


def parse_mapper_settings(items: list[str]) -> dict:
    """``--set`` values, ``KEY=VALUE`` strings -> {dotted key: YAML value}; ValueError
    naming the item that is not of that form."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m panoptic_mapping.bench",
                                description=__doc__.splitlines()[0])
    d = BenchConfig()
    p.add_argument("--scene", default=d.scene, choices=("tabletop", "room"))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim,
                   help="dimension of the simulated vision-language embeddings (default "
                        f"{d.embedding_dim}; open_clip ViT-B models give 512)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"training frames (default {d.frames}; with --scene-dir: all of them)")
    p.add_argument("--novel-frames", type=int, default=None,
                   help=f"held-out views (default {d.novel_frames}; with --scene-dir: all)")
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--trajectory", default=d.trajectory, choices=("orbit", "walkthrough"))
    p.add_argument("--num-objects", type=int, default=None)
    p.add_argument("--frontend", default=d.frontend,
                   choices=("simulated", "classical", "geometric", "gt"))
    for f in dataclasses.fields(MaskErrorModel):
        if f.type in ("float", "int", float, int):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=float, default=None,
                           help=f"simulated front-end error parameter (default {f.default})")
    p.add_argument("--error-mode", default=None, choices=MaskErrorModel.MODES,
                   help="simulated front-end: errors drawn anew per view (independent, the "
                        "default) or made the same way in every view (systematic)")
    p.add_argument("--embedding-noise", type=float, default=d.embedding_noise)
    s = p.add_argument_group(
        "systematic semantic errors of the SIMULATED embeddings (bench/semantic_errors.py)")
    s.add_argument("--semantic-errors", default=None, choices=SemanticErrorModel.MODES,
                   help="none (default): per-view noise only; systematic: chosen instances "
                        "embedded as a similar class or as their support in every view, "
                        "and every mask pulled toward the class around it")
    for f in dataclasses.fields(SemanticErrorModel):
        if f.type in ("float", "int", float, int):
            s.add_argument(f"--sem-{f.name.replace('_', '-')}", type=float, default=None,
                           help=f"(default {f.default}; 0 turns a rate/weight's kind off)")
    p.add_argument("--no-depth", action="store_true", help="RGB-only: frames carry no depth")
    p.add_argument("--train-seconds", type=float, default=d.train_seconds,
                   help="training time budget of the mapper")
    p.add_argument("--train-steps", type=int, default=None,
                   help="train the mapper's field for this many steps instead of "
                        "--train-seconds (half while the frames stream, the rest after): "
                        "the same training on any machine and load")
    p.add_argument("--device", default=d.device)
    p.add_argument("--methods", default=",".join(d.methods),
                   help=f"comma-separated subset of mapper,{','.join(BASELINES)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one mapper parameter (a dotted name below 'mapping.', "
                        "e.g. instances.smooth_weight=0; the value is read as YAML); "
                        "repeatable")
    p.add_argument("--voxel-size", type=float, default=d.voxel_size,
                   help="voxel edge of the geometric fusion baseline [m]")
    p.add_argument("--json", type=Path, default=None, help="write the full record here")
    p.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                   help="write per-frame predicted and ground-truth id images (16-bit PNG)")
    g = p.add_argument_group("inputs from outside (README: Benchmark, 'Recorded sequences')")
    g.add_argument("--scene-dir", default=None, metavar="DIR",
                   help="run on this scene folder (scene.json, as save_scene or "
                        "bench.importers write it) instead of rendering one; --scene, "
                        "--width, --height, --trajectory, --num-objects are then ignored; "
                        "without ground truth the report lists what needs none")
    g.add_argument("--masks-dir", default=None, metavar="DIR",
                   help="feed the masks recorded in DIR (NNNNNN.png per frame, optional "
                        "NNNNNN.npy embeddings, novel/ for held-out views) instead of "
                        "running a front-end")
    g.add_argument("--move-at", type=int, default=None, metavar="N",
                   help="tabletop: move one object before training frame N (0: the final "
                        "scene from the start); the report says how many frames the map "
                        "needs to follow it (bench/moved.py) and PQ_scene from frame N on")
    g.add_argument("--pq-from-frame", type=int, default=None, metavar="N",
                   help="also score PQ_scene on the training views from frame N on "
                        "(default with --move-at: the move's frame)")
    g.add_argument("--lens", default=None, metavar="NAME|MODEL:C1,C2,...",
                   help="see every view through a distorting lens (bench/lens.py): "
                        f"{', '.join(NAMED_LENSES)} or e.g. plumb_bob:0.1,-0.2,0,0,0")
    g.add_argument("--lens-mode", default=d.lens_mode, choices=("undistort", "ignore"),
                   help="with --lens, or a --scene-dir whose scene.json records a lens "
                        "(TUM fr1/fr2 imports): the mapper undistorts (told the lens, as "
                        "the node with input.lens 'undistort') or takes the raw images as "
                        "pinhole ones")
    g.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                   help=f"frames between map checkpoints (PQ curve; without ground truth: "
                        f"instance counts and id churn) (default {d.eval_every})")
    a = p.parse_args(argv)
    if a.eval_every < 1:
        p.error("--eval-every must be >= 1")
    if a.train_steps is not None and a.train_steps < 1:
        p.error("--train-steps must be >= 1")
    errors = {}
    for f in dataclasses.fields(MaskErrorModel):
        v = getattr(a, f.name, None)
        if v is not None:
            errors[f.name] = int(v) if isinstance(f.default, int) else float(v)
    if a.error_mode is not None:
        errors["mode"] = a.error_mode
    semantic_errors = {}
    for f in dataclasses.fields(SemanticErrorModel):
        v = getattr(a, f"sem_{f.name}", None)
        if v is not None and f.name != "mode":
            semantic_errors[f.name] = int(v) if isinstance(f.default, int) else float(v)
    if semantic_errors and a.semantic_errors != "systematic":
        p.error("--sem-* options need --semantic-errors systematic")
    if a.semantic_errors is not None and a.semantic_errors != "none":
        semantic_errors["mode"] = a.semantic_errors
    if semantic_errors and a.masks_dir:
        p.error("--semantic-errors applies to the front-ends' SIMULATED embeddings, not to "
                "recorded masks (--masks-dir)")
    try:
        SemanticErrorModel(**semantic_errors)
    except ValueError as exc:
        p.error(str(exc))
    try:
        mapper_set = parse_mapper_settings(a.set)
    except ValueError as exc:
        p.error(str(exc))
    try:
        config_from_flat(mapper_set, MapperConfig)
    except ConfigError as exc:
        p.error(f"--set: {exc}")
    frames = a.frames if a.frames is not None or a.scene_dir else d.frames
    novel = a.novel_frames if a.novel_frames is not None or a.scene_dir else d.novel_frames
    cfg = BenchConfig(scene=a.scene, seed=a.seed, frames=frames, novel_frames=novel,
                      width=a.width, height=a.height, trajectory=a.trajectory,
                      num_objects=a.num_objects, frontend=a.frontend, errors=errors,
                      embedding_noise=a.embedding_noise, semantic_errors=semantic_errors,
                      use_depth=not a.no_depth,
                      train_seconds=a.train_seconds, train_steps=a.train_steps,
                      device=a.device,
                      methods=tuple(m for m in a.methods.split(",") if m),
                      voxel_size=a.voxel_size, eval_every=a.eval_every,
                      scene_dir=a.scene_dir, masks_dir=a.masks_dir, mapper_set=mapper_set,
                      move_at=a.move_at, pq_from_frame=a.pq_from_frame,
                      embedding_dim=a.embedding_dim, lens=a.lens, lens_mode=a.lens_mode)
    if cfg.lens:
        try:
            parse_lens(cfg.lens)
        except ValueError as exc:
            p.error(str(exc))
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    record = run(cfg, args.save_predictions)
    print(format_report(record) if record["scene"]["ground_truth"]
          else external.format_report_without_gt(record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=_json_default))
        print(f"wrote {args.json}")
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
