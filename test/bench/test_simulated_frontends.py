"""Benchmark 2D front-ends: simulated FastSAM-like masks, SIMULATED vision-language
embeddings, the classical segmenter and the shared post-processing."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from helpers import scene_frame
from synthetic_scene import CLASSES, H, INSTANCE_CLASS, W, gt_frame, make_instance, make_scene

from panoptic_mapping.bench.frontends import (
    MaskErrorModel,
    SimulatedEmbeddingSpace,
    SimulatedMaskFrontend,
    classical_frontend,
    postprocess_labels,
)
from panoptic_mapping.bench.types import MaskFrame, SceneFrame


def run(errors: MaskErrorModel, index: int = 0, seed: int = 0,
        **kw) -> tuple[MaskFrame, SimulatedMaskFrontend]:
    """One frame of the synthetic scene through a SimulatedMaskFrontend."""
    fe = SimulatedMaskFrontend(errors, seed=seed, scene=make_scene(), **kw)
    return fe(gt_frame(index)), fe


def assert_valid(out: MaskFrame) -> None:
    """Compact ids 1..M, scores (M,), int32 labels."""
    assert out.labels.dtype == np.int32 and out.labels.ndim == 2
    ids = np.unique(out.labels)
    m = len(ids[ids > 0])
    assert np.array_equal(ids[ids > 0], np.arange(1, m + 1))
    assert out.scores.shape == (m,) and out.scores.dtype == np.float32
    assert np.all((out.scores > 0) & (out.scores <= 1))


def ids_under(labels: np.ndarray, mask: np.ndarray) -> set[int]:
    return set(np.unique(labels[mask]).tolist())


def expected_from_provenance(fe: SimulatedMaskFrontend, inst: np.ndarray) -> np.ndarray:
    """The label image the masks would have without boundary changes (1:1 provenance)."""
    exp = np.zeros_like(inst)
    for label, gts in fe.last_provenance.items():
        assert len(gts) == 1
        exp[inst == gts[0]] = label
    return exp


def boundary_distance(inst: np.ndarray) -> np.ndarray:
    """(H, W) Euclidean distance of each pixel to the nearest pixel of another GT id."""
    dist = np.zeros(inst.shape)
    for g in np.unique(inst):
        m = inst == g
        # Pad with "other" so the image border does not count as a boundary.
        d = ndimage.distance_transform_edt(np.pad(m, 1, constant_values=True))[1:-1, 1:-1]
        dist[m] = d[m]
    return dist


# ---------------------------------------------------------------- post-processing

def test_postprocess_drops_small_masks_and_keeps_order():
    lab = np.array([[0, 5, 5], [7, 7, 7], [9, 0, 0]])
    out = postprocess_labels(lab, min_area=2)
    assert out.dtype == np.int32
    assert np.array_equal(out, [[0, 1, 1], [2, 2, 2], [0, 0, 0]])
    assert postprocess_labels(np.zeros((2, 2), int), 1).max() == 0


# ---------------------------------------------------------------- simulated masks

def test_zero_errors_reproduce_ground_truth_up_to_permutation():
    out, fe = run(MaskErrorModel.none())
    inst = make_instance()
    assert_valid(out)
    assert np.array_equal(out.labels > 0, inst > 0)
    gt_ids = set(np.unique(inst[inst > 0]).tolist())
    assert int(out.labels.max()) == len(gt_ids)
    for label, gts in fe.last_provenance.items():
        assert ids_under(inst, out.labels == label) == set(gts) and len(gts) == 1
        assert ids_under(out.labels, inst == gts[0]) == {label}
    assert set(fe.last_origin.values()) == {"gt"}
    assert out.embeddings is None


def test_split_yields_more_masks_each_inside_one_segment():
    out, fe = run(MaskErrorModel.none(split_rate=1.0, stuff_split_rate=1.0))
    inst = make_instance()
    assert_valid(out)
    assert out.labels.max() > len(np.unique(inst[inst > 0]))
    assert np.array_equal(out.labels > 0, inst > 0)  # splitting leaves no holes
    for label in range(1, out.labels.max() + 1):
        assert len(ids_under(inst, out.labels == label)) == 1
    assert fe.last_stats["splits"] == 6
    assert "split" in fe.last_origin.values()


def test_merge_joins_the_two_touching_squares():
    out, fe = run(MaskErrorModel.none(merge_rate=1.0))
    inst = make_instance()
    assert_valid(out)
    both = (inst == 3) | (inst == 4)
    labels = ids_under(out.labels, both)
    assert len(labels) == 1
    (label,) = labels
    assert np.array_equal(out.labels == label, both)
    assert fe.last_provenance[label] == [3, 4] and fe.last_origin[label] == "merge"
    # Things only merge with things by default: the disc touches only the floor.
    assert fe.last_stats["merges"] == 1
    assert int(out.labels.max()) == 5


def test_merge_stuff_option_merges_things_into_stuff():
    _, fe = run(MaskErrorModel.none(merge_rate=1.0, merge_stuff=True))
    assert fe.last_stats["merges"] >= 2
    assert any(len(g) == 2 for g in fe.last_provenance.values())


def test_small_object_is_missed():
    out, fe = run(MaskErrorModel.none(miss_small_rate=1.0, small_area_px=50))
    inst = make_instance()
    assert np.all(out.labels[inst == 6] == 0)
    assert all(np.all(out.labels[inst == g] > 0) for g in (1, 2, 3, 4, 5))
    assert fe.last_stats["missed_small"] == 1 and fe.last_stats["missed"] == 0


def test_general_miss_rate_misses_large_segments():
    out, fe = run(MaskErrorModel.none(miss_rate=1.0, small_area_px=50))
    assert int(out.labels.max()) == 1  # only the small pin is left
    assert fe.last_stats["missed"] == 5


@pytest.mark.parametrize("errors, max_dist", [
    (MaskErrorModel.none(boundary_jitter_px=2, jitter_rate=1.0), 2.0),
    (MaskErrorModel.none(boundary_flip_rate=1.0), 1.0),
])
def test_jitter_changes_boundary_pixels_only(errors, max_dist):
    out, fe = run(errors)
    inst = make_instance()
    changed = out.labels != expected_from_provenance(fe, inst)
    assert changed.any()
    assert np.all(boundary_distance(inst)[changed] <= max_dist + 1e-9)
    assert np.all(out.labels[inst == 0] == 0)  # never onto void
    assert_valid(out)


def test_spurious_fragments_on_void_and_stuff_only():
    out, fe = run(MaskErrorModel.none(spurious_rate=1.0))
    inst = make_instance()
    assert_valid(out)
    spurious = [label for label, o in fe.last_origin.items() if o == "spurious"]
    assert fe.last_stats["spurious"] == len(spurious) == 3  # void, wall, floor
    covered = set()
    for label in spurious:
        under = ids_under(inst, out.labels == label)
        assert len(under) == 1 and under <= {0, 1, 2}
        covered |= under
    assert covered == {0, 1, 2}
    assert np.any(out.labels[inst == 0] > 0)


def test_ids_are_permuted_per_frame():
    a, _ = run(MaskErrorModel.none(), index=0)
    b, _ = run(MaskErrorModel.none(), index=1)
    assert not np.array_equal(a.labels, b.labels)
    # ...but the partition is the same.
    pairs = set(zip(a.labels.ravel().tolist(), b.labels.ravel().tolist()))
    assert len(pairs) == int(a.labels.max()) + 1


def test_deterministic_per_seed_and_index():
    space = SimulatedEmbeddingSpace(dim=16, seed=3)
    a, fa = run(MaskErrorModel(), index=4, seed=7, embedding_space=space)
    b, fb = run(MaskErrorModel(), index=4, seed=7, embedding_space=space)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.embeddings, b.embeddings)
    assert fa.last_provenance == fb.last_provenance and fa.last_stats == fb.last_stats
    outs = [run(MaskErrorModel(), index=4, seed=s)[0].labels for s in range(8, 12)]
    assert any(not np.array_equal(a.labels, o) for o in outs)


def test_default_errors_accumulate_stats():
    fe = SimulatedMaskFrontend(MaskErrorModel(), seed=1, scene=make_scene())
    for i in range(20):
        out = fe(gt_frame(i))
        assert_valid(out)
        on_void = set(np.unique(out.labels[make_instance() == 0]).tolist()) - {0}
        assert all(fe.last_origin[label] == "spurious" for label in on_void)
    s = fe.stats
    assert s["frames"] == 20 and s["gt_segments"] == 120
    assert s["splits"] > 0 and s["merges"] > 0 and s["missed_small"] > 0
    assert s["jittered"] > 0 and s["flipped_px"] > 0
    assert "splits" in fe.format_stats()
    fe.reset_stats()
    assert fe.stats["frames"] == 0
    assert MaskErrorModel().to_dict()["split_parts"] == [2, 3]


# ---------------------------------------------------------------- simulated embeddings

def test_text_tower_strips_templates():
    space = SimulatedEmbeddingSpace(dim=32, seed=1)
    t = space.text_embeddings(["duck", "a photo of a duck", "A photo of the Duck.",
                               "an image of a duck", "the duck"])
    assert t.shape == (5, 32) and t.dtype == np.float32
    assert np.allclose(t, t[0], atol=1e-6)
    teddy = space.text_embeddings(["teddy_bear", "a photo of a teddy bear"])
    assert np.allclose(teddy[0], teddy[1])
    assert abs(float(t[0] @ teddy[0])) < 0.9
    unknown = space.text_embeddings(["a photo of a zebra crossing"])[0]
    again = SimulatedEmbeddingSpace(dim=32, seed=1).text_embeddings(["zebra crossing"])[0]
    assert np.allclose(unknown, again) and abs(float(unknown @ t[0])) < 0.9
    other_seed = SimulatedEmbeddingSpace(dim=32, seed=2).text_embeddings(["duck"])[0]
    assert not np.allclose(other_seed, t[0])
    assert space.text_embeddings([]).shape == (0, 32)


def test_image_embeddings_unit_and_close_to_text():
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.3)
    rng = np.random.default_rng(0)
    text = space.text_embeddings([f"a photo of a {c}" for c in CLASSES[1:]])
    for k, c in enumerate(CLASSES[1:]):
        e = np.stack([space.image_embedding(c, rng) for _ in range(50)])
        assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
        cos = e @ text[k]
        assert cos.min() > 0.8
        assert np.all((e @ text.T).argmax(axis=1) == k)


def test_confusions_are_measurable():
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.1,
                                    confusions={"duck": "teddy"}, confusion_rate=0.4)
    rng = np.random.default_rng(1)
    text = space.text_embeddings(["duck", "teddy", "mug"])
    e = np.stack([space.image_embedding("duck", rng) for _ in range(500)])
    as_teddy = float(np.mean((e @ text.T).argmax(axis=1) == 1))
    assert 0.3 < as_teddy < 0.5
    teddy = np.stack([space.image_embedding("teddy", rng) for _ in range(100)])
    assert np.all((teddy @ text.T).argmax(axis=1) == 1)  # confusions are one-way


def test_mask_embeddings_follow_majority_class():
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.2)
    out, fe = run(MaskErrorModel.none(merge_rate=1.0), embedding_space=space)
    inst = make_instance()
    n = int(out.labels.max())
    assert out.embeddings.shape == (n, 64) and out.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)
    text = space.text_embeddings(CLASSES)
    for label, gts in fe.last_provenance.items():
        # The merged duck+teddy mask has equal areas; its class is one of the two.
        classes = {INSTANCE_CLASS[g] for g in gts}
        assert int((out.embeddings[label - 1] @ text.T).argmax()) in classes
    with pytest.raises(ValueError):
        SimulatedMaskFrontend(MaskErrorModel.none(), embedding_space=space)(gt_frame())


# ---------------------------------------------------------------- classical segmenter

def two_squares_frame() -> SceneFrame:
    """Same-coloured touching squares at 1 m and 2 m in front of a grey wall at 3 m."""
    rgb = np.full((H, W, 3), 90, np.uint8)
    depth = np.full((H, W), 3.0, np.float32)
    rgb[10:30, 8:28] = rgb[10:30, 28:48] = (200, 40, 40)
    depth[10:30, 8:28] = 1.0
    depth[10:30, 28:48] = 2.0
    depth[40:, 60:] = 0.0  # nothing hit
    return scene_frame(rgb, depth)  # no ground truth: all void


@pytest.mark.parametrize("method", ["felzenszwalb", "slic"])
def test_classical_segmenter_separates_squares_by_depth(method):
    frame = two_squares_frame()
    seg = classical_frontend(method, min_area=20)
    out = seg(frame)
    assert_valid(out)
    assert out.embeddings is None
    areas = np.bincount(out.labels.ravel())[1:]
    assert np.all(areas >= 20)
    left = ids_under(out.labels, _box(10, 30, 8, 28))
    right = ids_under(out.labels, _box(10, 30, 28, 48))
    assert not left & right
    assert np.all(out.labels[frame.depth == 0] == 0)
    if method == "felzenszwalb":  # flat colours: one mask per square
        assert len(left) == 1 and len(right) == 1
    # Without depth the two same-coloured squares are one region.
    no_depth = classical_frontend(method, min_area=20, use_depth=False)
    if method == "felzenszwalb":
        lab = no_depth.segment(frame.rgb)
        assert ids_under(lab, _box(10, 30, 8, 28)) == ids_under(lab, _box(10, 30, 28, 48))


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_classical_segmenter_on_noisy_image_respects_min_area_and_speed():
    rng = np.random.default_rng(0)
    frame = gt_frame(0)
    big = np.kron(frame.instance, np.ones((3, 3), np.int32))[:120, :160]
    rgb = np.clip(rng.integers(0, 255, (8, 3))[big] + rng.normal(0, 12, big.shape + (3,)),
                  0, 255).astype(np.uint8)
    depth = (1.0 + 0.1 * big + rng.normal(0, 0.002, big.shape)).astype(np.float32)
    sem = np.array([0, 1, 2, 3, 4, 5, 6])[big]
    f = replace(frame, rgb=rgb, depth=depth, instance=big, semantic=sem)
    space = SimulatedEmbeddingSpace(dim=16)
    seg = classical_frontend(min_area=40, embedding_space=space, scene=make_scene())
    seg(f)  # warm-up (imports)
    t0 = time.perf_counter()
    out = seg(f)
    elapsed = time.perf_counter() - t0
    assert_valid(out)
    assert np.all(np.bincount(out.labels.ravel())[1:] >= 40)
    assert out.embeddings.shape == (int(out.labels.max()), 16)
    assert elapsed < 1.0  # ~20-60 ms expected; loose bound for busy CI machines


def _split_objects(fe: SimulatedMaskFrontend, frame) -> set[int]:
    """Ground-truth ids the front-end cut into several masks in this frame."""
    parts: dict[int, int] = {}
    fe(frame)
    for mask, gt in fe.last_provenance.items():
        if fe.last_origin[mask] == "split" and len(gt) == 1:
            parts[gt[0]] = parts.get(gt[0], 0) + 1
    return {g for g, n in parts.items() if n > 1}


def test_systematic_errors_are_the_same_in_every_view(tabletop_scene):
    """Systematic mode: the chosen objects are split in every view that shows them, along
    one 3D plane (the parts' world points fall on the same side in every view), and a
    second front-end with another seed (the held-out views') splits the same objects;
    independent mode splits different objects in different views."""
    scene = tabletop_scene
    quiet = dict(merge_rate=0.0, miss_small_rate=0.0, miss_rate=0.0, spurious_rate=0.0,
                 jitter_rate=0.0, boundary_flip_rate=0.0, stuff_split_rate=0.0)
    systematic = MaskErrorModel(mode="systematic", split_rate=0.5, **quiet)
    fe, other = (SimulatedMaskFrontend(systematic, seed, scene=scene) for seed in (0, 99))
    big = [{int(g) for g, n in zip(*np.unique(f.instance, return_counts=True))
            if g and n >= 60} for f in scene.frames]
    split = [_split_objects(fe, f) & b for f, b in zip(scene.frames, big)]
    chosen = set().union(*split)
    assert chosen, "some objects are chosen"
    for s, b in zip(split, big):
        assert s == chosen & b  # every chosen object in view is split, no other one
    assert [_split_objects(other, f) & b for f, b in zip(scene.frames, big)] == split
    independent = SimulatedMaskFrontend(replace(systematic, mode="independent"), 0,
                                        scene=scene)
    varying = [_split_objects(independent, f) & b for f, b in zip(scene.frames, big)]
    # some object seen in several views is split in some of them and whole in others
    assert any(len({g in v for v, b in zip(varying, big) if g in b}) == 2
               for g in set().union(*big))


def test_error_mode_is_checked():
    with pytest.raises(ValueError, match="error mode"):
        MaskErrorModel(mode="sometimes")
