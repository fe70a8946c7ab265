"""Segmentation in the mapping process, or in a segmentation_node of its own: the same
stream through both, side by side.

For each set-up the installed nodes start from ``config/mapping.yaml`` (and
``config/segmentation.yaml``), the installed ``replay`` streams one benchmark scene at the
same rate, and this process reads the mapping node's ``~/status`` until the stream is
mapped. It prints, per set-up: images received, frames synchronised and mapped, frame
latency (image arrival at the mapping node to the frame in the map) and, for the two
processes, what the second process added (masks arrival minus image arrival minus the
segmentation node's own time from image to masks).

    python -m panoptic_mapping.tools.split_benchmark --frames 48 --rate 0.25
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from panoptic_mapping.tools.demo import NODE, PARAMS, REPLAY, REPO, Proc, loopback_env

SEGMENTATION_NODE = NODE.parent / "segmentation_node"
SEGMENTATION_PARAMS = REPO / "config" / "segmentation.yaml"
NS = "/panoptic_mapping"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m panoptic_mapping.tools.split_benchmark",
                                description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.25,
                   help="replay speed; the scene is recorded at 10 frames/s (default 0.25)")
    p.add_argument("--settle-s", type=float, default=10.0,
                   help="status read this long after the stream ends (default 10)")
    p.add_argument("--out", default=str(REPO / "out" / "split_benchmark"))
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def _run(setup: str, scene_dir: Path, args, env: dict) -> dict:
    """Stream the scene through one set-up; the mapping node's final status values."""
    from panoptic_mapping.tools.demo_client import Client

    common = ["-p", "output.status_period_s:=0.5", "-p", "input.pose_source:=pose"]
    procs = []
    try:
        if setup == "two processes":
            seg = Proc([str(SEGMENTATION_NODE), "--ros-args", "--params-file",
                        str(SEGMENTATION_PARAMS), "-p", "output.status_period_s:=0.5"],
                       env, "segmentation", lambda line: "WARN" in line or "ERROR" in line)
            procs.append(seg)
            if seg.wait_for("started:", 120) is None:
                raise RuntimeError("segmentation_node did not start:\n" + "\n".join(seg.lines))
            common += ["-p", "input.masks_source:=topic", "-r", "masks:=/segmentation/masks"]
        node = Proc([str(NODE), "--ros-args", "--params-file", str(PARAMS), *common], env,
                    "node", lambda line: "WARN" in line or "ERROR" in line)
        procs.append(node)
        if node.wait_for("started:", 120) is None:
            raise RuntimeError("mapping_node did not start:\n" + "\n".join(node.lines))
        client = Client(NS)
        try:
            replay = Proc([str(REPLAY), str(scene_dir), "--rate", str(args.rate),
                           "--subscribers", "2" if setup == "two processes" else "1"], env,
                          "replay", lambda line: False)
            while replay.proc.poll() is None:
                client.spin_for(0.2)
            if replay.wait(10) != 0:
                raise RuntimeError("replay failed:\n" + "\n".join(replay.lines))
            client.spin_for(args.settle_s)
            status = dict(client.status)
        finally:
            client.close()
    finally:
        codes = [p.stop() for p in reversed(procs)]
    if any(codes):
        raise RuntimeError(f"a node did not stop cleanly (exit codes {codes})")
    return status


def _table(results: dict[str, dict]) -> str:
    rows = [("images received", "input.image.received"), ("frames synchronised", "frames.synced"),
            ("frames mapped", "frames.mapped"), ("frames dropped", "frames.dropped"),
            ("frame latency p50 [ms]", "mapping.frame_latency_ms_p50"),
            ("frame latency p95 [ms]", "mapping.frame_latency_ms_p95"),
            ("segmentation p50 [ms] (in this process)", "frontend.segment_ms_p50"),
            ("added by the second process p50 [ms]", "masks.added_ms_p50"),
            ("added by the second process p95 [ms]", "masks.added_ms_p95"),
            ("instances", "mapping.instances")]
    names = list(results)
    lines = ["| measure | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for label, key in rows:
        cells = []
        for name in names:
            value = results[name].get(key, "-")
            try:
                value = f"{float(value):.1f}" if "." in value else value
            except ValueError:
                pass
            cells.append(value)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for exe in (NODE, REPLAY, SEGMENTATION_NODE):
        if not exe.exists():
            print(f"split_benchmark: {exe} is missing; run `make setup` first", file=sys.stderr)
            return 1
    import rclpy

    from panoptic_mapping.bench.scenes import make_scene, save_scene

    out = Path(args.out)
    scene = make_scene("tabletop", seed=args.seed, num_frames=args.frames, width=args.width,
                       height=args.height, num_novel_frames=0)
    scene_dir = save_scene(scene, out / "scene")
    env = loopback_env()
    os.environ.update(env)  # this process's own client too
    rclpy.init()
    results = {}
    try:
        for setup in ("one process", "two processes"):
            t0 = time.perf_counter()
            results[setup] = _run(setup, scene_dir, args, env)
            print(f"split_benchmark: {setup}: {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        rclpy.try_shutdown()
    print(f"tabletop seed {args.seed}, {args.frames} frames at {args.width}x{args.height}, "
          f"replay rate {args.rate} ({10 * args.rate:g} frames/s)")
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
