"""What happens to ids between frames: merges the evidence calls for, pending parts
released once seen apart from their parent, ghosts deleted.

* **Merge.** The id holding more vote weight survives (what most of the object is already
  shown as, so the merge does not change it), then the one masks joined in more frames,
  then the older.
* **Pending parts.** A part split off a settled id by 'one mask per id' is either a
  front-end split of the same object (later views hold both in one mask: 'together', and
  they merge) or an object glued to the parent when first seen (later views show it
  apart: after ``release_min_apart`` such views it becomes an instance of its own). Until
  the evidence decides, outputs show the part as its parent.
* **Ghosts.** An id visible in ``ghost_visible_frames`` frames but joined by masks in
  fewer than ``confirm_frames`` is a spurious fragment and is deleted; a pending part
  that never became an instance goes back to its parent instead (its surface stays
  labelled).
"""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.evidence import PairEvidence
from panoptic_mapping.core.map.ids import IdTable
from panoptic_mapping.core.map.votes import VoteGrid

__all__ = ["IdLifecycle"]


class IdLifecycle:
    """Merges, part releases and ghost deletion over the id table, votes and evidence."""

    def __init__(self, cfg: InstanceConfig, ids: IdTable, votes: VoteGrid,
                 evidence: PairEvidence):
        self.cfg, self.ids, self.votes, self.evidence = cfg, ids, votes, evidence

    def after_frame(self) -> None:
        """Everything the evidence of the frame just integrated calls for."""
        for a, b in self.merge_ready():
            # an earlier merge of this frame may have joined a or b to a third id whose
            # views say 'apart' from the other: the pair's evidence is asked again as it
            # stands (the ids that merged, their views summed), so two ids are not joined
            # through a third that each merged with
            a, b = self.ids.resolve(a), self.ids.resolve(b)
            if a != b and self.evidence.says_one(a, b, self._similar, self._agree):
                self.merge(a, b)
        self.release_parts()
        self.delete_ghosts()

    def merge_ready(self) -> list[tuple[int, int]]:
        """Pairs the evidence calls one object and whose embeddings do not disagree, or
        held together on view consensus and whose embeddings agree."""
        return self.evidence.ready(self._similar, self._agree)

    def _similar(self, i: int, j: int) -> bool:
        """Whether the two ids' embeddings do not contradict one object."""
        return self.ids.similar(i, j, self.cfg.merge_min_cosine)

    def _agree(self, i: int, j: int) -> bool:
        """Whether both ids' embeddings say one kind of thing."""
        return self.ids.agree(i, j, self.cfg.merge_min_cosine)

    def merge(self, a: int, b: int) -> int:
        """Merge ids a and b; returns the survivor (see the module doc)."""
        t = self.ids
        a, b = t.resolve(a), t.resolve(b)
        if a == b:
            return a
        mass = {i: self.votes.mass_of(i) for i in (a, b)}
        key = lambda i: (mass[i], t.assigned[i], -i)  # noqa: E731
        survivor, absorbed = (a, b) if key(a) >= key(b) else (b, a)
        t.absorb(absorbed, survivor)
        self.votes.relabel(absorbed, survivor)
        self.evidence.remap(t.resolve)
        return survivor

    def release_parts(self) -> None:
        """A pending part seen apart from its parent often enough becomes an instance."""
        t = self.ids
        for child in np.flatnonzero(t.parent):
            parent = t.resolve(int(t.parent[child]))
            if not t.alive[child] or parent == child or not t.alive[parent]:
                t.parent[child] = 0
            elif self.evidence.apart_enough(int(child), parent):
                t.parent[child] = 0

    def delete_ghosts(self) -> None:
        t, cfg = self.ids, self.cfg
        ghost = (t.alive & (t.assigned < cfg.confirm_frames)
                 & (t.visible >= cfg.ghost_visible_frames))
        for part in np.flatnonzero(ghost & (t.parent > 0)):
            parent = t.resolve(int(t.parent[part]))
            if t.alive[parent] and parent != part:
                self.merge(int(part), parent)
                ghost[part] = False
        if ghost.any():
            t.alive[ghost] = False
            self.votes.drop(ghost)
