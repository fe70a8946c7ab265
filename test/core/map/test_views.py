"""Per-view image measures: back-projection, depth edges, mask interiors."""
from __future__ import annotations

import numpy as np

from panoptic_mapping.core.geometry import backproject, depth_edges
from panoptic_mapping.core.map.views import boundaries

from wall_scene import H, W, K, camera


def test_backproject_worked_example():
    depth = np.zeros((H, W), np.float32)
    depth[24, 42] = 2.0  # 9.7 px right of and 0.3 px above the principal point, 2 m away
    pts, flat = backproject(depth, K, camera(1.0))
    assert flat.tolist() == [24 * W + 42]
    np.testing.assert_allclose(pts[0], [1.0 + 9.7 / 50 * 2, -0.3 / 50 * 2, 2.0])


def test_depth_edges_worked_example():
    # a plane tilted in x: inverse depth affine in u, depth not -> no edge anywhere
    u = np.arange(30, dtype=np.float64)
    plane = np.broadcast_to(1.0 / (0.5 + 0.01 * u), (10, 30)).copy()
    assert not depth_edges(plane, 0.02).any()
    # two planes meeting at column 15 (a corner): inverse depth bends there
    inverse = np.where(u <= 15, 0.5 + 0.01 * u, 0.65 - 0.01 * (u - 15))
    e = depth_edges(np.broadcast_to(1.0 / inverse, (10, 30)).copy(), 0.02)
    assert e[:, 14:17].all() and not e[:, :14].any() and not e[:, 17:].any()
    hole = plane.copy()
    hole[5, 5] = 0.0  # missing depth marks its neighbours
    assert depth_edges(hole, 0.02)[4:7, 4:7].all()


def test_interior_pixels_worked_example():
    from panoptic_mapping.core.map.views import interior as _interior

    masks = np.array([[1, 1, 1, 2],
                      [1, 1, 1, 2],
                      [1, 1, 1, 2]])
    assert _interior(masks).tolist() == [[True, True, False, False],
                                         [True, True, False, False],
                                         [True, True, False, False]]


def test_seen_through_worked_example():
    from panoptic_mapping.core.map.views import seen_through

    Kc = np.array([[50.0, 0, 9.5], [0, 50.0, 9.5], [0, 0, 1]])
    depth = np.full((20, 20), 2.0, np.float32)
    depth[:, :5] = 0.0  # no depth on the left: nothing known there
    pts = np.array([[0.0, 0.0, 1.0],     # centre, 1 m in front of a 2 m surface: free
                    [0.0, 0.0, 1.95],    # within the tolerance of the surface: kept
                    [0.0, 0.0, 2.5],     # behind the surface: unknown, kept
                    [-0.16, 0.0, 1.0],   # projects onto the left strip without depth
                    [0.0, 0.0, -1.0],    # behind the camera
                    [5.0, 0.0, 1.0]])    # outside the image
    free = seen_through(pts, depth, Kc, np.eye(4), tol_rel=0.05, margin_m=0.01)
    assert free.tolist() == [True, False, False, False, False, False]


def test_boundary_share_is_taken_away_from_the_silhouette():
    """A small object cut in two (columns 2-4 | 5-7, rows 2-9): its silhouette is a depth
    edge, marked two pixels wide, which reaches the cut's two ends. The share is taken
    along the cut's inner part (rows 4-7, more than two pixels from a third region):
    0 for the cut (the whole boundary would say 4 of 8 = 0.5: 'apart'), 1 where a depth
    edge runs along the whole boundary (two objects)."""
    ids = np.zeros((12, 12), np.int64)
    ids[2:10, 2:5], ids[2:10, 5:8] = 1, 2
    silhouette = np.zeros((12, 12), bool)
    silhouette[0:4, :] = silhouette[8:12, :] = True
    assert boundaries(ids, silhouette) == {(1, 2): (8, 0.0)}
    along = silhouette.copy()
    along[:, 4:6] = True
    assert boundaries(ids, along) == {(1, 2): (8, 1.0)}
    tiny = np.zeros((6, 6), np.int64)  # no inner part at all: the whole boundary counts
    tiny[2:4, 1:3], tiny[2:4, 3:5] = 1, 2
    band = np.zeros((6, 6), bool)
    band[2, :] = True
    assert boundaries(tiny, band) == {(1, 2): (2, 0.5)}


def _edge_ends_of_every_edge(ids, a, b, reach):
    """Reference: the ends test over the whole image (the first version's way)."""
    h, w = ids.shape
    pad = np.pad(ids.astype(np.int64), reach, constant_values=-1)
    ends = []
    for axis in (1, 0):
        end = np.zeros((h, w - 1) if axis == 1 else (h - 1, w), dtype=bool)
        ea, eb = (a[:end.size], b[:end.size]) if axis == 1 else (a[-end.size:], b[-end.size:])
        ea, eb = ea.reshape(end.shape), eb.reshape(end.shape)
        for side in (0, 1):
            for d in [k for r in range(1, reach + 1) for k in (-r, r)]:
                if axis == 1:
                    v = pad[reach + d:reach + d + h, reach + side:reach + side + w - 1]
                else:
                    v = pad[reach + side:reach + side + h - 1, reach + d:reach + d + w]
                end |= (v != ea) & (v != eb) & (v != -1)
        ends.append(end.ravel())
    return np.concatenate(ends)


def test_edge_ends_on_the_boundary_edges_equal_the_whole_image_test():
    from panoptic_mapping.core.map.views import _across_pixel_edges, _edge_ends

    rng = np.random.default_rng(0)
    for shape, reach in (((9, 12), 2), ((15, 6), 1), ((12, 12), 3)):
        # regions of 3x3 pixels: boundaries with inner parts and ends
        ids = np.kron(rng.integers(0, 3, (shape[0] // 3, shape[1] // 3)), np.ones((3, 3), int))
        a, b = (x.astype(np.int64) for x in _across_pixel_edges(ids))
        at = np.flatnonzero(a != b)
        expected = _edge_ends_of_every_edge(ids, a, b, reach)[at]
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(_edge_ends(ids, a[at], b[at], reach, at), expected)


def test_boundary_between_in_its_window_equals_the_whole_image():
    from panoptic_mapping.core.map.views import boundary_between

    rng = np.random.default_rng(1)
    touching = 0
    for trial in range(30):
        ids = np.kron(rng.integers(0, 4, (5, 6)), np.ones((3, 3), int))  # (15, 18)
        part, rest = ids == 1, ids == 2
        edges = rng.random(ids.shape) < 0.3
        for end_px in (0, 1, 2):
            whole = boundaries(np.where(part, 2, np.where(rest, 1, 0)), edges,
                               end_px).get((1, 2), (0, 1.0))
            assert boundary_between(part, rest, edges, end_px) == whole
        touching += whole[0] > 0
    assert touching > 10
    empty = np.zeros((4, 4), bool)
    assert boundary_between(empty, empty, None) == (0, 1.0)
