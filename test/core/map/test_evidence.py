"""Merge evidence: 'together' / 'apart' / 'smooth' counts and their gates."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import depth_edges
from panoptic_mapping.core.map.instances import InstanceMap

from wall_scene import established, side_by_side


def test_together_evidence_does_not_merge_things_that_look_different():
    """A ball glued to its tray by front-end merges is 'together' with it in many views;
    the masks' embeddings say they are different things."""
    im = InstanceMap(embedding_dim=2)
    tray, ball, tray_part = established(im, 3)
    im.ids.emb[tray], im.ids.emb[ball], im.ids.emb[tray_part] = [1.0, 0.0], [0.5, 1.0], [3.0, 0.5]
    evidence = [im.cfg.merge_min_together, 0, 0]
    im.evidence.pairs = {(tray, ball): list(evidence), (tray, tray_part): list(evidence)}
    assert im.lifecycle.merge_ready() == [(tray, tray_part)]
    no_embeddings = InstanceMap()
    a, b = established(no_embeddings, 2)
    no_embeddings.evidence.pairs = {(a, b): list(evidence)}
    assert no_embeddings.lifecycle.merge_ready() == [(a, b)]


def test_apart_evidence_needs_a_depth_edge_between_the_ids():
    """Two masks over two map ids: evidence they are apart only where the view shows a
    jump or crease between them; a cut across one flat surface is 'smooth' evidence of
    one surface instead."""
    masks, valid, flat, step = side_by_side()
    for depth, apart in ((flat, 0), (step, 1)):
        im = InstanceMap()
        left, right = established(im, 2)
        ref = np.where(masks == 1, left, right)
        im.associator.associate(masks, ref, valid, edges=depth_edges(depth, 0.02))
        assert im.evidence.pairs.get((left, right)) == [0, apart, 1 - apart]


def test_apart_evidence_for_an_id_no_mask_holds_most_of():
    """An id whose pixels the front-end left partly unmasked (or that glued views spread
    over two objects) has no owner; the mask whose plurality id it is speaks for it, so
    views showing it apart from its neighbour still count. One mask over both, holding
    neither's majority, says nothing."""
    _, valid, _, step = side_by_side()
    h, w = valid.shape
    edges = depth_edges(step, 0.02)
    im = InstanceMap()
    left, right = established(im, 2)
    ref = np.where(np.arange(w) < 20, left, right)[None].repeat(h, 0)
    masks = np.zeros((h, w), np.int64)
    masks[:, 11:20] = 1  # 45 % of `left`: no owner, but its plurality id
    masks[:, 20:] = 2
    im.associator.associate(masks, ref, valid, edges=edges)
    assert im.evidence.pairs.get((left, right)) == [0, 1, 0]
    im = InstanceMap()
    left, right = established(im, 2)
    glued = np.zeros((h, w), np.int64)
    glued[:, 11:] = 1  # holds all of `right` but not most of `left`
    im.associator.associate(glued, ref, valid, edges=edges)
    assert (left, right) not in im.evidence.pairs


def test_a_map_saved_before_smooth_evidence_loads_with_none():
    """Pair statistics saved with two counts (together, apart) load with smooth = 0."""
    im = InstanceMap()
    a, b = established(im, 2)
    im.evidence.pairs = {(a, b): [3, 1, 2]}
    state = im.state()
    assert state["pairs"].shape == (1, 5)
    state["pairs"] = state["pairs"][:, :4]  # the old layout
    assert InstanceMap.from_state(state).evidence.pairs == {(a, b): [3, 1, 0]}
    state["pairs"] = np.zeros((0, 4), np.int64)
    assert InstanceMap.from_state(state).evidence.pairs == {}


def test_a_convex_crease_between_two_masks_is_no_evidence_they_are_apart():
    """Two masks meeting at a crease: where the surface folds away from the camera (a
    concave crease: an object standing on a table) they may be two objects and the view
    says 'apart'; at a ridge towards the camera (a convex crease: a box's edge, where a
    segmenter cuts a box by its shading) they are one object's faces: with apart_at
    'concave' the view says 'smooth' (a seam along the crease, convex_seam_share), or
    nothing with the seam rule off."""
    masks, valid, _, _ = side_by_side()
    h, w = valid.shape
    x = np.abs(np.arange(w) - w // 2 + 0.5)[None].repeat(h, 0)  # 0.5 at the boundary
    ridge = 1.0 + 0.04 * x  # nearest at the boundary: convex
    valley = 1.5 - 0.04 * x  # farthest at the boundary: concave
    for apart_at, seam, depth, expected in (("concave", 0.5, ridge, [0, 0, 1]),
                                            ("concave", 2.0, ridge, None),
                                            ("concave", 0.5, valley, [0, 1, 0]),
                                            ("any_edge", 0.5, ridge, [0, 1, 0])):
        im = InstanceMap()
        im.cfg.apart_at, im.cfg.convex_seam_share = apart_at, seam
        left, right = established(im, 2)
        ref = np.where(masks == 1, left, right)
        meeting = None if apart_at == "any_edge" else depth_edges(depth, 0.02, convex=False)
        im.associator.associate(masks, ref, valid, edges=depth_edges(depth, 0.02),
                                apart_edges=meeting)
        assert im.evidence.pairs.get((left, right)) == expected, (apart_at, expected)
