"""panoptic_mapping_interfaces/Masks: what a segmentation node sends is what the mapping
node unpacks, and every malformed message is refused with its reason."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

from std_msgs.msg import Header  # noqa: E402

from panoptic_mapping.ros.conversions import InputError, numpy_to_image  # noqa: E402
from panoptic_mapping.ros.masks import msg_to_masks, segmentation_to_msg  # noqa: E402


def _masks(shape=(6, 8), count=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, count + 1, size=shape).astype(np.int32)
    labels.flat[:count] = np.arange(1, count + 1)  # every id present
    scores = rng.random(count).astype(np.float32)
    emb = rng.normal(size=(count, dim)).astype(np.float32)
    return labels, scores, emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_round_trip_keeps_labels_scores_embeddings_and_header():
    labels, scores, emb = _masks()
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = segmentation_to_msg(header, labels.shape, labels, scores, emb, "classical", 41.5)
    assert msg.labels.encoding == "16UC1" and msg.embedding_dim == 4
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    got = msg_to_masks(msg, labels.shape)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.labels.dtype == np.int32
    np.testing.assert_allclose(got.scores, scores)
    np.testing.assert_allclose(got.embeddings, emb)
    assert got.count == 3 and got.processing_ms == pytest.approx(41.5)


def test_no_masks_and_no_embedder():
    msg = segmentation_to_msg(Header(), (6, 8), None, None, None)
    got = msg_to_masks(msg, (6, 8))
    assert got.labels is None and got.scores is None and got.embeddings is None
    labels, scores, _ = _masks()
    got = msg_to_masks(segmentation_to_msg(Header(), labels.shape, labels, scores, None),
                       labels.shape)
    assert got.embeddings is None and got.count == 3
    # 32SC1 labels (more masks than 16 bits hold) are read too
    msg = segmentation_to_msg(Header(), labels.shape, labels, scores, None)
    msg.labels = numpy_to_image(labels, "32SC1")
    np.testing.assert_array_equal(msg_to_masks(msg, labels.shape).labels, labels)


@pytest.mark.parametrize("edit, reason", [
    (lambda m: setattr(m.labels, "encoding", "rgb8"), "unsupported label encoding 'rgb8'"),
    (lambda m: setattr(m, "scores", [0.5]), "labels run up to 3 but 1 scores"),
    (lambda m: setattr(m, "embedding_dim", 5), "12 embedding values for 3 masks of "
                                               "embedding_dim 5"),
    (lambda m: setattr(m, "scores", [0.5, float("nan"), 0.1]), "score is NaN"),
    (lambda m: m.embeddings.__setitem__(0, float("inf")), "embedding value is NaN"),
])
def test_malformed_messages_are_refused_with_the_reason(edit, reason):
    labels, scores, emb = _masks()
    msg = segmentation_to_msg(Header(), labels.shape, labels, scores, emb)
    edit(msg)
    with pytest.raises(InputError, match=reason):
        msg_to_masks(msg, labels.shape)


def test_labels_of_another_size_are_refused():
    labels, scores, emb = _masks()
    msg = segmentation_to_msg(Header(), labels.shape, labels, scores, emb)
    with pytest.raises(InputError, match="labels are 8x6 but the image is 10x6"):
        msg_to_masks(msg, (6, 10))
