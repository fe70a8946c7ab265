"""Change detection, worked examples: what one view's depth says of an instance's voxels,
and how views add up to a removal."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from panoptic_mapping.core.map.changes import (
    ChangeDetector,
    GoneInstance,
    InstanceVerdict,
    Shape,
    match_moved,
)
from panoptic_mapping.core.map.views import depth_verdicts

K = np.array([[50.0, 0, 20], [0, 50.0, 15], [0, 0, 1]])  # 40x30 view along +z


def wall(z: float, n: int = 5) -> np.ndarray:
    """n x n points 1 cm apart facing the camera at depth z, around the optical axis."""
    g = (np.arange(n) - n // 2) * 0.01
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel(), np.full(n * n, z)], 1)


def detector(**kw) -> ChangeDetector:
    args = dict(min_voxels=10, gone_share=0.7, present_share=0.3, gone_views=3,
                tol_rel=0.05, margin_m=0.01)
    return ChangeDetector(**{**args, **kw})


def test_depth_verdicts_through_on_surface_and_occluded():
    pts = wall(1.0)
    for depth_m, through, surface in ((2.0, True, False), (1.0, False, True),
                                      (1.04, False, True), (0.5, False, False)):
        t, s = depth_verdicts(pts, np.full((30, 40), depth_m), K, np.eye(4), 0.05, 0.01)
        assert t.all() == through and s.all() == surface, depth_m
    # no depth around a pixel: not seen through (the 3x3 nearest depth is unknown)
    depth = np.full((30, 40), 2.0)
    depth[14:17, 19:22] = 0.0
    t, s = depth_verdicts(np.array([[0.0, 0.0, 1.0]]), depth, K, np.eye(4), 0.05, 0.01)
    assert not t[0] and not s[0]


def test_views_add_up_to_a_removal_and_a_view_of_it_starts_over():
    d = detector()
    pts = wall(1.0)
    owner = np.full(len(pts), 7)
    behind, at = np.full((30, 40), 2.0), np.full((30, 40), 1.0)
    verdict = d.judge(pts, owner, behind, K, np.eye(4))
    assert verdict == {7: InstanceVerdict(judged=25, through=25, present=0)}
    assert d.update(verdict) == [] and d.update(verdict) == []
    assert d.update(d.judge(pts, owner, at, K, np.eye(4))) == []  # there after all
    assert d.gone == {}
    for _ in range(2):
        assert d.update(verdict) == []
    assert d.update(verdict) == [7]
    ev = d.record(7, frame=12, stamp=1.5, shape=Shape.of(pts, 0.01))
    assert (ev.instance_id, ev.kind, ev.frame, ev.views) == (7, "removed", 12, 3)
    np.testing.assert_allclose(ev.centroid, pts.mean(0))
    assert d.total_events == 1 and d.gone == {}
    # kept to be known again elsewhere, with the last frame a view found it there (0:
    # the verdicts above were counted without frame numbers)
    assert [(g.instance_id, g.frame) for g in d.removed] == [(7, 12)]
    d.prune_removed(frame=12 + 65, max_age=64)
    assert d.removed == []


def test_a_removal_no_view_found_present_counts_from_the_instance_birth():
    """An instance shown too late for a reading of the shown voxels before it went was
    never judged present: it was there when masks found it (born), so an id born before
    that cannot be it (without the birth, an old id of the same size made the match
    ambiguous and a moved object was not found)."""
    d = detector()
    pts = wall(1.0)
    verdict = d.judge(pts, np.full(len(pts), 7), np.full((30, 40), 2.0), K, np.eye(4))
    for _ in range(3):
        d.update(verdict, frame=9)
    emb = np.full(4, 0.5)
    d.record(7, frame=12, stamp=1.5, shape=Shape.of(pts, 0.01, emb), born=6)
    assert d.removed[0].last_present == 6
    old, new = Shape.of(pts + [0.5, 0, 0], 0.01, emb), Shape.of(pts + [0, 0.5, 0], 0.01, emb)
    pairs = match_moved(d.removed, {3: old, 11: new}, {3: 0, 11: 10}, 1.4, 0.8)
    assert [(g.instance_id, i) for g, i in pairs] == [(7, 11)]
    unborn = dataclasses.replace(d.removed[0], last_present=0)
    assert match_moved([unborn], {3: old, 11: new}, {3: 0, 11: 10}, 1.4, 0.8) == []


def test_too_few_judged_voxels_or_a_mixed_view_say_nothing():
    d = detector(gone_views=1)
    small = wall(1.0, 3)  # 9 voxels < min_voxels
    assert d.update(d.judge(small, np.full(9, 4), np.full((30, 40), 2.0), K, np.eye(4))) == []
    pts = wall(1.0)
    depth = np.full((30, 40), 2.0)
    depth[:, 20:] = 1.0  # half of it still there
    v = d.judge(pts, np.full(len(pts), 5), depth, K, np.eye(4))[5]
    assert v.present >= 0.3 * v.judged and d.update({5: v}) == []
    # behind the camera or outside the view: not judged at all
    assert d.judge(wall(-1.0), np.full(25, 5), depth, K, np.eye(4)) == {}


def box(size: tuple[float, float, float], at=(0.0, 0.0, 0.0), step: float = 0.01
        ) -> np.ndarray:
    """Voxel centres filling an axis-aligned box of ``size`` [m] at ``at``."""
    axes = [np.arange(0, s, step) + step / 2 for s in size]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return g + np.asarray(at)


E = np.array([1.0, 0.0])  # one mask embedding for every shape below


def test_shape_extents_are_robust_and_turn_with_the_object():
    s = Shape.of(box((0.10, 0.06, 0.08)), 0.01, E)
    # the 10th-90th percentile span is about 80 % of each side, plus a voxel
    np.testing.assert_allclose(s.extent, (0.09, 0.058, 0.074), atol=0.01)
    assert s.extent[0] > s.extent[1] and s.voxels == 10 * 6 * 8
    # turned by 90 degrees about the vertical: the same shape
    turned = Shape.of(box((0.06, 0.10, 0.08), at=(1.0, 2.0, 0.0)), 0.01, E)
    np.testing.assert_allclose(turned.extent, s.extent, atol=1e-9)
    assert s.matches(turned, 1.4, 0.8) == pytest.approx(0.0, abs=1e-9)
    # a stray voxel far away moves neither extent much (10th-90th percentile)
    stray = Shape.of(np.vstack([box((0.10, 0.06, 0.08)), [[1.0, 1.0, 1.0]]]), 0.01, E)
    assert s.matches(stray, 1.15, 0.8) is not None  # (max - min: 1.0 m, ten times)
    # twice as tall is another object; so is one whose embedding disagrees
    tall = Shape.of(box((0.10, 0.06, 0.16)), 0.01, E)
    assert s.matches(tall, 1.4, 0.8) is None
    a = Shape.of(box((0.10, 0.06, 0.08)), 0.01, np.array([1.0, 0.0]))
    b = Shape.of(box((0.10, 0.06, 0.08)), 0.01, np.array([0.0, 1.0]))
    assert a.matches(b, 1.4, 0.8) is None and a.matches(a, 1.4, 0.8) == pytest.approx(0.0)
    # without an embedding, extents alone never make two instances one object
    assert Shape.of(box((0.10, 0.06, 0.08)), 0.01).matches(a, 1.4, 0.8) is None


def test_match_moved_pairs_only_unambiguous_matches_and_never_an_older_object():
    duck = Shape.of(box((0.10, 0.06, 0.08)), 0.01, E)
    mug = Shape.of(box((0.08, 0.08, 0.16)), 0.01, E)
    gone = [GoneInstance(7, frame=20, shape=duck, last_present=15),
            GoneInstance(9, frame=22, shape=mug, last_present=18)]
    new = {30: Shape.of(box((0.08, 0.08, 0.16), at=(1, 0, 0)), 0.01, E),   # the mug, moved
           31: Shape.of(box((0.10, 0.06, 0.08), at=(0, 1, 0)), 0.01, E),   # the duck, moved
           5: Shape.of(box((0.10, 0.06, 0.08), at=(0, 2, 0)), 0.01, E)}    # a duck all along
    born = {30: 19, 31: 16, 5: 0}
    pairs = match_moved(gone, new, born, 1.4, 0.8)
    assert sorted((g.instance_id, i) for g, i in pairs) == [(7, 31), (9, 30)]
    # the duck born before the removed one was last seen in its place is another duck
    assert match_moved(gone[:1], {5: new[5]}, born, 1.4, 0.8) == []
    # two new ducks after the removal: two guesses, no decision
    twin = Shape.of(box((0.10, 0.06, 0.08), at=(0, 3, 0)), 0.01, E)
    assert match_moved(gone[:1], {31: new[31], 32: twin}, {31: 16, 32: 17}, 1.4, 0.8) == []
    # each extent within 1.4x but 1.3x on average: not alike enough with mean_ratio 1.2
    stretched = Shape.of(box((0.13, 0.078, 0.104)), 0.01, E)
    assert match_moved(gone[:1], {33: stretched}, {33: 16}, 1.4, 0.8) != []
    assert match_moved(gone[:1], {33: stretched}, {33: 16}, 1.4, 0.8, 1.2) == []
