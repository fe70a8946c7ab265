"""``python -m panoptic_mapping.tools.stereo_benchmark``: plane-sweep depth against ground truth.

For reference frames spread over a rendered benchmark scene, :func:`plane_sweep_depth`
matches each against its nearest other frames (by camera position) and is scored against
the rendered depth: over all pixels, over the confident ones, and after the multi-view
consistency filter (the two nearest sources swept as well). Prints per-frame lines, then
MAE / median / abs-rel, the share of pixels kept and seconds per reference frame.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from panoptic_mapping.bench.scenes import make_scene
from panoptic_mapping.core.stereo import StereoConfig, consistency_filter, plane_sweep_depth


def _nearest(positions: np.ndarray, i: int, n: int) -> list[int]:
    """The ``n`` frames whose cameras are nearest frame ``i``'s (other poses only)."""
    dist = np.linalg.norm(positions - positions[i], axis=1)
    return [int(j) for j in np.argsort(dist) if j != i and dist[j] > 1e-6][:n]


def _errors(depth: np.ndarray, truth: np.ndarray, keep: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Absolute [m] and relative errors where ``keep`` and both depths exist."""
    m = keep & (truth > 0) & (depth > 0)
    e = np.abs(depth[m] - truth[m])
    return e, e / truth[m]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", default="tabletop", choices=("tabletop", "room"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--references", type=int, default=10, help="reference frames scored")
    p.add_argument("--sources", type=int, default=4, help="source frames per reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    scene = make_scene(a.scene, seed=a.seed, num_frames=60, width=a.width, height=a.height,
                       num_objects=None, trajectory="orbit", num_novel_frames=1)
    frames = scene.frames
    cfg = StereoConfig(max_sources=a.sources)
    positions = np.array([f.camera_to_world[:3, 3] for f in frames])
    views = [(f.rgb, f.K, f.camera_to_world) for f in frames]
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"all": [], "confident": [],
                                                             "consistent": []}
    kept, kept_consistent, seconds = [], [], []
    for i in np.linspace(0, len(frames) - 1, a.references).round().astype(int):
        f, sources = frames[i], _nearest(positions, int(i), a.sources)
        t0 = time.perf_counter()
        depth, conf = plane_sweep_depth(*views[i], [views[j] for j in sources], cfg, a.device)
        seconds.append(time.perf_counter() - t0)
        valid = f.depth > 0
        sure = conf >= cfg.min_confidence
        rows["all"].append(_errors(depth, f.depth, np.ones_like(valid)))
        rows["confident"].append(_errors(depth, f.depth, sure))
        kept.append((sure & valid).sum() / max(valid.sum(), 1))
        depths, confs, Ks, Ts = [depth], [conf], [f.K], [f.camera_to_world]
        for j in sources[:2]:
            dj, cj = plane_sweep_depth(*views[j], [views[k] for k in
                                                   _nearest(positions, j, a.sources)], cfg,
                                       a.device)
            depths.append(dj), confs.append(cj), Ks.append(frames[j].K)
            Ts.append(frames[j].camera_to_world)
        consistent = consistency_filter(depths, confs, Ks, Ts, 0, cfg) >= cfg.min_confidence
        rows["consistent"].append(_errors(depth, f.depth, consistent))
        kept_consistent.append((consistent & valid).sum() / max(valid.sum(), 1))
        print(f"frame {i}: sources {sources}, {seconds[-1]:.2f} s, confident share "
              f"{kept[-1]:.2f}, after consistency {kept_consistent[-1]:.2f}", flush=True)
    print(f"\n{scene.name} at {a.width}x{a.height}, {a.references} reference frames, "
          f"{a.sources} sources, {cfg.num_planes} planes, {platform.processor() or 'cpu'}, "
          f"{a.threads} torch thread(s) on {a.device}")
    for name, pairs in rows.items():
        e = np.concatenate([x[0] for x in pairs])
        r = np.concatenate([x[1] for x in pairs])
        print(f"{name:11s} MAE {e.mean():.3f} m  median {np.median(e):.3f} m  abs-rel "
              f"{r.mean():.3f}  within 5 %: {np.mean(r < 0.05):.2f}")
    print(f"pixels kept: confident {np.mean(kept):.2f}, consistent {np.mean(kept_consistent):.2f}")
    print(f"seconds per reference frame {np.mean(seconds):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
