"""evals.embeddings: the real all-MiniLM-L6-v2 int8 ONNX model, nothing faked."""

from __future__ import annotations

import numpy as np
import pytest

from evals.embeddings import DIM, embed, similarity
from evals.errors import BadInput


def test_shape_dtype_and_unit_norm() -> None:
    vecs = embed(["How do I reset my password?", "Paris is the capital of France.", ""])
    assert vecs.shape == (3, DIM) == (3, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embed([]).shape == (0, 384)


def test_similar_sentences_are_closer_than_unrelated() -> None:
    sims = similarity(["How do I reset my password?"],
                      ["I forgot my password, how can I change it?", "A recipe for banana bread with walnuts."])
    assert sims.shape == (1, 2)
    assert sims[0, 0] > 0.6 > 0.3 > sims[0, 1]


def test_deterministic_and_independent_of_the_batch() -> None:
    text = "The cat sat on the mat."
    alone = embed([text])
    mixed = embed(["Another much longer sentence about the weather in Lisbon during the spring.", text, "hi"])
    again = embed([text])
    np.testing.assert_array_equal(alone, again)
    np.testing.assert_allclose(alone[0], mixed[1], atol=1e-4)
    # order is the caller's, not the internal length order
    two = embed(["a long sentence about databases and indexes", "short"])
    np.testing.assert_allclose(two[1], embed(["short"])[0], atol=1e-4)


def test_similarity_takes_arrays_and_rejects_non_text() -> None:
    vecs = embed(["one", "two"])
    np.testing.assert_allclose(similarity(vecs, vecs).diagonal(), 1.0, atol=1e-5)
    with pytest.raises(BadInput, match="text 1"):
        embed(["ok", 3])  # type: ignore[list-item]
