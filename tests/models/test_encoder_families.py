"""The ``dual_encoder`` adapter on CLIP, SigLIP and SigLIP 2 (tiny models of
``tests/models/zoo_encoders.py``), checked against plain transformers calls written the way each
family's model card says to call it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.models import load_adapter
from tasks.models.encoder_inputs import CLIP_STYLE, SIGLIP_STYLE, encoder_family
from tests.helpers import draw, write_dataset
from tests.models.zoo_encoders import (
    build_clip,
    build_siglip,
    build_siglip2,
    build_siglip2_fixed,
)

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "clip": build_clip, "siglip": build_siglip, "siglip2": build_siglip2,
    "siglip2-fixed": build_siglip2_fixed}
SIGLIP_FAMILIES = ("siglip", "siglip2", "siglip2-fixed")
# Texts of different lengths: padded to the longest of a batch, the short ones would end on
# padding; "zebra" is outside the vocabulary (characters / unknown pieces).
TEXTS = ["green", "a red square", "a picture of a big blue square on white", "zebra",
         "A small YELLOW square!"]


def reference_image_inputs(family: str, processor: Any, images: list[Any]) -> Any:
    """The processor call of each family's model card; the tiny SigLIP 2 has 16 patches of
    8 px where the real ones have 256 of 16 px (the processor's call defaults)."""
    if family == "siglip2":
        return processor(images=images, patch_size=8, max_num_patches=16, return_tensors="pt")
    return processor(images=images, return_tensors="pt")


def reference_text_inputs(family: str, processor: Any, texts: list[str]) -> Any:
    """CLIP: padded to the longest; SigLIP / SigLIP 2: ``padding="max_length"``, 64 tokens,
    "as that's how the model was trained" (transformers' SigLIP docs); the fixed-resolution
    SigLIP 2's texts lowercased by hand, as its model card asks (its tokenizer does not)."""
    if family == "clip":
        return processor(text=texts, padding=True, truncation=True, return_tensors="pt")
    if family == "siglip2-fixed":
        texts = [text.lower() for text in texts]
    return processor(text=texts, padding="max_length", max_length=64, truncation=True,
                     return_tensors="pt")


def load_reference(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return model, AutoProcessor.from_pretrained(folder, local_files_only=True)


def reference_embeddings(family: str, folder: Path, paths: list[str], texts: list[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from PIL import Image

    model, processor = load_reference(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        image = model.get_image_features(**reference_image_inputs(family, processor, images))
        text = model.get_text_features(**reference_text_inputs(family, processor, texts))
    return image.pooler_output.numpy(), text.pooler_output.numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Five 32-px squares and one 48x24 image (SigLIP 2 keeps its aspect ratio: fewer
    patches, the rest masked)."""
    root = tmp_path_factory.mktemp("images")
    write_dataset(root, n=5)
    paths = [str(root / "images" / f"{i:03d}.png") for i in range(5)]
    from PIL import Image

    wide = root / "wide.png"
    draw(wide, (40, 60, 220))
    Image.open(wide).resize((48, 24)).save(wide)
    return [*paths, str(wide)]


def adapter(folder: Path, **settings: Any) -> Any:
    return load_adapter(ModelConfig(path=str(folder), device="cpu", **settings))


@pytest.mark.parametrize("family", list(BUILDERS))
def test_embeddings_equal_the_model_cards_transformers_call(
    family: str, models: dict[str, Path], images: list[str]
):
    expected_images, expected_texts = reference_embeddings(family, models[family], images, TEXTS)
    encoder = adapter(models[family], batch_size=64)
    got = encoder.encode_images(images)
    assert got.failures == {}
    np.testing.assert_allclose(got.vectors, expected_images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), expected_texts, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(BUILDERS))
def test_embeddings_do_not_depend_on_batch_size_or_neighbours(
    family: str, models: dict[str, Path], images: list[str]
):
    one, many = adapter(models[family], batch_size=1), adapter(models[family], batch_size=64)
    np.testing.assert_allclose(one.encode_texts(TEXTS), many.encode_texts(TEXTS),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.encode_texts(TEXTS[:1]), many.encode_texts(TEXTS)[:1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.encode_images(images).vectors,
                               many.encode_images(images).vectors, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", SIGLIP_FAMILIES)
def test_padding_to_the_batchs_longest_text_would_change_siglip_embeddings(
    family: str, models: dict[str, Path]
):
    """The tiny models are sensitive to the convention (so the tests above can fail): padded
    to the longest text of the batch, a short text's embedding changes with its neighbours."""
    encoder = adapter(models[family], batch_size=64)
    encoder.family = CLIP_STYLE  # the old behaviour: padding=True
    alone, in_batch = encoder.encode_texts(TEXTS[:1]), encoder.encode_texts(TEXTS)[:1]
    assert not np.allclose(alone, in_batch, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", SIGLIP_FAMILIES)
def test_siglip_match_probability_is_the_sigmoid_of_the_models_own_logits(
    family: str, models: dict[str, Path], images: list[str]
):
    import torch
    from PIL import Image

    model, processor = load_reference(models[family])
    pil = [Image.open(p).convert("RGB") for p in images]
    inputs = {**reference_image_inputs(family, processor, pil),
              **reference_text_inputs(family, processor, TEXTS)}
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits_per_image).double().numpy()
    rows, cols = np.meshgrid(range(len(images)), range(len(TEXTS)), indexing="ij")
    encoder = adapter(models[family], batch_size=4)
    got = encoder.score_pairs([images[i] for i in rows.ravel()], [TEXTS[j] for j in cols.ravel()])
    assert got.failures == {}
    np.testing.assert_allclose(got.scores, expected.ravel(), rtol=1e-4, atol=1e-10)
    assert ((got.scores > 0) & (got.scores < 1)).all()
    assert "sigmoid" in encoder.describe()["pair_score"]


def test_clip_pair_score_stays_the_cosine(models: dict[str, Path], images: list[str]):
    expected_images, expected_texts = reference_embeddings("clip", models["clip"], images[:3],
                                                           TEXTS[:3])
    a = expected_images / np.linalg.norm(expected_images, axis=1, keepdims=True)
    b = expected_texts / np.linalg.norm(expected_texts, axis=1, keepdims=True)
    got = adapter(models["clip"]).score_pairs(images[:3], TEXTS[:3])
    np.testing.assert_allclose(got.scores, (a * b).sum(axis=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", SIGLIP_FAMILIES)
def test_siglip_texts_are_cut_at_the_trained_length_and_counted(
    family: str, models: dict[str, Path]
):
    """64 tokens (position embeddings) even where the tokenizer (Gemma) sets no limit."""
    encoder = adapter(models[family])
    assert encoder.max_text_length == 64
    long = " ".join(["red"] * 80)
    assert encoder.count_truncated(["a red square", long, " ".join(["red"] * 62)]) == 1
    assert encoder.count_truncated([]) == 0
    model, processor = load_reference(models[family])
    tokens = reference_text_inputs(family, processor, [long])
    assert tokens["input_ids"].shape == (1, 64)
    import torch

    with torch.no_grad():
        expected = model.get_text_features(**tokens).pooler_output.numpy()
    np.testing.assert_allclose(encoder.encode_texts([long]), expected, rtol=1e-4, atol=1e-5)


def test_fixed_resolution_siglip2_texts_are_lowercased_by_the_adapter(models: dict[str, Path]):
    """Its ``GemmaTokenizer`` keeps case (so the lowercasing matters), the adapter does not."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["siglip2-fixed"], local_files_only=True)
    assert tokenizer("A RED square")["input_ids"] != tokenizer("a red square")["input_ids"]
    encoder = adapter(models["siglip2-fixed"])
    upper, lower = encoder.encode_texts(["A RED square", "a red square"])
    np.testing.assert_allclose(upper, lower, rtol=1e-6, atol=1e-7)


def test_siglip2_runs_in_bfloat16_with_integer_masks_and_shapes(
    models: dict[str, Path], images: list[str]
):
    """Only floating-point inputs are cast to the model's dtype (spatial_shapes stay int)."""
    full = adapter(models["siglip2"]).encode_images(images).vectors
    half = adapter(models["siglip2"], dtype="bfloat16").encode_images(images).vectors
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert (cosine > 0.99).all()


@pytest.mark.parametrize(("model_type", "expected"), [
    ("clip", CLIP_STYLE), ("siglip", SIGLIP_STYLE), ("siglip2", SIGLIP_STYLE),
    ("chinese_clip", CLIP_STYLE)])
def test_family_conventions_follow_the_model_type(model_type: str, expected: Any):
    assert encoder_family(SimpleNamespace(config=SimpleNamespace(model_type=model_type))) \
        == expected
