"""SAM through segment-anything, on RANDOM-weight networks of the real architecture.

* The loader path: a random ``vit_b`` from segment-anything's registry is saved as a
  state dict (the format of sam_vit_b_01ec64.pth) and loaded by :class:`SAMSegmenter`.
* The inference path: SAM vit_b's classes and widths at a 256 px input
  (:func:`build_small_sam`), because the registry's 1024 px encoder takes tens of seconds
  per image on a small CPU; the automatic mask generator and the post-processing are the
  real ones. Random masks mean nothing: the tests check shapes, dtypes and the contract.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything", reason="segment-anything (optional extra 'sam') missing")

from panoptic_mapping.core.frames import Frame, validate_frame  # noqa: E402
from panoptic_mapping.tools.frontend_benchmark import build_small_sam, save_random_sam  # noqa: E402
from panoptic_mapping.frontends.config import SegmenterConfig, WorkerConfig  # noqa: E402
from panoptic_mapping.frontends.factory import make_segmenter
from panoptic_mapping.frontends.segmenters import (
    # noqa: E402
    MissingWeightsError,
    SAMSegmenter,
)
from panoptic_mapping.frontends.worker import SegmentationWorker  # noqa: E402


def config(path="", model_type="vit_b", points=4) -> SegmenterConfig:
    cfg = SegmenterConfig(kind="sam", checkpoint=str(path), device="cpu", min_area=4)
    cfg.sam.model_type, cfg.sam.points_per_side = model_type, points
    # Random weights predict low IoUs; keep every mask so the whole path runs.
    cfg.sam.pred_iou_thresh = cfg.sam.stability_score_thresh = 0.0
    return cfg


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    return save_random_sam(tmp_path_factory.mktemp("sam") / "sam_vit_b_test.pth", "vit_b")


@pytest.fixture(scope="module")
def small_sam_segmenter():
    return SAMSegmenter(config(), model=build_small_sam(128))


def image(h=48, w=64) -> np.ndarray:
    rgb = np.full((h, w, 3), 60, np.uint8)
    rgb[8:30, 10:40] = (220, 40, 40)
    rgb[30:, 40:] = (30, 200, 60)
    return rgb


def test_registry_checkpoint_loads(vit_b_file):
    seg = make_segmenter(config(vit_b_file))  # the real loader: sam_model_registry
    assert isinstance(seg, SAMSegmenter)
    assert type(seg.model).__name__ == "Sam" and seg.model.image_encoder.img_size == 1024
    assert seg.generator.point_grids[0].shape == (16, 2)  # points_per_side 4
    reference = torch.load(vit_b_file, weights_only=True)
    key = "image_encoder.patch_embed.proj.weight"
    assert torch.equal(seg.model.state_dict()[key], reference[key])


def test_checkpoint_of_another_model_type_is_refused(vit_b_file):
    with pytest.raises(MissingWeightsError, match="could not be loaded as SAM vit_l") as err:
        make_segmenter(config(vit_b_file, model_type="vit_l"))
    assert "sam.model_type" in str(err.value) and "sam_vit_l_0b3195.pth" in str(err.value)


@pytest.mark.parametrize("model_type, filename", [("vit_b", "sam_vit_b_01ec64.pth"),
                                                  ("vit_l", "sam_vit_l_0b3195.pth"),
                                                  ("vit_h", "sam_vit_h_4b8939.pth")])
def test_missing_checkpoint_message(tmp_path, model_type, filename):
    path = tmp_path / filename
    with pytest.raises(MissingWeightsError) as err:
        make_segmenter(config(path, model_type=model_type))
    msg = str(err.value)
    assert str(path) in msg and f"SAM {model_type}" in msg
    assert f"https://dl.fbaipublicfiles.com/segment_anything/{filename}" in msg
    assert "frontend.segmenter.checkpoint" in msg


def test_automatic_mask_generator_shapes(small_sam_segmenter):
    rgb = image()
    masks, scores = small_sam_segmenter.raw_masks(rgb)
    assert masks.dtype == bool and masks.shape[1:] == (48, 64) and len(masks) > 0
    assert scores.dtype == np.float32 and scores.shape == (len(masks),)
    out = small_sam_segmenter.segment(rgb)
    assert out.labels.shape == (48, 64) and out.labels.dtype == np.int32
    ids = np.unique(out.labels[out.labels > 0])
    assert np.array_equal(ids, np.arange(1, out.num_masks + 1))
    assert out.scores.shape == (out.num_masks,) and np.all((out.scores >= 0) & (out.scores <= 1))


def test_runs_through_the_worker(small_sam_segmenter):
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    worker = SegmentationWorker(small_sam_segmenter, cfg=WorkerConfig(queue_size=2))
    with worker:
        for i in range(2):
            worker.submit(Frame(rgb=image(), K=K, camera_to_world=np.eye(4), stamp=float(i)))
        results = [worker.get(timeout=60) for _ in range(2)]
    for i, r in enumerate(results):
        assert r.seq == i and r.ok, r.error
        if r.frame.masks is not None:
            validate_frame(r.frame)
    assert worker.stats()["processed"] == 2
