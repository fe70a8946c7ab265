"""FastSAM through ultralytics, on a RANDOM-weight network of the real architecture.

The checkpoint is ultralytics' yolov8n-seg (the smallest; FastSAM-s is yolov8s-seg) with
one class, saved the way ultralytics saves FastSAM-s.pt and loaded through
``ultralytics.FastSAM(path)``. The masks of a random network mean nothing: the tests check
shapes, dtypes, the post-processing contract and that nothing touches the network.
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="ultralytics (optional extra 'fastsam') missing")

from panoptic_mapping.core.frames import Frame, validate_frame  # noqa: E402
from panoptic_mapping.tools.frontend_benchmark import save_random_fastsam  # noqa: E402
from panoptic_mapping.frontends.config import SegmenterConfig, WorkerConfig  # noqa: E402
from panoptic_mapping.frontends.factory import make_segmenter
from panoptic_mapping.frontends.segmenters import (
    # noqa: E402
    FastSAMSegmenter,
    MissingWeightsError,
)
from panoptic_mapping.frontends.worker import SegmentationWorker  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_random_fastsam(tmp_path_factory.mktemp("fastsam") / "FastSAM-test.pt",
                               "yolov8n-seg.yaml")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def config(path, **fastsam) -> SegmenterConfig:
    cfg = SegmenterConfig(checkpoint=str(path), device="cpu", min_area=4)
    # conf 0 and 300 boxes: a random network has some non-empty masks among them.
    cfg.fastsam.imgsz, cfg.fastsam.conf, cfg.fastsam.max_det = 320, 0.0, 300
    for k, v in fastsam.items():
        setattr(cfg.fastsam, k, v)
    return cfg


def image(h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 255, (h // 40 + 1, w // 40 + 1, 3)), np.ones((40, 40, 1)))
    return rgb[:h, :w].astype(np.uint8)


def assert_segmentation(seg, h, w):
    assert seg.labels.shape == (h, w) and seg.labels.dtype == np.int32
    ids = np.unique(seg.labels[seg.labels > 0])
    assert np.array_equal(ids, np.arange(1, seg.num_masks + 1))
    assert seg.scores.shape == (seg.num_masks,) and seg.scores.dtype == np.float32
    assert np.all((seg.scores >= 0) & (seg.scores <= 1))
    if seg.num_masks:
        assert np.bincount(seg.labels.ravel())[1:].min() >= 4


def test_loads_through_ultralytics_offline(checkpoint, no_network):
    seg = make_segmenter(config(checkpoint))  # kind auto: a .pt file is FastSAM
    assert isinstance(seg, FastSAMSegmenter)
    assert os.environ["YOLO_AUTOINSTALL"] == "False" and os.environ["YOLO_OFFLINE"] == "True"
    import ultralytics.utils

    assert ultralytics.utils.AUTOINSTALL is False and ultralytics.utils.ONLINE is False
    assert seg.model.task == "segment"
    assert type(seg.model).__name__ == "FastSAM"


@pytest.mark.parametrize("retina", [True, False])
def test_segment_shapes_and_postprocessing(checkpoint, no_network, retina):
    seg = FastSAMSegmenter(config(checkpoint, retina_masks=retina))
    rgb = image()
    masks, scores = seg.raw_masks(rgb)
    assert masks.dtype.is_floating_point is False and masks.shape[1:] == (240, 320)
    assert scores.shape == (masks.shape[0],) and masks.shape[0] <= 300
    out = seg.segment(rgb)
    assert_segmentation(out, 240, 320)
    assert out.num_masks <= masks.shape[0]


def test_never_uses_prompts(checkpoint, no_network, monkeypatch):
    seg = FastSAMSegmenter(config(checkpoint))
    seen = []
    original = seg.model.predict

    def spy(source, **kwargs):
        seen.append(kwargs)
        return original(source, **kwargs)

    monkeypatch.setattr(seg.model, "predict", spy)
    seg.segment(image(120, 160))
    assert seen and not ({"texts", "bboxes", "points", "labels"} & set(seen[0]))
    assert seen[0]["imgsz"] == 320 and seen[0]["retina_masks"] is True


def test_runs_through_the_worker(checkpoint, no_network):
    worker = SegmentationWorker(FastSAMSegmenter(config(checkpoint)),
                                cfg=WorkerConfig(queue_size=4))
    K = np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]])
    with worker:
        for i in range(2):
            worker.submit(Frame(rgb=image(), K=K, camera_to_world=np.eye(4),
                                stamp=float(i)))
        results = [worker.get(timeout=30) for _ in range(2)]
    assert [r.seq for r in results] == [0, 1]
    for r in results:
        assert r.ok, r.error
        # conf 0 keeps the random network's boxes, so the whole path runs.
        assert r.frame.masks is not None
        validate_frame(r.frame)
        assert r.frame.mask_scores.shape == (r.frame.num_masks,)
    assert worker.stats()["latency"]["segment"]["count"] == 2


def test_missing_checkpoint_message(tmp_path):
    path = tmp_path / "weights" / "FastSAM-s.pt"
    with pytest.raises(MissingWeightsError) as err:
        make_segmenter(SegmenterConfig(kind="fastsam", checkpoint=str(path)))
    msg = str(err.value)
    assert str(path) in msg and "does not exist" in msg
    assert "FastSAM" in msg and "FastSAM-s.pt" in msg and "FastSAM-x.pt" in msg
    assert "github.com/CASIA-IVA-Lab/FastSAM" in msg and "ultralytics/assets" in msg
    assert err.value.path == str(path) and err.value.model == "FastSAM"


def test_unreadable_checkpoint_message(tmp_path):
    bad = tmp_path / "FastSAM-x.pt"
    bad.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(MissingWeightsError, match="could not be read") as err:
        make_segmenter(SegmenterConfig(kind="fastsam", checkpoint=str(bad)))
    assert str(bad) in str(err.value) and "FastSAM" in str(err.value)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(MissingWeightsError, match="is empty"):
        make_segmenter(SegmenterConfig(kind="fastsam", checkpoint=str(empty)))
