"""The node's services: localize_instances, query_instances, save_map, load_map, reset.

A mixin of :class:`~panoptic_mapping.ros.node.MappingNode`: the handlers run in the node's
service callback group (never on the input path), read the map under its lock or from the
latest snapshot, and answer every bad request with ``success=false`` and the reason; an
unexpected error becomes ``success=false`` with "internal error: ..." (never an exception).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from panoptic_mapping.core.frames import Frame, FrameError
from panoptic_mapping.core.mapper import Mapper
from panoptic_mapping.core.persistence import MapFileError
from panoptic_mapping.ros.conversions import InputError, numpy_to_image
from panoptic_mapping.ros.markers import fill_instance_msg
from panoptic_mapping.ros.poses import PoseLookupError
from panoptic_mapping.ros.requests import decode_localize_request

__all__ = ["MapServices", "NO_TEXT_ENCODER"]

NO_TEXT_ENCODER = "no text encoder: configure frontend.embedder.checkpoint"

log = logging.getLogger("panoptic_mapping.ros")


class MapServices:
    """Service handlers (mixed into the node; they use its map, models and config)."""

    def _guarded(self, handler):
        """A service never raises: an unexpected error becomes success=false + reason."""

        def serve(request, response):
            try:
                return handler(request, response)
            except Exception as exc:  # noqa: BLE001 - reported to the caller and logged
                self.get_logger().error(f"{handler.__name__}: {type(exc).__name__}: {exc}")
                log.exception("service handler failed")
                response.success = False
                response.message = f"internal error: {type(exc).__name__}: {exc}"
                return response

        serve.__name__ = handler.__name__
        return serve

    def _no_map_reason(self, mapper: Mapper) -> str | None:
        st = mapper.stats()
        if st["keyframes"] == 0:
            return "no map yet: no keyframe has been mapped"
        if not st.get("instances_confirmed"):
            return (f"no map yet: {st['keyframes']} keyframes but no instance has been "
                    "confirmed")
        return None

    def _on_localize(self, request, response):
        t0 = time.perf_counter()
        try:
            q = decode_localize_request(request, self.config.input.map_frame)
        except InputError as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        mapper = self.mapper
        reason = self._no_map_reason(mapper)
        if reason:
            response.success, response.message = False, reason
            return response
        if q.queries and self.embedder is None:
            response.success = False
            response.message = f"bad request: text queries need a text encoder ({NO_TEXT_ENCODER})"
            return response
        pose = q.camera_to_map
        if pose is None:
            frame_id = self.config.input.camera_frame or q.camera_frame
            try:
                pose = self.poses.lookup(frame_id, q.stamp_ns, self.config.input.pose_wait_s)
            except PoseLookupError as exc:
                response.success = False
                response.message = (f"bad request: camera_pose is empty and no pose was found "
                                    f"for frame '{frame_id}' at the image stamp: {exc}")
                return response
        seg = self.segmenter.segment(q.rgb, q.depth)
        h, w = q.rgb.shape[:2]
        if seg.num_masks == 0:
            response.success, response.message = True, "no segment found in the image"
            response.instance_mask = numpy_to_image(np.zeros((h, w), np.int32), "32SC1",
                                                    request.image.header)
            return response
        emb = None
        if self.embedder is not None:
            emb = self.embedder.embed_masks(q.rgb, seg.labels)
        frame = Frame(rgb=q.rgb, K=q.K, camera_to_world=pose, stamp=q.stamp_ns / 1e9,
                      depth=q.depth, masks=seg.labels, mask_embeddings=emb,
                      mask_scores=seg.scores)
        try:
            loc = mapper.localize(frame)
        except (FrameError, ValueError) as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        share: dict[int, float] = {}
        for _, map_id, s in loc.matches:
            share[map_id] = max(share.get(map_id, 0.0), float(s))
        keep = {i for i, s in share.items() if s >= q.min_confidence and i > 0}
        if q.queries:
            keep &= self._matching(mapper, q.queries)
        ids = np.where(np.isin(loc.ids, list(keep)), loc.ids, 0).astype(np.int32)
        snap = self.snapshot(max_age_s=self.config.output.cloud_period_s)
        labels = {i: (mapper.vocabulary.name(l), c)
                  for i, (l, c) in mapper.instance_labels().items()}
        response.instance_mask = numpy_to_image(ids, "32SC1", request.image.header)
        from panoptic_mapping.msg import Instance

        for i in sorted(keep):
            pix = ids == i
            count = int(pix.sum())
            if count == 0:
                continue
            msg = fill_instance_msg(Instance(), i, snap.records.get(i) if snap else None,
                                    labels.get(i), share[i])
            rows, cols = np.nonzero(pix)
            msg.pixel_count = count
            msg.roi.x_offset, msg.roi.y_offset = int(cols.min()), int(rows.min())
            msg.roi.width = int(cols.max() - cols.min() + 1)
            msg.roi.height = int(rows.max() - rows.min() + 1)
            response.instances.append(msg)
        dt = time.perf_counter() - t0
        self._localize_time.add(dt)
        response.success = True
        response.message = (f"{len(response.instances)} instances localized "
                            f"({seg.num_masks} segments, {dt * 1e3:.0f} ms)")
        return response

    def _matching(self, mapper: Mapper, queries: list[str]) -> set[int]:
        """Instances for which one of ``queries`` is the closest text among the queries and
        the vocabulary (and at least ``mapping.semantics.min_similarity`` similar)."""
        queries = list(dict.fromkeys(queries))
        texts = [self.embedder.embed_text(queries)]
        vocab = mapper.vocabulary.prompts
        others = [k for k, p in enumerate(vocab) if p not in queries]
        if others:
            texts.append(mapper.vocabulary.text_embeddings()[others])
        best: dict[int, tuple[float, int]] = {}
        for k, t in enumerate(np.concatenate(texts)):
            for i, sim in mapper.query(t):
                if i not in best or sim > best[i][0]:
                    best[i] = (sim, k)
        return {i for i, (sim, k) in best.items()
                if k < len(queries) and sim >= mapper.vocabulary.cfg.min_similarity}

    def _on_query(self, request, response):
        text = request.query.strip()
        if not text:
            response.success, response.message = False, "bad request: the query text is empty"
            return response
        if not (0.0 <= request.min_score <= 1.0):
            response.success = False
            response.message = f"bad request: min_score must be in [0, 1], got {request.min_score}"
            return response
        if self.embedder is None:
            response.success, response.message = False, NO_TEXT_ENCODER
            return response
        mapper = self.mapper
        reason = self._no_map_reason(mapper)
        if reason:
            response.success, response.message = False, reason
            return response
        (emb,) = self.embedder.embed_text([text])
        ranked = [(i, (sim + 1.0) / 2.0) for i, sim in mapper.query(emb)]
        ranked = [(i, s) for i, s in ranked if s >= request.min_score]
        if request.max_results > 0:
            ranked = ranked[:request.max_results]
        snap = self.snapshot(max_age_s=self.config.output.cloud_period_s)
        labels = {i: (mapper.vocabulary.name(l), c)
                  for i, (l, c) in mapper.instance_labels().items()}
        from panoptic_mapping.msg import Instance

        for i, score in ranked:
            response.instances.append(fill_instance_msg(
                Instance(), i, snap.records.get(i) if snap else None, labels.get(i),
                score))
            response.scores.append(float(score))
        response.success = True
        response.message = f"{len(ranked)} instances ranked for '{text}'"
        return response

    def _on_save(self, request, response):
        if not request.path.strip():
            response.success, response.message = False, "bad request: the path is empty"
            return response
        path = Path(request.path).expanduser()
        mapper = self.mapper
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

    def _on_load(self, request, response):
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
            self._apply_vocabulary(candidate)
        self._swap(candidate)
        st = candidate.stats()
        response.success = True
        response.message = (f"loaded {st['keyframes']} keyframes, "
                            f"{st.get('instances_confirmed', 0)} instances, "
                            f"{st['training_steps']} training steps from {path}")
        return response

    def _on_reset(self, request, response):
        old = self.mapper.stats()
        fresh = Mapper(self.config.mapping, embedding_dim=self.embedding_dim or None)
        self._apply_vocabulary(fresh)
        self._swap(fresh)
        response.success = True
        response.message = (f"map reset (forgot {old['keyframes']} keyframes, "
                            f"{old.get('instances_confirmed', 0)} instances)")
        return response
