"""Association of one frame's class-agnostic masks with the map's ids.

From the overlap counts o(m, i) = |m ∩ R_i| of every mask m with the reference rendering R
(the map's labels at the frame's 3D points) and each id's visible size r(i), a mask *owns*
id i when o(m, i) >= ``cover_fraction`` * r(i) (at most one owner per id):

* a mask owning one id takes it (stray fragments of other ids under it included);
* a mask owning several established (confirmed) ids glued touching objects together (a
  front-end merge): those pixels keep their reference ids; nothing is merged on one view's
  word. Unconfirmed ids it owns are absorbed into its largest id;
* a mask owning nothing is new when little of it is mapped (coverage < ``new_coverage``);
  otherwise it joins its plurality id, competing with that id's owner, if any, for it;
* *one mask per id* (``one_mask_per_id``) — when several masks join one id, the one
  overlapping it most keeps it; each other one moves to a fragment id it owns
  (``fragment_reuse``: only off a young id and across a depth edge: an object seen alone
  after glued first views), the runner-up id its voxels voted for
  (``runner_up_presence``), or a new id. The id may hold several objects (glued together
  when first seen, or a small object absorbed by its support). A new id of comparable
  size (``part_min_share``) split off an id seen in more than ``settled_frames`` frames is
  a *pending part*: outputs show it as the id it came from until it is seen apart from it
  (:mod:`~panoptic_mapping.core.map.lifecycle`), so a front-end split does not change the
  id a settled object is shown with. A part split off a young id is an object at once; a
  smaller one split off a settled id too, unless the mapper finds its embedding to be
  that id's label and nothing else (``small_parts_pending``; ``split_from`` names them).
  A joining mask that meets the id's other pixels across no depth edge is a piece of the
  same surface the front-end cut (with 'smooth' evidence on) and keeps the id;
* an owned id that is only a sliver of the mask (``major_share``: a small object the
  front-end missed and swallowed into its support) keeps its own pixels and does not
  decide the mask's id;
* otherwise the mask is ambiguous and joins its plurality id.

Pixels labelled A whose reference id B another mask owns are evidence against B
(``AssociationResult.displaced``; the map withdraws ``unvote_weight`` there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.evidence import PairEvidence
from panoptic_mapping.core.map.ids import IdTable
from panoptic_mapping.core.map.views import boundary_between, interior, owners
from panoptic_mapping.core.map.votes import VoteGrid

__all__ = ["AssociationResult", "Associator"]

# sorts a competing owner ahead of every joining mask in 'one mask per id'
_OWNER_FIRST = 1 << 40


@dataclass
class AssociationResult:
    """What associating one frame's masks produced.

    Attributes:
        labels: (H, W) int32 map ids per pixel (0 = none), as assigned.
        mask_to_id: mask id -> map id for masks that joined or created one id.
        new_ids: ids created by this frame.
        front_end_merges: masks found to glue established ids together.
        displaced: (pixels (H, W) bool, old id): pixels the frame took from an id.
        split_from: new id -> the settled id 'one mask per id' displaced its mask from,
            for new ids too small to be pending parts (``part_min_share``).
    """

    labels: np.ndarray
    mask_to_id: dict[int, int] = field(default_factory=dict)
    new_ids: list[int] = field(default_factory=list)
    front_end_merges: int = 0
    displaced: list[tuple[np.ndarray, int]] = field(default_factory=list)
    split_from: dict[int, int] = field(default_factory=dict)


@dataclass
class _Overlaps:
    """One view's mask/reference overlap table.

    Attributes:
        pm, pi, o: (K,) mask, reference id and pixel overlap of every pair.
        n_m: (n_masks + 1,) valid pixels per mask; r_vis: (n_ids,) visible pixels per id.
        least: (n_masks + 1,) least overlap that counts for each mask.
    """

    pm: np.ndarray
    pi: np.ndarray
    o: np.ndarray
    n_m: np.ndarray
    r_vis: np.ndarray
    least: np.ndarray


class Associator:
    """Decides which map id each of a frame's masks is (the rules: module doc)."""

    def __init__(self, cfg: InstanceConfig, ids: IdTable, votes: VoteGrid,
                 evidence: PairEvidence):
        self.cfg, self.ids, self.votes, self.evidence = cfg, ids, votes, evidence

    def associate(self, masks: np.ndarray, ref: np.ndarray, valid: np.ndarray,
                  slots: np.ndarray | None = None, edges: np.ndarray | None = None,
                  apart_edges: np.ndarray | None = None, measured: bool = True
                  ) -> AssociationResult:
        """Label a frame's pixels with map ids, creating ids and recording merge evidence.

        Args:
            masks: (H, W) int64 mask ids (0: none); ref: (H, W) int64 reference ids;
            valid: (H, W) bool; slots: (H, W) voxel slot per pixel (-1: none; None: no
            runner-up); edges: (H, W) bool depth edges (None: no depth); apart_edges:
            (H, W) bool the edges where objects meet (None: ``edges``); measured:
            whether the depth was measured (False: stereo; see :class:`PairEvidence`).
        """
        ov = self._overlaps(masks, ref, valid)
        owner = owners(ov.pm, ov.pi, ov.o, ov.r_vis, ov.least[ov.pm], self.cfg.cover_fraction)
        owned: dict[int, list[int]] = {}
        for i, m in owner.items():
            owned.setdefault(m, []).append(i)
        result = AssociationResult(labels=np.zeros(masks.shape, dtype=np.int32))
        joined: dict[int, list[tuple[int, int]]] = {}  # id -> [(overlap, mask)] of joins
        for m in range(1, ov.n_m.size):
            if ov.n_m[m] < self.cfg.min_pixels:
                continue
            rows = (ov.pm == m) & (ov.o >= ov.least[m])
            self._assign_mask(m, ov.pi[rows], ov.o[rows], int(ov.n_m[m]), owned.get(m, []),
                              owner, masks, ref, valid, result, joined)
        if self.cfg.one_mask_per_id:
            self._divide(joined, masks, valid, slots, result, ov.r_vis, owned, edges)
        _contested(result, masks, ref, valid, owner)
        self.evidence.record(ref, valid, ov.pm, ov.pi, ov.o, ov.r_vis, edges, apart_edges,
                             measured)
        return result

    def _overlaps(self, masks: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> _Overlaps:
        cfg = self.cfg
        m_all, r_all = masks[valid], ref[valid]
        n_ids = int(max(ref.max(initial=0), 0)) + 1
        n_m = np.bincount(m_all, minlength=int(masks.max(initial=0)) + 1)
        r_vis = np.bincount(r_all, minlength=n_ids)
        sel = (m_all > 0) & (r_all > 0)
        pair_keys, o = np.unique(m_all[sel] * n_ids + r_all[sel], return_counts=True)
        pm, pi = np.divmod(pair_keys, n_ids)
        least = np.clip(np.ceil(cfg.small_mask_share * n_m), cfg.small_mask_min_overlap,
                        cfg.min_pixels)
        return _Overlaps(pm, pi, o, n_m, r_vis, least)

    def _assign_mask(self, m: int, ids: np.ndarray, counts: np.ndarray, n: int,
                     owns: list[int], owner: dict[int, int], masks: np.ndarray,
                     ref: np.ndarray, valid: np.ndarray, result: AssociationResult,
                     joined: dict[int, list[tuple[int, int]]]) -> None:
        """Label one mask's pixels (see the module doc for the cases)."""
        cfg, t = self.cfg, self.ids
        in_mask = valid & (masks == m)
        labels = result.labels
        by_size = {int(i): int(c) for i, c in zip(ids, counts)}
        mapped = max(int(counts.sum()), 1)
        major = [i for i in owns if by_size.get(i, 0) >= cfg.major_share * mapped]
        minor = [i for i in owns if i not in major]
        protected = [i for i in minor if t.assigned[i] >= cfg.confirm_frames]
        if major:
            # Only established ids are protected from one view's glue; a fresh id (perhaps
            # a spurious fragment) under a mask that owns an established one is absorbed.
            # (a pending part is a piece of its parent, not an object of its own yet)
            established = [i for i in major if t.assigned[i] >= cfg.confirm_frames
                           and t.parent[i] == 0]
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
        if coverage < cfg.new_coverage:
            new = t.new_id()
            labels[in_mask] = new
            labels[keep] = ref[keep]
            result.mask_to_id[m] = new
            result.new_ids.append(new)
            return
        rest = ~np.isin(ids, protected)
        pool = rest if rest.any() else np.ones_like(rest)
        best = int(ids[pool][np.argmax(counts[pool])])
        labels[in_mask] = best
        labels[keep] = ref[keep]
        result.mask_to_id[m] = best
        # a part of an id another mask owns competes with that owner in _divide
        if best in owner:
            joined.setdefault(best, []).append((_OWNER_FIRST, owner[best]))
        joined.setdefault(best, []).append((by_size.get(best, 0), m))

    def _divide(self, joined: dict[int, list[tuple[int, int]]], masks: np.ndarray,
                valid: np.ndarray, slots: np.ndarray | None, result: AssociationResult,
                r_vis: np.ndarray, owned: dict[int, list[int]], edges: np.ndarray | None
                ) -> None:
        """Keep one joining mask per id; move the others to a fragment they own, their
        runner-up, or a new id.

        A runner-up must be unclaimed: an id another mask of this frame holds (the table
        under a small object) is no place for a displaced part.
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
                alt = self._owned_fragment(i, owned.get(m, []), in_mask,
                                           valid & (result.labels == i), claimed, r_vis, edges)
                if alt == 0 and slots is not None:
                    alt = self._runner_up(slots, in_mask, claimed)
                if alt == 0:
                    alt = self._new_part(i, int(in_mask.sum()), r_vis, result)
                result.labels[in_mask] = alt
                result.mask_to_id[m] = alt
                result.displaced.append((in_mask, i))
                claimed.add(alt)

    def _new_part(self, i: int, size: int, r_vis: np.ndarray,
                  result: AssociationResult) -> int:
        """A new id (in ``result.new_ids``) for pixels displaced from ``i``: a pending part
        of ``i`` when of comparable size and ``i`` is settled, else an object of its own
        that its support had absorbed (split off a settled ``i``: in
        ``result.split_from``)."""
        alt = self.ids.new_id()
        result.new_ids.append(alt)
        if self.ids.visible[i] > self.cfg.settled_frames:
            if size >= self.cfg.part_min_share * r_vis[i]:
                self.ids.parent[alt] = i
            else:
                result.split_from[alt] = i
        return alt

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
        contact, on_edge = boundary_between(part, rest, edges, self.cfg.boundary_end_px)
        return contact >= self.cfg.min_contact and on_edge < self.cfg.smooth_edge_share

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
        t = self.ids
        if not self.cfg.fragment_reuse or t.visible[i] > self.cfg.settled_frames:
            return 0
        mine = [j for j in owns if j != i and j not in claimed and t.alive[j]]
        if not mine:
            return 0
        contact, on_edge = boundary_between(part, kept, edges, self.cfg.boundary_end_px)
        if contact >= self.cfg.min_contact and on_edge < self.cfg.apart_edge_share:
            return 0
        return max(mine, key=lambda j: r_vis[j])

    def _runner_up(self, slots: np.ndarray, in_mask: np.ndarray, exclude: set[int]) -> int:
        """The alive id not in ``exclude`` with most vote weight under a mask (or 0).

        Args:
            slots: (H, W) voxel slot per pixel (-1: none).
        """
        allowed = self.ids.alive.copy()
        allowed[[j for j in exclude if j < allowed.size]] = False
        return self.votes.best_under(slots[in_mask], allowed, self.cfg.runner_up_presence)


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
    against = valid & (labels > 0) & (ref > 0) & (labels != ref) & owned[ref] & interior(masks)
    for old in np.unique(ref[against]):
        result.displaced.append((against & (ref == old), int(old)))
