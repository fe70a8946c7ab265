"""The 3D instance map: per-voxel id votes, the id table, association of each frame's
class-agnostic masks, merge evidence and the id lifecycle, behind one lock.

Per frame (:meth:`InstanceMap.process_frame`):

1. **Reference.** The map's current labels are rendered into the view at the frame's 3D
   points (its depth back-projected); the mapper may override the reference with the
   field's rendering.
2. **Association** of every mask with the reference
   (:mod:`~panoptic_mapping.core.map.association`), recording merge evidence for touching
   ids (:mod:`~panoptic_mapping.core.map.evidence`).
3. **Integration.** Each voxel gets one vote per frame for the label most of its pixels
   carry (close-ups do not outvote distant views); pixels on a mask's edge vote with
   ``edge_vote_weight`` and are no negative evidence; pixels the frame took from an id
   another mask owns withdraw ``unvote_weight`` from it (:mod:`~.votes`).
4. **Lifecycle** (:mod:`~panoptic_mapping.core.map.lifecycle`): merges the evidence calls
   for, pending parts released, ghosts deleted. An id counts (in renderings, exports,
   InstanceLoc) once masks joined it in ``confirm_frames`` frames.

Rendering looks a point up in its voxel, or the nearest voxel within ``search_radius``
(wider where the pixel's footprint on the surface exceeds a voxel: far, small objects).
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Iterator, Protocol

import numpy as np

from panoptic_mapping.core.geometry import (
    backproject,
    close_gaps,
    depth_edges,
    pack_voxel_keys,
    project_squares,
    splat_camera_depth,
    unpack_voxel_keys,
    up_direction,
    voxel_coords,
)
from panoptic_mapping.core.map.association import AssociationResult, Associator
from panoptic_mapping.core.map.changes import ChangeDetector, GoneInstance, Shape, match_moved
from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.edits import InstanceEditError
from panoptic_mapping.core.map.evidence import PairEvidence
from panoptic_mapping.core.map.features import VoxelFeatures, mask_shares
from panoptic_mapping.core.map.grouping import run_starts
from panoptic_mapping.core.map.ids import IdTable
from panoptic_mapping.core.map.lifecycle import IdLifecycle
from panoptic_mapping.core.map.views import interior, pixel_footprint, seen_through
from panoptic_mapping.core.map.votes import PointVoxels, VoteGrid

__all__ = ["InstanceMap", "InstanceFill"]

# screen-space gap closing looks at most this far [px] (its cost grows with the radius)
_MAX_GAP_PX = 16
# the widest square a voxel is drawn as [px from its pixel] (splat_depth's default)
_SPLAT_MAX_RADIUS_PX = 8
_LINEAGES = itertools.count(1)  # InstanceMap.lineage


def _squares_meet(mask: np.ndarray, cam: np.ndarray, K: np.ndarray, size: float
                  ) -> np.ndarray:
    """(N,) bool: the square a voxel centre (N, 3, camera frame, in front) is drawn as
    reaches a pixel of ``mask`` (H, W) bool: only those need drawing to fill it."""
    h, w = mask.shape
    _, _, u, v, r = project_squares(cam, K, size, _SPLAT_MAX_RADIUS_PX)
    table = np.zeros((h + 1, w + 1), np.int64)  # summed-area table of the mask
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    u0, u1 = np.clip(u - r, 0, w), np.clip(u + r + 1, 0, w)
    v0, v1 = np.clip(v - r, 0, h), np.clip(v + r + 1, 0, h)
    return (table[v1, u1] - table[v0, u1] - table[v1, u0] + table[v0, u0]) > 0


def _image(values: np.ndarray, flat: np.ndarray, shape: tuple[int, int], dtype
           ) -> np.ndarray:
    """(H, W) image holding ``values`` (N,) at flat pixel indices ``flat`` (N,), 0
    elsewhere."""
    out = np.zeros(shape[0] * shape[1], dtype=dtype)
    out[flat] = values
    return out.reshape(shape)


def _slots_drawn(row: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(H, W) slots of the squares drawn: ``slots`` (N,) at the rows (H, W) the splat
    returned (-1 stays -1)."""
    out = np.full(row.shape, -1, np.int64)
    drawn = row >= 0
    out[drawn] = slots[row[drawn]]
    return out


class InstanceFill(Protocol):
    """Labels for observed surface points whose voxels hold no eligible vote.

    The map does not know where such labels come from (the mapper passes the field in);
    it only asks, and only about surfaces it has observed.
    """

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (M, 3) -> ids (M,) int32 (0 = no opinion) and confidences (M,) float32."""


class InstanceMap:
    """The instance map's parts wired together; every public method takes its lock.

    Attributes:
        votes: :class:`VoteGrid`; ids: :class:`IdTable`; evidence: :class:`PairEvidence`.
    """

    def __init__(self, cfg: InstanceConfig | None = None, embedding_dim: int | None = None):
        self.cfg = cfg or InstanceConfig()
        self._lock = threading.RLock()
        # which map this is: shared by its reader copies (caches keyed on it and on
        # ``version`` serve a copy and its original alike)
        self.lineage = next(_LINEAGES)
        # bumped by every change of votes, ids or features: readers cache derived views
        # (labels) on it
        self.version = 0
        self._features_copy: tuple[int, tuple[VoxelFeatures, np.ndarray]] | None = None
        # keyed on whether pending parts count as ids of their own
        self._owners: dict[bool, tuple[int, np.ndarray, np.ndarray]] = {}
        self._voted: tuple[int, VoteGrid, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._wire(VoteGrid(self.cfg.voxel_size_m, self.cfg.votes_per_voxel,
                            self.cfg.search_radius, self.cfg.max_search_radius),
                   IdTable(embedding_dim, self.cfg.confirm_gap_frames,
                           self.cfg.min_shown_share),
                   PairEvidence(self.cfg))
        self.features = self._new_features(embedding_dim)
        c = self.cfg.changes
        self.changes = ChangeDetector(c.min_voxels, c.gone_share, c.present_share,
                                      c.gone_views, c.tol_rel, self.cfg.voxel_size_m,
                                      c.surface_tol_rel)

    def reader_copy(self) -> "InstanceMap":
        """A copy of the map as it is now, for readers that must not wait for the next
        frame's association and integration (InstanceLoc, the labels of its answer): votes,
        ids and fused features copied, the same ``lineage`` and ``version``. Readers only:
        it keeps no pair evidence or change history, so nothing is to be integrated into
        it."""
        with self._lock:
            im = InstanceMap(self.cfg)
            im._wire(self.votes.copy(), self.ids.copy(), PairEvidence(self.cfg))
            im.features = None if self.features is None else self.features.copy()
            im.lineage, im.version = self.lineage, self.version
            return im

    @contextlib.contextmanager
    def hold(self, wait: bool = True) -> Iterator[bool]:
        """The map's lock held through the block (yields True); without ``wait``, when
        another thread holds it, yields False at once, holding nothing."""
        if not self._lock.acquire(blocking=wait):
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()

    def _new_features(self, embedding_dim: int | None) -> VoxelFeatures | None:
        if not (self.cfg.voxel_features and embedding_dim):
            return None
        return VoxelFeatures(self.cfg.feature_voxel_size_m, int(embedding_dim),
                             self.cfg.feature_max_voxels)

    def _wire(self, votes: VoteGrid, ids: IdTable, evidence: PairEvidence) -> None:
        self.votes, self.ids, self.evidence = votes, ids, evidence
        self.associator = Associator(self.cfg, ids, votes, evidence)
        self.lifecycle = IdLifecycle(self.cfg, ids, votes, evidence)

    # ------------------------------------------------------------------ ids

    @property
    def frames_integrated(self) -> int:
        return self.ids.frames

    @property
    def merges(self) -> list[tuple[int, int]]:
        """(absorbed, survivor) of every merge, in order."""
        return self.ids.merges

    @property
    def num_voxels(self) -> int:
        return len(self.votes)

    def resolve(self, i: int) -> int:
        """The id that ``i`` survives as after merges (``i`` itself if never merged)."""
        with self._lock:
            return self.ids.resolve(i)

    def confirmed_ids(self) -> np.ndarray:
        """Ids that count in outputs: confirmed, alive, and not a pending part of another."""
        with self._lock:
            return self.ids.shown(self.cfg.confirm_frames)

    def pending_parts(self) -> dict[int, int]:
        """Confirmed pending part -> the shown id outputs show it as (its parent): parts
        split off a settled id that no view has shown apart from it often enough yet."""
        with self._lock:
            t = self.ids
            shown = set(t.shown(self.cfg.confirm_frames).tolist())
            lut = t.display_lut()
            mine = np.flatnonzero(t.alive & t.confirmed(self.cfg.confirm_frames)
                                  & (t.parent > 0))
            return {int(i): int(lut[i]) for i in mine if int(lut[i]) in shown}

    def id_lut(self) -> np.ndarray:
        """(next_id,) int64: every id issued -> its current id, 0 when it was deleted."""
        with self._lock:
            return self.ids.id_lut()

    def merge(self, a: int, b: int) -> int:
        """Merge two ids; returns the survivor."""
        with self._mutation():
            return self.lifecycle.merge(a, b)

    def owned_voxel_counts(self, parts: bool = False) -> np.ndarray:
        """(next id,) int64: how many voxels have each shown id as their strongest vote
        (0 for ids not shown); ``parts``: confirmed pending parts count as ids of their
        own, not as their parent."""
        with self._lock:
            owner, _ = self._voxel_owners(parts)
            return np.bincount(owner, minlength=len(self.ids.alive)).astype(np.int64)

    def merge_parts(self, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Merge each (part, whole) pair, in order, while both are still shown ids, or
        the part a pending part outputs show as the whole (a frame or a re-association on
        another thread may have merged, deleted or unconfirmed one since the caller
        looked); returns the pairs merged."""
        done = []
        with self._mutation():
            # a merge only absorbs an id into a shown one: resolved ids stay in this set
            shown = set(self.ids.shown(self.cfg.confirm_frames).tolist())
            lut = self.ids.display_lut()
            for a, b in pairs:
                ra, rb = self.ids.resolve(a), self.ids.resolve(b)
                pending = self.ids.alive[ra] and self.ids.parent[ra] > 0 and lut[ra] == rb
                if ra != rb and (ra in shown or pending) and rb in shown:
                    self.lifecycle.merge(ra, rb)
                    done.append((a, b))
        return done

    # ------------------------------------------------------------------ edits

    def remove_instance(self, instance_id: int) -> np.ndarray:
        """Delete a shown instance with its pending parts (picked up, or never there).

        Returns:
            (K,) int64 sorted packed keys of the space it took (:meth:`_footprint`).
        Raises:
            InstanceEditError: the map does not show ``instance_id`` (the reason).
        """
        with self._mutation():
            members = self._members(self._shown(instance_id))
            keys = self._footprint(members)
            if self.features is not None:
                self.features.clear(self._held_keys(members))
            self.votes.drop(members)
            self.ids.alive[np.flatnonzero(members)] = False
            self.evidence.forget(members)
            self.changes.forget(int(instance_id))
            return keys

    def move_instance(self, instance_id: int, transform: np.ndarray) -> np.ndarray:
        """Carry a shown instance (with its pending parts) by a rigid ``transform`` (4, 4,
        map frame: new position = transform @ old); its ids, embeddings and label stay.

        Returns:
            (K,) int64 sorted packed keys of the space it took before the move.
        Raises:
            InstanceEditError: the map does not show ``instance_id`` (the reason).
        """
        with self._mutation():
            members = self._members(self._shown(instance_id))
            keys = self._footprint(members)
            if self.features is not None:
                self.features.move(self._held_keys(members), transform)
            self.votes.move(members, transform)
            # who touched whom, or saw through it, at the old place says nothing of the new
            self.evidence.forget(members)
            self.changes.forget(int(instance_id))
            return keys

    def gone_in_view(self, depth: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray
                     ) -> list[tuple[int, Shape]]:
        """Judge the shown instances against a view's measured depth (H, W) and return
        those now gone for good with the shape of the voxels they show; the caller
        removes them (:mod:`~.changes`)."""
        with self._lock:
            c = self.cfg.changes
            shown = self.ids.shown(self.cfg.confirm_frames)
            age = self.ids.frames - self.changes.candidates_frame
            if (self.changes.candidates is None or age >= c.refresh_frames
                    or (age >= c.refresh_frames // 4
                        and np.setdiff1d(shown, self.changes.candidates_shown).size)):
                # every refresh_frames, sooner (a quarter of it) when an instance became
                # shown since
                self.changes.set_candidates(*self._shown_voxels(c.max_instance_voxels),
                                            self.ids.frames, shown)
            centres, owner = self._candidates()
            verdicts = self.changes.judge(centres, owner, depth, K, camera_to_world)
            gone = self.changes.update(verdicts, self.ids.frames)
            # the reading is up to refresh_frames old: an id read as shown then may no
            # longer be (min_shown_share), and is no instance to remove (its count of
            # views stays: shown again and still gone, it goes at the next such view)
            shown_now = set(shown.tolist())
            gone = [i for i in gone if i in shown_now]
            return [(i, self._shape(centres[owner == i], i)) for i in gone]

    def _candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """The last reading of shown voxels with today's ids (merges and removals since:
        the dead left out)."""
        centres, owner = self.changes.candidates
        owner = self.ids.display_lut()[owner]
        alive = owner > 0
        return centres[alive], owner[alive]

    def _shape(self, centres: np.ndarray, instance_id: int) -> Shape:
        emb = self.ids.unit_embeddings(np.array([instance_id])).get(int(instance_id))
        return Shape.of(centres, self.votes.voxel_size, emb)

    def find_moved(self) -> list[tuple[GoneInstance, int, Shape]]:
        """Instances removed as gone that show up elsewhere: (the removal, the new id it
        is seen as, the new id's shape), compared at each fresh reading of the shown
        voxels (:mod:`~.changes`)."""
        with self._lock:
            c, removed = self.cfg.changes, self.changes.removed
            if (not c.reidentify or not removed or self.changes.candidates is None
                    or self.changes.candidates_frame != self.ids.frames):
                return []
            centres, owner = self._candidates()
            born_after = min(g.frame for g in removed) - c.reid_frames
            gone_ids = {g.instance_id for g in removed}
            new, born = {}, {}
            for i, n in zip(*np.unique(owner, return_counts=True)):
                if (n >= c.min_voxels and int(i) not in gone_ids
                        and self.ids.first_frame[i] >= born_after):
                    new[int(i)] = self._shape(centres[owner == i], int(i))
                    born[int(i)] = int(self.ids.first_frame[i])
            return [(g, i, new[i]) for g, i in match_moved(
                removed, new, born, c.reid_size_ratio, c.reid_min_cosine,
                c.reid_mean_ratio)]

    def reidentify(self, new_id: int, old_id: int) -> None:
        """``new_id`` is ``old_id`` (removed as gone) seen elsewhere: the old id lives
        again, with the new one's votes and statistics."""
        with self._mutation():
            self.ids.alive[old_id] = True
            self.ids.absorb(new_id, old_id)
            self.votes.relabel(new_id, old_id)
            self.evidence.forget(self._members(old_id))
            self.changes.forget(new_id)

    @contextlib.contextmanager
    def _mutation(self):
        """The lock, with the version bumped on entry and on exit: nothing cached while a
        change is half done (a re-entrant read on this thread) outlives it."""
        with self._lock:
            self.version += 1
            try:
                yield
            finally:
                self.version += 1

    def _voxel_owners(self, parts: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(V,) int64 shown id of every voxel's strongest vote (0: none or not shown) and
        (V,) int8 how many ids voted there; read-only, computed once per map version
        (labels, their support rule and the readers' feature copy all ask). ``parts``:
        a confirmed pending part owns its voxels (else they show as its parent)."""
        cached = self._owners.get(parts)
        if cached is None or cached[0] != self.version:
            ids, voted = self._compute_voxel_owners(parts)
            ids.setflags(write=False)
            voted.setflags(write=False)
            cached = self._owners[parts] = (self.version, ids, voted)
        return cached[1], cached[2]

    def _voted_voxels(self) -> tuple[VoteGrid, np.ndarray, np.ndarray, np.ndarray]:
        """The vote grid, and (M, 3) float32 surface points
        (:meth:`VoteGrid.surface_points`), (M,) total vote weights and (M,) slots in that
        grid of the voxels holding votes; read-only, computed once per map version (every
        view without depth asks)."""
        cached = self._voted
        if cached is None or cached[0] != self.version or cached[1] is not self.votes:
            n = len(self.votes)
            weight = self.votes.weights[:n].sum(1)
            slots = np.flatnonzero(weight > 0)
            # where the measured points that voted lay (else the centre); float32: drawing
            # a view from them costs less, and 1e-7 relative is far below a voxel
            centers = self.votes.surface_points(slots).astype(np.float32)
            weight = weight[slots]
            for a in (centers, weight, slots):
                a.setflags(write=False)
            cached = self._voted = (self.version, self.votes, centers, weight, slots)
        return cached[1], cached[2], cached[3], cached[4]

    def _compute_voxel_owners(self, parts: bool) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.votes)
        w, vid = self.votes.weights[:n], self.votes.ids[:n]
        best, best_w = vid[:, 0].copy(), w[:, 0].copy()
        voted = (w[:, 0] > 0).astype(np.int8)
        for c in range(1, w.shape[1]):
            take = w[:, c] > best_w
            best = np.where(take, vid[:, c], best)
            best_w = np.where(take, w[:, c], best_w)
            voted += w[:, c] > 0
        lut = self.ids.id_lut() if parts else self.ids.display_lut()
        ids = lut[best].astype(np.int64)
        ids[~self.ids.confirmed(self.cfg.confirm_frames)[ids]] = 0
        return ids, voted

    def _shown_voxels(self, max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
        """Centres (V, 3) and ids (V,) of the voxels whose best vote is a shown instance
        (pending parts as their parent) showing at most ``max_voxels`` voxels."""
        n = len(self.votes)
        if n == 0:
            return np.zeros((0, 3)), np.zeros(0, np.int64)
        # each voxel's strongest vote (pending parts not added to their parent's here:
        # cheaper than labels(), and only for choosing what to judge), column by column
        # (reductions along the short vote axis are slow in numpy)
        ids, voted = self._voxel_owners()
        size = np.bincount(ids, minlength=1)
        # only voxels no other id voted for, none of whose six neighbours shows another
        # id: where an object meets its support (its base in the table's voxel layer) the
        # voxels lie on the support's surface once the object is gone
        pure = voted <= 1
        slots = np.flatnonzero((ids > 0) & (size[ids] <= max_voxels) & pure)
        coords = unpack_voxel_keys(self.votes.index.slot_keys()[slots])
        touching = np.zeros(slots.size, dtype=bool)
        for axis in range(3):
            for step in (-1, 1):
                nb = coords.copy()
                nb[:, axis] += step
                other = self.votes.index.lookup(pack_voxel_keys(nb))
                nid = np.where(other >= 0, ids[np.maximum(other, 0)], 0)
                touching |= (nid > 0) & (nid != ids[slots])
        slots, coords = slots[~touching], coords[~touching]
        return (coords.astype(np.float64) + 0.5) * self.votes.voxel_size, ids[slots]

    def _shown(self, instance_id: int) -> int:
        """``instance_id`` when outputs show it, else InstanceEditError with the reason."""
        t, i = self.ids, int(instance_id)
        if not 1 <= i < t.next_id:
            raise InstanceEditError(f"instance {i} was never issued (ids 1..{t.next_id - 1})")
        survivor = t.resolve(i)
        if survivor != i:
            raise InstanceEditError(f"instance {i} was merged into instance {survivor}")
        if not t.alive[i]:
            raise InstanceEditError(f"instance {i} was deleted")
        if t.parent[i] > 0:
            raise InstanceEditError(f"instance {i} is shown as part of instance "
                                    f"{int(t.display_lut()[i])}")
        if not t.confirmed(self.cfg.confirm_frames)[i]:
            if t.best_run[i] >= self.cfg.confirm_frames:
                raise InstanceEditError(
                    f"instance {i} is not shown: other instances hold its place in the map "
                    f"(shown in {t.present_shown[i]} of the {t.present[i]} views that saw "
                    f"it, under mapping.instances.min_shown_share "
                    f"{self.cfg.min_shown_share:g})")
            raise InstanceEditError(f"instance {i} is not confirmed yet")
        return i

    def voxel_bounds(self, instance_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo (3,), hi (3,)) corners of the voxel centres a shown instance (with its
        pending parts) holds votes in; None when it holds none.

        Raises:
            InstanceEditError: the map does not show ``instance_id`` (the reason).
        """
        with self._lock:
            slots, _ = self.votes.held_by(self._members(self._shown(instance_id)))
            if slots.size == 0:
                return None
            centres = (unpack_voxel_keys(self.votes.index.slot_keys()[slots]) + 0.5
                       ) * self.votes.voxel_size
            return centres.min(0), centres.max(0)

    def held_voxel_centres(self, instance_id: int) -> np.ndarray:
        """(N, 3) centres of the voxels where a shown instance (with its pending parts)
        holds at least a third of the votes.

        Raises:
            InstanceEditError: the map does not show ``instance_id`` (the reason).
        """
        with self._lock:
            keys = self._held_keys(self._members(self._shown(instance_id)))
            return (unpack_voxel_keys(keys) + 0.5) * self.votes.voxel_size

    def _held_keys(self, members: np.ndarray) -> np.ndarray:
        """Packed keys of the voxels where ids flagged in ``members`` hold at least a third
        of the votes (a presence, not a neighbour's edge vote)."""
        slots, mine = self.votes.held_by(members)
        slots = slots[mine >= self.votes.weights[slots].sum(1) / 3.0]
        return self.votes.index.slot_keys()[slots]

    def _footprint(self, members: np.ndarray) -> np.ndarray:
        """Sorted packed keys of the space ids flagged in ``members`` take: the voxels
        they hold (:meth:`_held_keys`), grown by one voxel (an object's rim voxels often
        hold only its neighbours' edge votes, and points whose own voxel was never voted
        lie beside)."""
        coords = unpack_voxel_keys(self._held_keys(members))
        r = np.arange(-1, 2)
        offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        return np.unique(pack_voxel_keys((coords[:, None, :] + offsets[None]).reshape(-1, 3)))

    def _members(self, instance_id: int) -> np.ndarray:
        """(n,) bool over ids (n covers every voted id): the instance and the pending
        parts shown as it."""
        lut = self.ids.display_lut()
        members = np.zeros(max(self.ids.alive.size, int(self.votes.ids.max(initial=0)) + 1),
                           dtype=bool)
        members[:lut.size] = (lut == instance_id) & self.ids.alive[:lut.size]
        return members

    # ------------------------------------------------------------------ rendering

    def render_points(self, points: np.ndarray, confirmed_only: bool = True,
                      footprint: np.ndarray | None = None, fill: InstanceFill | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Map ids (N,) int32 and vote confidences (N,) in [0, 1] at world points (N, 3).

        Args:
            footprint: (N,) pixel size on the surface [m] (see :meth:`VoteGrid.slots_of`).
            fill: labels points on observed voxels that hold no eligible vote: points
                (M, 3) -> ids (M,) (0: no opinion) and confidences (M,); the mapper passes
                its field. Unobserved points stay 0: the fill interpolates, never
                extrapolates into unseen territory.
        """
        with self._lock:
            return self._labels(points, self.votes.slots_of(points, footprint),
                                confirmed_only, fill)

    def _labels(self, points: np.ndarray, slots: np.ndarray, confirmed_only: bool,
                fill: InstanceFill | None) -> tuple[np.ndarray, np.ndarray]:
        """Voxel labels and confidences of points (N, 3) at their slots (N,), filled."""
        if confirmed_only:
            # outputs show pending parts as their parent: their votes count for it
            ids, conf = self.votes.labels(slots, self.ids.confirmed(self.cfg.confirm_frames),
                                          self.ids.display_lut())
        else:
            ids, conf = self.votes.labels(slots, self.ids.alive)
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
        return _image(ids, flat, depth.shape, np.int32), _image(conf, flat, depth.shape,
                                                                 np.float32)

    def render_surfaces(self, K: np.ndarray, camera_to_world: np.ndarray,
                        shape: tuple[int, int], min_weight: float, gap_m: float = 0.0,
                        confirmed_only: bool = True, fill: InstanceFill | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A view without depth: (H, W) int32 ids, (H, W) float32 confidences and the
        (H, W) float32 :meth:`surface_depth` they were read at.

        A pixel showing a drawn voxel takes that voxel's votes; only the pixels whose
        depth the gap closing made (no voxel drawn there) look their voxel up at that depth
        as :meth:`render_view` does (a search through the neighbourhood where it is
        empty, the cost of a view without depth on a large map).
        """
        depth, drawn, grid = self._draw_surfaces(K, camera_to_world, shape, min_weight,
                                                 gap_m)
        points, flat = backproject(depth, K, camera_to_world)
        with self._lock:
            slots = drawn.reshape(-1)[flat]
            if grid is not self.votes:
                slots[:] = -1  # the grid was replaced since: its slots mean nothing here
            look = np.flatnonzero(slots < 0)
            if look.size:
                slots[look] = self.votes.slots_of(points[look], pixel_footprint(
                    depth, K, flat[look]))
            ids, conf = self._labels(points, slots, confirmed_only, fill)
        return (_image(ids, flat, shape, np.int32), _image(conf, flat, shape, np.float32),
                depth)

    def surface_depth(self, K: np.ndarray, camera_to_world: np.ndarray,
                      shape: tuple[int, int], min_weight: float, gap_m: float = 0.0
                      ) -> np.ndarray:
        """(H, W) float32 depth of the map's surfaces seen from a view, 0 = none.

        The voxels holding enough votes, drawn as voxel-sized squares nearest first: where
        a view without depth meets what the map has observed. A lone vote may be one
        frame's outlier, so a voxel needs ``min_weight`` votes where the view sees it a
        pixel or more wide; farther away a frame's pixels sample only some of the voxels
        (one in (pixel footprint / voxel)^2), so the votes needed shrink by that share.
        Where no such voxel is drawn, the voxels with fewer votes are. Gaps up to about
        ``gap_m`` wide in a sparsely held near surface (what shows the surface behind it)
        are closed in screen space (:func:`~panoptic_mapping.core.geometry.close_gaps`,
        the radius from the view's median depth).
        """
        return self._draw_surfaces(K, camera_to_world, shape, min_weight, gap_m)[0]

    def _draw_surfaces(self, K: np.ndarray, camera_to_world: np.ndarray,
                       shape: tuple[int, int], min_weight: float, gap_m: float
                       ) -> tuple[np.ndarray, np.ndarray, VoteGrid]:
        """:meth:`surface_depth`, the (H, W) int64 slot of the voxel each pixel shows
        (-1: none drawn, or a depth the gap closing made), and the vote grid the slots
        are of."""
        with self._lock:
            grid, centers, weight, voted_slots = self._voted_voxels()
            size = self.votes.voxel_size
        world_to_cam = np.linalg.inv(np.asarray(camera_to_world, np.float64)).astype(
            np.float32)
        cam = centers @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        # in front of the camera and inside the widest view a square could reach
        z = cam[:, 2]
        f = max(K[0, 0], K[1, 1])
        reach = (0.5 * size * f + _SPLAT_MAX_RADIUS_PX) / f
        x_lim = (shape[1] / K[0, 0] + reach) * z
        y_lim = (shape[0] / K[1, 1] + reach) * z
        seen = (z > 1e-3) & (np.abs(cam[:, 0]) < x_lim) & (np.abs(cam[:, 1]) < y_lim)
        sampled = np.minimum((size * f) ** 2 / np.maximum(z, 1e-3) ** 2, 1.0)
        sure = weight >= min_weight * sampled
        keep = np.flatnonzero(seen & sure)
        depth, row = splat_camera_depth(cam[keep], K, shape, size, _SPLAT_MAX_RADIUS_PX,
                                        return_index=True)
        drawn = _slots_drawn(row, voted_slots[keep])
        hole = depth == 0
        weak = np.flatnonzero(seen & ~sure)
        if hole.any() and weak.size:
            # where no voxel with enough votes is seen, the weaker ones are the only word
            # the map has: drawn there, never in front of a surface it is sure of
            weak = weak[_squares_meet(hole, cam[weak], K, size)]
            fill, row = splat_camera_depth(cam[weak], K, shape, size, _SPLAT_MAX_RADIUS_PX,
                                           return_index=True)
            depth = np.where(hole, fill, depth)
            drawn = np.where(hole, _slots_drawn(row, voted_slots[weak]), drawn)
        shown = depth[depth > 0]
        if gap_m > 0 and shown.size:
            radius = int(np.ceil(gap_m * f / float(np.median(shown))))
            closed = close_gaps(depth, min(radius, _MAX_GAP_PX))
            drawn[closed != depth] = -1
            depth = closed
        return depth, drawn, grid

    def carve(self, depth: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray) -> int:
        """Withdraw ``carve_weight`` from the voxels a view's depth (H, W) sees through;
        returns how many. Outliers of an earlier depth (a wrong stereo match) float in
        space later views see through, and lose their votes."""
        with self._mutation():
            n = len(self.votes)
            if n == 0 or self.cfg.carve_weight <= 0:
                return 0
            free = seen_through(self.votes.index.centers(self.votes.voxel_size), depth, K,
                                camera_to_world, self.cfg.carve_tol_rel,
                                self.votes.voxel_size)
            self.votes.withdraw(np.flatnonzero(free), self.cfg.carve_weight)
            return int(free.sum())

    # ------------------------------------------------------------------ per frame

    def associate(self, masks: np.ndarray, reference: np.ndarray, valid: np.ndarray
                  ) -> AssociationResult:
        """Associate masks (H, W) with reference ids (H, W) over valid pixels (H, W) bool.

        Creates ids for new masks and records merge evidence; does not integrate votes.
        """
        with self._lock:
            return self.associator.associate(masks.astype(np.int64),
                                             reference.astype(np.int64), valid)

    def integrate(self, points: np.ndarray, point_labels: np.ndarray, weight: float = 1.0
                  ) -> None:
        """One vote per voxel for the label most of its points carry.

        Args:
            points: (P, 3) world points; point_labels: (P,) int map ids (0 = no vote).
        """
        with self._mutation():
            self.votes.integrate(points, point_labels, weight)

    def process_frame(self, masks: np.ndarray, depth: np.ndarray, K: np.ndarray,
                      camera_to_world: np.ndarray, embeddings: np.ndarray | None = None,
                      reference: np.ndarray | None = None, fill: InstanceFill | None = None,
                      measured: bool = True) -> AssociationResult:
        """Associate, integrate and update statistics for one frame with depth.

        Args:
            masks: (H, W) int mask ids (0 = none); depth: (H, W) metres (0 = unknown).
            embeddings: (M, D) per-mask embeddings, accumulated per id (pixel-weighted).
            reference: (H, W) ids to associate against instead of the voxel rendering.
            fill: without ``reference``: fills the voxel rendering that serves as the
                reference (see :meth:`render_points`).
            measured: whether ``depth`` was measured (False: stereo or the field's; see
                :class:`~panoptic_mapping.core.map.evidence.PairEvidence`).
        Returns:
            The association; ``labels`` are the frame's online ids.
        """
        with self._mutation():
            cfg = self.cfg
            valid = depth > 0
            points, flat = backproject(depth, K, camera_to_world)
            at = self.votes.locate(points)
            slots_flat = self.votes.slots_of(points, pixel_footprint(depth, K, flat), at)
            slots = np.full(depth.size, -1, dtype=np.int64)
            slots[flat] = slots_flat
            slots = slots.reshape(depth.shape)
            if reference is None:
                ids, _ = self._labels(points, slots_flat, False, fill)
                reference = _image(ids, flat, depth.shape, np.int32)
            lut = self.ids.id_lut()
            reference = lut[reference]
            self.ids.count_visible(reference, valid, cfg.min_pixels)
            present = self.votes.voters_under(slots_flat, cfg.min_pixels)
            self.ids.count_present(np.unique(lut[present[present < lut.size]]))
            edges = depth_edges(depth, cfg.depth_edge_curvature)
            meeting = None if cfg.apart_at == "any_edge" else depth_edges(
                depth, cfg.depth_edge_curvature, convex=False)
            result = self.associator.associate(masks.astype(np.int64), reference, valid, slots,
                                               edges, meeting, measured)
            self.ids.count_assigned(result.labels, masks, embeddings, cfg.min_pixels)
            self._integrate_frame(result, masks, depth.shape, points, flat, measured, at)
            if self.features is not None and embeddings is not None and len(embeddings):
                share = mask_shares(result.labels, masks)
                lut = self.ids.id_lut()
                given = lut[np.minimum(result.labels, lut.size - 1)]
                # where the map showed another instance than the mask's, the mask likely
                # swallowed that instance (a support's mask over a small object)
                share = np.where((reference > 0) & (given != reference),
                                 share * cfg.feature_disagree_weight, share).reshape(-1)[flat]
                self.features.integrate(points, masks.reshape(-1)[flat], embeddings, share)
            self.ids.frames += 1
            self.lifecycle.after_frame()
            result.labels = self.ids.resolve_image(result.labels)
            return result

    def make_pending(self, part: int, whole: int) -> bool:
        """Show ``part`` as ``whole`` until views show it apart from it (a pending part, see
        :mod:`~panoptic_mapping.core.map.lifecycle`); False where either is gone by now
        or ``part`` is already pending."""
        with self._mutation():
            t = self.ids
            part, whole = t.resolve(part), t.resolve(whole)
            if part == whole or not (t.alive[part] and t.alive[whole]) or t.parent[part]:
                return False
            t.parent[part] = whole
            return True

    def _integrate_frame(self, result: AssociationResult, masks: np.ndarray,
                         shape: tuple[int, int], points: np.ndarray, flat: np.ndarray,
                         measured: bool, at: PointVoxels | None = None) -> None:
        """Votes for the frame's labels at its points (P, 3) (pixels ``flat``; measured
        depth also places its voxels' surfaces; ``at``: their voxels, see
        :meth:`VoteGrid.locate`), and the negative evidence of its displaced pixels."""
        lab = result.labels.reshape(-1)[flat]
        inner = interior(masks).reshape(-1)[flat]
        self.votes.integrate(points, np.where(inner, lab, 0), locate=measured, at=at)
        self.votes.integrate(points, np.where(inner, 0, lab), weight=self.cfg.edge_vote_weight,
                             locate=measured, at=at)
        if result.displaced and self.cfg.unvote_weight > 0:
            # the points' own voxels (they exist now), not the neighbours that stood in for
            # them before integration: evidence is about what this frame saw
            own = np.full(shape[0] * shape[1], -1, dtype=np.int64)
            own[flat] = self.votes.own_slots(points, at)
            own = own.reshape(shape)
            for pixels, old in result.displaced:
                self.votes.unvote(own[pixels], old, self.cfg.unvote_weight)

    # ------------------------------------------------------------------ queries

    def instance_embeddings(self) -> dict[int, np.ndarray]:
        """Confirmed id -> unit mean embedding of the masks that joined it (each mask
        weighted by the share of its pixels on the id)."""
        with self._lock:
            return self.ids.unit_embeddings(self.confirmed_ids())

    def id_embeddings(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Id -> unit mean embedding of the masks that joined it, shown or not (pending
        parts, new ids), for the ids in ``ids`` that have one."""
        with self._lock:
            return self.ids.unit_embeddings(np.asarray(ids, np.int64))

    def instance_voxel_embeddings(self) -> dict[int, np.ndarray]:
        """Confirmed id -> unit mean of the fused voxel features (:mod:`.features`) of the
        voxels it holds (each voxel's strongest vote decides whose it is); {} without
        voxel features."""
        with self._lock:
            if self.features is None or len(self.votes) == 0:
                return {}
            owner, _ = self._voxel_owners()
            return self.features.pooled(self._feature_keys(), owner)

    def instance_boxes(self, quantile: float = 0.0, only: np.ndarray | None = None,
                       parts: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Confirmed id -> world axis-aligned bounds (lo (3,), hi (3,)) of the voxel cubes
        it holds (each voxel's strongest vote decides whose it is), from the ``quantile``
        to the 1 - ``quantile`` of its voxel centres along each axis; of the ids in
        ``only`` (None: all); ``parts``: pending parts apart from their parent."""
        owner, centres, starts = self._owned_centres(only, parts)
        half = self.votes.voxel_size / 2
        if quantile <= 0 and starts.size:
            # per instance and axis at once (an (N, 3) array reduced along its rows is slow)
            lo = np.stack([np.minimum.reduceat(centres[:, d], starts) for d in range(3)], 1)
            hi = np.stack([np.maximum.reduceat(centres[:, d], starts) for d in range(3)], 1)
            return {int(owner[a]): (lo[j] - half, hi[j] + half) for j, a in enumerate(starts)}
        return {int(owner[a]): _quantile_box(centres[a:b], quantile, half)
                for a, b in zip(starts, np.r_[starts[1:], owner.size])}

    def shares_inside(self, pairs: list[tuple[int, int]], quantile: float = 0.05,
                      up_axis: str | None = None, parts: bool = False
                      ) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """For each (part, whole) pair of shown ids (``parts``: or pending parts, apart
        from their parent), the share of the part's voxels whose centres lie inside the
        whole's box (as :meth:`instance_boxes` at ``quantile`` gives it; 0 where either
        id holds no voxel), and the boxes of every id in ``pairs``.

        Returns:
            (K,) shares; with ``up_axis`` ("z", "-y", ...) (K, 2): the share inside the
            box, and the share inside it or right under it (the box open downwards: the
            part lies within the whole's footprint, no higher than its top).
        """
        cols = 1 if up_axis is None else 2
        axis, up = up_direction(up_axis) if up_axis is not None else (-1, 1)
        if not pairs:
            return np.zeros((0, cols) if cols > 1 else 0), {}
        owner, centres, starts = self._owned_centres(np.unique(np.asarray(pairs, np.int64)),
                                                     parts)
        span = dict(zip(owner[starts].tolist(),
                        zip(starts.tolist(), np.r_[starts[1:], owner.size].tolist())))
        half = self.votes.voxel_size / 2
        boxes = {i: _quantile_box(centres[slice(*span[i])], quantile, half)
                 for i in sorted({i for pair in pairs for i in pair}) if i in span}
        out = np.zeros((len(pairs), cols))
        for k, (part, whole) in enumerate(pairs):
            if part not in span or whole not in boxes:
                continue
            pts = centres[slice(*span[part])]
            lo, hi = boxes[whole]
            # within the footprint and no higher than the top; above the floor apart
            under_top = np.ones(len(pts), bool)
            above_floor = np.ones(len(pts), bool)
            for d in range(3):  # column by column: (N, 3) reductions along rows are slow
                low, high = pts[:, d] >= lo[d], pts[:, d] <= hi[d]
                if d == axis:
                    above_floor, top = (low, high) if up > 0 else (high, low)
                    under_top &= top
                else:
                    under_top &= low & high
            out[k, 0] = (under_top & above_floor).mean()
            if cols > 1:
                out[k, 1] = under_top.mean()
        return (out[:, 0] if cols == 1 else out), boxes

    def _owned_centres(self, only: np.ndarray | None, parts: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The voxels of the ids in ``only`` (None: every shown id), grouped by id: (M,)
        their ids sorted (voxels in slot order within an id), (M, 3) float64 their centres
        [m], and the (K,) positions where each id's run begins."""
        with self._lock:
            if len(self.votes) == 0:
                return np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int64)
            owner, _ = self._voxel_owners(parts)
            keep = (owner > 0) if only is None else np.isin(owner, only)
            owner = owner[keep]
            keys = self.votes.index.slot_keys()[keep]
        order = np.argsort(owner, kind="stable")
        owner = owner[order]
        centres = (unpack_voxel_keys(keys[order]).astype(np.float64) + 0.5) \
            * self.votes.voxel_size
        return owner, centres, np.flatnonzero(run_starts(owner))

    def contacts_below(self, up_axis: str = "z", gap_m: float = 0.03,
                       only: np.ndarray | None = None, parts: bool = False
                       ) -> dict[int, dict[int, int]]:
        """Shown id T -> {shown id S: how many of T's voxels have a voxel of S under them
        within ``gap_m`` along ``up_axis`` ("z", "-y", ...)}: what T rests on or in, by
        contact (a box of stray voxels would say more than the surface does).

        Args:
            only: the ids T to look under (None: all).
            parts: confirmed pending parts as ids of their own, apart from their parent.
        """
        with self._lock:
            if len(self.votes) == 0:
                return {}
            owner, _ = self._voxel_owners(parts)
            sorted_keys, sorted_slots = self.votes.index.in_key_order()
        # the voxels in key order: the keys under them are in key order too (packing is
        # linear), and lookups of ascending keys are several times faster
        mine = owner[sorted_slots]
        pick = np.flatnonzero((mine > 0) if only is None else np.isin(mine, only))
        held, keys = sorted_slots[pick], sorted_keys[pick]
        coords = unpack_voxel_keys(keys)
        axis, up = up_direction(up_axis)
        down = -up
        steps = max(1, int(np.ceil(gap_m / self.votes.voxel_size)))
        # the first held voxel below each voxel, if another instance's (its own blocks:
        # only an instance's underside touches what it rests on)
        found = np.zeros(held.size, np.int64)
        open_ = np.arange(held.size)  # voxels that have met no held voxel yet
        for k in range(1, steps + 1):
            below = coords[open_].copy()
            below[:, axis] += down * k
            s = self.votes.index.lookup(pack_voxel_keys(below))
            under = np.where(s >= 0, owner[np.maximum(s, 0)], 0)
            other = (under > 0) & (under != owner[held[open_]])
            found[open_[other]] = under[other]
            open_ = open_[under == 0]
        t, s_ = owner[held][found > 0], found[found > 0]
        out: dict[int, dict[int, int]] = {}
        if t.size:
            base = int(max(t.max(), s_.max())) + 1
            pairs, n = np.unique(t * base + s_, return_counts=True)
            for (a, b), c in zip(zip(*np.divmod(pairs, base)), n):
                out.setdefault(int(a), {})[int(b)] = int(c)
        return out

    def _feature_keys(self) -> np.ndarray:
        """(V,) packed keys, at the features' voxel size, of every vote voxel's centre."""
        centres = self.votes.index.centers(self.votes.voxel_size)
        return pack_voxel_keys(voxel_coords(centres, self.features.voxel_size))

    def features_copy(self) -> tuple[VoxelFeatures, np.ndarray] | None:
        """A copy of the fused voxel features and (V,) the shown instance holding each of
        their voxels (0: none), one per map version: readers query it without this lock.
        None without voxel features."""
        with self._lock:
            if self.features is None:
                return None
            cached = self._features_copy
            if cached is None or cached[0] != self.version:
                features = self.features.copy()
                owners = np.zeros(len(features), np.int64)
                if len(self.votes):
                    # each feature voxel's owner: the id holding most vote voxels in it
                    owner, _ = self._voxel_owners()
                    s = features.index.lookup(self._feature_keys())
                    ok = (s >= 0) & (owner > 0)
                    if ok.any():
                        base = int(owner.max()) + 1
                        pairs, n = np.unique(s[ok] * base + owner[ok], return_counts=True)
                        slot, who = np.divmod(pairs, base)
                        order = np.lexsort((-n, slot))
                        first = run_starts(slot[order])
                        owners[slot[order][first]] = who[order][first]
                cached = self._features_copy = (self.version, (features, owners))
            return cached[1]

    def state(self) -> dict:
        """Everything needed to restore the map (plain arrays and scalars)."""
        with self._lock:
            features = {} if self.features is None else self.features.state()
            return {**self.votes.state(), **self.ids.state(), "pairs": self.evidence.state(),
                    **features}

    @classmethod
    def from_state(cls, state: dict, cfg: InstanceConfig | None = None) -> "InstanceMap":
        """Inverse of :meth:`state`."""
        im = cls(cfg)
        votes = VoteGrid(im.cfg.voxel_size_m, im.cfg.votes_per_voxel, im.cfg.search_radius,
                         im.cfg.max_search_radius)
        votes.load_state(state)
        evidence = PairEvidence(im.cfg)
        evidence.load_state(state["pairs"])
        ids = IdTable.from_state(state, im.cfg.confirm_gap_frames, im.cfg.min_shown_share)
        im._wire(votes, ids, evidence)
        dim = ids.emb.shape[1]
        if im.cfg.voxel_features and dim:
            im.features = VoxelFeatures.from_state(state, im.cfg.feature_voxel_size_m, dim,
                                                   im.cfg.feature_max_voxels)
        return im

    def stats(self) -> dict:
        with self._lock:
            return {"voxels": self.num_voxels, "ids_created": self.ids.next_id - 1,
                    "confirmed": int(self.confirmed_ids().size), "merges": len(self.merges),
                    "frames": self.frames_integrated,
                    "removed_as_gone": self.changes.total_events,
                    "found_moved": self.changes.moved_events,
                    **({} if self.features is None else {
                        "feature_voxels": len(self.features),
                        "feature_voxels_refused": self.features.refused,
                        "feature_mb": round(self.features.nbytes / 2**20, 1)})}


def _quantile_box(centres: np.ndarray, quantile: float, half: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(lo (3,), hi (3,)): from the ``quantile`` to the 1 - ``quantile`` of (N, 3) voxel
    centres along each axis, widened by ``half`` a voxel (the cubes' faces)."""
    lo, hi = np.quantile(centres, [quantile, 1.0 - quantile], axis=0)
    return lo - half, hi + half
