"""Open-vocabulary labels: a vocabulary of text prompts embedded by a text tower, and the
rule that turns an embedding into (label, confidence) with "other" when nothing matches."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from panoptic_mapping.params import param

__all__ = ["SemanticConfig", "Vocabulary", "OTHER"]

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


class Vocabulary:
    """Prompts and their unit text embeddings; replaceable at run time (thread-safe).

    Label ids: 0 = none/void, 1..C = prompts in order, C + 1 = "other".
    """

    def __init__(self, cfg: SemanticConfig | None = None) -> None:
        self.cfg = cfg or SemanticConfig()
        self._lock = threading.Lock()
        self._prompts: list[str] = []
        self._text = np.zeros((0, 0), dtype=np.float32)

    def set(self, prompts: list[str], text_embeddings: np.ndarray) -> None:
        """Replace the vocabulary. text_embeddings: (C, D), normalised here."""
        emb = np.asarray(text_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(prompts):
            raise ValueError(f"need one embedding per prompt: {len(prompts)} prompts, "
                             f"embeddings {emb.shape}")
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        with self._lock:
            self._prompts, self._text = list(prompts), emb

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

    def classify(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label ids (N,) and confidences (N,) of embeddings (N, D).

        Confidence is the softmax probability of the best prompt at the configured
        temperature; an embedding whose best cosine is below ``min_similarity`` is
        "other" with confidence 1 - best cosine (clipped to [0, 1]).
        """
        with self._lock:
            text, n = self._text, len(self._prompts)
        emb = np.asarray(embeddings, dtype=np.float32)
        if n == 0 or emb.size == 0:
            return np.full(len(emb), n + 1, dtype=np.int32), np.zeros(len(emb), np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        sim = emb @ text.T
        best = sim.argmax(1)
        top = sim[np.arange(len(emb)), best]
        z = (sim - top[:, None]) / self.cfg.temperature
        prob = 1.0 / np.exp(z).sum(1)
        other = top < self.cfg.min_similarity
        labels = np.where(other, n + 1, best + 1).astype(np.int32)
        conf = np.where(other, np.clip(1.0 - top, 0.0, 1.0), prob).astype(np.float32)
        return labels, conf

    def similarity(self, embeddings: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """Cosine similarity (N,) of embeddings (N, D) with one text embedding (D,)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        t = np.asarray(text_embedding, dtype=np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return emb @ (t / max(np.linalg.norm(t), 1e-12))
