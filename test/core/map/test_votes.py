"""Per-voxel votes: negative evidence, edge weights, the footprint search."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import backproject
from panoptic_mapping.core.map.instances import InstanceMap

from wall_scene import H, W, K, camera, ingest, established


def test_negative_evidence_moves_a_voxel_but_never_empties_it():
    im = InstanceMap()
    table, cup = established(im, 2)
    pts = np.array([[0.005, 0.005, 0.005], [0.105, 0.005, 0.005]])  # two voxels
    im.integrate(pts, np.array([table, table]))
    im.integrate(pts[1:], np.array([cup]))
    slots = im.votes.slots_of(pts)
    im.votes.unvote(slots, table, 1.0)
    assert im.votes.weights[slots[0]].sum() == 1.0  # table's only vote stays: nothing else seen
    ids, w = im.votes.ids[slots[1]], im.votes.weights[slots[1]]
    assert w[ids == table].tolist() == [0.0] and w[ids == cup].tolist() == [1.0]


def test_mask_edges_vote_with_half_weight():
    im = InstanceMap()
    masks = np.ones((H, W), np.int64)
    masks[:, W // 2:] = 2
    ingest(im, masks, 0.0)
    rendered, _ = im.render_view(np.ones((H, W), np.float32), K, camera(0.0))
    slots = im.votes.slots_of(backproject(np.ones((H, W), np.float32), K, camera(0.0))[0])
    w = im.votes.weights[slots].sum(1).reshape(H, W)
    assert w[H // 2, 2] == 1.0  # inside a mask
    assert w[H // 2, W // 2] == 0.5  # on the edge between the two masks


def test_search_widens_to_the_pixel_footprint():
    im = InstanceMap()
    (far_object,) = established(im, 1)
    im.integrate(np.array([[0.005, 0.005, 0.005]]), np.array([far_object]))
    point = np.array([[0.025, 0.005, 0.005]])  # two voxels away from the only voxel
    assert im.votes.slots_of(point)[0] == -1  # search_radius 1 does not reach it
    assert im.votes.slots_of(point, footprint=np.array([0.005]))[0] == -1  # a small pixel
    ids, _ = im.render_points(point, footprint=np.array([0.02]))  # a 2 cm pixel does
    assert ids.tolist() == [far_object]
