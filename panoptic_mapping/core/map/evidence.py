"""Merge evidence: per pair of touching ids, how many views said 'together', 'apart' or
'smooth'.

For touching ids i, j visible in a view, the view says
* **together** when one mask holds most of both (``hold_share`` of each);
* **apart** when different masks speak for them (each holds most of its id, or has it as
  its plurality id: an id that glued views spread over two objects is held by no mask)
  and their boundary in the view is a depth edge (``apart_edge_share``; a front-end cut
  across a wall is no evidence of two walls);
* **smooth** when different masks meet across (almost) no depth edge
  (``smooth_edge_share``): one surface the front-end cut. A real segmenter splits a
  textured object or a tiled floor the same way in every view, so no view ever holds both
  in one mask, and only 3D says they are one.
A real object split into two map ids is together in most views (front-end splits are
view-dependent); two touching objects are apart in most views. Ids merge when support =
together + ``smooth_weight`` * smooth >= ``merge_min_together`` and support >=
``merge_ratio`` * apart, unless their mean mask embeddings disagree (``merge_min_cosine``:
a small object that front-end merges glue to its support is 'together' with it in many
views).

A real segmenter also cuts an object at a crease (a duck's neck, a tray's inner walls,
a table's legs) the same way in most views, 'apart' there, and holds it whole in some.
Ids whose embeddings agree (both have one, cosine >= ``merge_min_cosine``) therefore also
merge on view consensus: together in at least ``merge_min_consensus`` of the views that
saw them meet and in ``merge_consensus_min_together`` views or more (a share of a few views
is chance: a front-end that glued two touching things of one kind in 4 of its first 9).
Only views with measured depth count there: stereo depth finds fewer of the edges that
'apart' needs, so the share of 'together' views it leaves is no consensus (measured:
posed-RGB tabletops lost up to 0.06 PQ_scene when stereo views counted).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.views import boundary_shares, owners

__all__ = ["PairEvidence", "TOGETHER", "APART", "SMOOTH"]

TOGETHER, APART, SMOOTH = 0, 1, 2
# beside the three counts: the together and apart views without measured depth (stereo)
_STATS = 5


class PairEvidence:
    """(i, j) with i < j -> [together, apart, smooth, together without measured depth,
    apart without measured depth] view counts (a list of the first three alone: all
    measured)."""

    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.pairs: dict[tuple[int, int], list[int]] = {}

    def get(self, i: int, j: int) -> tuple[int, int, int]:
        return tuple(self.pairs.get((min(i, j), max(i, j)), (0, 0, 0))[:3])

    def record(self, ref: np.ndarray, valid: np.ndarray, pm: np.ndarray, pi: np.ndarray,
               o: np.ndarray, r_vis: np.ndarray, edges: np.ndarray | None = None,
               apart_edges: np.ndarray | None = None, measured: bool = True) -> None:
        """Count one view's evidence for its touching reference ids.

        Args:
            ref: (H, W) reference ids; valid: (H, W) bool.
            pm, pi, o: (K,) mask, reference id and pixel overlap of each pair.
            r_vis: (n_ids,) visible pixels per reference id.
            edges: (H, W) bool depth edges of the view (None: no depth, no gate): a
                boundary off them is 'smooth'.
            apart_edges: (H, W) bool edges where objects meet (None: ``edges``): a
                boundary on them is 'apart'.
            measured: whether the view's depth was measured (False: stereo); only
                measured views count towards the view consensus.
        """
        cfg = self.cfg
        owner, claim = self._claims(pm, pi, o, r_vis)
        if len(claim) < 2:
            return
        # the share on every edge, and (apart_at 'concave') on the edges where objects meet
        split = apart_edges is not None and edges is not None
        maps = [edges, apart_edges] if split else [edges]
        for (i, j), (contact, on) in boundary_shares(np.where(valid, ref, 0), maps,
                                                     cfg.boundary_end_px).items():
            if contact < cfg.min_contact or i not in claim or j not in claim:
                continue
            together = i in owner and j in owner and owner[i] == owner[j]
            if not together and claim[i] == claim[j]:
                continue  # one mask over both without holding most of each: no evidence
            # two objects meet at a depth jump or crease (measured on the tabletop: 92 % of
            # object boundaries against 42 % of the front-end's cuts reach a 0.3 share)
            on_edge, on_meeting = on[0], on[-1]
            if together:
                kind = TOGETHER
            elif on_meeting >= cfg.apart_edge_share:
                kind = APART
            elif on_edge < cfg.smooth_edge_share or (
                    split and on_meeting < cfg.smooth_edge_share
                    and on_edge >= cfg.convex_seam_share):
                kind = SMOOTH
            else:
                continue
            stats = self.pairs.setdefault((i, j), [0, 0, 0])
            stats[kind] += 1
            if not measured and kind != SMOOTH:
                stats.extend([0] * (_STATS - len(stats)))
                stats[3 + kind] += 1

    def _claims(self, pm: np.ndarray, pi: np.ndarray, o: np.ndarray, r_vis: np.ndarray
                ) -> tuple[dict[int, int], dict[int, int]]:
        """Which mask speaks for each reference id in this view.

        Returns:
            owner: id -> the mask holding ``hold_share`` of its visible pixels (largest
                overlap first); claim: owner, or else the mask (largest overlap) whose
                plurality id it is. 'Together' needs owners: one mask holding most of both
                ids. 'Apart' takes claims: an id that early glued views spread over two
                objects is owned by no mask, and without them it would collect no evidence
                against a merge while every glued view counts for one (two touching jenga
                blocks, tabletop seed 4).
        """
        keep = o >= self.cfg.min_pixels
        pm, pi, o = pm[keep], pi[keep], o[keep]
        owner = owners(pm, pi, o, r_vis, self.cfg.min_pixels, self.cfg.hold_share)
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

    def ready(self, similar: Callable[[int, int], bool],
              agree: Callable[[int, int], bool] | None = None) -> list[tuple[int, int]]:
        """Pairs whose evidence says 'one object' (see the module doc).

        Args:
            similar: (i, j) -> whether their embeddings do not contradict one object.
            agree: (i, j) -> whether their embeddings say one kind of thing: such pairs
                also merge on view consensus (``merge_min_consensus``).
        """
        return [(i, j) for (i, j) in self.pairs if self.says_one(i, j, similar, agree)]

    def says_one(self, i: int, j: int, similar: Callable[[int, int], bool],
                 agree: Callable[[int, int], bool] | None = None) -> bool:
        """Whether the evidence of the pair (i, j) as it stands says 'one object' (see
        :meth:`ready`); False for a pair without evidence."""
        stats = self.pairs.get((min(i, j), max(i, j)))
        if stats is None:
            return False
        cfg = self.cfg
        tog, apart, smooth, tog_stereo, apart_stereo = _padded(stats)
        support = tog + cfg.smooth_weight * smooth
        if (support >= cfg.merge_min_together and support >= cfg.merge_ratio * apart
                and similar(i, j)):
            return True
        tog, apart = tog - tog_stereo, apart - apart_stereo  # measured views only
        return bool(cfg.merge_min_consensus > 0 and agree is not None
                    and tog >= cfg.merge_consensus_min_together
                    and tog >= cfg.merge_min_consensus * (tog + apart) and agree(i, j))

    def apart_enough(self, i: int, j: int) -> bool:
        """Seen apart ``release_min_apart`` times and ``merge_ratio`` times as often as
        together (a pending part becomes an object of its own)."""
        tog, apart, _ = self.get(i, j)
        return apart >= self.cfg.release_min_apart and apart >= self.cfg.merge_ratio * tog

    def forget(self, ids: np.ndarray) -> None:
        """Drop the evidence of every pair with an id flagged in ``ids`` ((n,) bool)."""
        self.pairs = {(i, j): c for (i, j), c in self.pairs.items()
                      if not ((i < ids.size and ids[i]) or (j < ids.size and ids[j]))}

    def remap(self, resolve: Callable[[int], int]) -> None:
        """Re-key the pairs after a merge (evidence of merged ids adds up)."""
        merged: dict[tuple[int, int], list[int]] = {}
        for (i, j), stats in self.pairs.items():
            i, j = resolve(i), resolve(j)
            if i == j:
                continue
            acc = merged.setdefault((min(i, j), max(i, j)), [0] * _STATS)
            for k, v in enumerate(stats):
                acc[k] += v
        self.pairs = {k: _trimmed(v) for k, v in merged.items()}

    def state(self) -> np.ndarray:
        return np.array([[i, j, *_padded(c)] for (i, j), c in self.pairs.items()],
                        dtype=np.int64).reshape(-1, 2 + _STATS)

    def load_state(self, pairs: np.ndarray) -> None:
        # maps saved before 'smooth' evidence existed hold 4 columns, before the stereo
        # counts 5: none of it (their views count as measured)
        pairs = np.asarray(pairs, dtype=np.int64)
        pairs = pairs.reshape(-1, pairs.shape[-1]) if pairs.size else pairs.reshape(0, 7)
        self.pairs = {(int(r[0]), int(r[1])):
                      _trimmed(_padded([int(v) for v in r[2:2 + _STATS]])) for r in pairs}


def _padded(stats: list[int]) -> list[int]:
    """The pair's counts with the missing ones (older maps, a test's three) as 0."""
    return stats if len(stats) == _STATS else list(stats) + [0] * (_STATS - len(stats))


def _trimmed(stats: list[int]) -> list[int]:
    """The pair's counts, the stereo ones left out where there are none."""
    return stats[:3] if not any(stats[3:]) else stats
