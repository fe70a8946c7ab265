"""The demo's client: a separate process that uses the live node like a manipulation stack.

It calls ``~/localize_instances`` on the held-out views of a scene folder (image,
camera_info, camera pose in the map, depth), asks ``~/query_instances`` and
``~/query_points`` (the same text), saves the map with ``~/save_map``, receives
``~/labeled_cloud`` and ``~/status``, and writes to ``--out``:

* ``labeled_cloud.ply`` - the received cloud (binary PLY: x y z, rgb, instance, semantic,
  confidence) and ``labeled_cloud.png`` - top-down and oblique splats coloured by instance;
* ``panoptic/novel_NN.png`` - per held-out view: input | ground truth | localized instances;
* ``instances.json`` / ``instances.md`` - the instance table of the received cloud;
* ``client.json`` - quality (PQ, 3DIML matched mIoU of the localize answers against the
  scene's ground truth) and timings (localize latency, the node's own statistics).

    python -m panoptic_mapping.tools.demo_client --scene out/demo/scene --out out/demo
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "localize_request", "diagnostic_values"]


def localize_request(frame, stamp, map_frame: str = "map", with_depth: bool = True,
                     camera_frame: str = "camera_color_optical_frame"):
    """A LocalizeInstances request for a benchmark frame (pose given, depth 32FC1)."""
    from panoptic_mapping.tools.replay import scene_frame_messages
    from panoptic_mapping_interfaces.srv import LocalizeInstances

    msgs = scene_frame_messages(frame, stamp, map_frame=map_frame, camera_frame=camera_frame,
                                depth_encoding="32FC1" if with_depth else None)
    req = LocalizeInstances.Request()
    req.image, req.camera_info, req.camera_pose = (msgs["image"], msgs["camera_info"],
                                                   msgs["pose"])
    if msgs["depth"] is not None:
        req.depth = msgs["depth"]
    req.min_confidence = 0.0
    return req


def diagnostic_values(msg) -> dict[str, str]:
    """key -> value of the first status of a DiagnosticArray."""
    if not msg.status:
        return {}
    return {kv.key: kv.value for kv in msg.status[0].values}


class Client:
    """A small rclpy node with blocking helpers."""

    def __init__(self, ns: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.rclpy = rclpy
        self.node = rclpy.create_node("panoptic_mapping_demo_client")
        self.ns = ns.rstrip("/")
        self.cloud = None
        self.status: dict[str, str] = {}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(PointCloud2, f"{self.ns}/labeled_cloud",
                                      self._on_cloud, latched)
        self.node.create_subscription(DiagnosticArray, f"{self.ns}/status", self._on_status, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def _on_cloud(self, msg) -> None:
        self.cloud = msg

    def _on_status(self, msg) -> None:
        self.status = diagnostic_values(msg)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.1, max(deadline - time.monotonic(), 0)))

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        client = self.node.create_client(srv_type, f"{self.ns}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=30.0):
                raise RuntimeError(f"service {self.ns}/{name} did not appear within 30 s")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if not future.done():
                raise RuntimeError(f"{self.ns}/{name} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(path)


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(img, k, 0), k, 1) if k > 1 else img


def instance_table_markdown(rows: list[dict]) -> str:
    lines = ["| id | label | confidence | centroid [m] | box size [m] | points |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c = ", ".join(f"{v:.3f}" for v in r["centroid"])
        s = " x ".join(f"{v:.3f}" for v in r["box_size"])
        lines.append(f"| {r['id']} | {r['label'] or '-'} | {r['confidence']:.2f} | {c} | "
                     f"{s} | {r['num_points']} |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    from rclpy.time import Time

    from panoptic_mapping.bench.scenes import load_scene
    from panoptic_mapping.bench import metrics
    from panoptic_mapping.core.io.export import ExportConfig, instance_table, write_ply
    from panoptic_mapping.ros.pointcloud import msg_to_labeled_cloud
    from panoptic_mapping.runtime.visuals import cloud_picture, colorize, side_by_side
    from panoptic_mapping_interfaces.srv import (
        LocalizeInstances,
        QueryInstances,
        QueryPoints,
        SaveMap,
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = load_scene(args.scene)
    views = scene.novel_frames[:args.views] if args.views else scene.novel_frames
    client = Client(args.node)
    report: dict = {"views": len(views)}
    try:
        # -- InstanceLoc on held-out views, as a manipulation stack would call it
        preds, latencies, answers = [], [], []
        for k, frame in enumerate(views):
            req = localize_request(frame, Time(seconds=frame.stamp).to_msg(),
                                   with_depth=not args.no_depth)
            t0 = time.perf_counter()
            resp = client.call(LocalizeInstances, "localize_instances", req)
            latencies.append(time.perf_counter() - t0)
            if resp.success:
                m = resp.instance_mask
                ids = np.frombuffer(bytes(m.data), "<i4").reshape(m.height, m.width).copy()
            else:
                ids = np.zeros(frame.rgb.shape[:2], np.int32)
            preds.append(ids)
            answers.append({"view": k, "success": bool(resp.success), "message": resp.message,
                            "instances": [{"id": int(i.id), "confidence": float(i.confidence),
                                           "pixels": int(i.pixel_count),
                                           "label": i.semantic_label}
                                          for i in resp.instances]})
            print(f"client: localize_instances view {k}: success={resp.success} "
                  f"'{resp.message}' ({latencies[-1] * 1e3:.0f} ms round trip)", flush=True)
            scale = max(1, 320 // frame.rgb.shape[1])
            panel = side_by_side([_upscale(frame.rgb, scale),
                                  _upscale(colorize(frame.instance, frame.rgb, 0.7), scale),
                                  _upscale(colorize(ids, frame.rgb, 0.7), scale)])
            _save_png(out / "panoptic" / f"novel_{k:02d}.png", panel)
        report["localize"] = answers
        lat = np.array(latencies) * 1e3
        report["localize_ms"] = {"p50": float(np.percentile(lat, 50)),
                                 "p95": float(np.percentile(lat, 95)),
                                 "mean": float(lat.mean())}
        gt_inst = [f.instance for f in views]
        gt_sem = [f.semantic for f in views]
        pq = metrics.panoptic_quality_scene(preds, None, gt_inst, gt_sem, scene.thing_classes,
                                            class_agnostic=True)
        pq_all = metrics.panoptic_quality_scene(
            preds, None, gt_inst, gt_sem, range(1, len(scene.classes)), class_agnostic=True)
        matched = metrics.matched_mask_miou(preds, gt_inst)
        report["quality"] = {
            "PQ_things_agnostic": pq["PQ"], "SQ_things_agnostic": pq["SQ"],
            "RQ_things_agnostic": pq["RQ"], "PQ_all_segments_agnostic": pq_all["PQ"],
            "matched_mIoU": matched["mIoU"], "matched_masks": matched["n_matched"],
            "gt_masks": matched["n_gt"], "pred_masks": matched["n_pred"]}

        # -- text query: needs the open_clip text encoder
        resp = client.call(QueryInstances, "query_instances",
                           QueryInstances.Request(query=args.query, max_results=5))
        report["query"] = {"text": args.query, "success": bool(resp.success),
                           "message": resp.message,
                           "results": [(int(i.id), float(s))
                                       for i, s in zip(resp.instances, resp.scores)]}
        print(f"client: query_instances '{args.query}': success={resp.success} "
              f"'{resp.message}'", flush=True)
        # per point: the relevance of each map point (also latched on ~/query_cloud)
        resp = client.call(QueryPoints, "query_points", QueryPoints.Request(query=args.query))
        report["query_points"] = {
            "text": args.query, "success": bool(resp.success), "message": resp.message,
            "points": int(resp.cloud.width * resp.cloud.height),
            "instances": [(int(i), float(s))
                          for i, s in zip(resp.instance_ids, resp.instance_shares)]}
        print(f"client: query_points '{args.query}': success={resp.success} "
              f"'{resp.message}'", flush=True)

        # -- save the map
        map_path = (out / "map.pmap").resolve()
        resp = client.call(SaveMap, "save_map", SaveMap.Request(path=str(map_path)))
        report["save_map"] = {"success": bool(resp.success), "message": resp.message}
        print(f"client: save_map: success={resp.success} '{resp.message}'", flush=True)

        # -- one instance's geometry for a grasp planner, timed while the node trains
        report["get_instance"] = time_get_instance(client, answers)

        # -- a pick-and-place, as the manipulation stack would report it (after the save)
        report["move"] = move_one_instance(client, answers, args.move_z)
        report["remove"] = remove_one_instance(client, answers, report["move"].get("instance"))

        # -- the labeled cloud and the node's statistics (latched / periodic topics)
        client.status = {}  # a status report taken after the calls above
        deadline = time.monotonic() + args.cloud_timeout
        while (client.cloud is None or not client.status) and time.monotonic() < deadline:
            client.spin_for(0.2)
        report["node_status"] = dict(client.status)
        if client.cloud is None:
            raise RuntimeError("no labeled cloud received from the node")
        cloud = msg_to_labeled_cloud(client.cloud)
        write_ply(out / "labeled_cloud.ply", cloud)
        _save_png(out / "labeled_cloud.png",
                  cloud_picture(cloud.xyz, cloud.instance, cloud.rgb))
        rows = [r.as_dict() for r in instance_table(cloud, {}, {}, ExportConfig())]
        (out / "instances.json").write_text(json.dumps(rows, indent=1))
        (out / "instances.md").write_text(instance_table_markdown(rows))
        report["cloud"] = {"points": len(cloud),
                           "instances": int(len(np.unique(cloud.instance[cloud.instance > 0]))),
                           "table_rows": len(rows),
                           "fields": [f.name for f in client.cloud.fields]}
        print(f"client: labeled cloud: {len(cloud)} points, {report['cloud']['instances']} "
              f"instances, {len(rows)} in the instance table", flush=True)
    finally:
        client.close()
    (out / "client.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def time_get_instance(client, answers: list[dict], calls: int = 20) -> dict:
    """get_instance ``calls`` times on the localized instance with the most pixels (the
    node keeps training): its point count and the round-trip latency."""
    from panoptic_mapping_interfaces.srv import GetInstance

    found = {i["id"]: i["pixels"] for a in answers for i in a["instances"]}
    if not found:
        return {"success": False, "message": "no localized instance"}
    target = max(found, key=found.get)
    service = client.node.create_client(GetInstance, f"{client.ns}/get_instance")
    try:
        if not service.wait_for_service(timeout_sec=30.0):
            return {"success": False, "message": "get_instance did not appear"}
        seconds, resp = [], None
        for _ in range(calls):
            t0 = time.perf_counter()
            future = service.call_async(GetInstance.Request(instance_id=target))
            client.executor.spin_until_future_complete(future, timeout_sec=30.0)
            seconds.append(time.perf_counter() - t0)
            resp = future.result()
    finally:
        client.node.destroy_client(service)
    ms = np.array(seconds) * 1e3
    out = {"instance": target, "success": bool(resp is not None and resp.success),
           "message": "" if resp is None else resp.message,
           "points": 0 if resp is None else int(resp.points.width * resp.points.height),
           "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
           "calls": calls}
    print(f"client: get_instance {target} x{calls}: {out['points']} points, round trip p50 "
          f"{out['p50_ms']:.1f} ms, p95 {out['p95_ms']:.1f} ms", flush=True)
    return out


def move_one_instance(client, answers: list[dict], lift_m: float) -> dict:
    """get_instance, move_instance (lifted by ``lift_m``), get_instance again on the
    smallest instance of at least 50 pixels that InstanceLoc found (an object, not the
    floor); what the map did, printed and returned."""
    from panoptic_mapping_interfaces.srv import GetInstance, MoveInstance

    found = [i for a in answers for i in a["instances"] if i["pixels"] >= 50]
    if not found:
        print("client: move_instance: no localized instance to move", flush=True)
        return {"success": False, "message": "no localized instance to move"}
    target = min(found, key=lambda i: i["pixels"])["id"]

    def centroid() -> list[float] | None:
        resp = client.call(GetInstance, "get_instance", GetInstance.Request(instance_id=target))
        c = resp.instance.centroid
        return [c.x, c.y, c.z] if resp.success else None

    before = centroid()
    req = MoveInstance.Request(instance_id=target)
    req.transform.translation.z = float(lift_m)
    resp = client.call(MoveInstance, "move_instance", req)
    after = centroid()
    out = {"instance": target, "success": bool(resp.success), "message": resp.message,
           "centroid_before": before, "centroid_after": after}
    print(f"client: move_instance {target} up {lift_m} m: success={resp.success} "
          f"'{resp.message}'; get_instance centroid {_xyz(before)} -> {_xyz(after)}",
          flush=True)
    return out


def remove_one_instance(client, answers: list[dict], moved: int | None) -> dict:
    """remove_instance on the second smallest localized instance of at least 50 pixels
    (one picked up and put away), then get_instance on it: the map no longer shows it."""
    from panoptic_mapping_interfaces.srv import GetInstance, RemoveInstance

    found = sorted({i["id"]: i["pixels"] for a in answers for i in a["instances"]
                    if i["pixels"] >= 50 and i["id"] != moved}.items(), key=lambda kv: kv[1])
    if not found:
        print("client: remove_instance: no other localized instance to remove", flush=True)
        return {"success": False, "message": "no other localized instance to remove"}
    target = found[0][0]
    resp = client.call(RemoveInstance, "remove_instance",
                       RemoveInstance.Request(instance_id=target))
    after = client.call(GetInstance, "get_instance", GetInstance.Request(instance_id=target))
    out = {"instance": target, "success": bool(resp.success), "message": resp.message,
           "get_instance_after": after.message}
    print(f"client: remove_instance {target}: success={resp.success} '{resp.message}'; "
          f"get_instance then: '{after.message}'", flush=True)
    return out


def _xyz(c: list[float] | None) -> str:
    return "none" if c is None else "(" + ", ".join(f"{v:.3f}" for v in c) + ")"


def main(argv: list[str] | None = None) -> int:
    import rclpy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", required=True, help="scene folder (save_scene)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--node", default="/panoptic_mapping", help="the mapping node's name")
    p.add_argument("--views", type=int, default=0, help="held-out views to use (0 = all)")
    p.add_argument("--no-depth", action="store_true", help="localize from RGB only")
    p.add_argument("--query", default="mug", help="text for query_instances and query_points")
    p.add_argument("--move-z", type=float, default=0.3,
                   help="move_instance lifts one localized instance by this much [m]")
    p.add_argument("--cloud-timeout", type=float, default=60.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=[])
    try:
        run(args)
    except RuntimeError as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
