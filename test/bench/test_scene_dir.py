"""The benchmark on scene folders from outside (``--scene-dir``) and on recorded masks
(``--masks-dir``): scenes without ground truth load, run end to end and report what needs
no ground truth; recorded masks are validated with clear messages; a scene with ground
truth fed recorded masks is scored as usual; the replay tool plays an imported folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import rgbd_sequences as rs
from conftest import REPLAY_EXECUTABLE
from helpers import scene_frame
from panoptic_mapping.bench import external, importers, runner
from panoptic_mapping.bench.external import MasksDirError
from panoptic_mapping.bench.scenes import load_scene, save_scene
from panoptic_mapping.bench.types import Scene

N_FRAMES = 8  # imported with --holdout-every 4: 6 training frames, 2 held-out views
HOLDOUT = 4


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A tiny recording imported without ground truth (downscaled to 48x36), its source
    frames split like the import (training, held out) and recorded masks (ids = the boxes,
    with embeddings).

    Not smaller: at 32x24 a pixel covers ~10 cm at the wall, ten instance voxels, and the
    mapper no longer finds its ids in the next frame even with perfect masks."""
    root = tmp_path_factory.mktemp("scene_dir")
    seq = rs.frames(N_FRAMES)
    rs.write_7scenes(root / "src" / "seq-01", seq)
    importers.import_7scenes(root / "src" / "seq-01", root / "scene",
                             importers.ImportOptions(width=48, holdout_every=HOLDOUT))
    train = [f for i, f in enumerate(seq) if i % HOLDOUT != HOLDOUT - 1]
    novel = [f for i, f in enumerate(seq) if i % HOLDOUT == HOLDOUT - 1]
    # the ids downscaled as the importer downscales depth (nearest neighbour)
    small = lambda f: importers.resize_rgbd(f.rgb, f.labels, (48, 36))[1]  # noqa: E731
    rs.write_masks(root / "masks", [small(f) for f in train], novel=[small(f) for f in novel],
                   embeddings=8)
    return root


def _run(*args: str) -> dict:
    cfg, _ = runner.parse_args(["--train-seconds", "0", "--eval-every", "2", *args])
    return runner.run(cfg)


# ----------------------------------------------------------------------------- scenes


def test_scene_without_ground_truth_loads_and_saves(imported, tmp_path):
    scene = load_scene(imported / "scene")
    assert not scene.has_ground_truth
    assert (len(scene.frames), len(scene.novel_frames)) == (6, 2)
    assert scene.frames[0].instance is None and scene.frames[0].semantic is None
    save_scene(scene, tmp_path / "copy")
    again = load_scene(tmp_path / "copy")
    assert not again.has_ground_truth and not list((tmp_path / "copy").rglob("*_instance.png"))
    np.testing.assert_array_equal(again.frames[3].depth, scene.frames[3].depth)
    # a scene with ground truth keeps it (backward compatible)
    inst = np.arange(12, dtype=np.int32).reshape(3, 4)
    gt = Scene("gt", [scene_frame(np.zeros((3, 4, 3), np.uint8), np.ones((3, 4), np.float32),
                                  instance=inst, semantic=inst % 2)], [], ["void", "a"], {1},
               {})
    save_scene(gt, tmp_path / "gt")
    back = load_scene(tmp_path / "gt")
    assert back.has_ground_truth
    np.testing.assert_array_equal(back.frames[0].instance, inst)


def test_simulated_frontends_need_ground_truth(imported):
    with pytest.raises(ValueError, match="ground truth"):
        _run("--scene-dir", str(imported / "scene"), "--methods", "voxel_fusion")


# ----------------------------------------------------------------------------- end to end


def _sane_common(res: dict, n_frames: int) -> None:
    timeline = res["instances_over_time"]
    assert [e["frame"] for e in timeline] == [2, 4, 6, 6] and timeline[-1]["after_training"]
    assert all(e["ids_assigned"] >= 0 for e in timeline)
    assert res["ingest_fps"] > 0 and res["ids_assigned"] >= res["confirmed_instances"] >= 0
    assert 0.0 <= res["frame_to_frame_id_consistency"] <= 1.0
    assert res["consistency_pixels"] > 0


def test_bench_without_ground_truth_with_a_real_segmenter(imported, capsys):
    record = _run("--scene-dir", str(imported / "scene"), "--methods", "mapper",
                  "--frontend", "classical", "--novel-frames", "1")
    assert record["scene"]["ground_truth"] is False
    assert "quality" not in record["frontend"]
    assert record["config"]["frames"] == 6 and record["config"]["width"] == 48
    res = record["methods"]["mapper"]
    _sane_common(res, 6)
    assert res["confirmed_instances"] > 0
    assert all(e["confirmed"] is not None for e in res["instances_over_time"])
    for key in ("id_churn_mean", "id_churn_late"):
        assert res[key] is None or 0.0 <= res[key] <= 1.0
    assert "novel_depth_mae" not in res  # an untrained field is not rendered
    assert res["loc_ms_p50"] > 0 and 0.0 <= res["loc_coverage"] <= 1.0
    assert set(external.REPORT_FIELDS) - {k for k in external.REPORT_FIELDS
                                          if k.startswith("novel_")} <= set(res)
    text = external.format_report_without_gt(record)
    assert "no ground truth" in text and "instances over time" in text
    assert record["frontend"]["masks_per_frame"] > 0 and "masks a frame" in text
    assert record["scene"]["name"] == "7scenes-src-seq-01"  # the parent names the sequence


def test_a_real_segmenter_frontend_needs_no_ground_truth_for_its_masks(imported):
    """Oracle embeddings need the ground-truth classes; without them a real segmenter's
    masks come without embeddings instead of failing (also outside the bench runner)."""
    from panoptic_mapping.bench.frontends import SimulatedEmbeddingSpace, classical_frontend
    scene = load_scene(imported / "scene")
    fe = classical_frontend(embedding_space=SimulatedEmbeddingSpace(dim=8), scene=scene)
    masks = fe(scene.frames[0], scene)
    assert masks.labels.max() > 0 and masks.embeddings is None


def test_bench_on_recorded_masks_without_ground_truth(imported, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert runner.main(["--scene-dir", str(imported / "scene"), "--masks-dir",
                        str(imported / "masks"), "--methods", "mapper,iou_tracking,"
                        "per_frame_masks", "--train-seconds", "0", "--eval-every", "2",
                        "--novel-frames", "1", "--json", str(out),
                        "--save-predictions", str(tmp_path / "pred")]) == 0
    text = capsys.readouterr().out
    assert "front-end recorded" in text and "frame_to_frame_id_consistency" in text
    record = json.loads(out.read_text())
    assert record["frontend"]["embeddings"] == "recorded"
    assert record["config"]["embedding_dim"] == 8 and "recorded" in record["embeddings"]
    mapper, tracking, per_frame = (record["methods"][m] for m in
                                   ("mapper", "iou_tracking", "per_frame_masks"))
    for res in (mapper, tracking, per_frame):
        _sane_common(res, 6)
    # masks that are the objects themselves: the map keeps 4 ids (wall + 3 boxes) that
    # never change and agree from frame to frame; per-frame ids never agree
    assert mapper["confirmed_instances"] == 4
    assert mapper["id_churn_mean"] == 0.0 and mapper["id_churn_after_training"] == 0.0
    assert mapper["frame_to_frame_id_consistency"] > 0.95
    assert tracking["frame_to_frame_id_consistency"] > 0.95
    assert per_frame["frame_to_frame_id_consistency"] == 0.0
    assert per_frame["ids_assigned"] == 4 * 6 and "id_churn_mean" not in per_frame

    assert len(list((tmp_path / "pred" / "mapper" / "train").glob("*_instance.png"))) == 6


def test_ground_truth_scene_with_recorded_masks_is_scored(tmp_path):
    K = rs.K * [[0.5], [0.5], [1]]
    seq = rs.frames(6, shape=(24, 32), K_=K)
    frames = [scene_frame(f.rgb, f.depth, instance=f.labels,
                          semantic=np.where(f.labels == 1, 1, 2).astype(np.int32), K=K,
                          camera_to_world=f.camera_to_world, index=i, stamp=i / 10)
              for i, f in enumerate(seq)]
    save_scene(Scene("boxes", frames[:5], frames[5:], ["void", "wall", "box"], {2},
                     {1: 1, 2: 2, 3: 2, 4: 2}), tmp_path / "scene")
    rs.write_masks(tmp_path / "masks", [f.labels for f in seq[:5]], novel=[seq[5].labels],
                   bits=8)
    record = _run("--scene-dir", str(tmp_path / "scene"), "--masks-dir",
                  str(tmp_path / "masks"), "--methods", "voxel_fusion", "--voxel-size", "0.03")
    assert record["scene"]["ground_truth"] is True
    assert record["frontend"]["quality"]["PQ"] == pytest.approx(1.0)
    assert "SIMULATED oracle" in record["frontend"]["embeddings"]
    res = record["methods"]["voxel_fusion"]
    assert 0.5 < res["PQ_scene"] <= 1.0 and res["mIoU"] > 0.5 and "loc_PQ" in res
    assert "mapper vs" not in runner.format_report(record)
    # recorded embeddings on a scene with ground truth need the classes' text embeddings
    for i in range(5):
        np.save(tmp_path / "masks" / f"{i:06d}.npy", np.eye(8, 8, dtype=np.float32)[:4])
    np.save(tmp_path / "masks" / "novel" / "000000.npy", np.eye(8, 8, dtype=np.float32)[:4])
    with pytest.raises(MasksDirError, match="text_embeddings.npy: missing"):
        _run("--scene-dir", str(tmp_path / "scene"), "--masks-dir", str(tmp_path / "masks"),
             "--methods", "voxel_fusion")
    np.save(tmp_path / "masks" / "text_embeddings.npy", np.eye(8, dtype=np.float32)[:2])
    record = _run("--scene-dir", str(tmp_path / "scene"), "--masks-dir",
                  str(tmp_path / "masks"), "--methods", "voxel_fusion", "--voxel-size", "0.03")
    assert record["config"]["embedding_dim"] == 8


def test_field_depth_error_against_the_sensor(imported):
    """The novel_* fields on a stand-in field that renders 10 % too far, nothing at the
    top row, colour one level too bright, and has trained (a real field takes seconds
    per training step on this CPU)."""
    views = load_scene(imported / "scene").novel_frames

    class Field:
        def stats(self):
            return {"training_steps": 5}

        def render_rgbd(self, K, camera_to_world, shape):
            frame = next(f for f in views if f.camera_to_world is camera_to_world)
            depth = frame.depth * 1.1
            depth[0] = 0.0
            return np.clip(frame.rgb.astype(int) + 1, 0, 255).astype(np.uint8), depth

    class Method:
        mapper = Field()

    res = external._field_errors(Method(), views)
    sensor = np.concatenate([f.depth[1:][f.depth[1:] > 0] for f in views])
    assert res["novel_depth_abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert res["novel_depth_delta1"] == 1.0 and res["novel_depth_pixels"] == sensor.size
    assert res["novel_depth_mae"] == pytest.approx(
        np.mean([0.1 * f.depth[1:][f.depth[1:] > 0].mean() for f in views]), rel=1e-5)
    assert res["novel_depth_rmse"] == pytest.approx(0.1 * np.sqrt(np.mean(sensor ** 2)),
                                                    rel=1e-5)
    assert res["novel_depth_coverage"] == pytest.approx(
        sensor.size / sum(int((f.depth > 0).sum()) for f in views))
    assert 47.0 < res["novel_psnr"] <= 10 * np.log10(255 ** 2)  # off by 1 (0 at 255)
    Method.mapper.stats = lambda: {"training_steps": 0}
    assert external._field_errors(Method(), views) == {}  # untrained: not rendered


# ----------------------------------------------------------------------------- validation


def test_recorded_masks_are_validated(imported, tmp_path):
    import shutil

    scene = load_scene(imported / "scene")
    masks = tmp_path / "m"
    shutil.copytree(imported / "masks", masks)
    load = lambda: external.load_masks_dir(masks, scene)  # noqa: E731
    ok = load()
    assert len(ok.train) == 6 and len(ok.novel) == 2 and ok.embedding_dim == 8
    assert ok.train[0].labels.max() == 4 and ok.train[0].embeddings.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(ok.train[0].embeddings, axis=1), 1.0, rtol=1e-6)

    def expect(match: str) -> None:
        with pytest.raises(MasksDirError, match=match):
            load()

    first = masks / "000000.png"
    labels = np.asarray(Image.open(first))
    # non-compact ids are renumbered, and the embedding rows follow them
    sparse = np.where(labels == 3, 7, labels).astype(np.uint16)
    Image.fromarray(sparse).save(first)
    expect(r"000000.npy: 4 rows but the label image has mask id 7")
    table = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    np.save(masks / "000000.npy", table)
    got = load().train[0]
    assert sorted(np.unique(got.labels)) == [1, 2, 3, 4]
    np.testing.assert_allclose(got.embeddings[3], table[6] / np.linalg.norm(table[6]),
                               rtol=1e-5)
    np.save(masks / "000000.npy", table.astype(np.int64))
    expect("dtype int64; expected float32")
    np.save(masks / "000000.npy", table[:, :5])
    expect("D = 5, other files have D = 8|D = 8, other files have D = 5")
    np.save(masks / "000000.npy", table)
    Image.fromarray(np.stack([labels.astype(np.uint8)] * 3, -1)).save(first)
    expect("mode RGB - a colour-coded mask")
    Image.fromarray(labels[:, :16].astype(np.uint16)).save(first)
    expect("16x36 pixels but the frame .frames/000000_rgb.png. is 48x36")
    first.unlink()
    expect(r"000000.png: missing \(masks-dir needs NNNNNN.png")
    Image.fromarray(labels.astype(np.uint16)).save(first)
    (masks / "novel" / "000001.npy").unlink()
    expect("novel/000001.npy: missing, but .* exists")
    for p in masks.rglob("*.npy"):
        p.unlink()
    assert load().embedding_dim is None and load().train[0].embeddings is None
    with pytest.raises(MasksDirError, match="not a folder"):
        external.load_masks_dir(tmp_path / "nothing", scene)


# ----------------------------------------------------------------------------- replay


@pytest.mark.ros
def test_replay_plays_an_imported_folder(imported, tmp_path):
    import subprocess

    if not REPLAY_EXECUTABLE.exists():
        pytest.skip("the replay executable is not installed (run `make setup`)")
    summary = tmp_path / "summary.json"
    out = subprocess.run([str(REPLAY_EXECUTABLE), str(imported / "scene"), "--rate", "20",
                          "--wait-subscribers", "0.1", "--summary", str(summary)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(summary.read_text())["frames"] == 6
