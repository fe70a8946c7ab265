"""panoptic_mapping_interfaces/Masks: a segmentation result between two nodes.

The segmentation node packs what its front-end made of one image
(:func:`segmentation_to_msg`); the mapping node unpacks and checks it (:func:`msg_to_masks`)
before the masks meet the map. Decoding only: every check raises :class:`InputError` with
a reason a person can act on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapping.ros.conversions import InputError, _pixels, numpy_to_image
from panoptic_mapping_interfaces.msg import Masks

__all__ = ["ReceivedMasks", "segmentation_to_msg", "msg_to_masks", "LABEL_ENCODINGS"]

LABEL_ENCODINGS = ("16UC1", "32SC1")
_MAX_16 = np.iinfo(np.uint16).max


@dataclass
class ReceivedMasks:
    """A Masks message, unpacked.

    Attributes:
        labels: (H, W) int32, 0 = no mask, ids 1..M; None when M = 0.
        scores: (M,) float32; None when M = 0.
        embeddings: (M, D) float32, or None (no embedder, or M = 0).
        processing_ms: the segmentation node's time from image arrival to publication.
    """

    labels: np.ndarray | None
    scores: np.ndarray | None
    embeddings: np.ndarray | None
    processing_ms: float

    @property
    def count(self) -> int:
        return 0 if self.scores is None else int(len(self.scores))


def segmentation_to_msg(header, shape: tuple[int, int], labels: np.ndarray | None,
                        scores: np.ndarray | None, embeddings: np.ndarray | None,
                        segmenter: str = "", processing_ms: float = 0.0) -> Masks:
    """The Masks message of one segmented image.

    Args:
        header: the image's header (copied: the stamp pairs masks and image).
        shape: (H, W) of the image (the label image of 'no mask' when ``labels`` is None).
        labels: (H, W) int ids 0..M, or None for no masks.
        scores: (M,) float, or None.
        embeddings: (M, D) float, or None.
    """
    count = 0 if labels is None else int(np.max(labels, initial=0))
    if labels is None:
        labels = np.zeros(shape, np.int32)
    encoding = "16UC1" if count <= _MAX_16 else "32SC1"
    msg = Masks(header=header, segmenter=segmenter, processing_ms=float(processing_ms))
    msg.labels = numpy_to_image(labels, encoding, header)
    msg.scores = (np.ones(count, np.float32) if scores is None
                  else np.asarray(scores, np.float32)[:count]).tolist()
    if embeddings is not None and count:
        emb = np.ascontiguousarray(embeddings, np.float32)[:count]
        msg.embedding_dim = int(emb.shape[1])
        msg.embeddings = emb.reshape(-1)
    return msg


def msg_to_masks(msg: Masks, shape: tuple[int, int]) -> ReceivedMasks:
    """Unpack and check a Masks message for an image of ``shape`` (H, W).

    Raises:
        InputError: wrong label encoding or size, labels beyond the mask count, scores or
            embeddings of the wrong length, non-finite values.
    """
    img = msg.labels
    if img.encoding not in LABEL_ENCODINGS:
        raise InputError(f"masks: unsupported label encoding '{img.encoding}' "
                         f"(supported: {', '.join(LABEL_ENCODINGS)})")
    if (int(img.height), int(img.width)) != tuple(shape):
        raise InputError(f"masks: labels are {img.width}x{img.height} but the image is "
                         f"{shape[1]}x{shape[0]}")
    labels = _pixels(img)[..., 0].astype(np.int32)
    scores = np.asarray(msg.scores, np.float32)
    count = len(scores)
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top > count:
        raise InputError(f"masks: labels run up to {top} but {count} scores were sent "
                         "(one per mask)")
    if not np.isfinite(scores).all():
        raise InputError("masks: a score is NaN or infinite")
    dim = int(msg.embedding_dim)
    emb = np.asarray(msg.embeddings, np.float32)
    if len(emb) != count * dim:
        raise InputError(f"masks: {len(emb)} embedding values for {count} masks of "
                         f"embedding_dim {dim} (expected {count * dim})")
    if not np.isfinite(emb).all():
        raise InputError("masks: an embedding value is NaN or infinite")
    processing_ms = float(msg.processing_ms)
    if count == 0 or top == 0:
        return ReceivedMasks(None, None, None, processing_ms)
    return ReceivedMasks(labels, scores, emb.reshape(count, dim) if dim else None,
                         processing_ms)
