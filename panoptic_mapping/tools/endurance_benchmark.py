"""A long replay through the mapping core: does anything keep growing once the scene has
been seen or the keyframe buffer is full?

A benchmark scene is rendered along a trajectory (by default 500 frames walking a loop
through the room, at 160x120 with depth) that is replayed ``--loops`` times (4: a robot
patrolling the same room for 2000 frames; later loops' stamps continue the first's), the
simulated front-end makes the masks of every frame anew, and one
:class:`~panoptic_mapping.core.mapper.Mapper` ingests every frame with a fixed number of
training steps after each. Every ``--window`` frames it records the process's
resident memory, the ingest latency over the window, the keyframe buffer and the map's
size; at the end it prints the table and the issue's two checks, from the first window that
ends with the keyframe buffer full (its memory budget reached) or after the first loop
(the scene seen once) to the last:

* resident memory within ``--rss-tolerance`` (10 %) of its value then;
* ingest p50 over the last loop within ``--latency-tolerance`` (1.25x) of that over the
  second (with fewer than 3 loops: the last window's against the steady window's).

    python -m panoptic_mapping.tools.endurance_benchmark --frames 500 --loops 4 --json out.json

Numbers depend on the machine and what else runs on it; the verdicts compare the run
with itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Window", "verdicts", "main"]


@dataclass
class Window:
    """What one window of frames left behind."""

    last_frame: int  # index of the window's last frame
    rss_mb: float  # resident memory of the process after the window
    ingest_ms_p50: float
    ingest_ms_p95: float
    keyframes: int
    keyframe_mb: float
    keyframes_full: bool  # the buffer's memory budget reached
    instances: int
    instance_voxels: int


def verdicts(windows: list[Window], seen_at_frame: int | None = None,
             loop_p50_ms: list[float] | None = None, rss_tolerance: float = 0.10,
             latency_tolerance: float = 1.25) -> dict:
    """The checks over the windows from the steady state on: the first window that ends
    with the keyframe buffer full, or at or after frame ``seen_at_frame`` (the scene seen
    once: a map still exploring grows by right), whichever comes first. Resident memory
    stays within ``rss_tolerance`` of its value then (the highest value after it counts).
    Ingest latency: with ``loop_p50_ms`` (the p50 of each replayed loop), the last loop's
    within ``latency_tolerance`` times the second's (the same views: a window's p50 swings
    with what it sees); else the last window's against the steady window's. Without a
    steady state the checks cannot be made (``None``)."""
    steady = [i for i, w in enumerate(windows) if w.keyframes_full
              or (seen_at_frame is not None and w.last_frame >= seen_at_frame)]
    if not steady:
        return {"steady_from_frame": None, "rss_growth": None, "rss_flat": None,
                "latency_ratio": None, "latency_flat": None}
    first = windows[steady[0]]
    after = windows[steady[0]:]
    growth = max(w.rss_mb for w in after) / first.rss_mb - 1.0
    if loop_p50_ms is not None and len(loop_p50_ms) >= 3:
        ratio = loop_p50_ms[-1] / loop_p50_ms[1]
    else:
        ratio = after[-1].ingest_ms_p50 / first.ingest_ms_p50
    return {"steady_from_frame": first.last_frame, "rss_growth": growth,
            "rss_flat": bool(growth <= rss_tolerance), "latency_ratio": ratio,
            "latency_flat": bool(ratio <= latency_tolerance)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m panoptic_mapping.tools.endurance_benchmark",
                                description=__doc__.splitlines()[0])
    p.add_argument("--scene", default="room", choices=("tabletop", "room"))
    p.add_argument("--trajectory", default="walkthrough", choices=("orbit", "walkthrough"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=500, help="frames of one loop")
    p.add_argument("--loops", type=int, default=4, help="times the loop is replayed")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--train-steps-per-frame", type=int, default=1)
    p.add_argument("--window", type=int, default=100, help="frames per recorded window")
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--latency-tolerance", type=float, default=1.25)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a mapper setting (dotted, below MapperConfig), e.g. "
                        "keyframes.budget_mb=64")
    p.add_argument("--json", help="also write the windows and verdicts here")
    a = p.parse_args(argv)
    if a.frames < 2 or a.window < 1 or a.loops < 1 or a.frames * a.loops < a.window:
        p.error("--frames must be at least 2, --window and --loops at least 1, and "
                "--frames x --loops at least --window")
    return a


def run(a: argparse.Namespace) -> tuple[list[Window], dict]:
    """Render, map and record (see the module docstring)."""
    from panoptic_mapping.bench.frontends import (
        MaskErrorModel,
        SimulatedEmbeddingSpace,
        SimulatedMaskFrontend,
    )
    from panoptic_mapping.bench.mapper_method import to_frame
    from panoptic_mapping.bench.runner import parse_mapper_settings
    from panoptic_mapping.bench.scenes import make_scene
    from panoptic_mapping.core.mapper import Mapper, MapperConfig
    from panoptic_mapping.params import config_from_flat
    from panoptic_mapping.runtime.workers import process_memory_mb

    t0 = time.perf_counter()
    scene = make_scene(a.scene, seed=a.seed, num_frames=a.frames, width=a.width,
                       height=a.height, trajectory=a.trajectory, num_novel_frames=0)
    render_s = time.perf_counter() - t0
    space = SimulatedEmbeddingSpace(seed=a.seed)
    frontend = SimulatedMaskFrontend(MaskErrorModel(), a.seed, scene=scene,
                                     embedding_space=space)
    mapper = Mapper(config_from_flat(parse_mapper_settings(a.set), MapperConfig),
                    embedding_dim=space.dim)
    mapper.vocabulary.set(scene.classes[1:], space.text_embeddings(scene.classes[1:]))
    budget_mb = mapper.cfg.keyframes.budget_mb
    windows: list[Window] = []
    times: list[float] = []
    every: list[float] = []  # every frame's ingest [ms]
    period = scene.frames[-1].stamp - scene.frames[0].stamp + scene.frames[1].stamp \
        - scene.frames[0].stamp
    replay = [(loop, f) for loop in range(a.loops) for f in scene.frames]
    for i, (loop, f) in enumerate(replay):
        masks = frontend(f, scene)
        frame = dataclasses.replace(to_frame(f, masks, True), stamp=f.stamp + loop * period)
        t = time.perf_counter()
        mapper.ingest(frame)
        times.append(1000 * (time.perf_counter() - t))
        every.append(times[-1])
        if a.train_steps_per_frame:
            mapper.train(a.train_steps_per_frame)
        if (i + 1) % a.window == 0:
            st = mapper.stats()
            inst = mapper.instances.stats()
            w = Window(i, process_memory_mb(), float(np.percentile(times, 50)),
                       float(np.percentile(times, 95)), int(st["keyframes"]),
                       float(st["keyframe_mb"]),
                       bool(st["keyframe_mb"] >= 0.9 * budget_mb),
                       int(st.get("instances_confirmed", 0)),
                       int(inst.get("voxels", 0)))
            windows.append(w)
            times = []
            print(f"frame {i + 1}: RSS {w.rss_mb:.0f} MB, ingest p50 {w.ingest_ms_p50:.0f} "
                  f"ms, {w.keyframes} keyframes ({w.keyframe_mb:.0f} of {budget_mb:.0f} MB), "
                  f"{w.instances} instances, {w.instance_voxels} voxels", flush=True)
    loop_p50 = [float(np.percentile(every[k * a.frames:(k + 1) * a.frames], 50))
                for k in range(a.loops)]
    result = verdicts(windows, a.frames - 1 if a.loops > 1 else None, loop_p50,
                      a.rss_tolerance, a.latency_tolerance)
    result["loop_ingest_ms_p50"] = loop_p50
    result.update(render_s=render_s, frames=a.frames * a.loops, loops=a.loops, scene=a.scene,
                  trajectory=a.trajectory, size=f"{a.width}x{a.height}",
                  keyframe_budget_mb=budget_mb)
    return windows, result


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    windows, result = run(a)
    print("| frames | RSS [MB] | ingest p50 / p95 [ms] | keyframes (MB) | instances | voxels |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in windows:
        print(f"| {w.last_frame + 1} | {w.rss_mb:.0f} | {w.ingest_ms_p50:.0f} / "
              f"{w.ingest_ms_p95:.0f} | {w.keyframes} ({w.keyframe_mb:.0f}) | {w.instances} "
              f"| {w.instance_voxels} |")
    print("ingest p50 per loop [ms]: "
          + ", ".join(f"{v:.0f}" for v in result["loop_ingest_ms_p50"]))
    if result["steady_from_frame"] is None:
        print("no steady state (the keyframe buffer never filled, one loop): no verdict "
              "(--loops 2 or more, or a smaller keyframes.budget_mb)")
    else:
        print(f"from frame {result['steady_from_frame'] + 1} on (keyframe buffer full or the "
              f"loop seen once): RSS growth {_fmt(100 * result['rss_growth'], '+.1f')} % "
              f"({'PASS' if result['rss_flat'] else 'FAIL'}: within "
              f"{100 * a.rss_tolerance:.0f} %), ingest p50 "
              f"{'last loop / second loop' if a.loops >= 3 else 'last / first window'} "
              f"{_fmt(result['latency_ratio'], '.2f')}x "
              f"({'PASS' if result['latency_flat'] else 'FAIL'}: within "
              f"{a.latency_tolerance:.2f}x)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"windows": [asdict(w) for w in windows], **result}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
