"""End to end: frames of a tiny synthetic scene -> SegmentationWorker (the real classical
segmenter, plus open_clip ViT-B-32 with RANDOM weights for the embeddings' plumbing) ->
Mapper.ingest, in order, through the worker's sink; the mapper builds the instances."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import render_boxes

from panoptic_mapping.core.frames import Frame
from panoptic_mapping.core.mapper import Mapper
from panoptic_mapping.frontends.config import EmbedderConfig, SegmenterConfig, WorkerConfig
from panoptic_mapping.frontends.worker import SegmentationWorker, mapper_sink

H, W = 96, 128
K = np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]])
# Fronto-parallel rectangles (x0, x1, y0, y1, z, colour), nearest first, before a wall.
BOXES = [(-0.45, -0.05, -0.20, 0.20, 1.2, (200, 40, 40)),
         (0.10, 0.60, -0.10, 0.40, 1.8, (40, 60, 200))]
WALL = (3.0, (130, 130, 120))


def render(tx: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, depth, box index per pixel: -1 = wall) for a camera at (tx, 0, 0) looking +z."""
    depth, which = render_boxes(K, (H, W), tx, [box[:5] for box in BOXES], WALL[0])
    colours = np.array([box[5] for box in BOXES] + [WALL[1]], np.uint8)  # [-1]: the wall
    return colours[which], depth, which


def frame(i: int) -> tuple[Frame, np.ndarray]:
    tx = -0.1 + 0.04 * i
    rgb, depth, which = render(tx)
    pose = np.eye(4)
    pose[0, 3] = tx
    return Frame(rgb=rgb, K=K, camera_to_world=pose, stamp=0.1 * i, depth=depth), which


@pytest.mark.parametrize("with_embedder", [False, True], ids=["masks", "masks+open_clip"])
def test_worker_output_feeds_the_mapper(tmp_path, with_embedder):
    embedder_cfg = EmbedderConfig()
    if with_embedder:
        pytest.importorskip("open_clip")
        from panoptic_mapping.tools.frontend_benchmark import save_random_open_clip

        path = save_random_open_clip(tmp_path / "vit_b_32.pt", "ViT-B-32")
        embedder_cfg = EmbedderConfig(enabled=True, checkpoint=str(path), device="cpu")
    mapper = Mapper(embedding_dim=512 if with_embedder else None)
    reports = []
    worker = SegmentationWorker.from_config(
        SegmenterConfig(min_area=20), embedder_cfg, WorkerConfig(queue_size=8),
        sink=mapper_sink(mapper, on_report=lambda r, rep: reports.append((r.seq, rep))))
    frames = [frame(i) for i in range(6)]
    with worker:
        for f, _ in frames:
            worker.submit(f)
        assert worker.wait_idle(120.0)
    stats = worker.stats()
    assert stats["processed"] == 6 and stats["dropped"] == 0 and stats["failed"] == 0
    assert [seq for seq, _ in reports] == list(range(6))  # in order
    assert mapper.frames_ingested == 6 and all(rep.integrated for _, rep in reports)

    confirmed = set(mapper.instances.confirmed_ids().tolist())
    assert len(confirmed) >= 3  # wall and two boxes
    last = reports[-1][1].labels
    which = frames[-1][1]
    ids = [np.bincount(last[which == k][last[which == k] > 0]).argmax() for k in (-1, 0, 1)]
    assert len(set(ids)) == 3 and set(ids) <= confirmed
    # The boxes keep their ids from the first frame to the last.
    first = reports[0][1].labels
    for k in (0, 1):
        f_ids = first[frames[0][1] == k]
        assert np.bincount(f_ids[f_ids > 0]).argmax() == ids[k + 1]
    if with_embedder:
        emb = mapper.instances.instance_embeddings()
        assert set(ids) <= set(emb) and all(e.shape == (512,) for e in emb.values())
