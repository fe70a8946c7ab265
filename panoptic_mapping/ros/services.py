"""The node's services: localize_instances, query_instances, query_points, get_instance,
remove_instance, move_instance, save_map, load_map, reset.

:class:`MapServices` holds what the handlers need, handed in explicitly by the node; the
handlers run in the node's service callback group (never on the input path), read the map
under its lock or from the latest snapshot, and answer every bad request with
``success=false`` and the reason; an unexpected error becomes ``success=false`` with
"internal error: ..." (never an exception). The decisions are in
:mod:`panoptic_mapping.runtime.queries`; this module converts messages.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.clock import Clock
from rclpy.time import Time
from std_msgs.msg import Header

from panoptic_mapping.config import PanopticMappingConfig
from panoptic_mapping.core.frames import Frame, FrameError
from panoptic_mapping.core.io.persistence import MapFileError
from panoptic_mapping.core.map.edits import InstanceEditError
from panoptic_mapping.core.mapper import Mapper
from panoptic_mapping.frontends.segmenters import segment_image
from panoptic_mapping.ros.conversions import InputError, numpy_to_image, transform_to_matrix
from panoptic_mapping.ros.markers import fill_instance_msg
from panoptic_mapping.ros.pointcloud import labeled_cloud_to_msg, relevance_cloud_to_msg
from panoptic_mapping.ros.requests import decode_localize_request
from panoptic_mapping.ros.pose_sources import stamp_ns
from panoptic_mapping.runtime.poses import PoseLookupError, clock_offset_reason
from panoptic_mapping.runtime.queries import (
    NO_TEXT_ENCODER,
    NO_VOXEL_FEATURES,
    UnknownInstance,
    instance_details,
    localized_instances,
    matching_instances,
    matching_points,
    no_map_reason,
    pixel_roi,
    rank_instances,
    relevance_threshold,
)
from panoptic_mapping.runtime.snapshots import MapSnapshots
from panoptic_mapping.runtime.workers import LatencyWindow

# where a localize call's time goes: decoding the request and finding its pose; the
# segmenter and embedder (shared with the mapping front-end: one call at a time); the map's
# InstanceLoc; the answer's labels and message
LOCALIZE_STAGES = ("decode", "segment", "map", "answer")

__all__ = ["MapServices", "NO_TEXT_ENCODER"]

log = logging.getLogger("panoptic_mapping.ros")


class MapServices:
    """The service handlers and what they depend on.

    Args:
        config: the node's configuration (read at each call: runtime changes apply).
        logger: the node's logger.
        current_mapper: returns the running map. swap: replaces it (load, reset).
        apply_vocabulary: embeds the configured vocabulary into a map.
        segmenter: ``segment(rgb, depth)``; embedder: ``embed_masks``/``embed_text`` or None.
        embedding_dim: the embedder's dimension (0 without one).
        poses: ``lookup(frame_id, stamp_ns, wait_s)`` for requests without a pose.
        snapshots: the map's snapshots (instance records for the answers).
        latency: where localize times are recorded.
        stages: where the localize stages' times are recorded, by name (``LOCALIZE_STAGES``;
            missing names: not recorded).
        now: the node's clock as a ``builtin_interfaces/Time`` (stamps of the answers;
            None: the system clock).
        publish_query_cloud: called with the cloud of each answered query_points (the
            node latches it on ``~/query_cloud``); None: not published.
    """

    def __init__(self, *, config: PanopticMappingConfig, logger: Any,
                 current_mapper: Callable[[], Mapper], swap: Callable[[Mapper], None],
                 apply_vocabulary: Callable[[Mapper], None], segmenter: Any, embedder: Any,
                 embedding_dim: int, poses: Any, snapshots: MapSnapshots,
                 latency: LatencyWindow, now: Callable[[], Any] | None = None,
                 publish_query_cloud: Callable[[Any], None] | None = None,
                 stages: dict[str, LatencyWindow] | None = None) -> None:
        self.config, self.logger = config, logger
        self.current_mapper, self.swap, self.apply_vocabulary = (current_mapper, swap,
                                                                 apply_vocabulary)
        self.segmenter, self.embedder, self.embedding_dim = segmenter, embedder, embedding_dim
        self.poses, self.snapshots, self.latency = poses, snapshots, latency
        self.now = now
        self.publish_query_cloud = publish_query_cloud
        self.stages = stages or {}

    def _stage(self, name: str, t0: float, spent: dict[str, float]) -> float:
        """Record the stage ``name`` that began at ``t0`` (in ``spent`` and its window);
        returns now, the next stage's start."""
        now = time.perf_counter()
        spent[name] = now - t0
        window = self.stages.get(name)
        if window is not None:
            window.add(now - t0)
        return now

    def guarded(self, handler: Callable) -> Callable:
        """A service never raises: an unexpected error becomes success=false + reason."""

        def serve(request, response):
            try:
                return handler(request, response)
            except Exception as exc:  # noqa: BLE001 - reported to the caller and logged
                self.logger.error(f"{handler.__name__}: {type(exc).__name__}: {exc}")
                log.exception("service handler failed")
                response.success = False
                response.message = f"internal error: {type(exc).__name__}: {exc}"
                return response

        serve.__name__ = handler.__name__
        return serve

    def _instance_msg(self, instance_id: int, records: dict, labels: dict, score: float):
        """An Instance message; ``records``: instance id -> its record (geometry)."""
        from panoptic_mapping_interfaces.msg import Instance

        return fill_instance_msg(Instance(), instance_id, records.get(instance_id),
                                 labels.get(instance_id), score)

    def localize(self, request, response):
        # a manipulation stack waits for the answer: no training step starts meanwhile
        # (input.localize_priority)
        if not self.config.input.localize_priority:
            return self._localize(request, response)
        with self.current_mapper().foreground():
            return self._localize(request, response)

    def _localize(self, request, response):
        t0 = time.perf_counter()
        try:
            q = decode_localize_request(request, self.config.input.map_frame,
                                        self.config.input.max_image_pixels,
                                        self.config.input.lens)
        except InputError as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        mapper = self.current_mapper()
        reason = no_map_reason(mapper.stats())
        if reason:
            response.success, response.message = False, reason
            return response
        if q.queries and self.embedder is None:
            response.success = False
            response.message = f"bad request: text queries need a text encoder ({NO_TEXT_ENCODER})"
            return response
        pose = q.camera_to_map
        if pose is None:
            reason = clock_offset_reason(q.stamp_ns, stamp_ns(self._now()),
                                         self.config.input.max_clock_offset_s)
            if reason is not None:
                response.success = False
                response.message = (f"bad request: camera_pose is empty and the image is "
                                    f"{reason}")
                return response
            frame_id = self.config.input.camera_frame or q.camera_frame
            try:
                pose = self.poses.lookup(frame_id, q.stamp_ns, self.config.input.pose_wait_s)
            except PoseLookupError as exc:
                response.success = False
                response.message = (f"bad request: camera_pose is empty and no pose was found "
                                    f"for frame '{frame_id}' at the image stamp: {exc}")
                return response
        spent: dict[str, float] = {}
        t = self._stage("decode", t0, spent)
        seg = segment_image(self.segmenter, q.rgb, q.depth, q.K)
        h, w = q.rgb.shape[:2]
        if seg.num_masks == 0:
            response.success, response.message = True, "no segment found in the image"
            response.instance_mask = numpy_to_image(np.zeros((h, w), np.int32), "32SC1",
                                                    request.image.header)
            return response
        emb = None
        if self.embedder is not None:
            emb = self.embedder.embed_masks(q.rgb, seg.labels)
        t = self._stage("segment", t, spent)
        frame = Frame(rgb=q.rgb, K=q.K, camera_to_world=pose, stamp=q.stamp_ns / 1e9,
                      depth=q.depth, masks=seg.labels, mask_embeddings=emb,
                      mask_scores=seg.scores, lens=q.lens)
        try:
            loc = mapper.localize(frame)
        except (FrameError, ValueError) as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        t = self._stage("map", t, spent)
        allowed = None
        if q.queries:
            queries = list(dict.fromkeys(q.queries))
            allowed = matching_instances(mapper, queries, self.embedder.embed_text(queries))
        ids, confidence = localized_instances(loc, q.min_confidence, allowed)
        records = self._records_of(mapper, confidence)
        labels = mapper.instance_label_names(reader=True)
        response.instance_mask = numpy_to_image(ids, "32SC1", request.image.header)
        for i, share in confidence.items():
            roi = pixel_roi(ids == i)
            if roi is None:
                continue
            msg = self._instance_msg(i, records, labels, share)
            msg.pixel_count, msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, \
                msg.roi.height = roi
            response.instances.append(msg)
        self._stage("answer", t, spent)
        dt = time.perf_counter() - t0
        self.latency.add(dt)
        response.success = True
        stages = ", ".join(f"{n} {1e3 * v:.0f}" for n, v in spent.items())
        response.message = (f"{len(response.instances)} instances localized "
                            f"({seg.num_masks} segments, {dt * 1e3:.0f} ms: {stages})")
        return response

    def _records_of(self, mapper, ids) -> dict:
        """The records (centroid, box) of the instances in ``ids``: the latest snapshot's
        (the cloud publisher refreshes it every ``output.cloud_period_s``) while it is at
        most two periods old, those of instances newer than it from their voxels
        (:meth:`Mapper.voxel_records`); an older snapshot is rebuilt first. An InstanceLoc
        answer should not build a snapshot for a new instance: that is a labeled cloud
        under the map's lock (the answer's p95 580 ms under a 100 Hz flood, 430 ms once
        frames were mapped beside training and new instances came more often)."""
        period = self.config.output.cloud_period_s
        snap = self.snapshots.latest
        if (snap is None or time.monotonic() - snap.checked_s > 2 * period
                or snap.key[0] != id(mapper)):
            snap = self.snapshots.get(max_age_s=period)
        records = {} if snap is None else snap.records
        missing = [int(i) for i in ids if int(i) not in records]
        if missing:
            records = {**records, **mapper.voxel_records(missing)}
        return records

    def query(self, request, response):
        text = request.query.strip()
        if not text:
            response.success, response.message = False, "bad request: the query text is empty"
            return response
        if not (0.0 <= request.min_score <= 1.0):
            response.success = False
            response.message = f"bad request: min_score must be in [0, 1], got {request.min_score}"
            return response
        mapper = self.current_mapper()
        reason = self._text_query_refusal(mapper)
        if reason:
            response.success, response.message = False, reason
            return response
        (emb,) = self.embedder.embed_text([text])
        ranked = rank_instances(mapper, emb, request.min_score, request.max_results)
        snap = self.snapshots.get(max_age_s=self.config.output.cloud_period_s)
        labels = mapper.instance_label_names()
        for i, score in ranked:
            response.instances.append(self._instance_msg(
                i, {} if snap is None else snap.records, labels, score))
            response.scores.append(float(score))
        response.success = True
        response.message = f"{len(ranked)} instances ranked for '{text}'"
        return response

    def query_points(self, request, response):
        text = request.query.strip()
        if not text:
            response.success, response.message = False, "bad request: the query text is empty"
            return response
        try:
            threshold = relevance_threshold(float(request.min_relevance),
                                            self.config.mapping.semantics.query_threshold)
        except ValueError as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        mapper = self.current_mapper()
        reason = self._text_query_refusal(mapper)
        if reason:
            response.success, response.message = False, reason
            return response
        cloud = self.snapshots.get(max_age_s=self.config.output.cloud_period_s).cloud
        (emb,) = self.embedder.embed_text([text])
        relevance = mapper.point_relevance(cloud.xyz, emb)
        if relevance is None:
            response.success, response.message = False, NO_VOXEL_FEATURES
            return response
        found = matching_points(relevance, cloud.instance, threshold,
                                int(request.max_points))
        header = Header(stamp=self._now(), frame_id=self.config.input.map_frame)
        response.cloud = relevance_cloud_to_msg(cloud.xyz[found.index], found.relevance,
                                                cloud.instance[found.index], header)
        response.instance_ids = found.instance_ids
        response.instance_shares = found.instance_shares
        response.success = True
        shown = (f", the {len(found.index)} most relevant returned"
                 if len(found.index) < found.matched else "")
        response.message = (f"{found.matched} of {len(cloud)} points match '{text}' "
                            f"(relevance >= {threshold:.2f}){shown}, on "
                            f"{len(found.instance_ids)} instances")
        if self.publish_query_cloud is not None:
            self.publish_query_cloud(response.cloud)
        return response

    def _text_query_refusal(self, mapper: Mapper) -> str | None:
        """Why a text query cannot be answered (no text encoder, no map yet), or None."""
        if self.embedder is None:
            return NO_TEXT_ENCODER
        return no_map_reason(mapper.stats())

    def _now(self) -> TimeMsg:
        return self.now() if self.now is not None else Clock().now().to_msg()

    def get_instance(self, request, response):
        mapper = self.current_mapper()  # no lock: its configuration, then the snapshot
        cfg = mapper.cfg
        snap = self.snapshots.get(max_age_s=self.config.output.cloud_period_s)
        try:
            d = instance_details(snap, int(request.instance_id), float(request.voxel_size),
                                 cfg.export.voxel_size_m, cfg.instances.confirm_frames,
                                 cfg.export.min_points_per_instance)
        except ValueError as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        except UnknownInstance as exc:
            response.success, response.message = False, str(exc)
            return response
        header = Header(stamp=self._now(), frame_id=self.config.input.map_frame)
        response.instance = self._instance_msg(d.record.id, {d.record.id: d.record},
                                               snap.labels, d.record.confidence)
        response.points = labeled_cloud_to_msg(d.points, header)
        response.observed_keyframes = int(d.keyframes)
        response.last_observed = (TimeMsg() if d.last_stamp is None or d.last_stamp < 0
                                  else Time(nanoseconds=round(d.last_stamp * 1e9)).to_msg())
        last = "never" if d.last_stamp is None else f"{d.last_stamp:.3f} s"
        response.success = True
        response.message = (f"instance {d.record.id}: {len(d.points)} points, seen in "
                            f"{d.keyframes} keyframes (last {last})")
        return response

    def remove_instance(self, request, response):
        mapper = self.current_mapper()
        i = int(request.instance_id)
        try:
            vacated = mapper.remove_instance(i)
        except InstanceEditError as exc:
            response.success, response.message = False, str(exc)
            return response
        self.snapshots.clear()  # the next reader sees the map without it
        response.success = True
        response.message = f"instance {i} removed ({vacated} voxels of surface vacated)"
        self.logger.info(response.message)
        return response

    def move_instance(self, request, response):
        mapper = self.current_mapper()
        i = int(request.instance_id)
        try:
            T = transform_to_matrix(request.transform)
            vacated = mapper.move_instance(i, T)
        except InstanceEditError as exc:
            response.success, response.message = False, str(exc)
            return response
        except (InputError, ValueError) as exc:
            response.success, response.message = False, f"bad request: transform: {exc}"
            return response
        self.snapshots.clear()
        t = T[:3, 3]
        response.success = True
        response.message = (f"instance {i} moved by ({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}) m "
                            f"({vacated} voxels of surface vacated)")
        self.logger.info(response.message)
        return response

    def save(self, request, response):
        if not request.path.strip():
            response.success, response.message = False, "bad request: the path is empty"
            return response
        path = Path(request.path).expanduser()
        mapper = self.current_mapper()
        try:
            size = mapper.save(path)  # copies the state under the lock; training goes on
        except (OSError, MapFileError, TypeError, ValueError) as exc:
            response.success, response.message = False, f"cannot save the map to {path}: {exc}"
            return response
        st = mapper.stats()
        response.success = True
        response.message = (f"saved {st['keyframes']} keyframes, "
                            f"{st.get('instances_confirmed', 0)} instances to {path} "
                            f"({size / 1e6:.1f} MB)")
        return response

    def load(self, request, response):
        if not request.path.strip():
            response.success, response.message = False, "bad request: the path is empty"
            return response
        path = Path(request.path).expanduser()
        if not path.is_file():
            response.success, response.message = False, f"no map file at {path}"
            return response
        try:
            candidate = Mapper.from_file(path, device=self.config.mapping.device)
        except MapFileError as exc:
            response.success, response.message = False, f"map not loaded: {exc}"
            return response
        if self.embedding_dim and candidate.embedding_dim not in (0, self.embedding_dim):
            response.success = False
            response.message = (f"map not loaded: it holds {candidate.embedding_dim}-d "
                                f"embeddings, the configured embedder gives "
                                f"{self.embedding_dim}-d ones")
            return response
        candidate.vocabulary.cfg = self.config.mapping.semantics
        if self.embedder is not None:
            self.apply_vocabulary(candidate)
        self.swap(candidate)
        st = candidate.stats()
        response.success = True
        response.message = (f"loaded {st['keyframes']} keyframes, "
                            f"{st.get('instances_confirmed', 0)} instances, "
                            f"{st['training_steps']} training steps from {path}")
        return response

    def reset(self, request, response):
        old = self.current_mapper().stats()
        fresh = Mapper(self.config.mapping, embedding_dim=self.embedding_dim or None)
        self.apply_vocabulary(fresh)
        self.swap(fresh)
        response.success = True
        response.message = (f"map reset (forgot {old['keyframes']} keyframes, "
                            f"{old.get('instances_confirmed', 0)} instances)")
        return response
