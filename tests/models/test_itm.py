from pathlib import Path

import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.models import load_adapter
from tests.helpers import WORDS, build_tiny_blip_itm, write_dataset


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return build_tiny_blip_itm(tmp_path_factory.mktemp("blip"), WORDS)


def test_itm_probability_equals_plain_transformers(blip_dir: Path, tmp_path: Path):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    write_dataset(tmp_path, n=3)
    paths = [str(tmp_path / "images" / f"{i:03d}.png") for i in range(3)]
    texts = ["a red square", "a picture of a blue square", "green"]
    model = BlipForImageTextRetrieval.from_pretrained(blip_dir).eval()
    processor = AutoProcessor.from_pretrained(blip_dir)
    expected = []
    for path, text in zip(paths, texts, strict=True):
        inputs = processor(images=Image.open(path).convert("RGB"), text=text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs, use_itm_head=True).itm_score
        expected.append(float(torch.softmax(logits, -1)[0, 1]))
    for batch_size in (1, 3):
        adapter = load_adapter(ModelConfig(kind="itm", path=str(blip_dir), batch_size=batch_size))
        got = adapter.score_pairs(paths, texts)
        np.testing.assert_allclose(got.scores, expected, rtol=1e-4, atol=1e-5)
        assert got.failures == {}


def test_broken_image_is_a_failure(blip_dir: Path, tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"xx")
    write_dataset(tmp_path, n=1)
    adapter = load_adapter(ModelConfig(kind="itm", path=str(blip_dir)))
    got = adapter.score_pairs([str(tmp_path / "bad.png"), str(tmp_path / "images/000.png")],
                              ["red", "red"])
    assert np.isnan(got.scores[0]) and np.isfinite(got.scores[1]) and 0 in got.failures
