"""Front-ends without model weights: shared post-processing, the classical segmenter, the
segmenter factory, the configuration dataclasses and the ROS-free import boundary."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from panoptic_mapping.config import ConfigError, config_from_dict, param_specs
from panoptic_mapping.frontends.config import (
    EmbedderConfig,
    SegmenterConfig,
    WorkerConfig,
)
from panoptic_mapping.frontends.postprocess import (
    _rasterize_on_device,
    fill_holes,
    masks_to_labels,
    postprocess_labels,
    rasterize_masks,
)
from panoptic_mapping.frontends.factory import make_segmenter, segmenter_kind
from panoptic_mapping.frontends.segmenters import (
    ClassicalSegmenter,
    MissingWeightsError,
    Segmentation,
    resolve_device,
)


def box(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------- post-processing

def test_rasterize_puts_smaller_masks_on_top():
    big, small = box(10, 10, 0, 10, 0, 10), box(10, 10, 2, 5, 2, 5)
    for order in ([big, small], [small, big]):
        labels = rasterize_masks(np.stack(order))
        small_id = 1 + [m is small for m in order].index(True)
        assert labels.dtype == np.int32
        assert np.all(labels[small] == small_id)
        assert np.all(labels[big & ~small] == 3 - small_id)
    assert rasterize_masks(np.zeros((0, 4, 5), bool)).shape == (4, 5)


def test_rasterize_many_masks_matches_painting_on_both_paths():
    rng = np.random.default_rng(0)
    masks = np.stack([box(40, 50, *sorted(rng.integers(0, 40, 2)), *sorted(rng.integers(0, 50, 2)))
                      for _ in range(120)])
    areas = masks.reshape(len(masks), -1).sum(1)
    _, first = np.unique(areas, return_index=True)
    masks = masks[np.sort(first)]  # unique areas: the painting order is unambiguous
    assert len(masks) > 32  # more than one chunk
    expected = np.zeros((40, 50), np.int32)
    for i in np.argsort(-masks.reshape(len(masks), -1).sum(1)):  # largest first
        expected[masks[i]] = i + 1
    assert np.array_equal(rasterize_masks(torch.from_numpy(masks)), expected)
    assert np.array_equal(rasterize_masks(masks), expected)
    # The chunked path used for GPU tensors gives the same image (run here on the CPU).
    order = torch.from_numpy(np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable"))
    assert np.array_equal(_rasterize_on_device(torch.from_numpy(masks), order), expected)


def test_fill_holes_only_fills_unlabelled_enclosed_pixels():
    labels = np.zeros((9, 9), np.int32)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 0   # hole
    labels[4, 4] = 2       # a smaller mask inside the hole stays
    labels[0, 0] = 3
    out = fill_holes(labels)
    assert out[4, 4] == 2 and out[3, 3] == 1 and out[5, 5] == 1
    assert out[0, 1] == 0  # not enclosed
    assert labels[3, 3] == 0  # input untouched


def test_masks_to_labels_min_area_after_overlap_and_scores_follow():
    h, w = 20, 20
    table = box(h, w, 0, 20, 0, 20)
    mug = box(h, w, 5, 10, 5, 10)             # 25 px, on top of the table
    tiny = box(h, w, 15, 17, 15, 17)          # 4 px, below min_area
    hidden = box(h, w, 5, 10, 5, 11)          # 30 px but covered by the mug except 5 px
    masks = np.stack([table, mug, tiny, hidden])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels, s = masks_to_labels(torch.from_numpy(masks), torch.tensor(scores), min_area=8)
    assert labels.dtype == np.int32 and s.dtype == np.float32
    assert set(np.unique(labels)) == {1, 2}      # compact ids: table, mug
    assert np.allclose(s, [0.9, 0.8])
    assert np.all(labels[mug] == 2)
    assert labels[16, 16] == 1                   # the tiny mask's pixels fall to the table
    empty, es = masks_to_labels(np.zeros((0, h, w), bool), np.zeros(0), min_area=1)
    assert empty.max() == 0 and es.shape == (0,)
    with pytest.raises(ValueError):
        masks_to_labels(masks, scores[:2], min_area=1)


def test_masks_to_labels_fills_holes_of_a_ring():
    ring = box(12, 12, 1, 11, 1, 11) & ~box(12, 12, 4, 8, 4, 8)
    labels, _ = masks_to_labels(ring[None], [0.5], min_area=1, fill=True)
    assert labels[5, 5] == 1
    labels, _ = masks_to_labels(ring[None], [0.5], min_area=1, fill=False)
    assert labels[5, 5] == 0


def test_postprocess_labels_is_the_benchmark_one():
    from panoptic_mapping.bench import frontends as bench

    assert bench.postprocess_labels is postprocess_labels


# ---------------------------------------------------------------- classical segmenter

def two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Same-coloured squares at 1 m and 2 m before a grey wall at 3 m (48 x 64)."""
    rgb = np.full((48, 64, 3), 90, np.uint8)
    depth = np.full((48, 64), 3.0, np.float32)
    rgb[10:30, 8:48] = (200, 40, 40)
    depth[10:30, 8:28] = 1.0
    depth[10:30, 28:48] = 2.0
    return rgb, depth


def test_classical_segmenter_interface_and_depth_split():
    rgb, depth = two_squares()
    seg = make_segmenter(SegmenterConfig(min_area=20))
    assert isinstance(seg, ClassicalSegmenter) and seg.device.type == "cpu"
    out = seg(rgb, depth)
    assert isinstance(out, Segmentation)
    assert out.labels.dtype == np.int32 and out.labels.shape == (48, 64)
    assert out.scores.dtype == np.float32 and out.scores.shape == (out.num_masks,)
    ids = np.unique(out.labels[out.labels > 0])
    assert np.array_equal(ids, np.arange(1, out.num_masks + 1))
    left, right = out.labels[15, 15], out.labels[15, 40]
    assert left != right and left > 0 and right > 0
    no_depth = seg.segment(rgb)
    assert no_depth.labels[15, 15] == no_depth.labels[15, 40]
    with pytest.raises(ValueError):
        seg.segment(rgb.astype(np.float32))


def test_classical_config_fields_reach_the_segmenter():
    cfg = SegmenterConfig(min_area=7)
    cfg.classical.method, cfg.classical.n_segments, cfg.classical.use_depth = "slic", 12, False
    cfg.classical.max_side_px = 100
    seg = make_segmenter(cfg)
    assert (seg.method, seg.n_segments, seg.min_area, seg.use_depth, seg.max_side_px) == \
        ("slic", 12, 7, False, 100)


def test_a_large_image_is_segmented_small_and_its_masks_scaled_back():
    """Two squares side by side at four times the size: segmented at a quarter (the
    limit is 64 pixels), the masks come back at full size and split where the depth
    jumps, pixels without depth unlabelled; the same image within the limit is segmented
    as it is."""
    from panoptic_mapping.frontends.segmenters import (
        average_blocks,
        downscale_factor,
        sample_blocks,
    )

    rgb, depth = two_squares()  # 64x48
    big_rgb = np.repeat(np.repeat(rgb, 4, 0), 4, 1)  # 256x192
    big_depth = np.repeat(np.repeat(depth, 4, 0), 4, 1)
    big_depth[:8, :8] = 0.0
    seg = ClassicalSegmenter(min_area=20, max_side_px=64)
    out = seg(big_rgb, big_depth)
    assert out.labels.shape == (192, 256)
    left, right = out.labels[60, 60], out.labels[60, 160]
    assert left != right and left > 0 and right > 0
    assert (out.labels[:8, :8] == 0).all()
    small = ClassicalSegmenter(min_area=20, max_side_px=64)(rgb, depth)
    # the quarter-size segmentation is the one of the small image, block for block
    np.testing.assert_array_equal(out.labels[2::4, 2::4][2:, 2:] > 0, small.labels[2:, 2:] > 0)
    assert out.num_masks == small.num_masks
    assert downscale_factor((480, 640), 320) == 2 and downscale_factor((480, 641), 320) == 3
    assert downscale_factor((480, 640), 0) == 1
    np.testing.assert_array_equal(average_blocks(big_rgb, 4), rgb)
    np.testing.assert_array_equal(sample_blocks(big_depth, 4)[2:, 2:], depth[2:, 2:])
    assert average_blocks(np.zeros((5, 7, 3), np.uint8), 4).shape == (2, 2, 3)


def test_segmenter_kind_auto():
    assert segmenter_kind(SegmenterConfig()) == "classical"
    assert segmenter_kind(SegmenterConfig(checkpoint="/w/FastSAM-s.pt")) == "fastsam"
    assert segmenter_kind(SegmenterConfig(checkpoint="/w/sam_vit_b_01ec64.pth")) == "sam"
    assert segmenter_kind(SegmenterConfig(kind="sam", checkpoint="/w/x.pt")) == "sam"
    with pytest.raises(ValueError, match="segmenter.kind"):
        segmenter_kind(SegmenterConfig(checkpoint="/w/model.onnx"))


def test_model_segmenter_without_checkpoint_names_the_model_and_source():
    with pytest.raises(MissingWeightsError) as err:
        make_segmenter(SegmenterConfig(kind="fastsam"))
    msg = str(err.value)
    assert "FastSAM" in msg and "FastSAM-s.pt" in msg and "frontend.segmenter.checkpoint" in msg
    assert "CASIA-IVA-Lab/FastSAM" in msg


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")
    else:
        with pytest.raises(RuntimeError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="'tpu' is not one of"):
        resolve_device("tpu")


def test_a_device_no_torch_knows_is_refused_when_the_configuration_is_read():
    from panoptic_mapping.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match="device 'tpu' is not one of"):
        config_from_dict({"mapping": {"device": "tpu"}})
    assert config_from_dict({"mapping": {"device": "cuda:3"}}).mapping.device == "cuda:3"


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("cls", [SegmenterConfig, EmbedderConfig, WorkerConfig])
def test_config_dataclasses_are_documented_params(cls):
    specs = param_specs(cls)
    assert specs and all(s.doc for s in specs)
    assert config_from_dict(None, cls) == cls()


def test_config_validation_names_the_key():
    cfg = config_from_dict({"kind": "sam", "checkpoint": "/w/sam.pth",
                            "sam": {"model_type": "vit_l", "points_per_side": 8}},
                           SegmenterConfig)
    assert cfg.sam.model_type == "vit_l" and cfg.sam.points_per_side == 8
    with pytest.raises(ConfigError, match="sam.model_type"):
        config_from_dict({"sam": {"model_type": "vit_x"}}, SegmenterConfig)
    with pytest.raises(ConfigError, match="fastsam.conf"):
        config_from_dict({"fastsam": {"conf": 1.5}}, SegmenterConfig)
    with pytest.raises(ConfigError, match="queue_size"):
        config_from_dict({"queue_size": 0}, WorkerConfig)
    emb = config_from_dict({"prompt_templates": ["a {}"]}, EmbedderConfig)
    assert emb.prompt_templates == ["a {}"]
    assert EmbedderConfig().prompt_templates is not EmbedderConfig().prompt_templates


# ---------------------------------------------------------------- import boundary

FORBIDDEN = ("rclpy", "rcl_interfaces", "tf2_ros", "message_filters", "cv_bridge")
LAZY = ("ultralytics", "segment_anything", "open_clip")


def test_importing_frontends_loads_no_model_package():
    code = ("import sys, panoptic_mapping.frontends, panoptic_mapping.frontends.worker, "
            "panoptic_mapping.tools.frontend_benchmark\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {LAZY + FORBIDDEN!r})\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_benchmark_script_prints_a_latency_table(capsys):
    from panoptic_mapping.tools import frontend_benchmark as benchmark

    assert benchmark.main(["--repeats", "1", "--postprocess-masks", "20", "--skip",
                           "fastsam-s", "fastsam-x", "sam", "clip"]) == 0
    out = capsys.readouterr().out
    assert "| 320x240 ms/frame | 640x480 ms/frame |" in out
    assert "| classical |" in out and "| shared post-processing |" in out
    assert "RANDOM weights" in out
