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


def test_view_consensus_merges_fragments_a_segmenter_holds_whole_in_some_views():
    """A segmenter that cuts a duck's head off at its neck in most views (a crease: 'apart')
    holds the duck whole in some: 12 of 48 views. That share merges two ids whose
    embeddings say the same thing, never two whose embeddings differ or are unknown, and
    not on a few views' share."""
    from panoptic_mapping.core.map.config import InstanceConfig

    cfg = InstanceConfig(merge_min_consensus=0.2, merge_consensus_min_together=8)
    im = InstanceMap(cfg, embedding_dim=2)
    head, body, mug, early, late = established(im, 5)
    im.ids.emb[[head, body, early, late]] = [1.0, 0.1]
    im.ids.emb[mug] = [0.1, 1.0]
    im.evidence.pairs = {(head, body): [12, 36, 0], (body, mug): [12, 36, 0],
                         (early, late): [6, 6, 0]}
    assert im.lifecycle.merge_ready() == [(head, body)]
    # below the share, or with the rule off, the 'together >= 2 x apart' rule alone speaks
    im.evidence.pairs = {(head, body): [9, 39, 0]}
    assert im.lifecycle.merge_ready() == []
    off = InstanceMap(InstanceConfig(merge_min_consensus=0.0), embedding_dim=2)
    a, b = established(off, 2)
    off.ids.emb[[a, b]] = [1.0, 0.1]
    off.evidence.pairs = {(a, b): [12, 36, 0]}
    assert off.lifecycle.merge_ready() == []
    # without embeddings nothing says the two are one kind of thing
    bare = InstanceMap(cfg)
    a, b = established(bare, 2)
    bare.evidence.pairs = {(a, b): [12, 36, 0]}
    assert bare.lifecycle.merge_ready() == []


def test_view_consensus_counts_only_views_with_measured_depth():
    """Stereo depth finds fewer of the edges 'apart' needs: its views' shares are no
    consensus. The counts survive a save and a merge; older maps' views count as measured."""
    from panoptic_mapping.core.map.config import InstanceConfig

    cfg = InstanceConfig(merge_min_consensus=0.2, merge_consensus_min_together=8)
    im = InstanceMap(cfg, embedding_dim=2)
    a, b, c = established(im, 3)
    im.ids.emb[[a, b, c]] = [1.0, 0.1]
    # 12 together of 48, of them 6 together and 24 apart in stereo views: 6 of 18 measured
    im.evidence.pairs = {(a, b): [12, 36, 0, 6, 24]}
    assert im.lifecycle.merge_ready() == []
    im.evidence.pairs = {(a, b): [12, 36, 0, 2, 30]}  # 10 of 16 measured views together
    assert im.lifecycle.merge_ready() == [(a, b)]
    state = im.evidence.state()
    assert state.shape == (1, 7) and state[0].tolist() == [a, b, 12, 36, 0, 2, 30]
    im.evidence.load_state(state)
    assert im.evidence.pairs == {(a, b): [12, 36, 0, 2, 30]}
    im.evidence.load_state(state[:, :5])  # a map saved before the stereo counts
    assert im.evidence.pairs == {(a, b): [12, 36, 0]}
    assert im.lifecycle.merge_ready() == [(a, b)]
    im.evidence.pairs = {(a, c): [1, 2, 0, 1, 0], (b, c): [3, 4, 1]}
    im.evidence.remap(lambda i: a if i == b else i)  # b merged into a
    assert im.evidence.pairs == {(a, c): [4, 6, 1, 1, 0]}


def test_stereo_views_are_recorded_as_such():
    """A view without measured depth (stereo) counts in the stereo columns as well."""
    masks, valid, _, step = side_by_side()
    for measured, stats in ((True, [0, 1, 0]), (False, [0, 1, 0, 0, 1])):
        im = InstanceMap()
        left, right = established(im, 2)
        ref = np.where(masks == 1, left, right)
        im.associator.associate(masks, ref, valid, edges=depth_edges(step, 0.02),
                                measured=measured)
        assert im.evidence.pairs.get((left, right)) == stats


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
    assert state["pairs"].shape == (1, 7)
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
