"""Change detection, worked examples: what one view's depth says of an instance's voxels,
and how views add up to a removal."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.map.changes import ChangeDetector, InstanceVerdict
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
    ev = d.record(7, frame=12, stamp=1.5, centroid=pts.mean(0))
    assert (ev.instance_id, ev.kind, ev.frame, ev.views) == (7, "removed", 12, 3)
    assert d.total_events == 1 and d.gone == {}


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
