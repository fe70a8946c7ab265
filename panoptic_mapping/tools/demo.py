"""`make demo`: a benchmark tabletop scene streamed through the live node over loopback.

1. renders a tabletop scene with ground truth (pybullet, CPU) and writes it with
   ``save_scene`` to ``out/demo/scene/``;
2. starts the installed ``mapping_node`` from ``config/mapping.yaml`` (poses from the
   ``pose`` topic: the PyPI ROS 2 has no tf2);
3. plays the scene into it with the installed ``replay`` executable (its own process);
4. lets the node train for the training budget;
5. runs the client (:mod:`panoptic_mapping.tools.demo_client`, its own process), which calls
   ``localize_instances`` on held-out views like a manipulation stack, asks
   ``query_instances`` and ``query_points``, saves the map, and writes the labeled cloud
   (PLY and a picture), the panoptic images, the instance table and the quality and timing
   summary to ``out/demo/``;
6. stops the node with SIGINT (as ``ros2 launch`` would) and checks it exits cleanly.

The front-end is whatever ``config/mapping.yaml`` configures: by default the weights-free
classical segmenter and no open_clip embedder, so the map has instances but no semantic
labels (the demo says so). ``--quick`` runs a tiny version (the test suite uses it);
``--no-depth`` (``make demo DEMO_ARGS=--no-depth``) streams posed RGB alone;
``--segmentation-node`` segments in a ``segmentation_node`` process of its own whose masks
reach the mapping node as panoptic_mapping_interfaces/Masks (``input.masks_source: topic``),
as on a robot whose GPU computer segments.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / ".ros_ws" / "install" / "panoptic_mapping" / "lib" / "panoptic_mapping"
NODE = INSTALL / "mapping_node"
REPLAY = INSTALL / "replay"
SEGMENTATION_NODE = INSTALL / "segmentation_node"
PARAMS = REPO / "config" / "mapping.yaml"
SEGMENTATION_PARAMS = REPO / "config" / "segmentation.yaml"
MASKS_TOPIC = "/segmentation/masks"


class Proc:
    """A child process whose output is collected (and echoed with a prefix when asked)."""

    def __init__(self, cmd: list[str], env: dict, prefix: str, echo=None) -> None:
        self.prefix = prefix
        self.echo = echo or (lambda line: True)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=REPO)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self.echo(line):
                print(f"  {self.prefix}> {line[:240]}", flush=True)

    def wait_for(self, pattern: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._thread.join(5)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def loopback_env() -> dict:
    """The environment of the processes a tool starts: discovery on this machine only, and
    a DDS domain of this run's own (a developer's running node never answers)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    return env


def _status_echo(every: int):
    """Echo the node's start line, warnings and every ``every``-th status line."""
    count = {"n": 0}

    def echo(line: str) -> bool:
        if "started:" in line or "WARN" in line or "ERROR" in line or "Traceback" in line:
            return True
        if "receiving:" in line or "waiting for:" in line:
            count["n"] += 1
            return count["n"] % every == 1
        return False

    return echo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m panoptic_mapping.tools.demo",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder")
    p.add_argument("--frames", type=int, default=48, help="frames streamed (default 48)")
    p.add_argument("--views", type=int, default=8, help="held-out views localized (default 8)")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.25,
                   help="replay speed; the scene is recorded at 10 frames/s (default 0.25)")
    p.add_argument("--train-seconds", type=float, default=60.0,
                   help="training budget after the stream (default 60)")
    p.add_argument("--no-depth", action="store_true",
                   help="RGB-only: no depth is streamed (the node runs with input.use_depth "
                   "false and gets depth by stereo) and localize calls carry none")
    p.add_argument("--move-at", type=int, default=-1,
                   help="before this frame an object on the table is moved elsewhere, so "
                   "change detection shows on ~/instance_changes (default: half-way; 0: "
                   "never; never with --quick, whose 80x60 is below what it needs)")
    p.add_argument("--segmentation-node", action="store_true",
                   help="segment in a segmentation_node process; the mapping node takes its "
                   "masks over DDS (input.masks_source topic)")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for tests: 10 frames at 80x60, 2 views, 5 s of training")
    a = p.parse_args(argv)
    if a.quick:
        a.frames, a.views, a.width, a.height, a.rate, a.train_seconds = 10, 2, 80, 60, 0.5, 5.0
        a.move_at = 0
    if a.move_at < 0:
        a.move_at = a.frames // 2
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for exe in (NODE, REPLAY) + ((SEGMENTATION_NODE,) if args.segmentation_node else ()):
        if not exe.exists():
            print(f"demo: {exe} is missing; run `make setup` first", file=sys.stderr)
            return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = loopback_env()
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. the scene
    t0 = time.perf_counter()
    from panoptic_mapping.bench.scenes import make_scene, save_scene

    scene = make_scene("tabletop", seed=args.seed, num_frames=args.frames, width=args.width,
                       height=args.height, num_novel_frames=args.views,
                       **({"move_at": args.move_at} if args.move_at else {}))
    scene_dir = save_scene(scene, out / "scene")
    times["scene_render_s"] = time.perf_counter() - t0
    print(f"demo: scene '{scene.name}': {len(scene.frames)} frames + {len(scene.novel_frames)} "
          f"held-out views at {args.width}x{args.height}, written to "
          f"{scene_dir} ({times['scene_render_s']:.1f} s)", flush=True)

    # 2. the node (and the segmentation node)
    t0 = time.perf_counter()
    seg = None
    if args.segmentation_node:
        seg = Proc([str(SEGMENTATION_NODE), "--ros-args", "--params-file",
                    str(SEGMENTATION_PARAMS), "-p", "output.status_period_s:=5.0"]
                   + (["-p", "input.use_depth:=false"] if args.no_depth else []),
                   env, "segmentation", _status_echo(every=5))
    node = Proc([str(NODE), "--ros-args", "--params-file", str(PARAMS),
                 "-p", "input.pose_source:=pose", "-p", "output.status_period_s:=2.0"]
                + (["-p", "input.use_depth:=false"] if args.no_depth else [])
                + (["-p", "input.masks_source:=topic", "-r", f"masks:={MASKS_TOPIC}"]
                   if seg is not None else []),
                env, "node", _status_echo(every=5))
    code = 1
    try:
        if seg is not None and seg.wait_for(r"started:", timeout=120) is None:
            print("demo: the segmentation node did not start:\n" + "\n".join(seg.lines),
                  file=sys.stderr)
            return 1
        started = node.wait_for(r"started:", timeout=120)
        if started is None:
            print("demo: the node did not start:\n" + "\n".join(node.lines), file=sys.stderr)
            return 1
        times["node_start_s"] = time.perf_counter() - t0
        frontend = re.search(r"front-end (.*?), map on", started)
        frontend = frontend.group(1) if frontend else "unknown"
        print(f"demo: front-end: {frontend}", flush=True)

        # 3. stream the scene through the node
        t0 = time.perf_counter()
        replay = Proc([str(REPLAY), str(scene_dir), "--rate", str(args.rate),
                       "--summary", str(out / "replay.json"),
                       "--subscribers", "2" if seg is not None else "1"]
                      + (["--no-depth"] if args.no_depth else []), env, "replay")
        if replay.wait(timeout=max(120.0, 3 * len(scene.frames) / (10 * args.rate))) != 0:
            print("demo: the replay failed:\n" + "\n".join(replay.lines), file=sys.stderr)
            return 1
        times["stream_s"] = time.perf_counter() - t0
        replay_info = json.loads((out / "replay.json").read_text())

        # 4. training budget
        print(f"demo: stream done; the node trains for {args.train_seconds:.0f} s", flush=True)
        t0 = time.perf_counter()
        time.sleep(args.train_seconds)
        times["train_s"] = time.perf_counter() - t0

        # 5. the client (another process), as a manipulation stack would call the node
        t0 = time.perf_counter()
        client = Proc([sys.executable, "-m", "panoptic_mapping.tools.demo_client",
                       "--scene", str(scene_dir), "--out", str(out),
                       "--views", str(args.views)]
                      + (["--no-depth"] if args.no_depth else []), env, "client")
        if client.wait(timeout=600) != 0:
            print("demo: the client failed:\n" + "\n".join(client.lines), file=sys.stderr)
            return 1
        times["client_s"] = time.perf_counter() - t0
        report = json.loads((out / "client.json").read_text())
    finally:
        t0 = time.perf_counter()
        code = node.stop()
        times["node_stop_s"] = time.perf_counter() - t0
        (out / "node.log").write_text("\n".join(node.lines) + "\n")
        if seg is not None:
            code = code or seg.stop()
            (out / "segmentation.log").write_text("\n".join(seg.lines) + "\n")
            if any("Traceback" in line for line in seg.lines):
                code = code or 1
    times["total_s"] = time.perf_counter() - t_all
    if code != 0 or any("Traceback" in line for line in node.lines):
        print(f"demo: the node did not stop cleanly (exit {code}); see {out / 'node.log'}",
              file=sys.stderr)
        return 1
    print("demo: the node stopped cleanly (exit 0).", flush=True)
    report["changes"] = [m.group(0) for m in (
        re.search(r"instance \d+ removed: .*", line) for line in node.lines) if m]
    summary = write_summary(out, args, scene, frontend, replay_info, report, times)
    print(summary, flush=True)
    return 0


def _moved(move: dict) -> str:
    if not move.get("success"):
        return move.get("message", "not done")
    before, after = move["centroid_before"], move["centroid_after"]
    where = ("" if before is None or after is None else
             f"; get_instance centroid z {before[2]:.3f} -> {after[2]:.3f} m")
    return f"{move['message']}{where}"


def _changes(scene, events: list[str]) -> str:
    """What change detection did about the object the scene moved (~/instance_changes)."""
    moved = scene.config.get("moved")
    if not moved:
        return "change detection: no object moved in this scene (--move-at)"
    what = (f"the scene moved a {moved['class']} by "
            f"{np.hypot(*moved['shift'][:2]):.2f} m before frame {moved['at_frame']}")
    if not events:
        return f"change detection: {what}; the map removed nothing"
    return f"change detection: {what}; the map: " + "; ".join(events)


def _f(value, fmt: str = ".3f") -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def write_summary(out: Path, args, scene, frontend: str, replay_info: dict, report: dict,
                  times: dict) -> str:
    st = report.get("node_status", {})
    q = report["quality"]
    semantics = ("none: no open_clip checkpoint configured (frontend.embedder.checkpoint), so "
                 "instances carry no class labels and query_instances / query_points answer "
                 "with the reason"
                 if "no embedder" in frontend else "open_clip embeddings")
    summary = {
        "scene": scene.name, "frames": len(scene.frames), "views": report["views"],
        "size": [args.width, args.height], "frontend": frontend, "semantics": semantics,
        "replay": replay_info, "quality": q, "localize_ms": report["localize_ms"],
        "node": {k: st.get(k) for k in (
            "frames.mapped", "frames.dropped", "mapping.keyframes", "mapping.instances",
            "mapping.ingest_ms_p50", "mapping.frame_latency_ms_p50", "training.steps",
            "training.steps_per_s", "localize.ms_p50", "localize.ms_p95", "memory.rss_mb",
            "frames.synced", "masks.added_ms_p50", "masks.added_ms_p95")},
        "cloud": report["cloud"], "query": report["query"],
        "query_points": report["query_points"], "save_map": report["save_map"],
        "get_instance": report["get_instance"], "move": report["move"],
        "remove": report["remove"], "changes": report["changes"],
        "moved": scene.config.get("moved"), "times_s": times,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    stream_s = times["stream_s"]
    mapped = st.get("frames.mapped", "?")
    lines = [
        "",
        "== panoptic_mapping demo ==",
        f"scene: {scene.name}, {len(scene.frames)} frames at {args.width}x{args.height} "
        f"streamed at {args.rate:g}x real time ({replay_info['frames'] / max(stream_s, 1e-9):.2f}"
        f" frames/s), {report['views']} held-out views localized",
        f"front-end: {frontend}",
    ]
    if "masks from a segmentation node" in frontend:
        lines.append(
            f"segmentation node: masks over DDS for {st.get('frames.synced', '?')} frames; "
            f"the second process added p50 {_f(st.get('masks.added_ms_p50'), '.1f')} ms, p95 "
            f"{_f(st.get('masks.added_ms_p95'), '.1f')} ms to a frame's latency "
            "(segmentation.log)")
    lines += [
        f"semantics: {semantics}",
        f"map: {mapped} frames mapped ({st.get('frames.dropped', '?')} dropped by the "
        f"latest-only queues), {st.get('mapping.keyframes', '?')} keyframes, "
        f"{st.get('mapping.instances', '?')} confirmed instances; labeled cloud "
        f"{report['cloud']['points']} points, {report['cloud']['table_rows']} instances in "
        f"the table",
        f"quality (localize_instances vs ground truth, class-agnostic): PQ things "
        f"{_f(q['PQ_things_agnostic'])} (SQ {_f(q['SQ_things_agnostic'])}, RQ "
        f"{_f(q['RQ_things_agnostic'])}), PQ all segments {_f(q['PQ_all_segments_agnostic'])}, "
        f"3DIML matched mIoU {_f(q['matched_mIoU'])} ({q['matched_masks']}/{q['gt_masks']} "
        f"masks matched)",
        f"timing: ingest {_f(float(mapped) / stream_s if str(mapped).isdigit() else 'nan', '.2f')}"
        f" frames/s mapped during the stream (ingest p50 "
        f"{_f(st.get('mapping.ingest_ms_p50'), '.0f')} ms, input-to-map latency p50 "
        f"{_f(st.get('mapping.frame_latency_ms_p50'), '.0f')} ms); training "
        f"{st.get('training.steps', '?')} steps, {_f(st.get('training.steps_per_s'), '.1f')} "
        f"steps/s at the end; localize round trip p50 {report['localize_ms']['p50']:.0f} ms, "
        f"p95 {report['localize_ms']['p95']:.0f} ms (node side p50 "
        f"{_f(st.get('localize.ms_p50'), '.0f')} ms); node memory "
        f"{_f(st.get('memory.rss_mb'), '.0f')} MB",
        f"query_instances('{report['query']['text']}'): {report['query']['message']}",
        f"query_points('{report['query_points']['text']}'): "
        f"{report['query_points']['message']}",
        f"save_map: {report['save_map']['message']}",
        f"get_instance (the largest localized instance, {report['get_instance'].get('calls', 0)}"
        f" calls while training): {report['get_instance'].get('points', 0)} points, round "
        f"trip p50 {_f(report['get_instance'].get('p50_ms'), '.1f')} ms, p95 "
        f"{_f(report['get_instance'].get('p95_ms'), '.1f')} ms",
        f"move_instance (a pick-and-place, after the save): {_moved(report['move'])}",
        f"remove_instance (an object put away): {report['remove']['message']}; get_instance "
        f"then: {report['remove'].get('get_instance_after', '-')}",
        _changes(scene, report["changes"]),
        "wall time: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f} s"
                                  for k, v in times.items()),
        f"outputs in {out}: labeled_cloud.ply, labeled_cloud.png, panoptic/novel_*.png "
        "(input | ground truth | localized), instances.md/.json, summary.json, map.pmap, "
        "node.log",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text.strip() + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
