"""3D instance map: associates each frame's class-agnostic masks with map instances.

The map is a sparse voxel grid (:class:`~panoptic_mapping.core.voxels.VoxelIndex`) whose
voxels hold a few (instance id, weight) votes. Per frame:

1. **Reference.** The map's current labels are rendered into the view at the frame's 3D
   points (its depth back-projected); the mapper may override the reference with the
   field's rendering (:meth:`InstanceMap.associate` takes any reference image).
2. **Association** of every mask m with the reference R, from the overlap counts
   o(m, i) = |m ∩ R_i| and each id's visible size r(i). A mask *owns* id i when
   o(m, i) >= ``cover_fraction`` * r(i) (at most one owner per id):
   * a mask owning one id takes it (stray fragments of other ids under it included);
   * a mask owning several established (confirmed) ids glued touching objects together
     (a front-end merge): those pixels keep their reference ids; nothing is merged on one
     view's word. Unconfirmed ids it owns are absorbed into its largest id;
   * a mask owning nothing is new when little of it is mapped (coverage <
     ``new_coverage``); otherwise it joins its plurality id, competing with that id's
     owner, if any, for it:
   * *one mask per id* — when several masks join one id, the one overlapping it most
     keeps it; each other one moves to a fragment id it owns (only off a young id and
     across a depth edge: an object seen alone after glued first views), the runner-up
     id its voxels voted for, or a new id. The id may hold several objects (glued
     together when first seen, or a small object absorbed by its support). A new id of
     comparable size split off an id that has been seen in more than ``settled_frames``
     frames is a *pending part*: outputs show it as the id it came from until it is seen
     apart from it in ``release_min_apart`` views (an object glued at first sight), or
     it merges back (a front-end split of one object, undone by the merge evidence
     below) — so a split does not change what id a settled object is shown with. A part
     split off a young id is an object at once: one or two glued views are no evidence
     against an apart view, and releasing it later would change the id of an object seen
     many times;
   * an owned id that is only a sliver of the mask (``major_share``: a small object the
     front-end missed and swallowed into its support) keeps its own pixels and does not
     decide the mask's id;
   * otherwise the mask is ambiguous and joins its plurality id.
3. **Evidence for merging ids.** For touching ids i, j visible in the view, the frame
   says "together" when one mask holds most of both, "apart" when different masks speak
   for them (each holds most of its id, or has it as its plurality id: an id that glued
   views spread over two objects is held by no mask) and their boundary in the view is
   a depth edge (``apart_edge_share``; a front-end cut across a wall is no evidence of
   two walls). A real object split into two map ids is together in most views
   (front-end splits are view-dependent); two touching objects are apart in most views.
   Different masks meeting across (almost) no depth edge (``smooth_edge_share``) are
   "smooth" evidence of one surface the front-end cut: a real segmenter splits a
   textured object or a tiled floor the same way in every view, so no view ever holds
   both in one mask, and only 3D says they are one. Such a piece also keeps the id of
   the surface it continues instead of being displaced by 'one mask per id'.
   Ids are merged when support = together + ``smooth_weight`` * smooth >=
   ``merge_min_together`` and support >= ``merge_ratio`` * apart; the id holding more
   vote weight survives (what
   most of the object is already shown as, so the merge does not change it). Ids whose
   mean mask embeddings disagree (cosine < ``merge_min_cosine``) never merge: a small
   object that front-end merges glue to its support is 'together' with it in many views.
4. **Integration.** Each voxel gets one vote per frame for the label most of its pixels
   carry (close-ups do not outvote distant views); pixels on a mask's edge vote with
   half weight and are no negative evidence.
5. **Confirmation.** An id counts (in renderings, exports, InstanceLoc) once masks joined
   it in ``confirm_frames`` frames. An id visible in ``ghost_visible_frames`` frames but
   not confirmed is a ghost (a spurious fragment) and is deleted.

Rendering looks a point up in its voxel, or the nearest voxel within ``search_radius``
(wider where the pixel's footprint on the surface exceeds a voxel: far, small objects).

Ids are open-ended integers starting at 1, never reused.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from panoptic_mapping.core.geometry import backproject, depth_edges, pack_voxel_keys, voxel_coords
from panoptic_mapping.core.map.voxels import VoxelIndex
from panoptic_mapping.params import param

__all__ = ["InstanceConfig", "InstanceMap", "InstanceFill", "AssociationResult", "vote_masks"]

class InstanceFill(Protocol):
    """Labels for observed surface points whose voxels hold no eligible vote.

    The map does not know where such labels come from (the mapper passes the field in);
    it only asks, and only about surfaces it has observed.
    """

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (M, 3) -> ids (M,) int32 (0 = no opinion) and confidences (M,) float32."""


@dataclass
class InstanceConfig:
    """Association and fusion of 2D masks into 3D instances."""

    voxel_size_m: float = param(0.01, "Edge of the instance voxels [m].", minimum=0.001)
    votes_per_voxel: int = param(4, "Instance votes kept per voxel.", minimum=1, maximum=16)
    cover_fraction: float = param(0.5, "A mask owns a map id when it covers this share of "
                                  "the id's visible pixels.", minimum=0.5, maximum=1.0)
    major_share: float = param(0.25, "An id a mask owns defines the mask only when it is "
                               "at least this share of the mask's mapped pixels; smaller owned "
                               "ids keep their own pixels.", minimum=0.0, maximum=1.0)
    new_coverage: float = param(0.3, "A mask whose pixels are mapped less than this share "
                                "becomes a new instance.", minimum=0.0, maximum=1.0)
    min_pixels: int = param(6, "Overlaps smaller than this many pixels (or a quarter of "
                            "a smaller mask, at least 2) are ignored.",
                            minimum=1)
    merge_min_together: int = param(4, "Views in which one mask held both ids before two "
                                    "ids may merge.", minimum=1)
    merge_ratio: float = param(2.0, "Ids merge when 'together' views outnumber 'apart' "
                               "views by this factor.", minimum=0.0)
    merge_min_cosine: float = param(0.75, "Ids whose mean mask embeddings have a lower cosine "
                                    "similarity are different things and never merge.",
                                    minimum=-1.0, maximum=1.0)
    smooth_weight: float = param(1.0, "How much a 'smooth' view counts towards merging: two "
                                 "touching ids in different masks whose image boundary has "
                                 "(almost) no depth edge (share < smooth_edge_share) are one "
                                 "surface cut by the front-end, the error a real segmenter "
                                 "makes the same way in every view; 0 ignores such views.",
                                 minimum=0.0)
    smooth_edge_share: float = param(0.1, "A boundary with less than this share of its "
                                     "length on a depth edge is 'smooth' (see "
                                     "smooth_weight).", minimum=0.0, maximum=1.0)
    apart_edge_share: float = param(0.3, "'Apart' evidence for two touching ids counts only "
                                    "where at least this share of their image boundary lies "
                                    "on a depth edge (a front-end cut across one surface is "
                                    "no evidence of two objects).", minimum=0.0, maximum=1.0)
    depth_edge_curvature: float = param(0.02, "A pixel is on a depth edge where the second "
                                        "difference of inverse depth exceeds this share of "
                                        "its inverse depth (jumps and creases).", minimum=0.0)
    release_min_apart: int = param(6, "A part split off an id (see 'one mask per id') "
                                   "shows as that id until seen apart from it in this many "
                                   "views, and apart >= merge_ratio * together.", minimum=1)
    part_min_share: float = param(0.1, "A displaced mask at least this share of the id's "
                                  "visible size is a pending part of it; a smaller one is "
                                  "a new object.", minimum=0.0, maximum=1.0)
    settled_frames: int = param(4, "A part split off an id seen in at most this many frames "
                                "is an object at once, not a pending part.", minimum=0)
    confirm_frames: int = param(2, "Frames in which masks joined an id before it counts.",
                                minimum=1)
    ghost_visible_frames: int = param(5, "An unconfirmed id visible this often is deleted.",
                                      minimum=1)
    search_radius: int = param(1, "Voxels searched around a point whose own voxel is empty.",
                               minimum=0, maximum=2)
    max_search_radius: int = param(2, "Widest search (voxels) for points whose pixel covers "
                                   "more than a voxel on the surface (far surfaces).",
                                   minimum=0, maximum=4)


@dataclass
class AssociationResult:
    """What associating one frame's masks produced.

    Attributes:
        labels: (H, W) int32 map ids per pixel (0 = none), as assigned.
        mask_to_id: mask id -> map id for masks that joined or created one id.
        new_ids: ids created by this frame.
        front_end_merges: masks found to glue established ids together.
    """

    labels: np.ndarray
    mask_to_id: dict[int, int] = field(default_factory=dict)
    new_ids: list[int] = field(default_factory=list)
    front_end_merges: int = 0
    displaced: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (pixels, old id)


class InstanceMap:
    """Voxel instance votes, per-instance statistics and the association logic.

    Thread safety: every public method takes the map's lock.
    """

    def __init__(self, cfg: InstanceConfig | None = None, embedding_dim: int | None = None):
        self.cfg = cfg or InstanceConfig()
        self._lock = threading.RLock()
        self._index = VoxelIndex()
        k = self.cfg.votes_per_voxel
        self._vote_ids = np.zeros((0, k), dtype=np.int32)
        self._vote_w = np.zeros((0, k), dtype=np.float32)
        self._next_id = 1
        # per-id statistics, indexed by id (grown in blocks)
        self._alive = np.zeros(1, dtype=bool)
        self._assigned = np.zeros(1, dtype=np.int32)  # frames in which masks joined the id
        self._visible = np.zeros(1, dtype=np.int32)  # frames in which it was rendered
        self._first_frame = np.zeros(1, dtype=np.int64)
        self._parent = np.zeros(1, dtype=np.int64)  # id a pending part is shown as (0: none)
        self._emb_dim = embedding_dim
        self._emb = np.zeros((1, embedding_dim or 0), dtype=np.float64)
        # (i, j) -> [together, apart, smooth] view counts (see _record_pair_evidence)
        self._pairs: dict[tuple[int, int], list[int]] = {}
        self._alias: dict[int, int] = {}
        self.frames_integrated = 0
        self.merges: list[tuple[int, int]] = []  # (absorbed, survivor), in order

    # ------------------------------------------------------------------ ids

    def _grow_ids(self, upto: int) -> None:
        n = self._alive.size
        if upto < n:
            return
        new = max(upto + 1, 2 * n)
        pad = new - n
        self._alive = np.concatenate([self._alive, np.zeros(pad, bool)])
        self._assigned = np.concatenate([self._assigned, np.zeros(pad, np.int32)])
        self._visible = np.concatenate([self._visible, np.zeros(pad, np.int32)])
        self._first_frame = np.concatenate([self._first_frame, np.zeros(pad, np.int64)])
        self._parent = np.concatenate([self._parent, np.zeros(pad, np.int64)])
        self._emb = np.concatenate([self._emb, np.zeros((pad, self._emb.shape[1]))])

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        self._grow_ids(i)
        self._alive[i] = True
        self._first_frame[i] = self.frames_integrated
        return i

    def resolve(self, i: int) -> int:
        """The id that ``i`` survives as after merges (``i`` itself if never merged)."""
        while i in self._alias:
            i = self._alias[i]
        return i

    def confirmed_ids(self) -> np.ndarray:
        """Ids that count in outputs: confirmed, alive, and not a pending part of another."""
        with self._lock:
            ok = self._alive & (self._assigned >= self.cfg.confirm_frames) & (self._parent == 0)
            return np.flatnonzero(ok)

    @property
    def num_voxels(self) -> int:
        return len(self._index)

    # ------------------------------------------------------------------ rendering

    def _slots_of(self, points: np.ndarray, footprint: np.ndarray | None = None
                  ) -> np.ndarray:
        """(N,) voxel slots of points, searching the neighbourhood where empty (-1: none).

        Args:
            footprint: (N,) size of each point's pixel on the surface [m]. Where a pixel is
                larger than a voxel (far surfaces), one view's points leave gaps between the
                voxels another view filled: the search widens to the footprint, up to
                ``max_search_radius`` voxels.
        """
        coords = voxel_coords(points, self.cfg.voxel_size_m)
        slots = self._index.lookup(pack_voxel_keys(coords))
        self._search(points, coords, slots, np.flatnonzero(slots < 0), self.cfg.search_radius)
        if footprint is not None:
            need = np.ceil(footprint / self.cfg.voxel_size_m).astype(np.int64)
            for r in range(self.cfg.search_radius + 1, self.cfg.max_search_radius + 1):
                # points still missing have nothing within r - 1: search the shell only
                self._search(points, coords, slots, np.flatnonzero((slots < 0) & (need >= r)),
                             r, inner=r - 1)
        return slots

    def _search(self, points: np.ndarray, coords: np.ndarray, slots: np.ndarray,
                miss: np.ndarray, r: int, inner: int = 0) -> None:
        """Fill ``slots[miss]`` with the nearest existing voxel at a Chebyshev distance
        in (``inner``, ``r``] voxels."""
        if r > 0 and miss.size and len(self._index):
            rng = np.arange(-r, r + 1)
            offsets = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3)
            offsets = offsets[np.abs(offsets).max(1) > inner]
            cand_coords = coords[miss, None, :] + offsets[None]  # (M, O, 3)
            cand = self._index.lookup(pack_voxel_keys(cand_coords))
            # the existing neighbour whose centre is nearest the point, not the first found
            centres = (cand_coords + 0.5) * self.cfg.voxel_size_m
            dist = np.linalg.norm(centres - points[miss, None, :], axis=-1)
            dist[cand < 0] = np.inf
            best = np.argmin(dist, axis=1)
            found = np.isfinite(dist[np.arange(miss.size), best])
            slots[miss[found]] = cand[found, best[found]]

    def _voxel_labels(self, slots: np.ndarray, confirmed_only: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidence) of voxel slots; 0 / 0.0 for slot -1 or no eligible vote."""
        labels = np.zeros(slots.shape, dtype=np.int32)
        conf = np.zeros(slots.shape, dtype=np.float32)
        ok = slots >= 0
        if not ok.any():
            return labels, conf
        ids = self._vote_ids[slots[ok]]
        w = self._vote_w[slots[ok]].copy()
        if confirmed_only:
            # outputs show pending parts as their parent: their votes count for it
            ids = self._display_lut()[ids]
            w = (w[:, None, :] * (ids[:, :, None] == ids[:, None, :])).sum(-1)
            eligible = (ids > 0) & (self._assigned[ids] >= self.cfg.confirm_frames)
        else:
            eligible = self._alive[ids]
        w[~eligible | (ids == 0)] = 0.0
        best = np.argmax(w, axis=1)
        rows = np.arange(best.size)
        total = np.maximum(self._vote_w[slots[ok]].sum(1), 1e-9)
        top = w[rows, best]
        labels[ok] = np.where(top > 0, ids[rows, best], 0)
        conf[ok] = top / total
        return labels, conf

    def render_points(self, points: np.ndarray, confirmed_only: bool = True,
                      footprint: np.ndarray | None = None, fill: InstanceFill | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Map ids (N,) int32 and vote confidences (N,) in [0, 1] at world points (N, 3).

        Args:
            footprint: (N,) pixel size on the surface [m] (see :meth:`_slots_of`).
            fill: labels points on observed voxels that hold no eligible vote: points
                (M, 3) -> ids (M,) (0: no opinion) and confidences (M,); the mapper passes
                its field. Unobserved points stay 0: the fill interpolates, never
                extrapolates into unseen territory.
        """
        with self._lock:
            return self._labels(points, self._slots_of(points, footprint), confirmed_only,
                                fill)

    def _labels(self, points: np.ndarray, slots: np.ndarray, confirmed_only: bool,
                fill: InstanceFill | None) -> tuple[np.ndarray, np.ndarray]:
        """Voxel labels and confidences of points (N, 3) at their slots (N,), filled."""
        ids, conf = self._voxel_labels(slots, confirmed_only)
        hole = (ids == 0) & (slots >= 0)
        if fill is not None and hole.any():
            ids[hole], conf[hole] = fill(points[hole])
        return ids, conf

    def render_view(self, depth: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray,
                    confirmed_only: bool = True, fill: InstanceFill | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) int32 ids and (H, W) float32 confidences at a view's measured depth
        (``fill``: see :meth:`render_points`)."""
        points, flat = backproject(depth, K, camera_to_world)
        ids, conf = self.render_points(points, confirmed_only,
                                       pixel_footprint(depth, K, flat), fill)
        out = np.zeros(depth.size, dtype=np.int32)
        out_c = np.zeros(depth.size, dtype=np.float32)
        out[flat], out_c[flat] = ids, conf
        return out.reshape(depth.shape), out_c.reshape(depth.shape)

    # ------------------------------------------------------------------ association

    def associate(self, masks: np.ndarray, reference: np.ndarray, valid: np.ndarray
                  ) -> AssociationResult:
        """Associate masks (H, W) with reference ids (H, W) over valid pixels (H, W) bool.

        Creates ids for new masks and records merge evidence; does not integrate votes.
        """
        with self._lock:
            return self._associate(masks.astype(np.int64), reference.astype(np.int64), valid)

    def _associate(self, masks: np.ndarray, ref: np.ndarray, valid: np.ndarray,
                   slots: np.ndarray | None = None, edges: np.ndarray | None = None
                   ) -> AssociationResult:
        cfg = self.cfg
        m_all, r_all = masks[valid], ref[valid]
        n_masks = int(masks.max(initial=0))
        n_ids = int(max(ref.max(initial=0), 0)) + 1
        n_m = np.bincount(m_all, minlength=n_masks + 1)
        r_vis = np.bincount(r_all, minlength=n_ids)
        sel = (m_all > 0) & (r_all > 0)
        pair_keys, o = np.unique(m_all[sel] * n_ids + r_all[sel], return_counts=True)
        pm, pi = np.divmod(pair_keys, n_ids)
        # a far, small object (a 10-px mug) is rendered with a few pixels of its own id
        # among stray ones: for small masks an overlap counts from a quarter of the mask
        # (without it every view of such an object makes a new id that is never confirmed,
        # so it is never labelled: BENCHMARKS.md, room seed 1)
        least = np.clip(np.ceil(0.25 * n_m), 2, cfg.min_pixels)
        owner = self._owners(pm, pi, o, r_vis, least[pm])
        owned: dict[int, list[int]] = {}
        for i, m in owner.items():
            owned.setdefault(m, []).append(i)
        result = AssociationResult(labels=np.zeros(masks.shape, dtype=np.int32))
        joined: dict[int, list[tuple[int, int]]] = {}  # id -> [(overlap, mask)] of joins
        for m in range(1, n_masks + 1):
            if n_m[m] < cfg.min_pixels:
                continue
            rows = (pm == m) & (o >= least[m])
            self._assign_mask(m, pi[rows], o[rows], int(n_m[m]), owned.get(m, []), owner,
                              masks, ref, valid, result, joined)
        self._divide(joined, masks, valid, slots, result, r_vis, owned, edges)
        self._contested(result, masks, ref, valid, owner)
        self._record_pair_evidence(masks, ref, valid, pm, pi, o, r_vis, edges)
        return result

    @staticmethod
    def _contested(result: AssociationResult, masks: np.ndarray, ref: np.ndarray,
                   valid: np.ndarray, owner: dict[int, int]) -> None:
        """Pixels labelled A whose reference id B another mask owns: evidence against B.

        Nested and touching objects share boundary voxels whose votes stay contested;
        withdrawing a vote for the id the frame placed elsewhere settles them.
        """
        labels = result.labels
        owned = np.zeros(int(ref.max(initial=0)) + 1, dtype=bool)
        owned[[i for i in owner if i < owned.size]] = True
        # a mask's edge pixels are no evidence: a front-end's edges wander by a pixel
        against = (valid & (labels > 0) & (ref > 0) & (labels != ref) & owned[ref]
                   & _interior(masks))
        for old in np.unique(ref[against]):
            result.displaced.append((against & (ref == old), int(old)))

    def _owners(self, pm: np.ndarray, pi: np.ndarray, o: np.ndarray, r_vis: np.ndarray,
                least: np.ndarray | int, share: float | None = None) -> dict[int, int]:
        """id -> the mask covering at least ``share`` (default ``cover_fraction``) of its
        visible pixels, largest overlap first (overlaps (K,) ``o`` of at least ``least``
        pixels: (K,) or one number)."""
        share = self.cfg.cover_fraction if share is None else share
        owner: dict[int, int] = {}
        ok = (o >= least) & (o >= share * r_vis[pi])
        for m, i, c in sorted(zip(pm[ok], pi[ok], o[ok]), key=lambda t: -t[2]):
            owner.setdefault(int(i), int(m))
        return owner

    def _assign_mask(self, m: int, ids: np.ndarray, counts: np.ndarray, n: int,
                     owns: list[int], owner: dict[int, int], masks: np.ndarray,
                     ref: np.ndarray, valid: np.ndarray, result: AssociationResult,
                     joined: dict[int, list[tuple[int, int]]]) -> None:
        """Label one mask's pixels (see the module doc for the cases)."""
        in_mask = valid & (masks == m)
        labels = result.labels
        by_size = {int(i): int(c) for i, c in zip(ids, counts)}
        mapped = max(int(counts.sum()), 1)
        # An owned id that is only a sliver of the mask (a small object the front-end
        # missed and swallowed into its support) does not define the mask.
        major = [i for i in owns if by_size.get(i, 0) >= self.cfg.major_share * mapped]
        minor = [i for i in owns if i not in major]
        protected = [i for i in minor if self._assigned[i] >= self.cfg.confirm_frames]
        if major:
            # Only established ids are protected from one view's glue; a fresh id (perhaps
            # a spurious fragment) under a mask that owns an established one is absorbed.
            # (a pending part is a piece of its parent, not an object of its own yet)
            established = [i for i in major if self._assigned[i] >= self.cfg.confirm_frames
                           and self._parent[i] == 0]
            glued = established if len(established) >= 2 else []
            largest = max(established or major, key=lambda i: by_size.get(i, 0))
            keep = in_mask & np.isin(ref, glued + protected)
            labels[keep] = ref[keep]
            labels[in_mask & ~keep] = largest
            if glued:
                result.front_end_merges += 1
            else:
                result.mask_to_id[m] = int(largest)
            return
        keep = in_mask & np.isin(ref, protected)
        coverage = counts.sum() / n if ids.size else 0.0
        if coverage < self.cfg.new_coverage:
            new = self._new_id()
            labels[in_mask] = new
            labels[keep] = ref[keep]
            result.mask_to_id[m] = new
            result.new_ids.append(new)
            return
        rest = ~np.isin(ids, protected)
        best = int(ids[rest][np.argmax(counts[rest])]) if rest.any() else int(ids[np.argmax(counts)])
        labels[in_mask] = best
        labels[keep] = ref[keep]
        result.mask_to_id[m] = best
        # a part of an id another mask owns competes with that owner in _divide
        if best in owner:
            joined.setdefault(best, []).append((1 << 40, owner[best]))
        joined.setdefault(best, []).append((by_size.get(best, 0), m))

    def _divide(self, joined: dict[int, list[tuple[int, int]]], masks: np.ndarray,
                valid: np.ndarray, slots: np.ndarray | None, result: AssociationResult,
                r_vis: np.ndarray, owned: dict[int, list[int]] | None = None,
                edges: np.ndarray | None = None) -> None:
        """Keep one joining mask per id; move the others to a fragment they own (see
        :meth:`_owned_fragment`), their runner-up, or a new id.

        A runner-up must be unclaimed: an id another mask of this frame holds (the table
        under a small object) is no place for a displaced part. A new id for a part of
        comparable size (``part_min_share`` of the id's visible pixels) is a pending part
        of the id (see :meth:`_release_parts`); a much smaller one is an object of its own
        that its support had absorbed.

        Args:
            r_vis: (n_ids,) visible pixels per reference id in this frame.
            owned: mask -> the ids it owns; edges: (H, W) bool depth edges (None: no depth).
        """
        claimed = set(int(i) for i in np.unique(result.labels)) - {0}
        for i, parts in joined.items():
            parts = sorted(set(parts), reverse=True)
            if len(parts) < 2:
                continue
            for _, m in parts[1:]:
                in_mask = valid & (masks == m) & (result.labels == i)
                if self._smooth_piece(in_mask, valid & (result.labels == i) & ~in_mask,
                                      edges):
                    continue  # a piece of the same surface, cut by the front-end
                alt = self._owned_fragment(i, (owned or {}).get(m, []), in_mask,
                                           valid & (result.labels == i), claimed, r_vis, edges)
                if alt == 0 and slots is not None:
                    alt = self._runner_up(slots, in_mask, claimed)
                if alt == 0:
                    alt = self._new_id()
                    if (in_mask.sum() >= self.cfg.part_min_share * r_vis[i]
                            and self._visible[i] > self.cfg.settled_frames):
                        self._parent[alt] = i
                    result.new_ids.append(alt)
                result.labels[in_mask] = alt
                result.mask_to_id[m] = alt
                result.displaced.append((in_mask, i))
                claimed.add(alt)

    def _smooth_piece(self, part: np.ndarray, rest: np.ndarray, edges: np.ndarray | None
                      ) -> bool:
        """Whether a mask joining an id another mask keeps meets the id's other pixels
        across no depth edge: one surface the front-end cut (it cuts it in every view),
        which stays one id instead of spawning a new one in every view. Only with 'smooth'
        evidence on (``smooth_weight`` > 0) and depth.

        Args:
            part, rest: (H, W) bool pixels of the mask / of the id's other pixels.
        """
        if edges is None or self.cfg.smooth_weight <= 0:
            return False
        two = np.where(part, 2, np.where(rest, 1, 0))
        contact, on_edge = _boundaries(two, edges).get((1, 2), (0, 1.0))
        return contact >= self._min_contact and on_edge < self.cfg.smooth_edge_share

    def _owned_fragment(self, i: int, owns: list[int], part: np.ndarray, kept: np.ndarray,
                        claimed: set[int], r_vis: np.ndarray, edges: np.ndarray | None
                        ) -> int:
        """The id a mask displaced from young id ``i`` takes because it owns it (or 0).

        An object glued to its neighbour in the first views and then seen on its own has
        left fragments (ids made from earlier splits of it) that its mask owns now; taking
        the largest keeps its surface under one id instead of starting a third. Only for a
        young ``i`` (a settled one gets a pending part) and where the frame shows a depth
        edge between the displaced ``part`` and the ``kept`` pixels of ``i``: across a cut
        of one surface the fragment is a piece of ``i``, and confirming it would split it.

        Args:
            part, kept: (H, W) bool pixels of the displaced mask / of the mask keeping ``i``.
        """
        if self._visible[i] > self.cfg.settled_frames:
            return 0
        mine = [j for j in owns if j != i and j not in claimed and self._alive[j]]
        if not mine:
            return 0
        two = np.where(part, 2, np.where(kept, 1, 0))
        contact, on_edge = _boundaries(two, edges).get((1, 2), (0, 1.0))
        if contact >= self._min_contact and on_edge < self.cfg.apart_edge_share:
            return 0
        return max(mine, key=lambda j: r_vis[j])

    def _runner_up(self, slots: np.ndarray, in_mask: np.ndarray, exclude: set[int]) -> int:
        """The alive id not in ``exclude`` with most vote weight under a mask (or 0).

        Args:
            slots: (H, W) voxel slot per pixel (-1: none).
        """
        s = slots[in_mask]
        s = s[s >= 0]
        if s.size == 0:
            return 0
        ids = self._vote_ids[s].ravel()
        w = self._vote_w[s].ravel()
        ok = (ids > 0) & self._alive[ids] & ~np.isin(ids, list(exclude))
        if not ok.any():
            return 0
        totals = np.bincount(ids[ok], weights=w[ok])
        best = int(np.argmax(totals))
        # a presence under most of the mask, not a stray boundary vote
        return best if totals[best] >= 0.5 * np.unique(s).size else 0

    def _record_pair_evidence(self, masks, ref, valid, pm, pi, o, r_vis,
                              edges: np.ndarray | None = None) -> None:
        """Count 'together' / 'apart' for touching reference ids (see module doc).

        Args:
            edges: (H, W) bool depth edges of the view (None: no depth, no gate).
        """
        cfg = self.cfg
        owner, claim = self._claims(pm, pi, o, r_vis)
        if len(claim) < 2:
            return
        for (i, j), (contact, on_edge) in _boundaries(np.where(valid, ref, 0), edges).items():
            if contact < self._min_contact or i not in claim or j not in claim:
                continue
            together = i in owner and j in owner and owner[i] == owner[j]
            if not together and claim[i] == claim[j]:
                continue  # one mask over both without holding most of each: no evidence
            # a front-end cut across one surface is no evidence of two objects: two objects
            # meet at a depth jump or crease (measured on the tabletop: 92 % of object
            # boundaries against 42 % of the front-end's cuts reach a 0.3 share); a cut
            # with no edge at all is evidence of one surface, whatever every view's masks
            # say (a segmenter that splits a textured object splits it in every view)
            if together:
                kind = 0
            elif on_edge >= cfg.apart_edge_share:
                kind = 1
            elif on_edge < cfg.smooth_edge_share:
                kind = 2
            else:
                continue
            self._pairs.setdefault((i, j), [0, 0, 0])[kind] += 1

    @property
    def _min_contact(self) -> int:
        """Pixel edges two ids must share in a view to count as touching."""
        return self.cfg.min_pixels // 2 + 1

    def _claims(self, pm: np.ndarray, pi: np.ndarray, o: np.ndarray, r_vis: np.ndarray
                ) -> tuple[dict[int, int], dict[int, int]]:
        """Which mask speaks for each reference id in this view.

        Returns:
            owner: id -> the mask holding at least half of its visible pixels (largest
                overlap first); claim: owner, or else the mask (largest overlap) whose
                plurality id it is. 'Together' needs owners: one mask holding most of both
                ids. 'Apart' takes claims: an id that early glued views spread over two
                objects is owned by no mask, and without them it would collect no evidence
                against a merge while every glued view counts for one (two touching jenga
                blocks, tabletop seed 4).
        """
        keep = o >= self.cfg.min_pixels
        pm, pi, o = pm[keep], pi[keep], o[keep]
        owner = self._owners(pm, pi, o, r_vis, self.cfg.min_pixels, share=0.5)
        claim = dict(owner)
        plurality: dict[int, tuple[int, int]] = {}  # mask -> (id, overlap)
        for m, i, c in zip(pm.tolist(), pi.tolist(), o.tolist()):
            if c > plurality.get(m, (0, 0))[1]:
                plurality[m] = (i, c)
        largest: dict[int, int] = {}
        for m, (i, c) in plurality.items():
            if i not in owner and c > largest.get(i, 0):
                claim[i], largest[i] = m, c
        return owner, claim

    def _merge_ready_pairs(self) -> list[tuple[int, int]]:
        cfg = self.cfg
        ready = []
        for (i, j), (tog, apart, smooth) in self._pairs.items():
            support = tog + cfg.smooth_weight * smooth
            if (support >= cfg.merge_min_together and support >= cfg.merge_ratio * apart
                    and self._similar(i, j)):
                ready.append((i, j))
        return ready

    def _similar(self, i: int, j: int) -> bool:
        """Whether two ids' mean embeddings do not contradict one object (True without
        embeddings): a small object glued to its support by front-end merges is together
        with it in many views, but the two look like different things."""
        a, b = self._emb[i], self._emb[j]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return True
        return float(a @ b) / (na * nb) >= self.cfg.merge_min_cosine

    def _merge(self, a: int, b: int) -> int:
        """Merge ids a and b; the one with more vote weight (then the one masks joined in
        more frames, then the older) survives."""
        a, b = self.resolve(a), self.resolve(b)
        if a == b:
            return a
        # what most of the object is shown as survives (the id most of its voxels hold),
        # so the merge does not change the id it is seen with
        mass = np.bincount(self._vote_ids.ravel(), weights=self._vote_w.ravel(),
                           minlength=max(a, b) + 1)
        key = lambda i: (mass[i], self._assigned[i], -i)  # noqa: E731
        survivor, absorbed = (a, b) if key(a) >= key(b) else (b, a)
        self._alias[absorbed] = survivor
        self._alive[absorbed] = False
        self._assigned[survivor] += self._assigned[absorbed]
        self._visible[survivor] = max(self._visible[survivor], self._visible[absorbed])
        self._emb[survivor] += self._emb[absorbed]
        if self.resolve(int(self._parent[survivor])) == survivor:
            self._parent[survivor] = 0
        self._vote_ids[self._vote_ids == absorbed] = survivor
        self._dedupe_votes()
        merged_pairs: dict[tuple[int, int], list[int]] = {}
        for (i, j), stats in self._pairs.items():
            i, j = self.resolve(i), self.resolve(j)
            if i == j:
                continue
            acc = merged_pairs.setdefault((min(i, j), max(i, j)), [0, 0, 0])
            for k in range(3):
                acc[k] += stats[k]
        self._pairs = merged_pairs
        self.merges.append((absorbed, survivor))
        return survivor

    def _dedupe_votes(self) -> None:
        """Sum the weights of repeated ids within a voxel's vote list (after a merge)."""
        ids, w = self._vote_ids, self._vote_w
        k = ids.shape[1]
        for a in range(k):
            for b in range(a + 1, k):
                same = (ids[:, a] == ids[:, b]) & (ids[:, a] != 0)
                if same.any():
                    w[same, a] += w[same, b]
                    w[same, b] = 0.0
                    ids[same, b] = 0

    # ------------------------------------------------------------------ integration

    def integrate(self, points: np.ndarray, point_labels: np.ndarray, weight: float = 1.0
                  ) -> None:
        """One vote per voxel for the label most of its points carry.

        Args:
            points: (P, 3) world points; point_labels: (P,) int map ids (0 = no vote).
        """
        with self._lock:
            keep = point_labels > 0
            if not keep.any():
                return
            slots = self._index.insert(pack_voxel_keys(voxel_coords(points[keep],
                                                              self.cfg.voxel_size_m)))
            self._grow_voxels(len(self._index))
            lab = point_labels[keep].astype(np.int64)
            # majority label per voxel in this frame
            pairs, counts = np.unique(slots * (self._next_id + 1) + lab, return_counts=True)
            s, l = np.divmod(pairs, self._next_id + 1)
            order = np.lexsort((-counts, s))
            first = np.ones(order.size, dtype=bool)
            first[1:] = s[order][1:] != s[order][:-1]
            chosen = order[first]
            self._vote(s[chosen], l[chosen].astype(np.int32), weight)

    def _unvote(self, slots: np.ndarray, old: int) -> None:
        """Withdraw one vote for ``old`` from voxels a frame showed to be something else.

        Only where another id holds weight: negative evidence moves a voxel to the id the
        frame saw, it never empties a surface the map has observed.
        """
        s = np.unique(slots[slots >= 0])
        hit = self._vote_ids[s] == old
        w = self._vote_w[s]
        others = (w * ~hit).sum(1, keepdims=True) > 0
        hit &= others
        w[hit] = np.maximum(w[hit] - 1.0, 0.0)
        self._vote_w[s] = w

    def _grow_voxels(self, n: int) -> None:
        if n > self._vote_ids.shape[0]:
            pad = n - self._vote_ids.shape[0]
            k = self.cfg.votes_per_voxel
            self._vote_ids = np.concatenate([self._vote_ids, np.zeros((pad, k), np.int32)])
            self._vote_w = np.concatenate([self._vote_w, np.zeros((pad, k), np.float32)])

    def _vote(self, slots: np.ndarray, labels: np.ndarray, weight: float) -> None:
        ids = self._vote_ids[slots]
        w = self._vote_w[slots]
        hit = ids == labels[:, None]
        has = hit.any(1)
        rows = np.arange(slots.size)
        col = np.where(has, np.argmax(hit, 1), np.argmin(w, 1))
        # a new id only displaces an entry holding at most one vote's weight
        replace = ~has & (w[rows, col] <= weight)
        add = has | replace
        ids[rows[replace], col[replace]] = labels[replace]
        w[rows[replace], col[replace]] = 0.0
        w[rows[add], col[add]] += weight
        self._vote_ids[slots] = ids
        self._vote_w[slots] = w

    # ------------------------------------------------------------------ per frame

    def process_frame(self, masks: np.ndarray, depth: np.ndarray, K: np.ndarray,
                      camera_to_world: np.ndarray, embeddings: np.ndarray | None = None,
                      reference: np.ndarray | None = None, fill: InstanceFill | None = None
                      ) -> AssociationResult:
        """Associate, integrate and update statistics for one frame with depth.

        Args:
            masks: (H, W) int mask ids (0 = none); depth: (H, W) metres (0 = unknown).
            embeddings: (M, D) per-mask embeddings, accumulated per id (pixel-weighted).
            reference: (H, W) ids to associate against instead of the voxel rendering.
            fill: without ``reference``: fills the voxel rendering that serves as the
                reference (see :meth:`render_points`).
        Returns:
            The association; ``labels`` are the frame's online ids.
        """
        with self._lock:
            valid = depth > 0
            points, flat = backproject(depth, K, camera_to_world)
            slots_flat = self._slots_of(points, pixel_footprint(depth, K, flat))
            slots = np.full(depth.size, -1, dtype=np.int64)
            slots[flat] = slots_flat
            slots = slots.reshape(depth.shape)
            if reference is None:
                ids, _ = self._labels(points, slots_flat, False, fill)
                reference = np.zeros(depth.size, dtype=np.int32)
                reference[flat] = ids
                reference = reference.reshape(depth.shape)
            reference = self.id_lut()[reference]
            self._count_visible(reference, valid)
            result = self._associate(masks.astype(np.int64), reference, valid, slots,
                                     depth_edges(depth, self.cfg.depth_edge_curvature))
            self._count_assigned(result, masks, embeddings)
            lab = result.labels.reshape(-1)[flat]
            # a mask's edge wanders by a pixel from frame to frame (and at 160x120 a pixel
            # is about a voxel): edge pixels vote with half weight, so a boundary voxel
            # goes to the object whose interior it was seen in
            inner = _interior(masks).reshape(-1)[flat]
            self.integrate(points, np.where(inner, lab, 0))
            self.integrate(points, np.where(inner, 0, lab), weight=0.5)
            if result.displaced:
                # the points' own voxels (they exist now), not the neighbours that stood in
                # for them before integration: evidence is about what this frame saw
                own = np.full(depth.size, -1, dtype=np.int64)
                own[flat] = self._index.lookup(pack_voxel_keys(voxel_coords(
                    points, self.cfg.voxel_size_m)))
                own = own.reshape(depth.shape)
                for pixels, old in result.displaced:
                    self._unvote(own[pixels], old)
            self.frames_integrated += 1
            for a, b in self._merge_ready_pairs():
                self._merge(a, b)
            self._release_parts()
            self._delete_ghosts()
            result.labels = self._resolve_image(result.labels)
            return result

    def _release_parts(self) -> None:
        """A pending part seen apart from its parent often enough becomes an instance.

        A part split off by 'one mask per id' is either a front-end split of the same
        object (later views hold both in one mask: 'together', and they merge) or an object
        that was glued to the parent when first seen (later views show it apart). Until
        the evidence decides, outputs show the part as its parent, so an object does not
        change its id for a front-end split.
        """
        cfg = self.cfg
        for child in np.flatnonzero(self._parent):
            parent = self.resolve(int(self._parent[child]))
            if not self._alive[child] or parent == child or not self._alive[parent]:
                self._parent[child] = 0
                continue
            tog, apart, _ = self._pairs.get((min(child, parent), max(child, parent)),
                                            (0, 0, 0))
            if apart >= cfg.release_min_apart and apart >= cfg.merge_ratio * tog:
                self._parent[child] = 0

    def _display_lut(self) -> np.ndarray:
        """(next_id,) int64: every id -> the id outputs show for it (0: deleted).

        Merged ids resolve to their survivor, pending parts to their parent.
        """
        lut = self._alias_lut()
        for _ in range(8):  # parts of parts: a short chain at most
            parent = self._parent[lut]
            pending = (parent > 0) & self._alive[lut]
            if not pending.any():
                break
            lut = np.where(pending, self._alias_lut()[parent], lut)
        lut[~self._alive[lut]] = 0
        return lut

    def _alias_lut(self) -> np.ndarray:
        """(next_id,) int64: every id issued -> the id it survives as."""
        lut = np.arange(self._next_id, dtype=np.int64)
        for absorbed in self._alias:
            lut[absorbed] = self.resolve(absorbed)
        return lut

    def id_lut(self) -> np.ndarray:
        """(next_id,) int64: every id issued -> its current id, 0 when it was deleted."""
        with self._lock:
            lut = self._alias_lut()
            lut[~self._alive[lut]] = 0
            return lut

    def _resolve_image(self, labels: np.ndarray) -> np.ndarray:
        return self._alias_lut().astype(np.int32)[labels] if self._alias else labels

    def _count_visible(self, reference: np.ndarray, valid: np.ndarray) -> None:
        counts = np.bincount(reference[valid], minlength=self._next_id)
        seen = np.flatnonzero(counts >= self.cfg.min_pixels)
        seen = seen[seen > 0]
        self._visible[seen] += 1

    def _count_assigned(self, result: AssociationResult, masks: np.ndarray,
                        embeddings: np.ndarray | None) -> None:
        ids, counts = np.unique(result.labels[result.labels > 0], return_counts=True)
        self._assigned[ids[counts >= self.cfg.min_pixels]] += 1
        if embeddings is None or self._emb.shape[1] == 0:
            return
        sel = (result.labels > 0) & (masks > 0)
        pairs, n = np.unique(np.stack([result.labels[sel], masks[sel]]), axis=1,
                             return_counts=True)
        mask_size = np.bincount(masks[sel], minlength=int(masks.max()) + 1)
        # a mask votes with the share of its own pixels on the id: one large mask grazing a
        # small object must not outvote that object's own views
        for (i, m), c in zip(pairs.T, n):
            self._emb[i] += (c / mask_size[m]) * embeddings[m - 1]

    def _delete_ghosts(self) -> None:
        cfg = self.cfg
        ghost = (self._alive & (self._assigned < cfg.confirm_frames)
                 & (self._visible >= cfg.ghost_visible_frames))
        # a part split off an id that never became an instance of its own goes back to
        # that id (its surface stays labelled) instead of vanishing
        for part in np.flatnonzero(ghost & (self._parent > 0)):
            parent = self.resolve(int(self._parent[part]))
            if self._alive[parent] and parent != part:
                self._merge(int(part), parent)
                ghost[part] = False
        if ghost.any():
            self._alive[ghost] = False
            drop = ghost[self._vote_ids]
            self._vote_w[drop] = 0.0
            self._vote_ids[drop] = 0

    # ------------------------------------------------------------------ queries

    def instance_embeddings(self) -> dict[int, np.ndarray]:
        """Confirmed id -> unit mean embedding of the masks that joined it (each mask
        weighted by the share of its pixels on the id)."""
        with self._lock:
            out = {}
            for i in self.confirmed_ids():
                e = self._emb[i]
                n = np.linalg.norm(e)
                if n > 0:
                    out[int(i)] = e / n
            return out

    def state(self) -> dict:
        """Everything needed to restore the map (plain arrays and scalars)."""
        with self._lock:
            pairs = np.array([[i, j, *counts] for (i, j), counts in self._pairs.items()],
                             dtype=np.int64).reshape(-1, 5)
            alias = np.array(list(self._alias.items()), dtype=np.int64).reshape(-1, 2)
            return {"voxels": self._index.state(), "vote_ids": self._vote_ids.copy(),
                    "vote_w": self._vote_w.copy(), "next_id": self._next_id,
                    "alive": self._alive.copy(), "assigned": self._assigned.copy(),
                    "visible": self._visible.copy(), "first_frame": self._first_frame.copy(),
                    "parent": self._parent.copy(),
                    "embeddings": self._emb.copy(), "pairs": pairs, "alias": alias,
                    "frames_integrated": self.frames_integrated,
                    "merges": np.array(self.merges, dtype=np.int64).reshape(-1, 2)}

    @classmethod
    def from_state(cls, state: dict, cfg: InstanceConfig | None = None) -> "InstanceMap":
        """Inverse of :meth:`state`."""
        im = cls(cfg, embedding_dim=state["embeddings"].shape[1] or None)
        im._index = VoxelIndex.from_state(state["voxels"])
        im._vote_ids, im._vote_w = state["vote_ids"].copy(), state["vote_w"].copy()
        if im._vote_ids.shape[1] != im.cfg.votes_per_voxel:
            raise ValueError(f"map has {im._vote_ids.shape[1]} votes per voxel, the "
                             f"configuration {im.cfg.votes_per_voxel}")
        im._next_id = int(state["next_id"])
        for name in ("alive", "assigned", "visible", "first_frame"):
            setattr(im, f"_{name}", state[name].copy())
        # maps written before parts were tracked have none pending
        im._parent = np.asarray(state.get("parent", np.zeros_like(im._first_frame))).copy()
        im._emb = state["embeddings"].copy()
        # maps saved before 'smooth' evidence existed hold 4 columns: none of it
        pairs = np.asarray(state["pairs"], dtype=np.int64)
        pairs = pairs.reshape(-1, pairs.shape[-1]) if pairs.size else pairs.reshape(0, 5)
        im._pairs = {(int(r[0]), int(r[1])): [int(v) for v in r[2:5]] + [0] * (5 - len(r))
                     for r in pairs}
        im._alias = {int(a): int(b) for a, b in state["alias"]}
        im.frames_integrated = int(state["frames_integrated"])
        im.merges = [(int(a), int(b)) for a, b in state["merges"]]
        return im

    def stats(self) -> dict:
        with self._lock:
            return {"voxels": self.num_voxels, "ids_created": self._next_id - 1,
                    "confirmed": int(self.confirmed_ids().size), "merges": len(self.merges),
                    "frames": self.frames_integrated}


def vote_masks(masks: np.ndarray, rendered: np.ndarray, valid: np.ndarray,
               min_share: float, split_share: float = 0.25, swallow_share: float = 0.5,
               min_pixels: int = 6, confidence: np.ndarray | None = None,
               boundary_confidence: float = 0.75
               ) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Give each mask the majority non-zero id of ``rendered`` inside it (InstanceLoc).

    The masks decide which map instances the frame shows; where two of them meet, the
    boundary is the map's (rendered at measured depth, fused over many views), not the
    one frame's ragged mask edge. Inside a mask whose majority id is A, a rendered id B
    keeps its own pixels when
      * another mask of the frame answered B (a boundary between two present objects)
        and the map is sure of the pixel (``confidence`` >= ``boundary_confidence``:
        voxels on a boundary hold mixed votes, and there a clean mask knows better),
      * B holds ``split_share`` of the mask (a front-end merge of two objects), or
      * at least ``swallow_share`` of B's rendered pixels in the view lie in this mask
        (a small object the front-end missed and swallowed into its support).

    Args:
        masks: (H, W) int mask ids; rendered: (H, W) int map ids; valid: (H, W) bool.
        min_share: a mask whose majority id holds less than this share of its valid pixels
            stays 0.
        min_pixels: a rendered id needs this many pixels in a mask to keep them.
        confidence: (H, W) confidence of ``rendered`` in [0, 1] (None: sure everywhere).
    Returns:
        (H, W) int32 ids and mask id -> (majority id, its share of the mask's valid pixels).
    """
    out = np.zeros(masks.shape, dtype=np.int32)
    answers: dict[int, tuple[int, float]] = {}
    sel = valid & (masks > 0)
    m, r = masks[sel].astype(np.int64), rendered[sel].astype(np.int64)
    n_m = np.bincount(m, minlength=int(masks.max(initial=0)) + 1)
    hit = r > 0
    if not hit.any():
        return out, answers
    base = int(r.max()) + 1
    pairs, counts = np.unique(m[hit] * base + r[hit], return_counts=True)
    pm, pi = np.divmod(pairs, base)
    visible = np.bincount(rendered[valid].astype(np.int64), minlength=base)
    for mask_id in np.unique(pm):
        rows = pm == mask_id
        ids, c = pi[rows], counts[rows]
        shares = c / max(n_m[mask_id], 1)
        best = int(np.argmax(shares))
        if shares[best] < min_share:
            continue
        answers[int(mask_id)] = (int(ids[best]), float(shares[best]))
    answered = list({i for i, _ in answers.values()})
    sure = valid if confidence is None else valid & (confidence >= boundary_confidence)
    for mask_id, (best, _) in answers.items():
        rows = pm == mask_id
        ids, c = pi[rows], counts[rows]
        in_mask = masks == mask_id
        out[in_mask] = best
        big = (c >= min_pixels) & (ids != best)
        whole = big & ((c >= split_share * n_m[mask_id]) | (c >= swallow_share * visible[ids]))
        for i in ids[whole]:
            out[in_mask & (rendered == i) & valid] = i
        for i in ids[big & ~whole & np.isin(ids, answered)]:
            out[in_mask & (rendered == i) & sure] = i
    return out, answers


def pixel_footprint(depth: np.ndarray, K: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """(N,) size [m] of the pixels ``flat`` (indices into the (H, W) depth) on the surface."""
    return depth.reshape(-1)[flat] / float(min(K[0, 0], K[1, 1]))


def _interior(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose four neighbours carry the same label (image edges count)."""
    inner = np.ones(labels.shape, dtype=bool)
    same_h = labels[:, 1:] == labels[:, :-1]
    same_v = labels[1:] == labels[:-1]
    inner[:, 1:] &= same_h
    inner[:, :-1] &= same_h
    inner[1:] &= same_v
    inner[:-1] &= same_v
    return inner


def _across_pixel_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values on the two sides of every horizontal and vertical pixel edge of an
    (H, W) image: two flat arrays of equal length."""
    return (np.concatenate([image[:, :-1].ravel(), image[:-1, :].ravel()]),
            np.concatenate([image[:, 1:].ravel(), image[1:, :].ravel()]))


def _boundaries(ids: np.ndarray, edges: np.ndarray | None = None
                ) -> dict[tuple[int, int], tuple[int, float]]:
    """Touching non-zero ids: (i, j) with i < j -> (number of pixel edges they share,
    share of those touching a pixel of ``edges`` ((H, W) bool; 1.0 without edges))."""
    a, b = (x.astype(np.int64) for x in _across_pixel_edges(ids))
    sel = (a != b) & (a > 0) & (b > 0)
    if not sel.any():
        return {}
    lo, hi = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
    base = int(hi.max()) + 1
    keys, inverse, counts = np.unique(lo * base + hi, return_inverse=True,
                                      return_counts=True)
    if edges is None:
        share = np.ones(keys.size)
    else:
        on_edge = np.logical_or(*_across_pixel_edges(edges))[sel]
        share = np.bincount(inverse, weights=on_edge) / counts
    return {(int(k // base), int(k % base)): (int(c), float(e))
            for k, c, e in zip(keys, counts, share)}
