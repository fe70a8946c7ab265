"""Vision-language features fused per voxel across views.

A mask's embedding says what one view thought of the whole mask. Fused per voxel, the
views that saw a surface agree or outvote each other *there*: a part that one segmenter
cut out in some views (a drawer's handle) keeps its own direction in feature space even
where the instance it belongs to is the drawer, stuff (floor, walls) carries the features
of every view that saw it, and any point of the map can be asked how well it matches a
phrase. Each voxel keeps the running mean of its per-view observations (one per view:
the pixel-weighted mean of the unit embeddings of the masks whose pixels fall in it), so a
close view with many pixels on a voxel counts once, as a far one does.

Storage is float16 (D values per voxel; 1 kB a voxel for 512-D CLIP features), on its own
:class:`~panoptic_mapping.core.map.voxels.VoxelIndex` at the instance map's voxel size,
so its keys are the vote grid's and the two can be joined by key.
"""
from __future__ import annotations

import numpy as np
import torch

from panoptic_mapping.core.geometry import pack_voxel_keys, voxel_coords
from panoptic_mapping.core.map.grouping import run_starts, unique_inverse_counts
from panoptic_mapping.core.map.voxels import VoxelIndex, grown_rows

__all__ = ["VoxelFeatures", "unit_rows", "mask_shares"]

# Feature rows widened to float32 at a time by VoxelFeatures.cosines (4 MB at 512-D).
_COSINE_CHUNK = 2048


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of (N, D) scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 0, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


def _group_sums(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.add.reduceat(rows, starts, axis=0)`` of rows (N, D) in groups beginning at
    ``starts`` (G,): groups of one row are that row, and only the others are reduced
    (numpy reduces (N, D) along its rows ~8x slower than it copies them, and a frame's
    (voxel, mask) pairs are nearly all alone in their voxel)."""
    sums = rows[starts]
    size = np.diff(np.r_[starts, rows.shape[0]])
    many = np.flatnonzero(size > 1)
    if many.size:
        lengths = size[many]
        first = np.cumsum(lengths) - lengths  # where each group begins among the picked
        picked = np.repeat(starts[many] - first, lengths) + np.arange(int(lengths.sum()))
        sums[many] = np.add.reduceat(rows[picked], first, axis=0)
    return sums


def mask_shares(labels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(H, W) float32: for each pixel, the share of its mask's pixels that carry the map
    id the pixel was given (0 off masks or ids). A mask that is mostly the table speaks
    little for the mug pixels it swallowed, as in the masks' mean per id
    (:meth:`~panoptic_mapping.core.map.ids.IdTable.count_assigned`).

    Args:
        labels: (H, W) int map ids of the pixels (0 = none); masks: (H, W) int mask ids.
    """
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    m = np.asarray(masks, dtype=np.int64).reshape(-1)
    sel = (lab > 0) & (m > 0)
    out = np.zeros(lab.size, np.float32)
    if sel.any():
        base = int(lab.max()) + 1
        pair = m[sel] * base + lab[sel]
        size = np.bincount(m[sel], minlength=int(m.max()) + 1)
        if size.size * base <= 4 * pair.size + (1 << 16):
            # few masks and ids: pixel counts per pair by a dense count, not a sort
            cnt = np.bincount(pair, minlength=size.size * base)
            out[sel] = cnt[pair] / size[pair // base]
        else:
            uniq, inv, cnt = unique_inverse_counts(pair)
            out[sel] = (cnt / size[uniq // base])[inv.reshape(-1)]
    return out.reshape(np.shape(labels))


class VoxelFeatures:
    """Running mean of mask embeddings per voxel.

    Args:
        voxel_size: voxel edge [m] (the instance map's, so keys match its votes).
        dim: embedding dimension D.
    """

    def __init__(self, voxel_size: float, dim: int, max_voxels: int | None = None):
        self.voxel_size = float(voxel_size)
        self.dim = int(dim)
        self.max_voxels = max_voxels
        self.index = VoxelIndex()
        self.mean = np.zeros((0, self.dim), dtype=np.float16)  # (V, D) mean of unit obs.
        self.weight = np.zeros(0, dtype=np.float32)  # (V,) views fused
        self.refused = 0  # new voxels not created because the store was full

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.weight.nbytes + 3 * 8 * len(self.index))

    # ------------------------------------------------------------------ updates

    def integrate(self, points: np.ndarray, point_masks: np.ndarray,
                  embeddings: np.ndarray, point_weights: np.ndarray | None = None) -> int:
        """Fuse one view.

        Args:
            points: (P, 3) world points of the view's pixels with depth.
            point_masks: (P,) int mask id of each point (0 = no mask: ignored).
            embeddings: (M, D) per-mask embeddings (row m - 1 is mask m); zero rows (no
                embedding) are ignored.
            point_weights: (P,) how far each point's mask embedding speaks for it, in
                [0, 1] (:func:`mask_shares`); a voxel's observation weighs the mean of
                its points'. None: 1.
        Returns:
            The number of voxels updated.
        """
        emb = unit_rows(embeddings)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"embeddings of dimension {self.dim} expected, got {emb.shape}")
        m = np.asarray(point_masks, dtype=np.int64)
        keep = (m > 0) & (m <= emb.shape[0])
        if keep.any():
            keep[keep] = (np.abs(emb) > 0).any(1)[m[keep] - 1]  # masks with an embedding
        if not keep.any():
            return 0
        keys = pack_voxel_keys(voxel_coords(np.take(points, np.flatnonzero(keep), axis=0),
                                            self.voxel_size))
        pw = np.ones(int(keep.sum()), np.float64) if point_weights is None else \
            np.asarray(point_weights, dtype=np.float64)[keep]
        if self.max_voxels is not None:
            # a full store keeps fusing into the voxels it has and creates no more
            old = self.index.lookup(keys) >= 0
            new_keys = np.unique(keys[~old])
            room = max(self.max_voxels - len(self.index), 0)
            if new_keys.size > room:
                self.refused += int(new_keys.size - room)
                admitted = old | np.isin(keys, new_keys[:room])
                keys, pw = keys[admitted], pw[admitted]
                keep[keep] = admitted
                if not keys.size:
                    return 0
        slots = self.index.insert(keys)
        self._grow(len(self.index))
        base = emb.shape[0] + 1
        # (voxel, mask) pairs with their pixel counts and weights: a few per voxel, never
        # (P, D)
        pairs, inv, counts = unique_inverse_counts(slots * base + m[keep])
        pair_w = np.bincount(inv.reshape(-1), weights=pw, minlength=pairs.size)
        s, mask = np.divmod(pairs, base)
        starts = np.flatnonzero(run_starts(s))
        obs = unit_rows(_group_sums(emb[mask - 1] * pair_w[:, None].astype(np.float32),
                                    starts))
        w = np.add.reduceat(pair_w, starts) / np.add.reduceat(counts, starts)
        ok = w > 0
        self._add(s[starts][ok], obs[ok], w[ok].astype(np.float32))
        return int(ok.sum())

    def _add(self, slots: np.ndarray, obs: np.ndarray, w: np.ndarray) -> None:
        """Fold observations (N, D) of weight (N,) into distinct ``slots`` (N,)."""
        old_w = self.weight[slots]
        total = old_w + w
        # float16 <-> float32 through torch: numpy converts half floats ~4-25x slower
        # (both round to nearest even: the same bits)
        old = torch.from_numpy(np.ascontiguousarray(self.mean[slots])).float().numpy()
        new = (old * old_w[:, None] + obs * w[:, None]) / np.maximum(total, 1e-12)[:, None]
        self.mean[slots] = torch.from_numpy(np.ascontiguousarray(new, np.float32)).half().numpy()
        self.weight[slots] = total

    def _grow(self, n: int) -> None:
        cap = self.max_voxels
        self.mean, self.weight = grown_rows(self.mean, n, cap), grown_rows(self.weight, n, cap)

    def clear(self, keys: np.ndarray) -> None:
        """Forget the voxels with packed ``keys`` (K,) (an instance removed)."""
        s = self.index.lookup(np.asarray(keys, dtype=np.int64))
        s = s[s >= 0]
        self.mean[s] = 0
        self.weight[s] = 0.0

    def move(self, keys: np.ndarray, transform: np.ndarray) -> None:
        """Carry the voxels with packed ``keys`` (K,) by a rigid ``transform`` (4, 4,
        world -> world) applied to their centres (an instance moved); voxels landing on
        observed ones are averaged by weight."""
        s = self.index.lookup(np.asarray(keys, dtype=np.int64))
        s = s[(s >= 0)]
        s = s[self.weight[s] > 0]
        if s.size == 0:
            return
        centres = self.index.centers(self.voxel_size)[s]
        moved = centres @ transform[:3, :3].T + transform[:3, 3]
        obs, w = self.mean[s].astype(np.float32), self.weight[s].copy()
        self.mean[s] = 0
        self.weight[s] = 0.0
        dest = self.index.insert(pack_voxel_keys(voxel_coords(moved, self.voxel_size)))
        self._grow(len(self.index))
        # several voxels may land in one: sum per destination first
        uniq, inv = np.unique(dest, return_inverse=True)
        acc = np.zeros((uniq.size, self.dim), np.float32)
        np.add.at(acc, inv, obs * w[:, None])
        wsum = np.bincount(inv, weights=w, minlength=uniq.size).astype(np.float32)
        self._add(uniq, acc / wsum[:, None], wsum)

    def copy(self) -> "VoxelFeatures":
        """An independent copy (a reader's snapshot: queries run on it without a lock)."""
        f = VoxelFeatures(self.voxel_size, self.dim, self.max_voxels)
        f.index = self.index.copy()
        f.mean, f.weight = self.mean[:len(self.index)].copy(), self.weight[:len(self.index)].copy()
        return f

    # ------------------------------------------------------------------ reads

    def slots_at(self, points: np.ndarray, search_radius: int = 1) -> np.ndarray:
        """(N,) slots of the voxels holding features nearest world points (N, 3): the
        point's own voxel, else the nearest within ``search_radius`` voxels (a held-out
        view's surface lies between the voxels the mapped views filled); -1: none."""
        coords = voxel_coords(points, self.voxel_size)
        # a cloud holds many points a voxel: each voxel looked up once, in key order
        keys, inverse = np.unique(pack_voxel_keys(coords), return_inverse=True)
        own = self.index.lookup(keys)
        own[own >= 0] = np.where(self.weight[own[own >= 0]] > 0, own[own >= 0], -1)
        slots = own[inverse.reshape(-1)]
        miss = np.flatnonzero(slots < 0)
        found = self.index.nearest(points[miss], coords[miss], search_radius,
                                   self.voxel_size, usable=self.weight > 0)
        hit = found >= 0
        slots[miss[hit]] = found[hit]
        return slots

    def cosines(self, slots: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """(M, K) float32 cosine of the mean feature of each voxel ``slots`` (M,) with each
        unit row of ``directions`` (K, D); 0 for a voxel without features.

        The float16 means are widened a chunk at a time inside one matrix product, never
        as one (M, D) float32 array: over a room's 80k voxels of 512-D features, widening
        them all first took longer than the products themselves.
        """
        slots = np.asarray(slots, dtype=np.int64)
        dirs = torch.from_numpy(np.ascontiguousarray(directions, dtype=np.float32)).t()
        out = np.zeros((slots.size, dirs.shape[1]), np.float32)
        mean = torch.from_numpy(self.mean)
        for a in range(0, slots.size, _COSINE_CHUNK):
            rows = mean[torch.from_numpy(slots[a:a + _COSINE_CHUNK])].float()  # (C, D)
            norm = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
            dots = rows @ dirs
            out[a:a + _COSINE_CHUNK] = torch.where(
                norm > 0, dots / norm.clamp_min(1e-12), torch.zeros_like(dots)).numpy()
        return out

    def at_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit features (N, D) float32 and weights (N,) of the voxels with packed
        ``keys`` (N,); zero where a voxel holds none."""
        s = self.index.lookup(np.asarray(keys, dtype=np.int64))
        feats = np.zeros((s.size, self.dim), np.float32)
        w = np.zeros(s.size, np.float32)
        ok = s >= 0
        feats[ok] = unit_rows(self.mean[s[ok]])
        w[ok] = self.weight[s[ok]]
        return feats, w

    def at_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit features (N, D) and weights (N,) of the voxels world points (N, 3) fall in."""
        return self.at_keys(pack_voxel_keys(voxel_coords(points, self.voxel_size)))

    def pooled(self, keys: np.ndarray, owner: np.ndarray) -> dict[int, np.ndarray]:
        """owner id -> unit weighted mean feature of its voxels.

        Args:
            keys: (V,) packed voxel keys; owner: (V,) int ids (0 = none).
        """
        keys = np.asarray(keys, dtype=np.int64)
        owner = np.asarray(owner, dtype=np.int64)
        s = self.index.lookup(keys)
        ok = (s >= 0) & (owner > 0)
        s, owner = s[ok], owner[ok]
        ok = self.weight[s] > 0
        s, owner = s[ok], owner[ok]
        if s.size == 0:
            return {}
        order = np.argsort(owner, kind="stable")
        s, owner = s[order], owner[order]
        starts = np.flatnonzero(run_starts(owner))
        # a voxel's mean of unit observations, weighted by how many views it fused
        sums = np.add.reduceat(self.mean[s].astype(np.float32) * self.weight[s, None],
                               starts, axis=0)
        sums = unit_rows(sums)
        return {int(i): sums[k] for k, i in enumerate(owner[starts]) if sums[k].any()}

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict[str, np.ndarray]:
        n = len(self.index)
        return {"feature_keys": self.index.slot_keys().copy(),
                "feature_mean": self.mean[:n].copy(), "feature_weight": self.weight[:n].copy()}

    @classmethod
    def from_state(cls, state: dict, voxel_size: float, dim: int,
                   max_voxels: int | None = None) -> "VoxelFeatures":
        """Inverse of :meth:`state`; a map saved without features gives empty ones."""
        f = cls(voxel_size, dim, max_voxels)
        if "feature_keys" not in state:
            return f
        mean = np.asarray(state["feature_mean"], dtype=np.float16)
        weight = np.asarray(state["feature_weight"], dtype=np.float32)
        keys = np.asarray(state["feature_keys"], dtype=np.int64)
        if mean.ndim != 2 or mean.shape[1] != dim or not (mean.shape[0] == weight.size
                                                          == keys.size):
            raise ValueError(f"voxel features of shape {mean.shape} with {weight.size} "
                             f"weights and {keys.size} keys do not fit dimension {dim}")
        f.index = VoxelIndex.from_state({"slot_keys": keys})
        f.mean, f.weight = mean.copy(), weight.copy()
        return f
