"""open_clip embeddings on RANDOM-weight networks of the real architectures.

ViT-B-32 and MobileCLIP-S1 are built with ``pretrained=None``, their state dicts saved to a
file and loaded back through open_clip's real loader (``pretrained=<file>``). Random
embeddings mean nothing: the tests check shapes, dtypes, normalisation, batching, the crop
geometry, the text cache and the error messages.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip", reason="open_clip (optional extra 'clip') missing")

from panoptic_mapping.core.frames import Frame, validate_frame  # noqa: E402
from panoptic_mapping.tools.frontend_benchmark import save_random_open_clip  # noqa: E402
from panoptic_mapping.frontends.config import EmbedderConfig, WorkerConfig  # noqa: E402
from panoptic_mapping.frontends.embeddings import OpenClipEmbedder  # noqa: E402
from panoptic_mapping.frontends.segmenters import (  # noqa: E402
    ClassicalSegmenter,
    MissingWeightsError,
)
from panoptic_mapping.frontends.worker import SegmentationWorker  # noqa: E402


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    return save_random_open_clip(tmp_path_factory.mktemp("clip") / "vit_b_32.pt", "ViT-B-32")


@pytest.fixture(scope="module")
def embedder(vit_file):
    return OpenClipEmbedder(EmbedderConfig(enabled=True, checkpoint=str(vit_file),
                                           device="cpu", batch_size=3))


def scene() -> tuple[np.ndarray, np.ndarray]:
    """(60, 80) image with 5 masks (one touching the border) and an unlabelled strip."""
    rgb = np.zeros((60, 80, 3), np.uint8)
    labels = np.zeros((60, 80), np.int32)
    boxes = [(0, 20, 0, 30), (5, 25, 35, 75), (30, 55, 5, 25), (30, 40, 30, 70), (45, 58, 40, 78)]
    for i, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = i
        rgb[r0:r1, c0:c1] = (40 * i, 255 - 40 * i, 100)
    return rgb, labels


def test_loaded_through_the_real_loader(embedder, vit_file):
    assert embedder.dim == 512 and embedder.image_size == (224, 224)
    reference = torch.load(vit_file, weights_only=True)
    key = "visual.conv1.weight"
    assert torch.equal(embedder.model.state_dict()[key], reference[key])
    assert not embedder.model.training


def test_mask_embeddings_shape_norm_and_batching(embedder):
    rgb, labels = scene()
    emb = embedder.embed_masks(rgb, labels)  # batch_size 3: two batches
    assert emb.shape == (5, 512) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    embedder.cfg.batch_size = 32
    try:
        one_batch = embedder.embed_masks(rgb, labels)
    finally:
        embedder.cfg.batch_size = 3
    assert np.allclose(emb, one_batch, atol=1e-4)
    assert embedder.embed_masks(rgb, np.zeros_like(labels)).shape == (0, 512)


def test_crops_are_square_with_context_and_faded_background(embedder):
    rgb, labels = scene()
    cfg = embedder.cfg
    old = (cfg.context_margin, cfg.background_blend)
    try:
        cfg.context_margin, cfg.background_blend = 0.0, 1.0
        tight = embedder.mask_crops(rgb, labels, [4])  # a 10 x 40 box
        cfg.context_margin = 0.5
        wide = embedder.mask_crops(rgb, labels, [4])
        cfg.background_blend = 0.0
        context = embedder.mask_crops(rgb, labels, [4])
    finally:
        cfg.context_margin, cfg.background_blend = old
    assert tight.shape == (1, 3, 224, 224) and tight.dtype == torch.float32
    # Normalised mean colour is 0: with blend 1 everything but the mask is 0.
    def mask_share(crop):  # resampling blurs the edge a little: count clear pixels only
        return float((crop[0].abs().sum(0) > 0.5).float().mean())
    assert 0.2 < mask_share(tight) < 0.3      # 10x40 in a 40x40 square
    assert 0.05 < mask_share(wide) < 0.15     # the same mask in an 80x80 square
    assert mask_share(context) > mask_share(wide)  # neighbours visible as context


def test_text_embeddings_templates_and_cache(embedder):
    embedder.clear_text_cache()
    hits, misses = embedder.text_cache_hits, embedder.text_cache_misses
    t = embedder.embed_text(["mug", "drawer handle", "mug"])
    assert t.shape == (3, 512) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(t[0], t[2])
    assert embedder.text_cache_misses - misses == 2 and embedder.text_cache_hits - hits == 1
    again = embedder.embed_text(["mug"])
    assert np.array_equal(again[0], t[0]) and embedder.text_cache_hits - hits == 2
    # Templates are configurable; no template encodes the text itself.
    raw = embedder.embed_text(["mug"], templates=[])
    assert np.allclose(raw, embedder.embed_text(["mug"], templates=["{}"]), atol=1e-5)
    assert not np.allclose(raw, t[:1], atol=1e-3)
    assert embedder.embed_text([]).shape == (0, 512)


def test_text_cache_is_bounded(embedder):
    embedder.clear_text_cache()
    embedder.cfg.text_cache_size = 2
    try:
        misses = embedder.text_cache_misses
        embedder.embed_text(["a", "b", "c"], templates=["a {}"])
        assert len(embedder._text_cache) == 2
        embedder.embed_text(["a"], templates=["a {}"])
        assert embedder.text_cache_misses - misses == 4  # "a" was evicted
    finally:
        embedder.cfg.text_cache_size = 1024


def test_embedder_runs_through_the_worker(embedder):
    rgb, _ = scene()
    depth = np.full((60, 80), 1.5, np.float32)
    K = np.array([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]])
    worker = SegmentationWorker(ClassicalSegmenter(min_area=20), embedder,
                                WorkerConfig(queue_size=2))
    with worker:
        worker.submit(Frame(rgb=rgb, K=K, camera_to_world=np.eye(4), stamp=1.0, depth=depth))
        result = worker.get(timeout=60)
    assert result.ok, result.error
    f = validate_frame(result.frame)
    assert f.mask_embeddings.shape == (f.num_masks, 512)
    assert np.allclose(np.linalg.norm(f.mask_embeddings, axis=1), 1.0, atol=1e-5)
    assert "embed" in result.timings


def test_mobileclip_loads_with_its_tag_preprocessing(tmp_path):
    import open_clip

    torch.manual_seed(0)
    original = open_clip.create_model("MobileCLIP-S1", pretrained=None).eval()
    path = tmp_path / "mobileclip_s1.pt"
    torch.save(original.state_dict(), path)
    emb = OpenClipEmbedder(EmbedderConfig(enabled=True, model_name="MobileCLIP-S1",
                                          checkpoint=str(path), pretrained_tag="datacompdr",
                                          device="cpu"))
    assert emb.dim == 512 and emb.image_size == (256, 256)
    assert torch.all(emb.mean == 0) and torch.all(emb.std == 1)  # MobileCLIP's normalisation
    rgb, labels = scene()
    crops = emb.mask_crops(rgb, labels, [2])  # one crop: the trained form is slow on a CPU
    # The image tower was re-parameterised for inference: same embeddings as trained.
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(original.encode_image(crops), dim=-1)
    assert torch.allclose(emb.encode_images(crops), expected, atol=1e-4)
    assert emb.embed_masks(rgb, labels).shape == (5, 512)
    assert emb.embed_text(["mug"]).shape == (1, 512)


def test_missing_checkpoint_message(tmp_path):
    path = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(MissingWeightsError) as err:
        OpenClipEmbedder(EmbedderConfig(enabled=True, checkpoint=str(path)))
    msg = str(err.value)
    assert str(path) in msg and "open_clip ViT-B-32" in msg and "frontend.embedder.checkpoint" in msg
    assert "huggingface.co/timm/vit_base_patch32_clip_224.openai" in msg
    assert "open_clip.list_pretrained()" in msg
    with pytest.raises(MissingWeightsError, match="is required"):
        OpenClipEmbedder(EmbedderConfig(enabled=True))


def test_wrong_architecture_and_unknown_names(vit_file):
    with pytest.raises(MissingWeightsError, match="could not be loaded as open_clip ViT-B-16"):
        OpenClipEmbedder(EmbedderConfig(enabled=True, model_name="ViT-B-16",
                                        checkpoint=str(vit_file), device="cpu"))
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        OpenClipEmbedder(EmbedderConfig(enabled=True, model_name="ViT-Q-99",
                                        checkpoint=str(vit_file)))
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'"):
        OpenClipEmbedder(EmbedderConfig(enabled=True, checkpoint=str(vit_file),
                                        pretrained_tag="nope"))
