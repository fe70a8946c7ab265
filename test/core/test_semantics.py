"""Vocabulary labels: worked examples for the best label, its confidence and 'other'."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.semantics import OTHER, SemanticConfig, Vocabulary


def vocab() -> Vocabulary:
    v = Vocabulary(SemanticConfig(min_similarity=0.5, temperature=0.1))
    v.set(["mug", "duck"], np.eye(3)[:2] * 2.0)  # normalised on the way in
    return v


def test_classify_worked_example():
    v = vocab()
    labels, conf = v.classify(np.array([[1.0, 0, 0], [0.1, 1.0, 0], [0, 0, 1.0]]))
    assert labels.tolist() == [1, 2, 3]  # 3 = other (orthogonal to both prompts)
    # e=(1,0,0): similarities (1, 0): softmax at T=0.1 -> 1 / (1 + e^-10)
    assert conf[0] == pytest.approx(1 / (1 + np.exp(-10)), rel=1e-5)
    assert conf[2] == pytest.approx(1.0)  # other, 1 - best cosine 0
    assert [v.name(i) for i in labels] == ["mug", "duck", OTHER]


def test_vocabulary_can_change_and_validates():
    v = vocab()
    v.set(["drawer handle"], np.array([[0.0, 0, 1]]))
    assert v.prompts == ["drawer handle"] and v.other_id == 2
    assert v.classify(np.array([[0, 0, 1.0]]))[0].tolist() == [1]
    with pytest.raises(ValueError, match="one embedding per prompt"):
        v.set(["a", "b"], np.ones((1, 3)))


def test_similarity_and_empty_vocabulary():
    v = Vocabulary()
    labels, conf = v.classify(np.ones((2, 3)))
    assert labels.tolist() == [1, 1] and conf.tolist() == [0, 0]  # everything is "other"
    np.testing.assert_allclose(v.similarity(np.array([[1.0, 1.0]]), np.array([2.0, 0])),
                               [np.sqrt(0.5)])
