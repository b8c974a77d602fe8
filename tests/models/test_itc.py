"""The ``itm`` adapter's contrastive (ITC) embeddings on tiny BLIP / BLIP-2 retrieval models
(``tests/models/zoo_generators.py``), checked against the model's own ITC score:
``BlipForImageTextRetrieval(..., use_itm_head=False).itm_score``, the (images x texts) cosine
matrix of transformers' forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.models import load_adapter
from tasks.models.base import ModelError
from tests.helpers import write_dataset
from tests.models import zoo_generators as zoo

# Texts of different token lengths: batched, the shorter ones are padded.
TEXTS = ["a red square", "a picture of a blue square on a white background", "green",
         "yellow square", "a small red square"]


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.build_blip_itm(tmp_path_factory.mktemp("blip_itm"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("images")
    write_dataset(root, n=4)
    return [str(root / "images" / f"{i:03d}.png") for i in range(4)]


def itc_scores(folder: Path, paths: list[str], texts: list[str]) -> np.ndarray:
    """transformers' own ITC score matrix (images x texts), one forward call."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=[Image.open(p).convert("RGB") for p in paths], text=texts,
                       padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        scores = model(**inputs, use_itm_head=False).itm_score
    return scores.numpy().astype(np.float64)


def adapter(folder: Path, batch_size: int) -> Any:
    return load_adapter(ModelConfig(kind="itm", path=str(folder), batch_size=batch_size))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_cosine_of_embeddings_is_the_models_itc_score(blip_dir: Path, images: list[str]):
    expected = itc_scores(blip_dir, images, TEXTS)
    assert np.ptp(expected) > 1e-3  # the random model's scores differ between pairs
    encoder = adapter(blip_dir, batch_size=3)
    got = encoder.encode_images(images)
    assert got.failures == {}
    np.testing.assert_allclose(cosine(got.vectors, encoder.encode_texts(TEXTS)), expected,
                               atol=1e-5)


def test_batch_size_one_and_n_give_the_same_embeddings(blip_dir: Path, images: list[str]):
    one, many = adapter(blip_dir, batch_size=1), adapter(blip_dir, batch_size=len(TEXTS))
    np.testing.assert_allclose(one.encode_images(images).vectors,
                               many.encode_images(images).vectors, atol=1e-6)
    np.testing.assert_allclose(one.encode_texts(TEXTS), many.encode_texts(TEXTS), atol=1e-6)


def test_long_text_is_truncated_to_the_text_context(blip_dir: Path, images: list[str]):
    from transformers import AutoTokenizer

    long_text = " ".join(["red square"] * 40)  # 80 words: over the 64 positions
    tokenizer = AutoTokenizer.from_pretrained(blip_dir)
    limit = tokenizer.model_max_length
    assert len(tokenizer(long_text)["input_ids"]) > limit >= len(tokenizer(TEXTS[1])["input_ids"])
    encoder = adapter(blip_dir, batch_size=4)
    assert encoder.count_truncated([*TEXTS, long_text]) == 1
    got = cosine(encoder.encode_images(images[:1]).vectors, encoder.encode_texts([long_text]))
    np.testing.assert_allclose(got, itc_scores(blip_dir, images[:1], [long_text]), atol=1e-5)


def test_undecodable_image_is_a_nan_row(blip_dir: Path, images: list[str], tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    got = adapter(blip_dir, batch_size=2).encode_images([images[0], str(tmp_path / "bad.png")])
    assert np.isfinite(got.vectors[0]).all() and np.isnan(got.vectors[1]).all()
    assert list(got.failures) == [1]


def test_blip2_refuses_embeddings_and_says_why(tmp_path: Path, images: list[str]):
    encoder = adapter(zoo.build_blip2_itm(tmp_path / "blip2_itm"), batch_size=2)
    for call in (lambda: encoder.encode_images(images), lambda: encoder.encode_texts(TEXTS),
                 lambda: encoder.count_truncated(TEXTS)):
        with pytest.raises(ModelError, match="max over query tokens, not a single-vector"):
            call()
    assert np.isfinite(encoder.score_pairs(images[:2], TEXTS[:2]).scores).all()  # ITM still runs
