"""Mask post-processing shared by every segmenter (and the benchmark's front-ends).

A segmenter produces either a stack of possibly overlapping binary masks (FastSAM, SAM)
or a label image (the classical segmenter). Both end as the mapper's input: one
non-overlapping (H, W) int32 label image with compact ids 1..M and one score per id.

* :func:`rasterize_masks` resolves overlaps as 3DIML rasterises SAM masks: masks are drawn
  largest first, so where masks overlap the smaller one is on top (a mug on a table keeps
  its pixels; the table mask does not swallow it).
* :func:`fill_holes` closes holes inside a mask that no other mask covers.
* :func:`postprocess_with_ids` / :func:`postprocess_labels` drop masks under a minimum area
  and compact the ids, keeping their order.
* :func:`masks_to_labels` chains the three for a mask stack and carries the scores along.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "CROSS",
    "neighbour_pairs",
    "postprocess_with_ids",
    "postprocess_labels",
    "rasterize_masks",
    "fill_holes",
    "masks_to_labels",
    "compactness_scores",
]

# 4-connectivity: masks touch when they share an edge, not only a corner.
CROSS = ndimage.generate_binary_structure(2, 1)

# Masks rasterised per chunk on a GPU: bounds the temporary (chunk, H, W) int32 tensor.
_RASTER_CHUNK = 32
# Redraws after dropping masks hidden under smaller ones (one is almost always enough).
_REDRAW_PASSES = 3


def postprocess_with_ids(labels: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`postprocess_labels` that also returns which input id each output id had.

    Args:
        labels: (H, W) integer label image, 0 = no mask, any non-negative ids.
        min_area: masks with fewer pixels become 0.

    Returns:
        (H, W) int32 labels with compact ids 1..M, and (M,) int64 ``old_ids`` where
        ``old_ids[i]`` is the input id of output label ``i + 1``.
    """
    labels = np.asarray(labels)
    ids, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    keep = (ids != 0) & (counts >= max(int(min_area), 1))
    # np.unique sorts, so the cumulative sum keeps the input order of the surviving ids.
    new_of_unique = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    out = new_of_unique[inverse].reshape(labels.shape)
    return out, ids[keep].astype(np.int64)


def postprocess_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop masks smaller than ``min_area`` and compact the ids, keeping their order.

    Args:
        labels: (H, W) integer label image, 0 = no mask.
        min_area: masks with fewer pixels are set to 0.

    Returns:
        (H, W) int32 label image with ids 1..M; a mask with a smaller input id than another
        keeps a smaller output id.
    """
    return postprocess_with_ids(labels, min_area)[0]


def neighbour_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of all horizontally and vertically adjacent pixel pairs.

    Returns:
        Two (P,) arrays ``a, b`` with the values on either side of every 4-neighbour edge
        (P = H*(W-1) + (H-1)*W).
    """
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    return a, b


def _as_masks(masks: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(N, H, W) bool: a GPU tensor stays on its GPU, anything else becomes numpy."""
    if isinstance(masks, torch.Tensor):
        if masks.device.type != "cpu":
            return masks.bool()
        masks = masks.numpy()
    return np.asarray(masks).astype(bool, copy=False)


def _areas(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) int64 pixel count per mask of an (N, H, W) bool stack."""
    if isinstance(masks, torch.Tensor):
        return masks.flatten(1).sum(1).cpu().numpy()
    n, h, w = masks.shape
    return np.count_nonzero(masks.reshape(n, h * w), axis=1)


def rasterize_masks(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """One label image from overlapping binary masks, smaller masks on top.

    Args:
        masks: (N, H, W) bool (or 0/1) masks, numpy or torch on any device.

    Returns:
        (H, W) int32 labels: ``i + 1`` where mask ``i`` is the smallest mask covering the
        pixel, 0 where no mask does. Equal areas: the later mask is on top.
    """
    masks = _as_masks(masks)
    n, h, w = masks.shape
    if n == 0:
        return np.zeros((h, w), np.int32)
    # Largest first, so smaller masks overwrite them (stable: later wins among equals).
    order = np.argsort(-_areas(masks), kind="stable")
    if isinstance(masks, np.ndarray):
        # On the CPU painting is fastest: each mask is one masked assignment.
        labels = np.zeros((h, w), np.int32)
        for i in order:
            labels[masks[i]] = i + 1
        return labels
    return _rasterize_on_device(masks, torch.from_numpy(order).to(masks.device))


def _rasterize_on_device(masks: torch.Tensor, order: torch.Tensor) -> np.ndarray:
    """:func:`rasterize_masks` on a GPU: a pixel takes the highest draw rank covering it,
    computed in chunks (no sequential kernel launches per mask)."""
    n, h, w = masks.shape
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, n + 1, device=order.device)
    best = torch.zeros((h, w), dtype=torch.int32, device=masks.device)
    for start in range(0, n, _RASTER_CHUNK):
        chunk = masks[start:start + _RASTER_CHUNK]
        r = rank[start:start + _RASTER_CHUNK].to(torch.int32)
        best = torch.maximum(best, (chunk * r[:, None, None]).amax(0))
    index_of_rank = torch.cat([torch.zeros(1, dtype=order.dtype, device=order.device),
                               order + 1]).to(torch.int32)
    return index_of_rank[best.long()].cpu().numpy()


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Give each mask the unlabelled pixels it encloses.

    A hole is a 4-connected set of pixels enclosed by one mask; only its pixels with label
    0 are filled, so a smaller mask inside a larger one stays on top.

    Args:
        labels: (H, W) integer labels, 0 = no mask.

    Returns:
        (H, W) labels of the same dtype (a copy).
    """
    out = np.array(labels, copy=True)
    for i, sl in enumerate(ndimage.find_objects(out), start=1):
        if sl is None:
            continue
        crop = out[sl]
        mask = crop == i
        filled = ndimage.binary_fill_holes(mask, structure=CROSS)
        crop[filled & ~mask & (crop == 0)] = i
    return out


def masks_to_labels(masks: torch.Tensor | np.ndarray, scores: torch.Tensor | np.ndarray,
                    min_area: int, fill: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The shared post-processing of a mask stack: overlaps, holes, minimum area, ids.

    Args:
        masks: (N, H, W) bool masks (any device), in any order.
        scores: (N,) confidence per mask.
        min_area: smallest mask kept, counted after overlaps are resolved (a mask mostly
            covered by smaller ones disappears, and the masks under it take its pixels).
        fill: fill holes that no other mask covers.

    Returns:
        (H, W) int32 labels with compact ids 1..M, and (M,) float32 scores of those ids.
    """
    scores = torch.as_tensor(scores).detach().float().cpu().numpy().reshape(-1)
    masks = _as_masks(masks)
    if masks.shape[0] != scores.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {scores.shape[0]} scores")
    # Masks that are too small on their own can never survive; skip drawing them.
    keep = _areas(masks) >= min_area
    masks, scores = _select(masks, keep), scores[keep]
    labels = rasterize_masks(masks)
    for _ in range(_REDRAW_PASSES):
        # A mask left with too few visible pixels goes, and the masks under it get those
        # pixels back (redrawing without it), rather than leaving a gap.
        visible = np.bincount(labels.ravel(), minlength=masks.shape[0] + 1)[1:]
        gone = visible < min_area
        if not gone.any():
            break
        masks, scores = _select(masks, ~gone), scores[~gone]
        labels = rasterize_masks(masks)
    if fill:
        labels = fill_holes(labels)
    labels, old_ids = postprocess_with_ids(labels, min_area)
    return labels, scores[old_ids - 1].astype(np.float32)


def _select(masks: torch.Tensor | np.ndarray, keep: np.ndarray) -> torch.Tensor | np.ndarray:
    """The masks where the (N,) bool ``keep`` is True, on the masks' device."""
    if isinstance(masks, torch.Tensor):
        return masks[torch.from_numpy(keep).to(masks.device)]
    return masks[keep]


def compactness_scores(labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) float32 isoperimetric compactness 4*pi*area / perimeter^2 clipped to (0, 1].

    Perimeter = pixel edges to other labels or the image border (a square scores ~0.79).
    Used as the score of a mask from a segmenter that has no confidence of its own.
    """
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    a, b = neighbour_pairs(labels)
    m = a != b
    perim = (np.bincount(a[m], minlength=n + 1) + np.bincount(b[m], minlength=n + 1))[1:]
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    perim = perim + np.bincount(border, minlength=n + 1)[1:]
    perim = np.maximum(perim.astype(np.float64), 1.0)
    return np.clip(4 * np.pi * area / perim ** 2, 1e-3, 1.0).astype(np.float32)
