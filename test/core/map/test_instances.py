"""The instance map end to end: consistent and stable ids over many views, config checks."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.map.config import InstanceConfig
from panoptic_mapping.core.map.instances import InstanceMap

from wall_scene import (
    H, W, K, PAINTED, camera, ground_truth, shuffled, ingest, map_ids, BOX_A, boxes_view)


def test_consistent_ids_under_random_per_frame_ids():
    im, rng = InstanceMap(PAINTED), np.random.default_rng(0)
    # steps of 1.67 cm: the 2 cm pixel footprint samples every 1 cm voxel in some view
    for k, tx in enumerate(np.linspace(0, 0.1, 7)):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
    ids = map_ids(im, 0.05)
    assert len(set(ids.values())) == 3 and 0 not in ids.values()
    assert set(im.confirmed_ids().tolist()) == set(ids.values())
    rendered, conf = im.render_view(np.ones((H, W), np.float32), K, camera(0.05))
    gt = ground_truth(0.05)
    for g, i in ids.items():
        iou = ((rendered == i) & (gt == g)).sum() / ((rendered == i) | (gt == g)).sum()
        assert iou > 0.95, (g, iou)
    assert conf[gt == 2].min() > 0.5


def test_stable_ids_when_the_map_grows():
    """Established objects keep their ids while new ones appear."""
    im, rng = InstanceMap(), np.random.default_rng(5)
    first = None
    for k, tx in enumerate(np.linspace(0, 0.3, 16)):
        ingest(im, shuffled(ground_truth(tx), rng), tx)
        if k == 5:
            first = map_ids(im, 0.1)
    assert map_ids(im, 0.1) == first


def test_an_object_split_in_some_views_ends_as_one_id():
    """The front-end cuts A in half in its first views (two confirmed ids: the cut crosses
    A's flat face, so no view says the halves are apart; each split view says 'smooth')
    and shows it whole in the others: each whole view holds both halves in one mask,
    'together', and once together + smooth views reach merge_min_together (at the
    latest after that many whole views) process_frame merges the halves into one id."""
    cfg = InstanceConfig()
    im, rng = InstanceMap(cfg), np.random.default_rng(7)
    split = {0, 1, 3, 5}  # whole in views 2, 4, 6, 7, ...: the 4th whole view is view 7
    merged_at = sorted(set(range(12)) - split)[cfg.merge_min_together - 1]
    halves = set()
    for k, tx in enumerate(np.linspace(0, 0.1, 12)):
        depth, gt = boxes_view(tx)
        masks = gt.copy()
        if k in split:
            x = tx + (np.arange(W) - K[0, 2]) / K[0, 0] * BOX_A[4]  # world x on A's face
            masks[(gt == 2) & (x < (BOX_A[0] + BOX_A[1]) / 2)[None, :]] = 4
        labels = im.process_frame(shuffled(masks, rng), depth, K, camera(tx)).labels
        if not im.merges:
            assert k < merged_at, "not merged after merge_min_together whole views"
            halves |= set(np.unique(labels[gt == 2]).tolist())
        if k == 2:  # joined split twice and shown twice (views 1, 2): both are instances
            assert len(halves) == 2 and halves <= set(im.confirmed_ids().tolist())
            assert im.merges == []
        if im.merges:
            assert len(im.merges) == 1, im.merges
            ((absorbed, survivor),) = im.merges
            assert {absorbed, survivor} == halves
            assert np.unique(labels[gt == 2]).tolist() == [survivor]
    depth, gt = boxes_view(0.05)
    rendered, _ = im.render_view(depth, K, camera(0.05))
    ids = {g: np.unique(rendered[gt == g]).tolist() for g in (1, 2, 3)}
    assert ids[2] == [survivor] and len(ids[1]) == len(ids[3]) == 1
    assert len({survivor, ids[1][0], ids[3][0]}) == 3
    assert sorted(im.confirmed_ids().tolist()) == sorted([survivor, ids[1][0], ids[3][0]])
    assert im.resolve(absorbed) == survivor and im.id_lut()[absorbed] == survivor


def test_config_is_validated_through_the_dataclasses():
    from panoptic_mapping.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="cover_fraction"):
        config_from_dict({"cover_fraction": 0.2}, InstanceConfig)


def test_carving_withdraws_votes_of_voxels_a_later_view_sees_through():
    Kc = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
    m = InstanceMap(InstanceConfig(voxel_size_m=0.02, carve_weight=1.0))
    wall = np.stack(np.meshgrid(np.arange(-0.3, 0.3, 0.02), np.arange(-0.2, 0.2, 0.02),
                                [2.0]), -1).reshape(-1, 3)
    floater = np.array([[0.0, 0.0, 1.0], [0.02, 0.0, 1.0]])
    m.integrate(wall, np.full(len(wall), 1))
    m.integrate(floater, np.full(2, 2))  # a stereo outlier in front of the wall
    depth = np.full((30, 40), 2.0, np.float32)
    assert m.carve(depth, Kc, np.eye(4)) == 2
    ids, conf = m.votes.labels(m.votes.own_slots(floater), np.ones(3, bool))
    assert ids.tolist() == [0, 0]  # one vote each, withdrawn
    ids, _ = m.votes.labels(m.votes.own_slots(wall), np.ones(3, bool))
    assert (ids == 1).all()
    # the floater is no surface any more: not drawn, the wall is seen behind it
    surface = m.surface_depth(Kc, np.eye(4), (30, 40), min_weight=1.0)
    assert np.allclose(surface[12:18, 15:25], 2.0, atol=0.011)  # voxel centres



def test_far_surfaces_need_fewer_votes_than_near_ones_to_be_drawn():
    Kc = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
    m = InstanceMap(InstanceConfig(voxel_size_m=0.01))
    # near (0.5 m: a voxel is a pixel wide, every frame samples it) and far (3 m: a pixel
    # covers 3 voxels a side, a frame samples one in nine); one vote each, the near patch
    # in front of the far one
    near = np.stack(np.meshgrid(np.arange(0.0, 0.04, 0.01) + 0.005,
                                np.arange(-0.02, 0.02, 0.01) + 0.005, [0.505]), -1).reshape(-1, 3)
    far = np.stack(np.meshgrid(np.arange(0.0, 0.3, 0.03) + 0.005,
                               np.arange(-0.15, 0.15, 0.03) + 0.005, [3.005]), -1).reshape(-1, 3)
    m.integrate(near, np.full(len(near), 1))
    m.integrate(far, np.full(len(far), 2))
    depth = m.surface_depth(Kc, np.eye(4), (30, 40), min_weight=2.0)
    assert (np.abs(depth[depth > 0] - 3.005) < 1e-3).all() and (depth > 0).any()
    m.integrate(near, np.full(len(near), 1))  # seen twice: now the near patch is drawn
    again = m.surface_depth(Kc, np.eye(4), (30, 40), min_weight=2.0)
    assert np.isclose(again[again > 0].min(), 0.505)


def test_voxels_with_too_few_votes_are_drawn_only_where_nothing_else_is():
    """A single vote may be a stereo outlier: it never hides a surface the map is sure of,
    but where the map has nothing surer it is the map's only word and is drawn."""
    Kc = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
    m = InstanceMap(InstanceConfig(voxel_size_m=0.02))
    wall = np.stack(np.meshgrid(np.arange(0.0, 0.3, 0.02) + 0.01,
                                np.arange(-0.2, 0.2, 0.02) + 0.01, [2.01]), -1).reshape(-1, 3)
    for _ in range(3):
        m.integrate(wall, np.full(len(wall), 1))  # the right half of the view: sure
    weak = np.stack(np.meshgrid(np.arange(-0.1, 0.1, 0.02) + 0.01,
                                np.arange(-0.04, 0.04, 0.02) + 0.01, [1.01]), -1).reshape(-1, 3)
    m.integrate(weak, np.full(len(weak), 2))  # one vote, half in front of the wall
    depth = m.surface_depth(Kc, np.eye(4), (30, 40), min_weight=3.0)
    assert np.allclose(depth[13:16, 21:24], 2.01)  # the wall, not the weak patch before it
    assert np.allclose(depth[13:16, 16:19], 1.01)  # where no wall is, the weak patch
    assert (depth[:, :10] == 0).all()  # and nothing where the map has nothing


def test_a_view_without_depth_reads_the_votes_of_the_voxels_it_draws():
    """render_surfaces labels each drawn pixel from the voxel drawn there (no search), and
    only pixels whose depth the gap closing made look their voxel up: the same ids as
    render_view at surface_depth, for a fraction of the lookups."""
    Kc = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
    m = InstanceMap(InstanceConfig(voxel_size_m=0.02))
    assert [m.ids.new_id() for _ in range(3)] == [1, 2, 3]
    xs = np.arange(-0.2, 0.2, 0.02) + 0.01
    wall = np.stack(np.meshgrid(xs, xs, [1.01]), -1).reshape(-1, 3)
    wall = wall[np.abs(wall - [0.01, 0.01, 1.01]).max(1) > 1e-6]  # one voxel never seen
    left = wall[:, 0] < 0
    far = np.stack(np.meshgrid(np.arange(-1.0, 1.0, 0.02) + 0.01,
                               np.arange(-0.8, 0.8, 0.02) + 0.01, [3.01]), -1).reshape(-1, 3)
    for _ in range(3):
        m.integrate(wall, np.where(left, 1, 2))
        m.integrate(far, np.full(len(far), 3))
    asked = []
    slots_of = m.votes.slots_of
    m.votes.slots_of = lambda p, f=None: asked.append(len(p)) or slots_of(p, f)
    ids, conf, depth = m.render_surfaces(Kc, np.eye(4), (30, 40), 3.0, gap_m=0.04,
                                         confirmed_only=False)
    assert np.array_equal(depth, m.surface_depth(Kc, np.eye(4), (30, 40), 3.0, 0.04))
    # the unseen voxel's pixel showed the far plane until the gap closing put the wall
    # there: the one pixel looked up, and it finds the wall's votes beside it
    assert asked == [1]
    hole = (15, 20)  # centre (0.01, 0.01) at 1.01 m: pixel (19.5 + 0.5, 14.5 + 0.5)
    assert np.isclose(depth[hole], 1.01) and ids[hole] == 2
    m.votes.slots_of = slots_of
    expected, expected_conf = m.render_view(depth, Kc, np.eye(4), confirmed_only=False)
    assert np.array_equal(ids, expected) and np.allclose(conf, expected_conf)
    assert set(np.unique(ids).tolist()) - {0} == {1, 2, 3}  # 0: beyond the far plane


def test_instance_boxes_of_a_map_with_nothing_confirmed_are_empty():
    """Voxels voted, no id confirmed yet: no boxes (a run of owners was once assumed)."""
    im = InstanceMap(InstanceConfig())
    ingest(im, ground_truth(0.0), 0.0)
    assert len(im.votes) > 0 and not len(im.confirmed_ids())
    assert im.instance_boxes() == {} and im.instance_boxes(0.05) == {}
