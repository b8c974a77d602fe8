from pathlib import Path

import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.models import ModelError, load_adapter
from tasks.models.base import model_fingerprint
from tests.helpers import write_dataset


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    write_dataset(tmp_path, n=5)
    return [str(tmp_path / "images" / f"{i:03d}.png") for i in range(5)]


def direct_embeddings(model_dir: Path, paths: list[str], texts: list[str]):
    """The plain transformers way, as a user would write it."""
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    pil = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        image = model.get_image_features(**processor(images=pil, return_tensors="pt"))
        text = model.get_text_features(**processor.tokenizer(texts, padding=True,
                                                             return_tensors="pt"))
    return image.pooler_output.numpy(), text.pooler_output.numpy()


def test_embeddings_equal_plain_transformers_and_do_not_depend_on_batch_size(
    tiny_clip_dir: Path, images: list[str]
):
    texts = ["a red square", "a picture of a blue square", "green"]
    expected_images, expected_texts = direct_embeddings(tiny_clip_dir, images, texts)
    for batch_size in (1, 2, 64):
        adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), batch_size=batch_size))
        got = adapter.encode_images(images)
        assert got.failures == {}
        np.testing.assert_allclose(got.vectors, expected_images, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(adapter.encode_texts(texts), expected_texts, rtol=1e-4,
                                   atol=1e-5)


def test_undecodable_image_is_a_recorded_failure_not_a_crash(tiny_clip_dir: Path,
                                                             images: list[str], tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), batch_size=2))
    progress = []
    got = adapter.encode_images([images[0], str(broken), images[1]], progress=progress.append)
    assert list(got.failures) == [1] and "decode failed" in got.failures[1]
    assert np.isnan(got.vectors[1]).all() and np.isfinite(got.vectors[[0, 2]]).all()
    assert sum(progress) == 3


def test_long_texts_are_counted_as_truncated(tiny_clip_dir: Path):
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir)))
    assert adapter.count_truncated(["a red square", " ".join(["red"] * 40)]) == 1
    assert np.isfinite(adapter.encode_texts([" ".join(["red"] * 40)])).all()


def test_fingerprint_follows_weights(tiny_clip_dir: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_clip_dir, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_clip_dir)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert model_fingerprint(copy) != model_fingerprint(tiny_clip_dir)


def test_missing_model_and_non_dual_encoder(tmp_path: Path):
    with pytest.raises(ModelError, match="neither a local folder nor in the Hugging Face cache"):
        load_adapter(ModelConfig(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError):
        load_adapter(ModelConfig(path=str(tmp_path / "empty")))
