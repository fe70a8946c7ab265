"""Open-vocabulary labels: a vocabulary of text prompts embedded by a text tower, and the
rule that turns an embedding into (label, confidence) with "other" when nothing matches."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from panoptic_mapping.params import param

__all__ = ["SemanticConfig", "Vocabulary", "OTHER", "LABEL_SOURCES", "UP_AXES"]

LABEL_SOURCES = ("voxels", "masks")
UP_AXES = ("z", "y", "x", "-z", "-y", "-x")

OTHER = "other"


@dataclass
class SemanticConfig:
    """How embeddings become labels."""

    min_similarity: float = param(0.2, "Cosine similarity below which an embedding is "
                                  "labelled 'other'.", minimum=-1.0, maximum=1.0,
                                  runtime=True)
    temperature: float = param(0.05, "Softmax temperature over cosine similarities; the "
                               "label's confidence is its softmax probability.",
                               minimum=1e-4, runtime=True)
    label_source: str = param("masks", "Where an instance's label comes from: 'voxels' "
                              "(the mask embeddings fused per voxel across views, pooled "
                              "over the instance's voxels; masks alone where the map has "
                              "no voxel features) or 'masks' (the mean of the masks that "
                              "joined the instance, each weighted by its share on it).",
                              choices=LABEL_SOURCES, runtime=True)
    exclude_support_label: bool = param(True, "An instance resting on or in a larger one "
                                        "(the other's voxels right under its own) is not "
                                        "given that one's label: a crop of a small object "
                                        "is mostly its support, and the map knows they are "
                                        "two. The support's text direction is taken out of "
                                        "its embedding and the rest labelled.",
                                        runtime=True)
    support_max_size_ratio: float = param(0.5, "'Larger' for exclude_support_label: the "
                                          "instance's extent across the up axis at most "
                                          "this share of the support's (a segmenter's "
                                          "upper half of a box is as wide as the lower).",
                                          minimum=0.0, maximum=1.0, runtime=True)
    support_min_residual: float = param(0.5, "exclude_support_label relabels an instance "
                                        "only where what is left of its embedding, once "
                                        "the support's direction is out, fits another "
                                        "prompt at least this share as well as the whole "
                                        "embedding fitted the support's (cosines): a mug "
                                        "embedded as its table keeps a clear mug "
                                        "direction, a piece of the floor the segmenter cut "
                                        "out, resting on the floor, keeps only noise and "
                                        "stays 'floor' (a residual that fits no prompt "
                                        "well enough to leave 'other' keeps the label "
                                        "too). 0: always relabel.",
                                        minimum=0.0, maximum=1.0, runtime=True)
    support_gap_m: float = param(0.03, "An instance rests on another when the other's "
                                 "voxels lie at most this far under its own [m].",
                                 minimum=0.0, runtime=True)
    support_min_share: float = param(0.25, "... and under at least this share of its "
                                     "voxels that have another instance right under them "
                                     "(a few stray voxels decide nothing).",
                                     minimum=0.0, maximum=1.0, runtime=True)
    up_axis: str = param("z", "The map frame's up direction (REP-103: z), for "
                         "exclude_support_label.", choices=UP_AXES)
    query_threshold: float = param(0.5, "Default relevance above which a point matches a "
                                   "per-point text query (relevance 0.5: the phrase "
                                   "matches the point as well as the best other phrase of "
                                   "the vocabulary does).", minimum=0.0, maximum=1.0,
                                   runtime=True)


class Vocabulary:
    """Prompts and their unit text embeddings; replaceable at run time (thread-safe).

    Label ids: 0 = none/void, 1..C = prompts in order, C + 1 = "other".
    """

    def __init__(self, cfg: SemanticConfig | None = None) -> None:
        self.cfg = cfg or SemanticConfig()
        self._lock = threading.Lock()
        self._prompts: list[str] = []
        self._text = np.zeros((0, 0), dtype=np.float32)
        self.generation = 0  # bumped by set(): readers cache labels on it

    def set(self, prompts: list[str], text_embeddings: np.ndarray) -> None:
        """Replace the vocabulary. text_embeddings: (C, D), normalised here."""
        emb = np.asarray(text_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(prompts):
            raise ValueError(f"need one embedding per prompt: {len(prompts)} prompts, "
                             f"embeddings {emb.shape}")
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        with self._lock:
            self._prompts, self._text = list(prompts), emb
            self.generation += 1

    @property
    def prompts(self) -> list[str]:
        with self._lock:
            return list(self._prompts)

    def text_embeddings(self) -> np.ndarray:
        """(C, D) unit text embeddings of the prompts (a copy)."""
        with self._lock:
            return self._text.copy()

    @property
    def other_id(self) -> int:
        return len(self._prompts) + 1

    def name(self, label_id: int) -> str:
        with self._lock:
            if 1 <= label_id <= len(self._prompts):
                return self._prompts[label_id - 1]
        return OTHER if label_id else ""

    def classify(self, embeddings: np.ndarray,
                 exclude: Sequence[Sequence[int]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Label ids (N,) and confidences (N,) of embeddings (N, D).

        Confidence is the softmax probability of the best prompt at the configured
        temperature; an embedding whose best cosine is below ``min_similarity`` is
        "other" with confidence 1 - best cosine (clipped to [0, 1]).

        Args:
            exclude: per embedding, the label ids it may not take: the best of the other
                prompts is taken, its probability among them (all excluded: none is).
        """
        with self._lock:
            text, n = self._text, len(self._prompts)
        emb = np.asarray(embeddings, dtype=np.float32)
        if n == 0 or emb.size == 0:
            return np.full(len(emb), n + 1, dtype=np.int32), np.zeros(len(emb), np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        sim = emb @ text.T
        for row, ex in enumerate(exclude or ()):
            cols = [int(e) - 1 for e in ex if 1 <= int(e) <= n]
            if len(cols) < n:  # one prompt at least stays
                sim[row, cols] = -np.inf
        best = sim.argmax(1)
        top = sim[np.arange(len(emb)), best]
        z = (sim - top[:, None]) / self.cfg.temperature
        prob = 1.0 / np.exp(z).sum(1)  # exp(-inf) = 0: excluded prompts take no share
        other = top < self.cfg.min_similarity
        labels = np.where(other, n + 1, best + 1).astype(np.int32)
        conf = np.where(other, np.clip(1.0 - top, 0.0, 1.0), prob).astype(np.float32)
        return labels, conf

    def relevance(self, features: np.ndarray, text_embedding: np.ndarray,
                  negatives: np.ndarray | None = None) -> np.ndarray:
        """Relevance (N,) in [0, 1] of features (N, D) to a phrase (LERF's score).

        For each negative phrase j: the two-way softmax probability of the phrase over j at
        the configured temperature; the relevance is the least of them. 0.5 means the
        phrase fits a feature as well as the best negative does. Negatives are the
        vocabulary's prompts not (nearly) equal to the phrase, plus ``negatives`` (K, D)
        (canonical phrases such as "object" or "stuff"). Without any negative the
        relevance is the cosine mapped to [0, 1]. Zero features get relevance 0.
        """
        f = np.asarray(features, dtype=np.float32)
        norm = np.linalg.norm(f, axis=-1)
        f = f / np.maximum(norm, 1e-12)[:, None]
        directions = self.query_directions(text_embedding, negatives)
        rel = self.relevance_from_cosines(f @ directions.T)
        return np.where(norm > 0, rel, 0.0).astype(np.float32)

    def query_directions(self, text_embedding: np.ndarray,
                         negatives: np.ndarray | None = None) -> np.ndarray:
        """(1 + J, D) unit rows: the phrase, then its J negatives (see :meth:`relevance`)."""
        t = np.asarray(text_embedding, dtype=np.float32).reshape(-1)
        t = t / max(float(np.linalg.norm(t)), 1e-12)
        neg = self.text_embeddings()
        if neg.size:
            neg = neg[neg @ t < 0.999]  # the phrase itself is not its own negative
        if negatives is not None and np.size(negatives):
            extra = np.asarray(negatives, dtype=np.float32).reshape(-1, t.size)
            extra = extra / np.maximum(np.linalg.norm(extra, axis=1, keepdims=True), 1e-12)
            neg = extra if neg.size == 0 else np.concatenate([neg, extra])
        return np.concatenate([t[None], neg.reshape(-1, t.size)]).astype(np.float32)

    def relevance_from_cosines(self, cosines: np.ndarray) -> np.ndarray:
        """Relevance (N,) from the cosines (N, 1 + J) of unit features with
        :meth:`query_directions`. A zero feature (a row of zeros) gets 0.5 here: the
        caller knows which features are zero and gives them 0."""
        s_q = cosines[:, 0]
        if cosines.shape[1] == 1:
            return ((s_q + 1.0) / 2.0).astype(np.float32)
        # min over j of 1 / (1 + exp((s_j - s_q) / T)) is reached at the largest s_j
        s_n = cosines[:, 1:].max(1)
        z = np.clip((s_n - s_q) / self.cfg.temperature, -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(z))).astype(np.float32)

    def similarity(self, embeddings: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """Cosine similarity (N,) of embeddings (N, D) with one text embedding (D,)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        t = np.asarray(text_embedding, dtype=np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return emb @ (t / max(np.linalg.norm(t), 1e-12))
