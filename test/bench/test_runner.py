"""The benchmark end to end on a tiny scene: every method, the report, the JSON record
and the saved predictions, from which the metrics can be recomputed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pybullet", reason="pybullet renders the benchmark scenes")

from panoptic_mapping.bench import runner  # noqa: E402
from panoptic_mapping.bench import metrics  # noqa: E402


@pytest.fixture(scope="module")
def record_and_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg, _ = runner.parse_args(["--frames", "12", "--novel-frames", "3", "--width", "80",
                                "--height", "60", "--split-rate", "0.2"])
    return runner.run(cfg, out / "pred"), out


def test_every_method_is_measured(record_and_dir):
    record, _ = record_and_dir
    assert set(record["methods"]) == {"mapper", "per_frame_masks", "iou_tracking",
                                      "voxel_fusion"}
    assert record["config"]["errors"] == {"split_rate": 0.2}
    for name, res in record["methods"].items():
        assert 0.0 <= res["PQ_scene"] <= 1.0, name
        assert res["ingest_fps"] > 0
    mapper = record["methods"]["mapper"]
    assert mapper["loc_ms_p95"] >= mapper["loc_ms_p50"] > 0
    assert "time_to_90pct_pq_s" in mapper
    # with nothing linking frames, per-frame masks cannot match a single thing over the scene
    assert record["methods"]["per_frame_masks"]["PQ_things"] == 0.0
    assert "SIMULATED" in record["embeddings"]


def test_report_and_json(record_and_dir, tmp_path, capsys):
    record, _ = record_and_dir
    text = runner.format_report(record)
    assert "mapper vs voxel_fusion" in text and "PQ_scene" in text
    # PQ_scene is the mean of the classes' PQ; each class is named with what it lost
    per = record["methods"]["mapper"]["PQ_per_class"]
    assert np.mean([v["PQ"] for v in per.values()]) == pytest.approx(
        record["methods"]["mapper"]["PQ_scene"])
    assert "mapper's PQ per class, where it loses:" in text
    lossy = [n for n, v in per.items() if v["FP"] or v["FN"]]
    assert all(n in text for n in lossy)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record, default=runner._json_default))
    assert json.loads(path.read_text())["scene"]["name"] == "tabletop-seed0"


def test_pq_losses_worst_first():
    per = {"mug": {"PQ": 0.0, "TP": 0, "FP": 2, "FN": 1},
           "duck": {"PQ": 0.9, "TP": 1, "FP": 0, "FN": 0},
           "table": {"PQ": 0.5, "TP": 1, "FP": 1, "FN": 0}}
    assert runner.pq_losses(per) == "mug 0.00 (FN 1, FP 2), table 0.50 (FP 1)"
    assert runner.pq_losses({"duck": per["duck"]}) == ""


def test_saved_predictions_reproduce_the_metrics(record_and_dir):
    record, out = record_and_dir
    pred_dir, gt_dir = out / "pred" / "voxel_fusion" / "train", out / "pred" / "gt" / "train"
    load = lambda d, kind: [np.array(Image.open(p)).astype(np.int64)  # noqa: E731
                            for p in sorted(d.glob(f"*_{kind}.png"))]
    pi, ps, gi, gs = (load(pred_dir, "instance"), load(pred_dir, "semantic"),
                      load(gt_dir, "instance"), load(gt_dir, "semantic"))
    assert len(pi) == len(gi) == 12
    things = set(record["scene"]["thing_classes"])
    pq = metrics.panoptic_quality_scene(pi, ps, gi, gs, things)["PQ"]
    assert pq == pytest.approx(record["methods"]["voxel_fusion"]["PQ_scene"], abs=1e-9)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        runner.parse_args(["--scene", "kitchen"])
    with pytest.raises(ValueError, match="unknown baseline"):
        runner.run(runner.BenchConfig(frames=2, novel_frames=1, width=32, height=24,
                                      methods=("magic",)))


def test_mapper_parameters_can_be_set_from_the_command_line(capsys):
    cfg, _ = runner.parse_args(["--set", "instances.smooth_weight=0",
                                "--set", "instances.one_mask_per_id=false"])
    assert cfg.mapper_set == {"instances.smooth_weight": 0, "instances.one_mask_per_id": False}
    from panoptic_mapping.bench.mapper_method import MapperMethod
    scene = runner.make_scene("tabletop", seed=0, num_frames=1, width=32, height=24,
                              num_objects=None, trajectory="orbit", num_novel_frames=0)
    method = MapperMethod(cfg, scene, np.eye(len(scene.classes) - 1, 8))
    assert method.mapper.cfg.instances.smooth_weight == 0.0
    assert method.mapper.cfg.instances.one_mask_per_id is False
    for bad in ("instances.no_such_rule=1", "instances.smooth_weight=-1", "smooth_weight"):
        with pytest.raises(SystemExit):
            runner.parse_args(["--set", bad])
        assert "--set" in capsys.readouterr().err


def test_online_training_keeps_to_its_budget_when_a_step_outlasts_a_frames_share(monkeypatch):
    """A step longer than a frame's share of the budget is paid back by later frames: the
    stream trains for its budget (within one step), not one step per frame."""
    from panoptic_mapping.bench import mapper_method

    clock = [0.0]
    monkeypatch.setattr(mapper_method.time, "perf_counter", lambda: clock[0])

    class SlowMapper:
        calls = 0

        def train_for(self, seconds: float) -> int:
            self.calls += 1
            clock[0] += 0.35  # one step, whatever the slice
            return 1

    method = mapper_method.MapperMethod.__new__(mapper_method.MapperMethod)
    method.mapper, method.train_per_frame_s, method._train_credit_s = SlowMapper(), 0.1, 0.0
    method.train_steps = None
    for _ in range(20):
        method.between_frames()
    assert 20 * 0.1 <= clock[0] <= 20 * 0.1 + 0.35
    assert method.mapper.calls == 6  # not 20


def test_a_step_budget_trains_exactly_that_many_steps_half_while_streaming():
    """--train-steps: the same training on any machine and load (a time budget trains more
    steps on an idle machine than on a busy one)."""
    from panoptic_mapping.bench import mapper_method

    class CountingMapper:
        steps = 0

        def train(self, steps: int) -> dict:
            self.steps += steps
            return {}

        def stats(self) -> dict:
            return {"training_steps": self.steps, "training_steps_per_s": 0.0,
                    "keyframes": 0, "losses": {}}

    cfg = runner.BenchConfig(frames=20, train_steps=30)
    method = mapper_method.MapperMethod.__new__(mapper_method.MapperMethod)
    method.mapper, method.cfg = CountingMapper(), cfg
    method.train_steps, method._step_credit = 30, 0.0
    method.steps_per_frame = 30 * method.ONLINE_SHARE / 20
    for _ in range(20):
        method.between_frames()
    assert method.mapper.steps == 15  # 0.75 a frame, whole steps as the credit allows
    assert method.finish(budget_s=999.0)["train_steps"] == 30
    cfg, _ = runner.parse_args(["--train-steps", "30"])
    assert cfg.train_steps == 30
    with pytest.raises(SystemExit):
        runner.parse_args(["--train-steps", "0"])


def test_a_lens_distorts_the_scene_and_the_mapper_is_told_unless_ignored():
    import dataclasses

    from panoptic_mapping.bench.lens import NAMED_LENSES, distort_scene, parse_lens
    from panoptic_mapping.bench.mapper_method import MapperMethod
    with pytest.raises(SystemExit):
        runner.parse_args(["--lens", "fisheye:0.1"])
    scene = runner.make_scene("tabletop", seed=0, num_frames=1, width=32, height=24,
                              num_objects=None, trajectory="orbit", num_novel_frames=0)
    raw = distort_scene(scene, parse_lens("fr1"))
    f, g = scene.frames[0], raw.frames[0]
    assert g.rgb.shape == f.rgb.shape and (g.instance != f.instance).any()
    assert (g.depth[12, 16] == f.depth[12, 16])  # the centre does not move
    emb = np.eye(len(scene.classes) - 1, 8)
    told, _ = runner.parse_args(["--lens", "fr1"])
    assert MapperMethod(told, raw, emb).lens == parse_lens("fr1")
    ignored, _ = runner.parse_args(["--lens", "fr1", "--lens-mode", "ignore"])
    assert MapperMethod(ignored, raw, emb).lens is None
    # a recording's own lens (scene.json, from the importers) is told the same way
    model, coefficients = NAMED_LENSES["fr2"]
    recorded = dataclasses.replace(scene, config={"lens": {"model": model,
                                                           "coefficients": coefficients}})
    plain, _ = runner.parse_args([])
    assert MapperMethod(plain, recorded, emb).lens.coefficients == coefficients
    assert MapperMethod(plain, scene, emb).lens is None
