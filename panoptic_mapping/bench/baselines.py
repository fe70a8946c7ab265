"""Baselines the benchmark runs next to the mapper, on the same frames and 2D masks.

Every baseline ingests, in order, one :class:`~panoptic_mapping.bench.types.SceneFrame`
and its :class:`~panoptic_mapping.bench.types.MaskFrame` at a time. Of the frame it reads
only the sensor data and the pose (``rgb``, ``depth``, ``K``, ``camera_to_world``, through
:meth:`FrameGeometry.from_frame`): never the ground-truth ``instance`` / ``semantic``
images. After ingesting it returns a predicted instance id image for that frame
(``prediction(index)`` gives it again later).

* :class:`PerFrameMasksBaseline`: the masks as they are; ids unique per frame.
* :class:`IoUTrackingBaseline`: masks linked frame to frame by Hungarian matching on IoU
  with the previous frame's ids, warped into the current view with depth and poses.
* :class:`VoxelFusionBaseline`: classical geometric fusion in the spirit of ETH's
  panoptic_mapping: a sparse voxel map with bounded per-voxel id votes; each new frame's
  masks are associated to map ids by rendering the map into the view and Hungarian
  matching on IoU / containment. It renders its labels into any posed view
  (:meth:`~VoxelFusionBaseline.predict`) and labels a novel view's own masks by majority
  vote (:meth:`~VoxelFusionBaseline.predict_with_masks`, InstanceLoc-style).

Id 0 always means "no prediction". Everything is vectorised numpy (+ scipy's
``linear_sum_assignment``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_mapping.core.geometry import backproject

from .types import MaskFrame

__all__ = [
    "FrameGeometry",
    "Baseline",
    "PerFrameMasksBaseline",
    "IoUTrackingBaseline",
    "VoxelFusionBaseline",
    "backproject",
    "warp_labels",
    "match_masks",
]


# --------------------------------------------------------------------------- geometry


@dataclass
class FrameGeometry:
    """The part of a frame a baseline may use: sensor data and pose, no ground truth.

    Attributes:
        K: (3, 3) float64 pinhole intrinsics.
        camera_to_world: (4, 4) float64, OpenCV optical frame (x right, y down, z forward).
        shape: (H, W) image size.
        depth: (H, W) float32 metric depth along the optical axis (0 = none), or None.
        rgb: (H, W, 3) uint8 or None (unused by the baselines, kept for completeness).
        index: the frame's position in its trajectory (-1 when unknown).
    """

    K: np.ndarray
    camera_to_world: np.ndarray
    shape: tuple[int, int]
    depth: np.ndarray | None = None
    rgb: np.ndarray | None = None
    index: int = -1

    @classmethod
    def from_frame(cls, frame) -> "FrameGeometry":
        """Copy rgb, depth, K, camera_to_world and index of a SceneFrame-like object.

        Only these attributes are read (the ground-truth images are never touched);
        ``depth`` or ``rgb`` may be missing or None.
        """
        if isinstance(frame, FrameGeometry):
            return frame
        depth = getattr(frame, "depth", None)
        rgb = getattr(frame, "rgb", None)
        if depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            shape = depth.shape[:2]
        elif rgb is not None:
            shape = np.asarray(rgb).shape[:2]
        else:
            raise ValueError("a frame needs depth or rgb to know its image size")
        return cls(K=np.asarray(frame.K, dtype=np.float64),
                   camera_to_world=np.asarray(frame.camera_to_world, dtype=np.float64),
                   shape=(int(shape[0]), int(shape[1])), depth=depth, rgb=rgb,
                   index=int(getattr(frame, "index", -1)))

    @property
    def has_depth(self) -> bool:
        return self.depth is not None and bool(np.any(self.depth > 0))


def _project(points: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray,
             shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixels of world points (P, 3) in a view.

    Returns:
        pix (Q,) int64 flat pixel indices, z (Q,) depths and keep (Q,) indices into
        ``points`` of the points in front of the camera and inside the image.
    """
    R, t = camera_to_world[:3, :3], camera_to_world[:3, 3]
    cam = (points - t) @ R  # R^T (p - t), row-wise
    z = cam[:, 2]
    front = z > 1e-6
    zf = np.where(front, z, 1.0)
    u = np.rint(K[0, 0] * cam[:, 0] / zf + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * cam[:, 1] / zf + K[1, 2]).astype(np.int64)
    h, w = shape
    keep = np.flatnonzero(front & (u >= 0) & (u < w) & (v >= 0) & (v < h))
    return v[keep] * w + u[keep], z[keep], keep


def _zbuffer(pix: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Indices (into pix / z) of the nearest point per pixel (a z-buffer without loops)."""
    if len(pix) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((z, pix))
    p = pix[order]
    first = np.ones(len(p), dtype=bool)
    first[1:] = p[1:] != p[:-1]
    return order[first]


def _depth_consistent(pix: np.ndarray, z: np.ndarray, depth: np.ndarray | None,
                      tol_abs: float, tol_rel: float) -> np.ndarray:
    """(Q,) bool: points whose depth agrees with the measured depth at their pixel
    (or whose pixel has no measurement). Removes surfaces hidden behind others."""
    if depth is None:
        return np.ones(len(pix), dtype=bool)
    d = depth.reshape(-1)[pix].astype(np.float64)
    return (d <= 0) | (np.abs(z - d) <= tol_abs + tol_rel * d)


def warp_labels(labels: np.ndarray, src: FrameGeometry, dst: FrameGeometry,
                tol_abs: float = 0.03, tol_rel: float = 0.03) -> np.ndarray:
    """Warp a label image from one posed depth frame into another view.

    Each labelled source pixel with depth is back-projected, moved into the destination
    camera and splatted to its nearest pixel; the nearest point wins (z-buffer). Where the
    destination has depth, points that disagree with it by more than
    ``tol_abs + tol_rel * depth`` are dropped (occluded there).

    Args:
        labels: (Hs, Ws) int ids in the source view (0 = none).
        src: source geometry; needs depth. dst: destination geometry.

    Returns:
        (Hd, Wd) int32 warped ids, 0 where nothing landed.
    """
    if src.depth is None:
        raise ValueError("warp_labels needs the source depth")
    out = np.zeros(dst.shape[0] * dst.shape[1], dtype=np.int32)
    depth = np.where(labels > 0, src.depth, 0)
    pts, spix = backproject(depth, src.K, src.camera_to_world)
    if len(pts) == 0:
        return out.reshape(dst.shape)
    pix, z, keep = _project(pts, dst.K, dst.camera_to_world, dst.shape)
    ok = _depth_consistent(pix, z, dst.depth, tol_abs, tol_rel)
    pix, z, keep = pix[ok], z[ok], keep[ok]
    win = _zbuffer(pix, z)
    out[pix[win]] = labels.reshape(-1)[spix[keep[win]]]
    return out.reshape(dst.shape)


# --------------------------------------------------------------------------- matching


def match_masks(masks: np.ndarray, reference: np.ndarray, iou_threshold: float = 0.3,
                containment_threshold: float | None = None,
                min_overlap_pixels: int = 1) -> dict[int, int]:
    """One-to-one association of a frame's masks to reference ids in the same image.

    Overlaps are counted over the image; IoU(m, r) = |m∩r| / |m∪r| and containment(m, r)
    = |m∩r| / min(|m|, |r|) (high when one is mostly inside the other, e.g. a partially
    built map object inside a full new mask). A pair is admissible when IoU >=
    ``iou_threshold`` or containment >= ``containment_threshold`` (if given), and they
    share at least ``min_overlap_pixels``; the Hungarian assignment maximises the summed
    IoU over admissible pairs (containment breaks ties).

    Args:
        masks: (H, W) int mask ids (0 = none). reference: (H, W) int reference ids
            (0 = none), e.g. the previous frame's ids warped here or the map rendered here.

    Returns:
        {mask id: reference id} for the matched masks.
    """
    m = masks.reshape(-1).astype(np.int64)
    r = reference.reshape(-1).astype(np.int64)
    m_ids, m_inv = np.unique(m, return_inverse=True)
    r_ids, r_inv = np.unique(r, return_inverse=True)
    m_area = np.bincount(m_inv, minlength=len(m_ids))
    r_area = np.bincount(r_inv, minlength=len(r_ids))
    inter = np.bincount(m_inv * len(r_ids) + r_inv, minlength=len(m_ids) * len(r_ids))
    inter = inter.reshape(len(m_ids), len(r_ids))
    # Drop the "none" row / column: id 0 is never matched.
    mi = np.flatnonzero(m_ids != 0)
    ri = np.flatnonzero(r_ids != 0)
    if len(mi) == 0 or len(ri) == 0:
        return {}
    inter = inter[np.ix_(mi, ri)].astype(np.float64)
    am, ar = m_area[mi][:, None], r_area[ri][None, :]
    iou = inter / (am + ar - inter)
    cont = inter / np.minimum(am, ar)
    ok = (iou >= iou_threshold) & (inter >= min_overlap_pixels)
    if containment_threshold is not None:
        ok |= (cont >= containment_threshold) & (inter >= min_overlap_pixels)
    if not ok.any():
        return {}
    score = np.where(ok, iou + 1e-3 * cont, -1.0)
    rows, cols = linear_sum_assignment(score, maximize=True)
    keep = ok[rows, cols]
    return {int(m_ids[mi[a]]): int(r_ids[ri[b]]) for a, b in zip(rows[keep], cols[keep])}


def _relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Apply {mask id: new id} to a mask image; unmapped ids become 0. Returns int32."""
    if not mapping:
        return np.zeros(labels.shape, dtype=np.int32)
    keys = np.fromiter(mapping.keys(), dtype=np.int64)
    vals = np.fromiter(mapping.values(), dtype=np.int64)
    lut = np.zeros(int(max(keys.max(), labels.max())) + 1, dtype=np.int64)
    lut[keys] = vals
    return lut[np.clip(labels, 0, None)].astype(np.int32)


def _mask_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero ids present in a mask image."""
    ids = np.unique(labels)
    return ids[ids > 0]


# --------------------------------------------------------------------------- baselines


class Baseline:
    """Common interface: ``ingest`` frames in order, then query predicted id images.

    Subclasses implement :meth:`_assign`, which turns one frame's masks into instance ids.
    """

    name = "baseline"

    def __init__(self) -> None:
        self._predictions: dict[int, np.ndarray] = {}
        self._count = 0

    def ingest(self, frame, masks: MaskFrame) -> np.ndarray:
        """Take the next frame (SceneFrame-like; GT images unused) and its masks.

        Returns:
            (H, W) int32 predicted instance ids of this frame's pixels (0 = none), as
            assigned online when the frame arrived.
        """
        geom = FrameGeometry.from_frame(frame)
        labels = np.asarray(masks.labels)
        if labels.shape != geom.shape:
            raise ValueError(f"mask image {labels.shape} does not match frame {geom.shape}")
        ids = self._assign(geom, labels.astype(np.int64), masks)
        key = geom.index if geom.index >= 0 else self._count
        self._predictions[key] = ids
        self._count += 1
        return ids

    def prediction(self, index: int) -> np.ndarray:
        """(H, W) int32 ids assigned to the ingested frame with this ``index``."""
        return self._predictions[index]

    @property
    def ingested_indices(self) -> list[int]:
        return list(self._predictions)

    def _assign(self, geom: FrameGeometry, labels: np.ndarray, masks: MaskFrame
                ) -> np.ndarray:
        raise NotImplementedError


class PerFrameMasksBaseline(Baseline):
    """The 2D masks as they are: no association at all.

    The id of mask m in the n-th ingested frame (counting from 1) is ``n * id_stride + m``,
    so ids never coincide across frames (each frame's masks are distinct "objects" for
    PQ_scene). Novel views (:meth:`predict_with_masks`) continue the same count.
    """

    name = "per_frame_masks"

    def __init__(self, id_stride: int = 10000) -> None:
        super().__init__()
        self.id_stride = int(id_stride)

    def _fresh(self, labels: np.ndarray, n: int) -> np.ndarray:
        if labels.size and labels.max() >= self.id_stride:
            raise ValueError(f"mask id {labels.max()} >= id_stride {self.id_stride}")
        return np.where(labels > 0, n * self.id_stride + labels, 0).astype(np.int32)

    def _assign(self, geom, labels, masks):
        return self._fresh(labels, self._count + 1)

    def predict_with_masks(self, frame, masks: MaskFrame) -> np.ndarray:
        """A novel view's masks with fresh ids (the baseline has nothing to associate)."""
        self._count += 1
        return self._fresh(np.asarray(masks.labels).astype(np.int64), self._count)


class IoUTrackingBaseline(Baseline):
    """Frame-to-frame mask tracking by Hungarian matching on IoU.

    The previous frame's predicted ids are warped into the current view with its depth
    and both poses (nearest-pixel splat, z-buffer, occlusion test against the current
    depth); without depth (or with ``use_depth=False``) they are compared in image space.
    Matched masks (IoU >= ``iou_threshold``) inherit the previous id; unmatched masks get
    new ids. Only the previous frame is remembered: an object missed for one frame, or
    leaving the view, comes back with a new id.
    """

    name = "iou_tracking"

    def __init__(self, iou_threshold: float = 0.3, use_depth: bool = True,
                 min_overlap_pixels: int = 5) -> None:
        super().__init__()
        self.iou_threshold = float(iou_threshold)
        self.use_depth = bool(use_depth)
        self.min_overlap_pixels = int(min_overlap_pixels)
        self._prev: tuple[FrameGeometry, np.ndarray] | None = None
        self._next_id = 1

    def reference(self, geom: FrameGeometry) -> np.ndarray | None:
        """(H, W) int32 previous ids as seen from ``geom`` (None before the first frame)."""
        if self._prev is None:
            return None
        prev_geom, prev_ids = self._prev
        if self.use_depth and prev_geom.has_depth:
            return warp_labels(prev_ids, prev_geom, geom)
        if prev_ids.shape != geom.shape:
            return None
        return prev_ids

    def _assign(self, geom, labels, masks):
        ref = self.reference(geom)
        mapping = {} if ref is None else match_masks(
            labels, ref, self.iou_threshold, min_overlap_pixels=self.min_overlap_pixels)
        for m in _mask_ids(labels).tolist():
            if m not in mapping:
                mapping[m] = self._next_id
                self._next_id += 1
        ids = _relabel(labels, mapping)
        self._prev = (geom, ids)
        return ids


# Voxel keys pack three 21-bit biased integer coordinates into one int64.
_KEY_BITS = 21
_KEY_BIAS = 1 << (_KEY_BITS - 1)
_NOVEL_ID_BASE = 1 << 30  # ids for novel-view masks the map cannot explain


def _neighbour_offsets(radius: int) -> np.ndarray:
    """(n, 3) int64 voxel offsets within a cube of ``radius``, nearest first, (0,0,0) out."""
    r = np.arange(-radius, radius + 1)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    off = off[np.abs(off).sum(1) > 0]
    return off[np.argsort((off ** 2).sum(1), kind="stable")]


class VoxelFusionBaseline(Baseline):
    """Classical geometric fusion of 2D masks into a sparse voxel map (ETH-style).

    Map: a hash map from integer voxel coordinates (keys packed into int64, kept in a
    sorted array searched with ``np.searchsorted``) to slots; each slot holds at most
    ``top_k`` (id, votes) pairs. A voxel's label is its most voted id.

    Per frame:

    1. Render the map into the view (:meth:`predict`): each pixel's back-projected point
       looks up its voxel (or, failing that, the nearest existing voxel within
       ``search_radius`` voxels). Without depth, voxels are projected and z-buffered.
    2. Associate the masks to the rendered ids with :func:`match_masks` (Hungarian on IoU,
       admissible when IoU >= ``iou_threshold`` or containment >= ``containment_threshold``);
       unmatched masks get new ids.
    3. Integrate: every masked pixel with depth falls in a voxel; each voxel receives ONE
       vote per frame, for the id most of its pixels carry in that frame (so close-up views
       with many pixels per voxel do not outvote distant ones). A new id enters a full
       table only by replacing an entry with at most one vote.

    If the masks carry embeddings, each id accumulates the mean embedding of the masks
    assigned to it (:meth:`instance_embeddings`).

    Args:
        voxel_size: edge length in metres (1 cm suits 160x120 views from ~1 m: a pixel
            there covers ~7 mm).
        iou_threshold, containment_threshold: admissibility of a mask <-> map id pair.
        top_k: ids kept per voxel.
        min_overlap_pixels: a pair must share at least this many pixels.
        search_radius: neighbourhood (in voxels) searched when a pixel's voxel is empty.
        association: "lookup" (render by looking up each pixel's voxel; needs depth,
            falls back to projection without it) or "projection" (splat voxel centres).
    """

    name = "voxel_fusion"

    def __init__(self, voxel_size: float = 0.01, iou_threshold: float = 0.3,
                 containment_threshold: float = 0.6, top_k: int = 4,
                 min_overlap_pixels: int = 10, search_radius: int = 1,
                 association: str = "lookup") -> None:
        super().__init__()
        if association not in ("lookup", "projection"):
            raise ValueError(f"association must be 'lookup' or 'projection', not {association!r}")
        self.voxel_size = float(voxel_size)
        self.iou_threshold = float(iou_threshold)
        self.containment_threshold = float(containment_threshold)
        self.top_k = int(top_k)
        self.min_overlap_pixels = int(min_overlap_pixels)
        self.search_radius = int(search_radius)
        self.association = association
        self._offsets = _neighbour_offsets(self.search_radius) if search_radius > 0 else \
            np.zeros((0, 3), dtype=np.int64)
        self._sorted_keys = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._coords = np.zeros((0, 3), dtype=np.int64)
        self._ids = np.zeros((0, self.top_k), dtype=np.int32)
        self._votes = np.zeros((0, self.top_k), dtype=np.int32)
        self._n = 0
        self._next_id = 1
        self._next_novel_id = _NOVEL_ID_BASE
        self._emb_sum: dict[int, np.ndarray] = {}
        self._emb_count: dict[int, int] = {}

    # ------------------------------------------------------------------ voxel hashing

    @property
    def num_voxels(self) -> int:
        return self._n

    def _voxel_coords(self, points: np.ndarray) -> np.ndarray:
        """(P, 3) int64 voxel coordinates of world points (P, 3)."""
        c = np.floor(points / self.voxel_size).astype(np.int64)
        if c.size and np.abs(c).max() >= _KEY_BIAS:
            raise ValueError("point too far from the origin for the voxel key range")
        return c

    @staticmethod
    def _keys(coords: np.ndarray) -> np.ndarray:
        """(P,) int64 keys of voxel coordinates (P, 3)."""
        b = coords + _KEY_BIAS
        return (b[..., 0] << (2 * _KEY_BITS)) | (b[..., 1] << _KEY_BITS) | b[..., 2]

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Slots of keys (any shape), -1 where the voxel does not exist."""
        if self._n == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_keys, keys)
        pos_c = np.minimum(pos, self._n - 1)
        found = self._sorted_keys[pos_c] == keys
        return np.where(found, self._sorted_slots[pos_c], -1)

    def _insert(self, coords: np.ndarray) -> np.ndarray:
        """Create voxels for distinct, absent coordinates (P, 3); returns their slots (P,)."""
        keys = self._keys(coords)
        n_new = len(keys)
        slots = np.arange(self._n, self._n + n_new, dtype=np.int64)
        need = self._n + n_new
        if need > len(self._ids):  # grow storage geometrically
            cap = max(need, 2 * len(self._ids), 4096)
            grow = cap - len(self._ids)
            self._ids = np.vstack([self._ids, np.zeros((grow, self.top_k), np.int32)])
            self._votes = np.vstack([self._votes, np.zeros((grow, self.top_k), np.int32)])
            self._coords = np.vstack([self._coords, np.zeros((grow, 3), np.int64)])
        self._coords[slots] = coords
        order = np.argsort(keys)
        pos = np.searchsorted(self._sorted_keys, keys[order])
        self._sorted_keys = np.insert(self._sorted_keys, pos, keys[order])
        self._sorted_slots = np.insert(self._sorted_slots, pos, slots[order])
        self._n = need
        return slots

    def _labels_of(self, slots: np.ndarray) -> np.ndarray:
        """Majority id of slots (any shape); 0 for -1 slots."""
        s = np.maximum(slots, 0)
        best = np.argmax(self._votes[s], axis=-1)
        lab = np.take_along_axis(self._ids[s], best[..., None], axis=-1)[..., 0]
        return np.where(slots >= 0, lab, 0).astype(np.int32)

    # ------------------------------------------------------------------ integration

    def _integrate(self, points: np.ndarray, ids: np.ndarray) -> None:
        """Add one frame's observations: world points (P, 3) with their ids (P,) > 0."""
        if len(points) == 0:
            return
        coords = self._voxel_coords(points)
        keys = self._keys(coords)
        ukeys, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        slots_u = self._find(ukeys)
        new = slots_u < 0
        if new.any():
            slots_u[new] = self._insert(coords[first[new]])
        slots = slots_u[inv]
        # One vote per voxel and frame: the id with most pixels in that voxel.
        uid, id_inv = np.unique(ids, return_inverse=True)
        pair, cnt = np.unique(slots * len(uid) + id_inv, return_counts=True)
        p_slot, p_id = pair // len(uid), uid[pair % len(uid)]
        order = np.lexsort((p_id, -cnt, p_slot))
        lead = np.ones(len(order), dtype=bool)
        lead[1:] = p_slot[order][1:] != p_slot[order][:-1]
        v_slot, v_id = p_slot[order][lead], p_id[order][lead].astype(np.int32)
        self._vote(v_slot, v_id)

    def _vote(self, slots: np.ndarray, ids: np.ndarray) -> None:
        """One vote for ``ids`` (V,) in distinct ``slots`` (V,), keeping the top-k table."""
        rows, votes = self._ids[slots], self._votes[slots]
        hit = rows == ids[:, None]
        has = hit.any(axis=1)
        col = np.argmax(hit, axis=1)
        self._votes[slots[has], col[has]] += 1
        # Absent id: take a free entry (0 votes) or replace a weakest entry with <= 1 vote.
        miss = ~has
        weak = np.argmin(votes, axis=1)
        replace = miss & (votes[np.arange(len(slots)), weak] <= 1)
        self._ids[slots[replace], weak[replace]] = ids[replace]
        self._votes[slots[replace], weak[replace]] = 1

    # ------------------------------------------------------------------ rendering

    def _render_lookup(self, geom: FrameGeometry) -> np.ndarray:
        """(H, W) int32 map ids by looking up each depth pixel's voxel (+ neighbourhood)."""
        out = np.zeros(geom.shape[0] * geom.shape[1], dtype=np.int32)
        pts, pix = backproject(geom.depth, geom.K, geom.camera_to_world)
        if len(pts) == 0 or self._n == 0:
            return out.reshape(geom.shape)
        coords = self._voxel_coords(pts)
        slots = self._find(self._keys(coords))
        miss = np.flatnonzero(slots < 0)
        if len(miss) and len(self._offsets):
            # Nearest existing voxel centre among the neighbours of the missing ones.
            nb = coords[miss][:, None, :] + self._offsets[None]          # (m, n, 3)
            nb_slots = self._find(self._keys(nb))                         # (m, n)
            centres = (nb + 0.5) * self.voxel_size
            dist = np.linalg.norm(centres - pts[miss][:, None, :], axis=-1)
            dist = np.where(nb_slots >= 0, dist, np.inf)
            best = np.argmin(dist, axis=1)
            slots[miss] = nb_slots[np.arange(len(miss)), best]
        out[pix] = self._labels_of(slots)
        return out.reshape(geom.shape)

    def _render_projection(self, geom: FrameGeometry) -> np.ndarray:
        """(H, W) int32 map ids by splatting voxel centres with a z-buffer.

        Each voxel covers a square of about its projected size (at least one pixel);
        with depth, voxels off the measured surface are dropped (hidden).
        """
        out = np.zeros(geom.shape[0] * geom.shape[1], dtype=np.int32)
        if self._n == 0:
            return out.reshape(geom.shape)
        centres = (self._coords[:self._n] + 0.5) * self.voxel_size
        labels = self._labels_of(np.arange(self._n))
        pix, z, keep = _project(centres, geom.K, geom.camera_to_world, geom.shape)
        ok = _depth_consistent(pix, z, geom.depth if geom.has_depth else None,
                               tol_abs=self.voxel_size, tol_rel=0.02)
        pix, z, keep = pix[ok], z[ok], keep[ok]
        h, w = geom.shape
        radius = np.clip(np.floor(0.5 * geom.K[0, 0] * self.voxel_size / z), 0, 3)
        all_pix, all_z, all_lab = [pix], [z], [labels[keep]]
        v0, u0 = np.divmod(pix, w)
        for r in range(1, 4):
            sel = radius >= r
            if not sel.any():
                break
            ring = [(dv, du) for dv in range(-r, r + 1) for du in range(-r, r + 1)
                    if max(abs(dv), abs(du)) == r]
            for dv, du in ring:
                v, u = v0[sel] + dv, u0[sel] + du
                inside = (v >= 0) & (v < h) & (u >= 0) & (u < w)
                all_pix.append((v * w + u)[inside])
                all_z.append(z[sel][inside])
                all_lab.append(labels[keep][sel][inside])
        pix, z, lab = (np.concatenate(a) for a in (all_pix, all_z, all_lab))
        win = _zbuffer(pix, z)
        out[pix[win]] = lab[win]
        return out.reshape(geom.shape)

    def predict(self, frame_geometry, method: str | None = None) -> np.ndarray:
        """Render the map's labels into a posed view.

        Args:
            frame_geometry: a FrameGeometry or SceneFrame-like object (K, camera_to_world,
                depth or rgb). With depth, each pixel looks up the voxel of its
                back-projected point (nearest neighbour within ``search_radius``);
                without depth the voxels are projected (z-buffered splats).
            method: "lookup" or "projection" to force one.

        Returns:
            (H, W) int32 map ids, 0 where the map has nothing.
        """
        geom = FrameGeometry.from_frame(frame_geometry)
        method = method or ("lookup" if geom.has_depth else "projection")
        if method == "lookup":
            if not geom.has_depth:
                raise ValueError("lookup rendering needs depth")
            return self._render_lookup(geom)
        return self._render_projection(geom)

    def predict_with_masks(self, frame, masks: MaskFrame) -> np.ndarray:
        """Label a (novel) view's own masks with map ids, InstanceLoc-style.

        The map is rendered into the view (:meth:`predict`) and each mask takes the most
        frequent non-zero map id among its pixels. Masks the map does not cover get fresh
        ids (from 2^30 up, never entered into the map). The map is not modified.

        Returns:
            (H, W) int32 ids.
        """
        labels = np.asarray(masks.labels).astype(np.int64)
        rendered = self.predict(frame)
        sel = (labels > 0) & (rendered > 0)
        mapping: dict[int, int] = {}
        if sel.any():
            m, r = labels[sel], rendered[sel].astype(np.int64)
            r_ids, r_inv = np.unique(r, return_inverse=True)
            pair, cnt = np.unique(m * len(r_ids) + r_inv, return_counts=True)
            pm, pr = pair // len(r_ids), r_ids[pair % len(r_ids)]
            order = np.lexsort((pr, -cnt, pm))
            lead = np.ones(len(order), dtype=bool)
            lead[1:] = pm[order][1:] != pm[order][:-1]
            mapping = dict(zip(pm[order][lead].tolist(), pr[order][lead].tolist()))
        for m_id in _mask_ids(labels).tolist():
            if m_id not in mapping:
                mapping[m_id] = self._next_novel_id
                self._next_novel_id += 1
        return _relabel(labels, mapping)

    # ------------------------------------------------------------------ per frame

    def _assign(self, geom, labels, masks):
        if self._n == 0:
            mapping: dict[int, int] = {}
        else:
            if self.association == "lookup" and geom.has_depth:
                rendered = self._render_lookup(geom)
            else:
                rendered = self._render_projection(geom)
            mapping = match_masks(labels, rendered, self.iou_threshold,
                                  self.containment_threshold, self.min_overlap_pixels)
        for m in _mask_ids(labels).tolist():
            if m not in mapping:
                mapping[m] = self._next_id
                self._next_id += 1
        ids = _relabel(labels, mapping)
        if geom.depth is not None:
            depth = np.where(ids > 0, geom.depth, 0)
            pts, pix = backproject(depth, geom.K, geom.camera_to_world)
            self._integrate(pts, ids.reshape(-1)[pix])
        if masks.embeddings is not None:
            self._add_embeddings(mapping, np.asarray(masks.embeddings, dtype=np.float64))
        return ids

    def _add_embeddings(self, mapping: dict[int, int], embeddings: np.ndarray) -> None:
        """Accumulate each mask's embedding (row mask id - 1) into its assigned id."""
        for m, i in mapping.items():
            if m - 1 >= len(embeddings):
                continue
            e = embeddings[m - 1]
            if i in self._emb_sum:
                self._emb_sum[i] = self._emb_sum[i] + e
                self._emb_count[i] += 1
            else:
                self._emb_sum[i] = e.copy()
                self._emb_count[i] = 1

    # ------------------------------------------------------------------ queries

    def instance_embeddings(self) -> dict[int, np.ndarray]:
        """{id: (D,) float32} mean of the embeddings of the masks given that id,
        L2-normalised (ready for cosine similarity with text embeddings)."""
        out = {}
        for i, s in self._emb_sum.items():
            mean = s / self._emb_count[i]
            norm = np.linalg.norm(mean)
            out[i] = (mean / norm if norm > 0 else mean).astype(np.float32)
        return out

    def instance_ids(self) -> np.ndarray:
        """Sorted ids that currently label at least one voxel."""
        ids = self._labels_of(np.arange(self._n))
        return np.unique(ids[ids > 0])

    def voxel_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxel centres (N, 3) float64 in the world frame and their ids (N,) int32."""
        centres = (self._coords[:self._n] + 0.5) * self.voxel_size
        return centres, self._labels_of(np.arange(self._n))
