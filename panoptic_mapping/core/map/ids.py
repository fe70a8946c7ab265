"""The id table: which instance ids exist, what each has been through (frames it was
visible and joined in, the frame it was born, the id a pending part is shown as, its mean
mask embedding) and what merged into what.

Ids are open-ended integers starting at 1, never reused.
"""
from __future__ import annotations

import copy

import numpy as np

from panoptic_mapping.core.geometry import count_pairs

__all__ = ["IdTable"]

# the arrays indexed by id (grown together), and what a new id's entry holds where not 0
_PER_ID = ("alive", "assigned", "visible", "first_frame", "parent", "last_agree", "run",
           "best_run", "present", "present_shown", "emb")
_NEW_ID_FILL = {"last_agree": -1}


class IdTable:
    """Per-id statistics in arrays indexed by id (grown in blocks), and merge aliases.

    Attributes:
        alive: (n,) bool; assigned: (n,) frames in which masks joined the id; visible: (n,)
        frames in which it was rendered; first_frame: (n,); parent: (n,) id a pending part
        is shown as (0: none); emb: (n, D) summed mask embeddings; alias: absorbed ->
        survivor; merges: (absorbed, survivor) in order; frames: frames integrated.
        last_agree: (n,) latest frame in which masks joined the id and the map showed it
        (-1: none); run: (n,) such frames in the current run (each within ``join_gap``
        frames of the one before); best_run: (n,) the longest run so far.
        present: (n,) frames in which ``min_pixels`` of the view lay on voxels holding
        the id's votes; present_shown: (n,) those of them in which the map showed it.
    """

    def __init__(self, embedding_dim: int | None = None, join_gap: int = 0,
                 shown_share: float = 0.0):
        # 0: no gap limit (every frame of agreement extends the run)
        self.join_gap = join_gap
        # an id counts while the map shows it in this share of the views that see it
        self.shown_share = shown_share
        self._shown_now = np.zeros(0, dtype=np.int64)  # ids the frame's reference showed
        self.next_id = 1
        self.alive = np.zeros(1, dtype=bool)
        self.assigned = np.zeros(1, dtype=np.int32)
        self.visible = np.zeros(1, dtype=np.int32)
        self.first_frame = np.zeros(1, dtype=np.int64)
        self.parent = np.zeros(1, dtype=np.int64)
        self.last_agree = np.full(1, -1, dtype=np.int64)
        self.run = np.zeros(1, dtype=np.int32)
        self.best_run = np.zeros(1, dtype=np.int32)
        self.present = np.zeros(1, dtype=np.int32)
        self.present_shown = np.zeros(1, dtype=np.int32)
        self.emb = np.zeros((1, embedding_dim or 0), dtype=np.float64)
        self.alias: dict[int, int] = {}
        self.merges: list[tuple[int, int]] = []
        self.frames = 0

    def _grow(self, upto: int) -> None:
        n = self.alive.size
        if upto < n:
            return
        pad = max(upto + 1, 2 * n) - n
        for name in _PER_ID:
            a = getattr(self, name)
            new = np.full((pad,) + a.shape[1:], _NEW_ID_FILL.get(name, 0), dtype=a.dtype)
            setattr(self, name, np.concatenate([a, new]))

    def new_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        self._grow(i)
        self.alive[i] = True
        self.first_frame[i] = self.frames
        return i

    def resolve(self, i: int) -> int:
        """The id that ``i`` survives as after merges (``i`` itself if never merged)."""
        while i in self.alias:
            i = self.alias[i]
        return i

    def confirmed(self, confirm_frames: int) -> np.ndarray:
        """(n,) bool: in ``confirm_frames`` frames of one run (each within ``join_gap``
        frames of the one before) masks joined the id and the map showed it (rendered on
        ``min_pixels``): views that agree on it, not a fragment that one view's masks
        made, and again the same view's masks when the camera came back. And the map
        shows it in ``shown_share`` of the views that see where its votes lie: a fragment
        other ids outvote wherever it is seen is no instance (it counts again once the
        map shows it again)."""
        return ((self.best_run >= confirm_frames)
                & (self.present_shown >= self.shown_share * self.present))

    def shown(self, confirm_frames: int) -> np.ndarray:
        """Ids that count in outputs: confirmed, alive, and not a pending part of another."""
        return np.flatnonzero(self.alive & self.confirmed(confirm_frames) & (self.parent == 0))

    # ------------------------------------------------------------------ lookup tables

    def alias_lut(self) -> np.ndarray:
        """(next_id,) int64: every id issued -> the id it survives as."""
        lut = np.arange(self.next_id, dtype=np.int64)
        for absorbed in self.alias:
            lut[absorbed] = self.resolve(absorbed)
        return lut

    def id_lut(self) -> np.ndarray:
        """(next_id,) int64: every id issued -> its current id, 0 when it was deleted."""
        lut = self.alias_lut()
        lut[~self.alive[lut]] = 0
        return lut

    def display_lut(self) -> np.ndarray:
        """(next_id,) int64: every id -> the id outputs show for it (0: deleted).

        Merged ids resolve to their survivor, pending parts to their parent.
        """
        lut = self.alias_lut()
        for _ in range(8):  # parts of parts: a short chain at most
            parent = self.parent[lut]
            pending = (parent > 0) & self.alive[lut]
            if not pending.any():
                break
            lut = np.where(pending, self.alias_lut()[parent], lut)
        lut[~self.alive[lut]] = 0
        return lut

    def resolve_image(self, labels: np.ndarray) -> np.ndarray:
        """Ids of an (H, W) label image as they survive merges."""
        return self.alias_lut().astype(np.int32)[labels] if self.alias else labels

    # ------------------------------------------------------------------ statistics

    def count_visible(self, reference: np.ndarray, valid: np.ndarray, min_pixels: int
                      ) -> None:
        """One more visible frame for every id with ``min_pixels`` valid reference pixels
        (the frame's :meth:`count_assigned` comes next)."""
        counts = np.bincount(reference[valid], minlength=self.next_id)
        seen = np.flatnonzero(counts >= min_pixels)
        self._shown_now = seen[seen > 0]
        self.visible[self._shown_now] += 1

    def count_present(self, present: np.ndarray) -> None:
        """Ids ``present`` (k,) had ``min_pixels`` of the frame on voxels holding their
        votes (after the frame's :meth:`count_visible`: those it showed are noted)."""
        self.present[present] += 1
        self.present_shown[np.intersect1d(present, self._shown_now)] += 1

    def count_assigned(self, labels: np.ndarray, masks: np.ndarray,
                       embeddings: np.ndarray | None, min_pixels: int) -> None:
        """One more joined frame for every id with ``min_pixels`` labelled pixels (after the
        frame's :meth:`count_visible`), and the masks' embeddings (M, D) added to the ids
        they labelled."""
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        self._join(ids[counts >= min_pixels])
        if embeddings is None or self.emb.shape[1] == 0:
            return
        sel = (labels > 0) & (masks > 0)
        ids, ms, n = count_pairs(labels[sel], masks[sel])
        mask_size = np.bincount(masks[sel], minlength=int(masks.max()) + 1)
        # a mask votes with the share of its own pixels on the id: one large mask grazing a
        # small object must not outvote that object's own views
        for i, m, c in zip(ids, ms, n):
            self.emb[i] += (c / mask_size[m]) * embeddings[m - 1]

    def _join(self, joined: np.ndarray) -> None:
        """Masks joined ids ``joined`` (k,) in the frame being integrated; those the
        frame's reference also showed agree, and their runs go on."""
        self.assigned[joined] += 1
        agree = np.intersect1d(joined, self._shown_now)
        last = self.last_agree[agree]
        near = (last >= 0) & ((self.join_gap <= 0) | (self.frames - last <= self.join_gap))
        self.run[agree] = np.where(near, self.run[agree] + 1, 1)
        self.last_agree[agree] = self.frames
        self.best_run[agree] = np.maximum(self.best_run[agree], self.run[agree])

    def similar(self, i: int, j: int, min_cosine: float) -> bool:
        """Whether two ids' mean embeddings do not contradict one object (True without
        embeddings)."""
        cos = self._cosine(i, j)
        return cos is None or cos >= min_cosine

    def agree(self, i: int, j: int, min_cosine: float) -> bool:
        """Whether both ids have mean embeddings and they say one kind of thing (positive
        evidence, unlike :meth:`similar`, which only asks that they do not contradict)."""
        cos = self._cosine(i, j)
        return cos is not None and cos >= min_cosine

    def _cosine(self, i: int, j: int) -> float | None:
        """Cosine similarity of two ids' mean embeddings; None where either has none."""
        a, b = self.emb[i], self.emb[j]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return None
        return float(a @ b) / (na * nb)

    def unit_embeddings(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """id -> unit mean embedding, for the ids that have one."""
        out = {}
        for i in ids:
            n = np.linalg.norm(self.emb[i])
            if n > 0:
                out[int(i)] = self.emb[i] / n
        return out

    def absorb(self, absorbed: int, survivor: int) -> None:
        """Record a merge: ``absorbed`` lives on as ``survivor``, its statistics added."""
        self.alias[absorbed] = survivor
        self.alive[absorbed] = False
        self.assigned[survivor] += self.assigned[absorbed]
        self.visible[survivor] = max(self.visible[survivor], self.visible[absorbed])
        # both were one object all along: the longer confirmation counts, and the run
        # goes on from whichever was joined last
        self.best_run[survivor] = max(self.best_run[survivor], self.best_run[absorbed])
        if self.last_agree[absorbed] > self.last_agree[survivor]:
            self.last_agree[survivor] = self.last_agree[absorbed]
            self.run[survivor] = self.run[absorbed]
        # the views of either saw the object: the better record of being shown counts
        if (self.present_shown[absorbed] * max(self.present[survivor], 1)
                > self.present_shown[survivor] * max(self.present[absorbed], 1)):
            self.present[survivor] = self.present[absorbed]
            self.present_shown[survivor] = self.present_shown[absorbed]
        self.emb[survivor] += self.emb[absorbed]
        if self.resolve(int(self.parent[survivor])) == survivor:
            self.parent[survivor] = 0
        self.merges.append((absorbed, survivor))

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict:
        return {"next_id": self.next_id, "alive": self.alive.copy(),
                "assigned": self.assigned.copy(), "visible": self.visible.copy(),
                "first_frame": self.first_frame.copy(), "parent": self.parent.copy(),
                "last_agree": self.last_agree.copy(), "run": self.run.copy(),
                "best_run": self.best_run.copy(), "present": self.present.copy(),
                "present_shown": self.present_shown.copy(), "embeddings": self.emb.copy(),
                "alias": np.array(list(self.alias.items()), dtype=np.int64).reshape(-1, 2),
                "frames_integrated": self.frames,
                "merges": np.array(self.merges, dtype=np.int64).reshape(-1, 2)}

    def copy(self) -> "IdTable":
        """An independent copy (a reader's snapshot): every array copied, the alias and
        merge records as new containers of the same immutable entries (a deep copy would
        walk each of the thousands of merges a long run records, every frame)."""
        t = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                setattr(t, name, value.copy())
        t.alias, t.merges = dict(self.alias), list(self.merges)
        return t

    @classmethod
    def from_state(cls, state: dict, join_gap: int = 0, shown_share: float = 0.0
                   ) -> "IdTable":
        t = cls(embedding_dim=state["embeddings"].shape[1] or None, join_gap=join_gap,
                shown_share=shown_share)
        t.next_id = int(state["next_id"])
        for name in ("alive", "assigned", "visible", "first_frame"):
            setattr(t, name, np.asarray(state[name]).copy())
        # maps written before parts were tracked have none pending
        t.parent = np.asarray(state.get("parent", np.zeros_like(t.first_frame))).copy()
        # maps written before runs were tracked: every id confirmed then stays confirmed
        # (its joins and views count as one run), and the next agreement starts a new run
        t.best_run = np.asarray(state.get("best_run", np.minimum(t.assigned, t.visible))
                                ).astype(np.int32)
        t.run = np.asarray(state.get("run", np.zeros_like(t.assigned))).astype(np.int32)
        t.last_agree = np.asarray(state.get("last_agree", np.full(t.assigned.shape, -1))
                                  ).astype(np.int64)
        # ...and counts as shown wherever it was seen so far
        for name in ("present", "present_shown"):
            setattr(t, name, np.asarray(state.get(name, np.zeros_like(t.assigned))
                                        ).astype(np.int32))
        t.emb = np.asarray(state["embeddings"]).copy()
        t.alias = {int(a): int(b) for a, b in state["alias"]}
        t.frames = int(state["frames_integrated"])
        t.merges = [(int(a), int(b)) for a, b in state["merges"]]
        return t
