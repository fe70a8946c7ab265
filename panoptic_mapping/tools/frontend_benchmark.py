"""``python -m panoptic_mapping.tools.frontend_benchmark``: per-frame latency of each front-end.

No pretrained weights can be had on the machines this project is tested on, so each model
is built with RANDOM weights in its real architecture (a network costs the same whatever
its weights): FastSAM-s is ultralytics' yolov8s-seg, FastSAM-x yolov8x-seg (one class,
saved as a FastSAM checkpoint and loaded through ``ultralytics.FastSAM``), SAM is
segment-anything's registry ``vit_b`` (its encoder always sees 1024x1024), open_clip is
ViT-B-32 (saved, then loaded through ``pretrained=<file>``). The masks of a random network
are junk: only the timings mean something. To make the post-processing cost realistic,
random FastSAM keeps up to ``--fastsam-max-det`` boxes (confidence threshold 0; ultralytics
then drops the empty masks) and random SAM keeps every mask (score thresholds 0). Each cell
shows how many masks were left after the shared post-processing.

The images are renders of the benchmark's tabletop scene (pybullet) when it is installed,
else a synthetic image. The classical segmenter's masks of each image are the masks that
open_clip embeds (per-mask cost, batched).

The helpers that build random-weight checkpoints are also used by the tests.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from panoptic_mapping.frontends.config import EmbedderConfig, SegmenterConfig
from panoptic_mapping.frontends.embeddings import OpenClipEmbedder
from panoptic_mapping.frontends.postprocess import masks_to_labels
from panoptic_mapping.frontends.segmenters import (
    ClassicalSegmenter,
    FastSAMSegmenter,
    SAMSegmenter,
    _import_ultralytics_offline,
)

__all__ = ["save_random_fastsam", "save_random_sam", "save_random_open_clip",
           "build_small_sam", "main"]

RESOLUTIONS = ((320, 240), (640, 480))


# --------------------------------------------------------------------------- random weights


def save_random_fastsam(path: str | Path, yaml: str = "yolov8s-seg.yaml", seed: int = 0) -> Path:
    """A FastSAM-format checkpoint of a random-weight ultralytics segmentation network.

    FastSAM-s is yolov8s-seg with one class, FastSAM-x yolov8x-seg. The file is saved as
    ultralytics saves its own: a dict with the (half precision) module under ``model`` and
    ``train_args`` naming the task, which ``ultralytics.FastSAM(path)`` loads.
    """
    _import_ultralytics_offline()
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(yaml, nc=1, verbose=False)
    model.task = "segment"
    model.args = {"task": "segment"}
    path = Path(path)
    torch.save({"model": model.half(), "train_args": {"task": "segment"}}, path)
    return path


def save_random_sam(path: str | Path, model_type: str = "vit_b", seed: int = 0) -> Path:
    """A SAM state-dict checkpoint (as the official .pth files) of random weights."""
    from segment_anything import sam_model_registry

    torch.manual_seed(seed)
    path = Path(path)
    torch.save(sam_model_registry[model_type](checkpoint=None).state_dict(), path)
    return path


def build_small_sam(image_size: int = 128, seed: int = 0) -> torch.nn.Module:
    """SAM vit_b's classes and widths (ImageEncoderViT 768 x 12, PromptEncoder,
    MaskDecoder) for ``image_size`` input instead of 1024, with random weights (attention
    windows no larger than the token grid).

    segment-anything's registry fixes the input at 1024 px, whose encoder pass takes tens
    of seconds on a small CPU; tests use this to run the automatic mask generator's real
    code path in about a second. Not loadable from official checkpoints.
    """
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    patch, prompt_dim = 16, 256
    grid = image_size // patch
    encoder = ImageEncoderViT(
        depth=12, embed_dim=768, img_size=image_size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=patch,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=(2, 5, 8, 11),
        # vit_b's 14 px windows would pad a small token grid to 28 (4x the tokens).
        window_size=min(14, grid), out_chans=prompt_dim)
    prompt = PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                           input_image_size=(image_size, image_size), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048,
                                      num_heads=8),
        transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256)
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def save_random_open_clip(path: str | Path, model_name: str = "ViT-B-32", seed: int = 0) -> Path:
    """An open_clip state-dict checkpoint of random weights (loads with pretrained=path)."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None)
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path


# --------------------------------------------------------------------------- images


def benchmark_images(width: int, height: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(rgb, depth, description) of one test image at the given size."""
    try:
        from panoptic_mapping.bench.scenes import make_scene

        frame = make_scene("tabletop", num_frames=1, num_novel_frames=1, width=width,
                           height=height).frames[0]
        return frame.rgb, frame.depth, "pybullet tabletop render"
    except ImportError:
        rng = np.random.default_rng(0)
        rgb = np.kron(rng.integers(0, 255, (height // 40 + 1, width // 40 + 1, 3)),
                      np.ones((40, 40, 1)))[:height, :width]
        rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        return rgb, None, "synthetic blocks + noise"


def random_masks(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n, H, W) bool overlapping ellipses of 0.1% to 20% of the image (a stand-in for a
    real segmenter's mask stack when timing the post-processing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.zeros((n, height, width), bool)
    for i in range(n):
        area = height * width * 10 ** rng.uniform(-3, np.log10(0.2))
        a = np.sqrt(area / np.pi * rng.uniform(1, 3))
        b = area / (np.pi * a)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        out[i] = ((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2 <= 1
    return torch.from_numpy(out)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------- main

Images = dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None, str]]


def _row(name: str, note: str, cells: dict[tuple[int, int], str]) -> str:
    return f"| {name} | {note} | " + " | ".join(cells[r] for r in RESOLUTIONS) + " |"


def _segmenter_cells(seg, images: Images, repeats: int, warmup: int = 1
                     ) -> dict[tuple[int, int], str]:
    """'<median ms> (<masks> masks)' per resolution in ``images``."""
    cells = {}
    for r in images:
        rgb, depth, _ = images[r]
        ms = 1e3 * time_call(lambda: seg.segment(rgb, depth), repeats, warmup)
        cells[r] = f"{ms:.0f} ({seg.segment(rgb, depth).num_masks} masks)"
    return cells


def _bench_postprocess(n: int, repeats: int) -> str:
    stacks = {r: random_masks(n, r[1], r[0]) for r in RESOLUTIONS}
    scores = torch.rand(n)
    cells = {}
    for r in RESOLUTIONS:
        ms = 1e3 * time_call(lambda: masks_to_labels(stacks[r], scores, 30), repeats)
        cells[r] = f"{ms:.0f}"
    return _row("shared post-processing", f"{n} overlapping masks (added to FastSAM/SAM's "
                "network time)", cells)


def _bench_fastsam(tmp: Path, yaml: str, images: Images, max_det: int, repeats: int) -> str:
    ckpt = save_random_fastsam(tmp / f"{yaml}.pt", yaml)
    cells = {}
    for r in RESOLUTIONS:
        cfg = SegmenterConfig(kind="fastsam", checkpoint=str(ckpt), device="cpu")
        cfg.fastsam.imgsz, cfg.fastsam.conf, cfg.fastsam.max_det = max(r), 0.0, max_det
        cells[r] = _segmenter_cells(FastSAMSegmenter(cfg), {r: images[r]}, repeats)[r]
    return _row(f"FastSAM ({yaml.split('.')[0]})",
                f"imgsz = long side, retina masks, conf 0, max_det {max_det}", cells)


def _bench_sam(tmp: Path, images: Images, points: int) -> str:
    cfg = SegmenterConfig(kind="sam", checkpoint=str(save_random_sam(tmp / "sam_vit_b.pth")),
                          device="cpu")
    cfg.sam.points_per_side = points
    cfg.sam.pred_iou_thresh = cfg.sam.stability_score_thresh = 0.0
    # One timed run per size: the 1024 px encoder takes tens of seconds on a small CPU.
    return _row("SAM vit_b", f"points_per_side {points}, score thresholds 0 (encoder at "
                "1024 px)", _segmenter_cells(SAMSegmenter(cfg), images, 1, warmup=0))


def _bench_clip(tmp: Path, images: Images, masks: dict, repeats: int) -> list[str]:
    cfg = EmbedderConfig(enabled=True, checkpoint=str(save_random_open_clip(tmp / "b32.pt")),
                         device="cpu")
    emb = OpenClipEmbedder(cfg)
    frame_ms, mask_ms = {}, {}
    for r in RESOLUTIONS:
        n = masks[r].num_masks
        ms = 1e3 * time_call(lambda: emb.embed_masks(images[r][0], masks[r].labels), repeats)
        frame_ms[r], mask_ms[r] = f"{ms:.0f} ({n} masks)", f"{ms / max(n, 1):.0f} per mask"
    uncached = time_call(lambda: (emb.clear_text_cache(), emb.embed_text(["mug"])), repeats)
    cached = time_call(lambda: emb.embed_text(["mug"]), repeats)
    return [_row("open_clip ViT-B-32", f"the classical masks, crops batched by "
                 f"{cfg.batch_size}", frame_ms),
            _row("open_clip ViT-B-32", "the same per mask", mask_ms),
            f"# open_clip text query ({len(cfg.prompt_templates)} templates): uncached "
            f"{1e3 * uncached:.0f} ms, cached {1e3 * cached:.2f} ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell")
    parser.add_argument("--sam-points", type=int, default=16, help="SAM points_per_side")
    parser.add_argument("--fastsam-max-det", type=int, default=300)
    parser.add_argument("--postprocess-masks", type=int, default=100)
    parser.add_argument("--skip", nargs="*", default=[], choices=[
        "classical", "postprocess", "fastsam-s", "fastsam-x", "sam", "clip"])
    args = parser.parse_args(argv)
    with torch.no_grad():  # timings only; the caller's grad mode is left as it was
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    images = {r: benchmark_images(*r) for r in RESOLUTIONS}
    print(f"# front-end latency, {platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; RANDOM weights (timings only)")
    print(f"# images: {images[RESOLUTIONS[0]][2]}; median of {args.repeats} runs after 1 "
          "warm-up (SAM: 1 run, no warm-up)")
    print("| front-end | settings | " + " | ".join(f"{w}x{h} ms/frame" for w, h in RESOLUTIONS)
          + " |")
    print("| --- | --- | " + " | ".join("---" for _ in RESOLUTIONS) + " |")
    with tempfile.TemporaryDirectory(prefix="pm_frontend_bench_") as tmp:
        return _run_rows(args, images, Path(tmp))


def _run_rows(args: argparse.Namespace, images: Images, tmp: Path) -> int:
    """Print one table row per front-end not in ``args.skip`` (checkpoints go to tmp)."""
    classical = ClassicalSegmenter()
    masks = {r: classical.segment(*images[r][:2]) for r in RESOLUTIONS}
    rows: list[Callable[[], str | list[str]]] = []
    if "classical" not in args.skip:
        rows.append(lambda: _row("classical", "felzenszwalb, depth split, merge, min_area 30",
                                 _segmenter_cells(classical, images, args.repeats)))
    if "postprocess" not in args.skip:
        rows.append(lambda: _bench_postprocess(args.postprocess_masks, args.repeats))
    for key, yaml in (("fastsam-s", "yolov8s-seg.yaml"), ("fastsam-x", "yolov8x-seg.yaml")):
        if key not in args.skip:
            rows.append(lambda yaml=yaml: _bench_fastsam(tmp, yaml, images,
                                                         args.fastsam_max_det, args.repeats))
    if "sam" not in args.skip:
        rows.append(lambda: _bench_sam(tmp, images, args.sam_points))
    if "clip" not in args.skip:
        rows.append(lambda: _bench_clip(tmp, images, masks, args.repeats))
    for make_row in rows:
        out = make_row()
        print("\n".join(out) if isinstance(out, list) else out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
