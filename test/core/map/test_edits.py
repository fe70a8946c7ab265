"""Instances removed or moved on request (a manipulation stack after a pick-and-place):
worked examples on the vote grid and the edit log, then a mapped tabletop scene whose
cloud, InstanceLoc and saved map follow the edits."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.geometry import pack_voxel_keys, voxel_coords
from panoptic_mapping.core.map.edits import InstanceEditError, MovedPoints, Vacancy, WorldEdits
from panoptic_mapping.core.map.votes import VoteGrid

V = 0.1  # voxel edge of the worked examples [m]


def grid_with(points: np.ndarray, labels: np.ndarray, times: int = 1) -> VoteGrid:
    g = VoteGrid(V, 4)
    for _ in range(times):
        g.integrate(points, labels)
    return g


def centre(i: int, j: int = 0, k: int = 0) -> list[float]:
    return [(i + 0.5) * V, (j + 0.5) * V, (k + 0.5) * V]


def test_held_by_gives_the_voxels_an_id_holds_votes_in_and_its_weight_there():
    pts = np.array([centre(0), centre(1), centre(2)])
    g = grid_with(pts, np.array([7, 7, 3]), times=2)
    g.integrate(pts[1:2], np.array([3]))  # voxel 1: 7 (2 votes) against 3 (1 vote)
    g.integrate(pts[2:3], np.array([7]))  # voxel 2: 3 (2 votes) against 7 (1 vote)
    members = np.zeros(8, bool)
    members[7] = True
    slots, weight = g.held_by(members)
    assert sorted(zip(slots.tolist(), weight.tolist())) == [(0, 2.0), (1, 2.0), (2, 1.0)]


def test_move_carries_votes_and_leaves_the_others():
    pts = np.array([centre(0), centre(1)])
    g = grid_with(pts, np.array([7, 7]), times=3)
    g.integrate(pts[1:2], np.array([3]))  # voxel 1 also holds one vote for 3
    members = np.zeros(8, bool)
    members[7] = True
    T = np.eye(4)
    T[:3, 3] = [0.0, 1.0, 0.0]  # 10 voxels along y
    g.move(members, T)
    labels, conf = g.labels(g.own_slots(np.array([centre(0, 10), centre(1, 10),
                                                  centre(0), centre(1)])),
                            np.ones(8, bool))
    assert labels.tolist() == [7, 7, 0, 3]  # carried whole; the old voxel keeps 3's vote
    assert conf[:2].tolist() == [1.0, 1.0]
    slot = g.own_slots(np.array([centre(0, 10)]))[0]
    assert g.weights[slot].sum() == pytest.approx(3.0)  # all three votes came along


def test_move_adds_up_votes_landing_in_one_voxel():
    pts = np.array([centre(0), centre(1)])
    g = grid_with(pts, np.array([7, 7]), times=2)
    members = np.zeros(8, bool)
    members[7] = True
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # a quarter turn about z
    g.move(members, T)  # centres (0.05, 0.05) and (0.15, 0.05) -> voxels (-1, 0), (-1, 1)
    labels, _ = g.labels(g.own_slots(np.array([centre(-1), centre(-1, 1), centre(0)])),
                         np.ones(8, bool))
    assert labels.tolist() == [7, 7, 0]
    S = np.eye(4)
    S[:3, 3] = [-0.06, 0.0, 0.0]
    g2 = grid_with(np.array([centre(0), centre(1)]), np.array([7, 7]), times=2)
    g2.move(members, S)  # centres 0.05 -> -0.01 and 0.15 -> 0.09: voxels -1 and 0
    s = g2.own_slots(np.array([centre(-1), centre(0)]))
    assert (s >= 0).all() and g2.weights[s].sum() == pytest.approx(4.0)


def test_vacancies_apply_to_keyframes_taken_before_the_edit():
    keys = np.sort(pack_voxel_keys(voxel_coords(np.array([centre(0), centre(5)]), V)))
    edits = WorldEdits()
    edits.record(Vacancy(before_keyframe=10, keys=keys))
    pts = np.array([centre(0), centre(1), centre(5)])
    assert edits.vacated(pts, V, 9).tolist() == [True, False, True]
    assert not edits.vacated(pts, V, 10).any()  # taken after the edit: believed again
    assert edits.vacated(pts, V).tolist() == [True, False, True]
    edits.prune(oldest_keyframe=10, seen_since={}, alive=np.ones(1, bool))
    assert edits.vacancies == [] and edits.count == 1  # no kept keyframe predates it


def test_a_stand_in_goes_once_a_later_keyframe_shows_the_instance():
    edits = WorldEdits()
    moved = MovedPoints(4, 10, np.zeros((2, 3), np.float32), np.zeros((2, 3), np.uint8),
                        np.ones(2, np.float32))
    edits.record(Vacancy(10, np.zeros(0, np.int64)), moved)
    alive = np.ones(5, bool)
    edits.prune(3, {4: 9}, alive)  # seen only by a keyframe before the move
    assert 4 in edits.moved
    edits.prune(3, {4: 10}, alive)
    assert 4 not in edits.moved


def test_edits_survive_saving_with_keyframes_renumbered():
    keys = np.array([5, 9], np.int64)
    edits = WorldEdits()
    edits.record(Vacancy(12, keys), MovedPoints(4, 12, np.ones((1, 3), np.float32),
                                                np.full((1, 3), 200, np.uint8),
                                                np.full(1, 0.5, np.float32)))
    state = edits.state([8, 11, 12, 15])  # two kept keyframes were taken before the edit
    loaded = WorldEdits.from_state(state, [0, 1, 2, 3], next_keyframe=4)
    assert loaded.count == 1 and loaded.vacancies[0].before_keyframe == 2
    assert loaded.vacancies[0].keys.tolist() == [5, 9]
    assert loaded.moved[4].after_keyframe == 2 and loaded.moved[4].rgb.tolist() == [[200] * 3]
    assert WorldEdits.from_state(None, [], 0).count == 0  # a map saved before edits existed


# --------------------------------------------------------------------------- a mapped scene

pytest.importorskip("pybullet", reason="pybullet renders the test scene")


@pytest.fixture
def mapped(tabletop_scene):
    from helpers import map_scene

    return map_scene(tabletop_scene)


def an_object(mapper):
    """The smallest confirmed instance with at least 50 cloud points (an object on the
    table, not the floor or a wall) and its cloud points."""
    cloud = mapper.labeled_cloud()
    ids, counts = np.unique(cloud.instance[cloud.instance > 0], return_counts=True)
    i = int(ids[counts >= 50][np.argmin(counts[counts >= 50])])
    return i, cloud.xyz[cloud.instance == i]


def test_a_removed_instance_leaves_the_cloud_and_localize(mapped, tabletop_scene):
    i, pts = an_object(mapped)
    frame = tabletop_scene.frames[0]
    before = mapped.render_instances(frame.K, frame.camera_to_world, frame.depth)
    vacated = mapped.remove_instance(i)
    assert vacated > 0
    cloud = mapped.labeled_cloud()
    assert not (cloud.instance == i).any()
    # the surface it showed is gone from the cloud, not left as unlabelled points
    near = np.linalg.norm(cloud.xyz[:, None, :] - pts.mean(0)[None, None, :], axis=-1)
    assert (near < 0.01).sum() == 0
    after = mapped.render_instances(frame.K, frame.camera_to_world, frame.depth)
    assert (before == i).any() and not (after == i).any()
    assert i not in mapped.instances.confirmed_ids()
    with pytest.raises(InstanceEditError, match=f"instance {i} was deleted"):
        mapped.remove_instance(i)
    with pytest.raises(InstanceEditError, match="was never issued"):
        mapped.remove_instance(10 ** 6)


def test_a_moved_instance_is_shown_at_its_new_place(mapped):
    from panoptic_mapping.core.mapper import Mapper

    i, pts = an_object(mapped)
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 0.5]  # lifted half a metre: nothing else is there
    with pytest.raises(ValueError, match="not a proper rotation"):
        mapped.move_instance(i, np.diag([1.0, 1.0, -1.0, 1.0]))
    mapped.move_instance(i, T)
    cloud = mapped.labeled_cloud()
    moved = cloud.xyz[cloud.instance == i]
    assert len(moved) >= 0.8 * len(pts)
    np.testing.assert_allclose(moved.mean(0), pts.mean(0) + [0, 0, 0.5], atol=0.01)
    assert (np.linalg.norm(cloud.xyz - pts.mean(0), axis=1) < 0.01).sum() == 0
    # the votes moved too: the map's voxels at the new place show it
    lifted = mapped.instances.render_points(moved.astype(np.float64))[0]
    assert (lifted == i).mean() > 0.8
    # keyframes taken before no longer show it where it was
    lut = mapped.instances.ids.display_lut()
    assert all(not (lut[kf.labels] == i).any() for kf in mapped.keyframes.snapshot())
    # saved and loaded: the same cloud
    loaded = Mapper.from_state_dict(mapped.state_dict(), device="cpu")
    again = loaded.labeled_cloud()
    np.testing.assert_allclose(again.xyz[again.instance == i].mean(0), moved.mean(0),
                               atol=1e-5)
    assert loaded.stats()["edits"] == mapped.stats()["edits"] == 1


def test_an_edit_of_an_id_the_map_no_longer_shows_says_why():
    from panoptic_mapping.core.map.config import InstanceConfig
    from panoptic_mapping.core.map.instances import InstanceMap

    im = InstanceMap(InstanceConfig(confirm_frames=2, min_shown_share=0.5))
    young, outvoted = im.ids.new_id(), im.ids.new_id()
    im.ids.best_run[outvoted] = 2
    im.ids.present[outvoted], im.ids.present_shown[outvoted] = 9, 2
    with pytest.raises(InstanceEditError, match=f"instance {young} is not confirmed yet"):
        im.remove_instance(young)
    with pytest.raises(InstanceEditError, match=r"shown in 2 of the 9 views .* 0\.5\)"):
        im.remove_instance(outvoted)
    im.ids.present_shown[outvoted] = 5  # shown again in over half: an instance again
    assert im.remove_instance(outvoted).size == 0  # removed (it held no votes)
    assert not im.ids.alive[outvoted]


def test_change_detection_leaves_an_instance_the_map_no_longer_shows(mapped, tabletop_scene):
    """The shown voxels change detection judges are read every few frames; an instance
    shown then but outvoted since (min_shown_share) is no instance to remove: removing it
    raised inside the frame's mapping (seen in a loopback flood)."""
    i, _ = an_object(mapped)
    frame = tabletop_scene.frames[0]
    through = frame.depth * 3.0  # a view that sees through everything the map shows
    views = mapped.cfg.instances.changes.gone_views
    for _ in range(views - 1):
        assert mapped.instances.gone_in_view(through, frame.K, frame.camera_to_world) == []
    ids = mapped.instances.ids
    ids.present[i], ids.present_shown[i] = 9, 2  # outvoted since the reading
    assert i not in mapped.instances.confirmed_ids()
    gone = [g for g, _ in mapped.instances.gone_in_view(through, frame.K,
                                                        frame.camera_to_world)]
    assert gone and i not in gone  # the others that view sees through still go
    ids.present_shown[i] = 9  # shown again, and still seen through: it goes now
    gone = [g for g, _ in mapped.instances.gone_in_view(through, frame.K,
                                                        frame.camera_to_world)]
    assert i in gone
