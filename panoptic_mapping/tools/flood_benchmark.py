"""A camera far faster than the node maps: what it does to memory, answers and training.

Starts the installed ``mapping_node`` (``config/mapping.yaml``, poses on ``pose``), maps a
few frames of a benchmark tabletop scene, then measures two phases of ``--seconds`` each:

* **idle**: no input; a client calls ``localize_instances`` on a held-out view in a loop;
* **flood**: frames of the scene (160x120 RGB-D + camera_info + pose, stamped now) at
  ``--rate`` Hz from a publisher thread, with the same localize loop.

Per phase it prints the node's peak resident memory (``memory.rss_mb`` of ``~/status``),
localize round-trip p50/p95, the longest silence of ``~/status`` (in status periods),
training steps per second, the frames received, mapped and dropped, and the node's CPU by
thread (``cpu.<thread>_pct`` of ``~/status``, mean over the phase); then the issue's
four checks (RSS within +20 % of idle, localize p95 within 2x, status never silent for
more than two periods, training at least half its idle rate).

    python -m panoptic_mapping.tools.flood_benchmark --rate 100 --seconds 45
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from panoptic_mapping.tools.demo import NODE, PARAMS, Proc, loopback_env

NS = "/panoptic_mapping"
STATUS_PERIOD_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m panoptic_mapping.tools.flood_benchmark",
                                description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0, help="flood rate [Hz] (default 100)")
    p.add_argument("--seconds", type=float, default=45.0, help="length of each phase")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a parameter for the node (as ros2 run's -p), e.g. "
                        "input.torch_threads:=2; repeatable")
    p.add_argument("--publisher", action="store_true",
                   help="(internal) be the flooding camera: publish for --seconds and exit")
    return p.parse_args(argv)


class Phase:
    """What the client saw during one phase."""

    def __init__(self) -> None:
        self.localize_s: list[float] = []
        self.localize_ok = 0
        self.first_refusal = ""
        self.status_times: list[float] = []
        self.rss: list[float] = []
        self.first: dict | None = None
        self.last: dict | None = None
        self.t0 = self.t1 = 0.0
        self.stage_ms: dict[str, list[float]] = {}  # node side, from the answers' messages
        self.cpu: dict[str, list[float]] = {}  # the node's cpu.<thread>_pct, per status

    def on_status(self, values: dict) -> None:
        self.status_times.append(time.monotonic())
        self.rss.append(float(values.get("memory.rss_mb", "nan")))
        self.first = self.first or dict(values)
        self.last = dict(values)
        for key, value in values.items():
            if key.startswith("cpu.") and key.endswith("_pct"):
                self.cpu.setdefault(key[4:-4], []).append(float(value))

    def summary(self) -> dict:
        ms = np.array(self.localize_s) * 1e3
        times = [self.t0] + self.status_times + [self.t1]
        gap = max(np.diff(times)) if len(times) > 1 else float("inf")
        first, last = self.first or {}, self.last or {}
        span = (self.status_times[-1] - self.status_times[0]) if len(self.status_times) > 1 \
            else float("nan")

        def delta(key: str) -> int:
            return int(last.get(key, 0)) - int(first.get(key, 0))

        return {"seconds": self.t1 - self.t0, "rss_peak_mb": max(self.rss, default=float("nan")),
                "localize_calls": int(ms.size), "localize_answered": self.localize_ok,
                "localize_first_refusal": self.first_refusal,
                "localize_p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
                "localize_p95_ms": float(np.percentile(ms, 95)) if ms.size else float("nan"),
                "status_max_gap_periods": gap / STATUS_PERIOD_S,
                "training_steps_per_s": delta("training.steps") / span if span else 0.0,
                "images_received": delta("input.image.received"),
                "frames_mapped": delta("frames.mapped"),
                "frames_dropped": delta("frames.dropped"),
                "ingest_p50_ms": float(last.get("mapping.ingest_ms_p50", "nan")),
                **{f"localize_{n}_p95_ms": float(np.percentile(v, 95))
                   for n, v in self.stage_ms.items()},
                **{f"cpu_{n}_pct": float(np.mean(v)) for n, v in self.cpu.items()}}

    def on_answer(self, message: str) -> None:
        """Keep the stage times an answer's message gives ("...: segment 12, map 30")."""
        _, _, stages = message.rpartition("ms: ")
        for name, ms in re.findall(r"(\w+) (\d+)", stages.rstrip(")")):
            self.stage_ms.setdefault(name, []).append(float(ms))


def _publisher(node, scene, rate: float, stop: threading.Event, sent: list) -> None:
    """Publish the scene's frames in a loop at ``rate`` Hz, stamped now."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from panoptic_mapping.tools.replay import scene_frame_messages

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"image": node.create_publisher(Image, "/image", qos),
            "camera_info": node.create_publisher(CameraInfo, "/camera_info", qos),
            "depth": node.create_publisher(Image, "/depth", qos),
            "pose": node.create_publisher(PoseStamped, "/pose", qos)}
    t0, k = time.monotonic(), 0
    while not stop.is_set():
        msgs = scene_frame_messages(scene.frames[k % len(scene.frames)],
                                    node.get_clock().now().to_msg())
        for key in ("pose", "camera_info", "depth", "image"):
            pubs[key].publish(msgs[key])
        k += 1
        sent[0] = k
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _run_phase(client, request, seconds: float, phase: Phase) -> None:
    from panoptic_mapping_interfaces.srv import LocalizeInstances

    service = client.node.create_client(LocalizeInstances, f"{NS}/localize_instances")
    service.wait_for_service(timeout_sec=30.0)
    phase.t0 = time.monotonic()
    while time.monotonic() - phase.t0 < seconds:
        t = time.perf_counter()
        future = service.call_async(request)
        client.executor.spin_until_future_complete(future, timeout_sec=60.0)
        phase.localize_s.append(time.perf_counter() - t)
        result = future.result()
        phase.localize_ok += int(result is not None and result.success)
        if result is not None and result.success:
            phase.on_answer(result.message)
        if result is not None and not result.success and not phase.first_refusal:
            phase.first_refusal = result.message
        client.spin_for(0.05)
    phase.t1 = time.monotonic()
    client.node.destroy_client(service)


def _table(idle: dict, flood: dict, rate: float) -> str:
    rows = [("seconds", "seconds", ".0f"), ("peak RSS [MB]", "rss_peak_mb", ".0f"),
            ("localize calls", "localize_calls", "d"),
            ("localize answered with success", "localize_answered", "d"),
            ("localize p50 [ms]", "localize_p50_ms", ".0f"),
            ("localize p95 [ms]", "localize_p95_ms", ".0f"),
            ("longest ~/status silence [periods]", "status_max_gap_periods", ".1f"),
            ("training steps/s", "training_steps_per_s", ".1f"),
            ("images received", "images_received", "d"), ("frames mapped", "frames_mapped", "d"),
            ("frames dropped", "frames_dropped", "d"),
            ("ingest p50 in the node, last 200 frames [ms]", "ingest_p50_ms", ".0f")]
    from panoptic_mapping.ros.services import LOCALIZE_STAGES

    rows += [(f"localize p95, {n} stage in the node [ms]", f"localize_{n}_p95_ms", ".0f")
             for n in LOCALIZE_STAGES if f"localize_{n}_p95_ms" in idle
             and f"localize_{n}_p95_ms" in flood]
    threads = sorted({k for k in idle if k.startswith("cpu_")} | {k for k in flood
                                                                     if k.startswith("cpu_")})
    rows += [(f"node CPU, {k[4:-4]} [% of a core, mean]", k, ".0f") for k in threads]
    out = [f"| measure | idle | flood at {rate:g} Hz |", "| --- | --- | --- |"]
    out += [f"| {label} | {format(idle.get(k, float('nan')), f)} | "
            f"{format(flood.get(k, float('nan')), f)} |" for label, k, f in rows]
    return "\n".join(out)


def _checks(idle: dict, flood: dict) -> list[tuple[str, bool]]:
    return [(text, bool(ok)) for text, ok in _raw_checks(idle, flood)]


def _raw_checks(idle: dict, flood: dict) -> list[tuple[str, bool]]:
    return [("RSS within +20 % of idle", flood["rss_peak_mb"] <= 1.2 * idle["rss_peak_mb"]),
            ("localize p95 within 2x idle", flood["localize_p95_ms"] <= 2 * idle["localize_p95_ms"]),
            ("~/status never silent more than two periods",
             flood["status_max_gap_periods"] <= 2.0),
            ("training at least half its idle rate",
             flood["training_steps_per_s"] >= 0.5 * idle["training_steps_per_s"])]


def _scene(args):
    from panoptic_mapping.bench.scenes import make_scene

    return make_scene("tabletop", num_frames=12, width=args.width, height=args.height,
                      num_novel_frames=1)


def publisher_main(args) -> int:
    """The flooding camera, a process of its own (as a driver is): in the benchmark's
    process it would starve the client that measures the node."""
    import rclpy

    scene = _scene(args)
    rclpy.init()
    node = rclpy.create_node("flood_camera")
    stop, sent = threading.Event(), [0]
    thread = threading.Thread(target=_publisher, args=(node, scene, args.rate, stop, sent),
                              daemon=True)
    t0 = time.monotonic()
    thread.start()
    time.sleep(args.seconds)
    stop.set()
    thread.join()
    print(f"flood_camera: sent {sent[0]} frames at {sent[0] / (time.monotonic() - t0):.1f}/s",
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.publisher:
        return publisher_main(args)
    if not NODE.exists():
        print(f"flood_benchmark: {NODE} is missing; run `make setup` first", file=sys.stderr)
        return 1
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.time import Time

    from panoptic_mapping.tools.demo_client import Client, diagnostic_values, localize_request

    scene = _scene(args)
    env = loopback_env()
    os.environ.update(env)  # this process's own client too
    node = Proc([str(NODE), "--ros-args", "--params-file", str(PARAMS),
                 "-p", "input.pose_source:=pose",
                 "-p", f"output.status_period_s:={STATUS_PERIOD_S}",
                 *[a for p in args.param for a in ("-p", p)]], env, "node",
                lambda line: "ERROR" in line or "Traceback" in line)
    if node.wait_for("started:", 120) is None:
        print("flood_benchmark: the node did not start:\n" + "\n".join(node.lines),
              file=sys.stderr)
        return 1
    rclpy.init()
    client = Client(NS)
    phases = {"idle": Phase(), "flood": Phase()}
    current = {"phase": None}
    client.node.create_subscription(
        DiagnosticArray, f"{NS}/status",
        lambda msg: current["phase"] and current["phase"].on_status(diagnostic_values(msg)),
        10)
    pub_node = rclpy.create_node("flood_publisher")
    stop, sent = threading.Event(), [0]
    try:
        # a map to answer from: a few frames at 2 Hz
        warm = threading.Thread(target=_publisher, args=(pub_node, scene, 2.0, stop, sent),
                                daemon=True)
        warm.start()
        deadline = time.monotonic() + 120
        while int(client.status.get("frames.mapped", 0)) < 6 and time.monotonic() < deadline:
            client.spin_for(0.5)
        stop.set()
        warm.join()
        request = localize_request(scene.novel_frames[0],
                                   Time(seconds=scene.novel_frames[0].stamp).to_msg())
        client.spin_for(3.0)
        current["phase"] = phases["idle"]
        _run_phase(client, request, args.seconds, phases["idle"])
        camera = Proc([sys.executable, "-m", "panoptic_mapping.tools.flood_benchmark",
                       "--publisher", "--rate", str(args.rate), "--seconds", str(args.seconds),
                       "--width", str(args.width), "--height", str(args.height)], env,
                      "camera", lambda line: True)
        client.spin_for(3.0)  # the camera process starts (imports, the scene)
        current["phase"] = phases["flood"]
        _run_phase(client, request, args.seconds, phases["flood"])
        camera.wait(60)
        current["phase"] = None
        sent_line = next((line for line in camera.lines if "sent" in line), "")
    finally:
        stop.set()
        client.close()
        pub_node.destroy_node()
        rclpy.try_shutdown()
        code = node.stop()
    idle, flood_s = phases["idle"].summary(), phases["flood"].summary()
    print(f"flood_benchmark: tabletop at {args.width}x{args.height}; {sent_line} (asked "
          f"{args.rate:g}/s); node exit {code}")
    print(_table(idle, flood_s, args.rate))
    checks = _checks(idle, flood_s)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"idle": idle, "flood": flood_s,
                                               "camera": sent_line,
                                               "checks": dict(checks)}, indent=1))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
