"""InstanceLoc's mask vote: worked examples, and on a map built from views."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.config import MaskVoteConfig
from panoptic_mapping.core.map.instances import InstanceMap
from panoptic_mapping.core.map.localize import vote_masks

from wall_scene import H, W, K, camera, ground_truth, shuffled, ingest, map_ids


def test_vote_masks_worked_example():
    masks = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    rendered = np.array([[7, 7, 8, 0], [7, 9, 0, 0]])
    valid = np.ones_like(masks, bool)
    ids, answers = vote_masks(masks, rendered, valid, MaskVoteConfig(), min_pixels=1)
    assert answers == {1: (7, 0.75)}  # mask 2: 1 of 4 pixels (25 %) < min_share 0.3
    # 9 holds 1 of mask 1's 4 pixels = 25 % >= split_share 0.25, so it keeps its pixel
    assert ids[:, :2].tolist() == [[7, 7], [7, 9]]
    assert (ids[:, 2:] == 0).all()


def test_vote_masks_keeps_glued_objects_apart():
    masks = np.array([[1, 1, 1, 1, 1, 1, 1, 1]])
    rendered = np.array([[7, 7, 7, 7, 7, 8, 8, 8]])  # one mask over two map objects
    ids, answers = vote_masks(masks, rendered, np.ones_like(masks, bool), MaskVoteConfig(),
                              min_pixels=1)
    assert ids.tolist() == [[7, 7, 7, 7, 7, 8, 8, 8]]
    assert answers == {1: (7, 5 / 8)}


def test_vote_masks_takes_boundaries_between_present_objects_from_the_map():
    masks = np.array([[1, 1, 1, 2, 2, 2]])  # mask 1 overreaches one pixel into object 8
    rendered = np.array([[7, 7, 8, 8, 8, 8]])
    ids, answers = vote_masks(masks, rendered, np.ones_like(masks, bool), MaskVoteConfig(),
                              min_pixels=1)
    assert answers == {1: (7, 2 / 3), 2: (8, 1.0)}
    assert ids.tolist() == [[7, 7, 8, 8, 8, 8]]


def test_vote_masks_keeps_a_swallowed_small_object_only_where_the_mask_holds_it():
    masks = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                      [0, 0, 0, 0, 0, 0, 0, 0]])
    rendered = np.array([[7, 7, 7, 7, 7, 7, 7, 5],  # 5: one pixel, 12 % of the mask
                         [0, 0, 0, 0, 0, 0, 0, 0]])
    ones = np.ones_like(masks, bool)
    ids, _ = vote_masks(masks, rendered, ones, MaskVoteConfig(), min_pixels=1)
    assert ids[0].tolist() == [7] * 7 + [5]  # all of 5's view lies in the mask: kept
    rendered[1, :3] = 5  # most of 5 lies outside the mask: the mask's pixel is not 5's
    ids, _ = vote_masks(masks, rendered, ones, MaskVoteConfig(), min_pixels=1)
    assert ids[0].tolist() == [7] * 8


def localize(im: InstanceMap, masks: np.ndarray, depth: np.ndarray, tx: float,
             map_boundaries: bool = True) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """InstanceLoc on the voxel map, as Mapper.localize does it: the masks vote with the
    view's confirmed rendering; between two answered objects the map's boundary is taken
    where it is sure (vote confidence >= 0.75), or never without ``map_boundaries``."""
    rendered, conf = im.render_view(depth, K, camera(tx), confirmed_only=True)
    return vote_masks(masks, rendered, depth > 0, MaskVoteConfig(), confidence=conf,
                      map_boundaries=map_boundaries)


def test_localize_matches_the_map():
    im, rng = InstanceMap(), np.random.default_rng(6)
    for tx in np.linspace(0, 0.1, 6):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    expected = map_ids(im, 0.07)
    masks = shuffled(ground_truth(0.07), rng)
    depth = np.ones((H, W), np.float32)
    ids, answers = localize(im, masks, depth, 0.07, map_boundaries=False)
    gt = ground_truth(0.07)
    for g in (1, 2, 3):
        assert np.all(ids[gt == g] == expected[g])
    assert all(share > 0.9 for _, share in answers.values())
    # with the map's boundaries: the same ids, edges off by at most the voxels' quantisation
    ids_map, answers_map = localize(im, masks, depth, 0.07)
    assert answers_map == answers
    differ = ids_map != ids
    assert differ.mean() < 0.02
    edge = np.zeros_like(gt, bool)
    edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    edge[:, :-1] |= gt[:, 1:] != gt[:, :-1]
    edge[1:] |= gt[1:] != gt[:-1]
    edge[:-1] |= gt[1:] != gt[:-1]
    assert not (differ & ~edge).any()
