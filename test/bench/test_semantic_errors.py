"""Systematic (view-consistent) errors of the SIMULATED embeddings
(bench/semantic_errors.py): per-instance confusions and support labels that are the same in
every view, their rates, the background pull, and 'none' leaving today's embeddings
untouched."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from synthetic_scene import CLASSES, DUCK, FLOOR, H, W, WALL, gt_frame, make_instance, make_scene

from panoptic_mapping.bench.frontends import (
    MaskErrorModel,
    SemanticErrorModel,
    SimulatedEmbeddingSpace,
    SimulatedMaskFrontend,
    classical_frontend,
)
from panoptic_mapping.bench.semantic_errors import (
    background_classes,
    find_supports,
    plan_semantic_errors,
)
from panoptic_mapping.bench.types import Scene

# only the per-view noise, the way the benchmark's other tests isolate one kind
ONLY = dict(confusion_rate=0.0, support_rate=0.0, background_weight=0.0)


def synthetic_frame(index: int = 0, duck_on_wall: bool = False):
    """The synthetic scene without its void patch; with ``duck_on_wall`` the duck
    (instance 3) is seen in front of the wall instead of on the floor."""
    inst = make_instance(void=False)
    if duck_on_wall:
        inst[inst == 3] = 2
        inst[2:12, 4:14] = 3
    return gt_frame(index, inst)


def owners(labels: np.ndarray, instance: np.ndarray) -> list[int]:
    """Majority ground-truth instance under each mask 1..M."""
    return [int(np.bincount(instance[labels == i]).argmax())
            for i in range(1, int(labels.max()) + 1)]


def predicted(embeddings: np.ndarray, space: SimulatedEmbeddingSpace,
              classes: list[str]) -> np.ndarray:
    """Class id (1..) each embedding is closest to among the text embeddings."""
    return (embeddings @ space.text_embeddings(classes[1:]).T).argmax(axis=1) + 1


# ------------------------------------------------------------------------- 'none'


def test_none_reproduces_todays_embeddings_exactly(tabletop_scene):
    """mode none, or systematic with every kind at 0, gives the embeddings (and masks) of
    a front-end without the model, bit for bit, for the simulated and a real segmenter."""
    scene = tabletop_scene
    space = SimulatedEmbeddingSpace(dim=32, seed=0, noise_std=0.3)
    off = [None, SemanticErrorModel(),
           SemanticErrorModel(mode="systematic", confusion_rate=0.0, support_rate=0.0,
                              background_weight=0.0),
           SemanticErrorModel(mode="systematic", confusion_weight=0.0, support_weight=0.0,
                              background_weight=0.0)]
    for errors in (MaskErrorModel(), MaskErrorModel(mode="systematic")):
        outs = [[SimulatedMaskFrontend(errors, 3, scene=scene, embedding_space=space,
                                       semantic_errors=sem)(f) for f in scene.frames[:4]]
                for sem in off]
        for other in outs[1:]:
            for a, b in zip(outs[0], other):
                assert np.array_equal(a.labels, b.labels)
                assert np.array_equal(a.scores, b.scores)
                assert np.array_equal(a.embeddings, b.embeddings)
    frame = scene.frames[2]
    ref = classical_frontend(embedding_space=space, scene=scene)(frame)
    same = classical_frontend(embedding_space=space, scene=scene,
                              semantic_errors=SemanticErrorModel())(frame)
    assert np.array_equal(ref.embeddings, same.embeddings)
    on = classical_frontend(embedding_space=space, scene=scene,
                            semantic_errors=SemanticErrorModel(mode="systematic"))(frame)
    assert not np.array_equal(ref.embeddings, on.embeddings)


def test_mode_and_ranges_are_checked():
    with pytest.raises(ValueError, match="semantic error mode"):
        SemanticErrorModel(mode="sometimes")
    with pytest.raises(ValueError, match="confusion_rate"):
        SemanticErrorModel(confusion_rate=1.5)
    assert not SemanticErrorModel().active
    assert SemanticErrorModel(mode="systematic").active
    assert not SemanticErrorModel(mode="systematic", **ONLY).active


# ------------------------------------------------------------------------- per instance


def test_confused_instance_is_the_same_similar_class_in_every_view(tabletop_scene):
    """A confused instance is read as its similar class in every view that shows it, by the
    training and the held-out front-end alike (other seeds, other mask errors), and the
    other instances keep their class; the choice is the same when planned again."""
    scene = tabletop_scene
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.3)
    model = SemanticErrorModel(mode="systematic", confusion_rate=0.5, support_rate=0.0,
                               background_weight=0.0)
    plan = plan_semantic_errors(model, scene, space)
    things = [g for g, c in scene.instance_class.items() if c in scene.thing_classes]
    assert len(plan.confused) == round(0.5 * len(things))
    assert plan_semantic_errors(model, scene, space).confused == plan.confused
    for g, c in plan.confused.items():
        own = scene.instance_class[g]
        assert c != own and c in scene.thing_classes
        cos = {k: float(space.class_embedding(scene.classes[own])
                        @ space.class_embedding(scene.classes[k]))
               for k in scene.thing_classes if k != own}
        assert sorted(cos, key=cos.get, reverse=True).index(c) < model.confusion_top_k
    views = dict.fromkeys(plan.confused, 0)
    for fe in (SimulatedMaskFrontend(MaskErrorModel.none(), 0, scene=scene,
                                     embedding_space=space, semantic_errors=model),
               SimulatedMaskFrontend(MaskErrorModel(mode="systematic", systematic_seed=5),
                                     99, scene=scene, embedding_space=space,
                                     semantic_errors=model)):
        assert fe.semantic_plan().confused == plan.confused
        for frame in scene.frames:
            out = fe(frame)
            classes = predicted(out.embeddings, space, scene.classes)
            for i, (g, c) in enumerate(zip(owners(out.labels, frame.instance),
                                           owners(out.labels, frame.semantic))):
                if g == 0 or c == 0:
                    continue  # a spurious fragment mostly on void: a random class
                # a confused instance reads as its similar class in every view, whatever
                # the mask errors did to it; any other mask as its majority class
                assert classes[i] == plan.confused.get(g, c), (frame.index, g)
                if g in views:
                    views[g] += 1
    assert all(n >= 2 for n in views.values())  # each seen in several views


def test_choices_do_not_depend_on_the_mask_errors_and_change_with_the_seed(tabletop_scene):
    scene = tabletop_scene
    space = SimulatedEmbeddingSpace(dim=64, seed=0)
    model = SemanticErrorModel(mode="systematic", confusion_rate=0.5, support_rate=0.5)
    plans = [plan_semantic_errors(replace(model, seed=s), scene, space) for s in range(6)]
    assert len({tuple(sorted(p.confused)) for p in plans}) > 1
    assert len({tuple(sorted(p.supported)) for p in plans}) > 1
    # the scene's own seed is mixed in: another scene with the same ids chooses others
    other = replace(scene, config={**scene.config, "seed": 1})
    assert any(plan_semantic_errors(replace(model, seed=s), other, space).confused
               != p.confused for s, p in enumerate(plans))


def test_supports_from_the_layout(tabletop_scene):
    """Objects on the table rest on it, the tray's content on the tray, the upper jenga
    block on the lower one; a chosen small object reads as its support in every view."""
    scene = tabletop_scene
    layout = {r["instance"]: r for r in scene.config["layout"]}
    cls = {g: scene.classes[c] for g, c in scene.instance_class.items()}
    supports = find_supports(scene)
    things = {g for g, c in scene.instance_class.items() if c in scene.thing_classes}
    assert set(supports) == things
    tray = next(g for g in things if cls[g] == "tray")
    assert cls[supports[tray]] == "table"
    content = [g for g in things if supports[g] == tray]
    assert len(content) == 1  # the nested object
    blocks = sorted((g for g in things if cls[g] == "jenga block"),
                    key=lambda g: layout[g]["aabb_min"][2])
    upper = blocks[-1]
    assert cls[supports[upper]] == "jenga block"
    assert layout[supports[upper]]["aabb_max"][2] == pytest.approx(
        layout[upper]["aabb_min"][2], abs=1e-3)
    assert all(cls[supports[g]] == "table" for g in things - {upper, *content})
    assert find_supports(replace(scene, config={})) == {}

    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.3)
    model = SemanticErrorModel(mode="systematic", support_rate=1.0, confusion_rate=0.0,
                               background_weight=0.0)
    plan = plan_semantic_errors(model, scene, space)
    # every small thing whose support is of another class (not the tray, 0.43 m, nor the
    # upper block on a block)
    assert set(plan.supported) == things - {tray, upper}
    fe = SimulatedMaskFrontend(MaskErrorModel.none(), 0, scene=scene, embedding_space=space,
                               semantic_errors=model)
    for frame in scene.frames:
        out = fe(frame)
        classes = predicted(out.embeddings, space, scene.classes)
        for i, g in enumerate(owners(out.labels, frame.instance)):
            if g in plan.supported:
                assert classes[i] == scene.instance_class[supports[g]]
    assert fe.stats["sem_support"] > 0 and "as their support" in fe.format_stats()


def many_instance_scene(n: int = 400) -> Scene:
    """No images: ``n`` things in a grid on a table (stuff), every fifth one small and in a
    tray, every seventh one large."""
    classes = ["void", "floor", "table", "duck", "mug", "tray", "ball", "cube"]
    instance_class = {1: 1, 2: 2}
    layout = [{"instance": 1, "aabb_min": [-50, -50, -1], "aabb_max": [50, 50, 0]},
              {"instance": 2, "aabb_min": [-20, -20, 0], "aabb_max": [20, 20, 0.6]}]
    g = 3
    for k in range(n):
        x, y = (k % 20) - 10.0, (k // 20) - 10.0
        if k % 5 == 0:  # a tray with a ball in it
            instance_class[g] = 5
            layout.append({"instance": g, "aabb_min": [x, y, 0.6],
                           "aabb_max": [x + 0.4, y + 0.4, 0.66]})
            instance_class[g + 1] = 6
            layout.append({"instance": g + 1, "aabb_min": [x + 0.1, y + 0.1, 0.62],
                           "aabb_max": [x + 0.2, y + 0.2, 0.72]})
            g += 2
            continue
        size = 0.5 if k % 7 == 0 else 0.15
        instance_class[g] = 3 + k % 2 if k % 3 else 7
        layout.append({"instance": g, "aabb_min": [x, y, 0.6],
                       "aabb_max": [x + size, y + size, 0.6 + size]})
        g += 1
    return Scene(name="many", frames=[], novel_frames=[], classes=classes,
                 thing_classes={3, 4, 5, 6, 7}, instance_class=instance_class,
                 config={"layout": layout, "seed": 0})


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_rates_are_respected_on_many_instances(rate):
    scene = many_instance_scene()
    space = SimulatedEmbeddingSpace(dim=64, seed=0)
    things = [g for g, c in scene.instance_class.items() if c in scene.thing_classes]
    supports = find_supports(scene)
    assert {scene.classes[scene.instance_class[s]] for s in supports.values()} == {"table",
                                                                                    "tray"}
    model = SemanticErrorModel(mode="systematic", confusion_rate=rate, support_rate=rate)
    plan = plan_semantic_errors(model, scene, space)
    large = sum(1 for k in range(400) if k % 5 and k % 7 == 0)
    assert plan.n_things == len(things) == 480
    assert plan.n_support_eligible == 480 - 80 - large  # not the trays, not the large ones
    assert len(plan.supported) == pytest.approx(rate * plan.n_support_eligible, abs=1)
    assert len(plan.confused) == pytest.approx(rate * plan.n_things, abs=1)
    assert not set(plan.confused) & set(plan.supported)
    assert {scene.classes[c] for c in plan.supported.values()} == {"table", "tray"}
    # a kind at rate 0 is off; a higher rate keeps the instances a lower one chose
    assert not plan_semantic_errors(replace(model, support_rate=0.0), scene,
                                    space).supported
    more = plan_semantic_errors(replace(model, support_rate=min(1.0, 2 * rate)), scene, space)
    assert set(plan.supported) <= set(more.supported)
    # the choice is spread over the instances: each tray/ball group, duck and mug alike
    chosen = [scene.instance_class[g] for g in plan.confused]
    assert len(set(chosen)) >= 4


# ------------------------------------------------------------------------- background


def test_background_pull_moves_an_embedding_toward_its_surroundings_by_the_weight():
    """Without noise, a mask surrounded by floor is embedded exactly as
    unit((1 - w') own + w' floor), w' = w * min(1, ring px / mask px); the same duck seen in
    front of the wall is pulled toward the wall instead (the bias follows the view)."""
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.0)
    w = 0.5
    model = SemanticErrorModel(mode="systematic", confusion_rate=0.0, support_rate=0.0,
                               background_weight=w, background_ring_px=2)
    fe = SimulatedMaskFrontend(MaskErrorModel.none(), 0, scene=make_scene(),
                               embedding_space=space, semantic_errors=model)
    ref = SimulatedMaskFrontend(MaskErrorModel.none(), 0, scene=make_scene(),
                                embedding_space=space)
    e = {c: space.class_embedding(c).astype(np.float64) for c in CLASSES[1:]}

    def pulled(own: str, other: str, share: float) -> np.ndarray:
        v = (1 - w * share) * e[own] + w * share * e[other]
        return v / np.linalg.norm(v)

    # a k x k square's ring of 2 (4-connected) steps: 2 px along each side, 1 per corner
    ring = lambda k: 4 * 2 * k + 4  # noqa: E731
    for frame, duck_bg, duck_share in (
            (synthetic_frame(0), "floor", ring(14) / 14 ** 2),
            (synthetic_frame(1, duck_on_wall=True), "wall", ring(10) / 10 ** 2)):
        out, clean = fe(frame), ref(frame)
        by_owner = dict(zip(owners(out.labels, frame.instance), out.embeddings))
        clean_by_owner = dict(zip(owners(clean.labels, frame.instance), clean.embeddings))
        assert np.allclose(by_owner[3], pulled("duck", duck_bg, duck_share), atol=1e-6)
        assert np.allclose(by_owner[6], pulled("pin", "floor", 1.0), atol=1e-6)  # 36 > 16 px
        assert np.allclose(clean_by_owner[3], e["duck"], atol=1e-6)
        gain = by_owner[3] @ e[duck_bg] - clean_by_owner[3] @ e[duck_bg]
        assert gain > 0.2
        # the pull is toward the background, the mask still reads as its own class
        assert predicted(by_owner[3][None], space, CLASSES)[0] == DUCK
    # the wall (16 x 64 px) has a ring of two rows of floor below it: 128 / 1024 px
    first = synthetic_frame(0)
    out = fe(first)
    wall = dict(zip(owners(out.labels, first.instance), out.embeddings))[1]
    assert np.allclose(wall, pulled("wall", "floor", 128 / 1024), atol=1e-6)


def test_background_class_is_the_majority_of_the_ring():
    frame = synthetic_frame()
    labels = np.zeros((H, W), np.int32)
    labels[frame.instance == 3] = 1  # the duck: floor on three sides, the teddy on one
    labels[frame.instance == 4] = 2  # the teddy, against the duck on its left
    labels[0:4, 0:4] = 3  # a corner of the wall, ring inside the wall
    bg, share = background_classes(labels, frame.semantic, 4, ring_px=2)
    assert bg.tolist()[:3] == [FLOOR, FLOOR, WALL] and bg[3] == -1  # mask 4 has no pixels
    # ring / mask: 116 / 196 px; the corner's ring, cut by the image border: 17 / 16 px, capped
    assert share.tolist() == pytest.approx([116 / 196, 116 / 196, 1.0, 0.0])
    bg_thin, _ = background_classes(labels, frame.semantic, 3, ring_px=1)
    assert bg_thin[0] == FLOOR


def test_per_view_noise_draws_are_unchanged():
    """With noise, masks of instances no systematic error touches get exactly the
    embeddings they get without the model: the random draws are the same."""
    space = SimulatedEmbeddingSpace(dim=64, seed=0, noise_std=0.3)
    scene = make_scene()
    model = SemanticErrorModel(mode="systematic", confusion_rate=0.25, support_rate=0.0,
                               background_weight=0.0)
    fe = SimulatedMaskFrontend(MaskErrorModel(), 4, scene=scene, embedding_space=space,
                               semantic_errors=model)
    ref = SimulatedMaskFrontend(MaskErrorModel(), 4, scene=scene, embedding_space=space)
    confused = fe.semantic_plan().confused
    assert len(confused) == 1  # a quarter of the four things
    for i in range(6):
        frame = synthetic_frame(i)
        out, clean = fe(frame), ref(frame)
        assert np.array_equal(out.labels, clean.labels)
        for k, g in enumerate(owners(out.labels, frame.instance)):
            same = np.array_equal(out.embeddings[k], clean.embeddings[k])
            assert same == (g not in confused)


# ------------------------------------------------------------------------- runner


def test_command_line_and_run_record(tmp_path):
    pytest.importorskip("pybullet", reason="pybullet renders the benchmark scenes")
    from panoptic_mapping.bench import runner

    cfg, _ = runner.parse_args([])
    assert cfg.semantic_errors == {}
    cfg, _ = runner.parse_args(["--semantic-errors", "none"])
    assert cfg.semantic_errors == {}
    cfg, _ = runner.parse_args(["--semantic-errors", "systematic", "--sem-confusion-rate",
                                "0.5", "--sem-background-weight", "0", "--sem-seed", "3"])
    assert cfg.semantic_errors == {"mode": "systematic", "confusion_rate": 0.5,
                                   "background_weight": 0.0, "seed": 3}
    assert isinstance(cfg.semantic_errors["seed"], int)
    for bad in (["--sem-support-rate", "0.5"],
                ["--semantic-errors", "systematic", "--sem-support-rate", "2"],
                ["--semantic-errors", "systematic", "--masks-dir", str(tmp_path)]):
        with pytest.raises(SystemExit):
            runner.parse_args(bad)
    cfg, _ = runner.parse_args(["--frames", "2", "--novel-frames", "1", "--width", "48",
                                "--height", "36", "--methods", "per_frame_masks",
                                "--semantic-errors", "systematic",
                                "--sem-confusion-rate", "0.5"])
    record = runner.run(cfg)
    assert record["config"]["semantic_errors"]["confusion_rate"] == 0.5
    sem = record["frontend"]["semantic_errors"]
    assert sem["mode"] == "systematic" and len(sem["plan"]["confused"]) == 6
    assert "systematic semantic errors" in record["embeddings"]
    assert "systematic semantics" in record["frontend"]["applied"]
    plain = runner.run(runner.parse_args(["--frames", "2", "--novel-frames", "1", "--width",
                                          "48", "--height", "36", "--methods",
                                          "per_frame_masks"])[0])
    assert "semantic_errors" not in plain["frontend"]
    assert plain["config"]["semantic_errors"] == {}
