from pathlib import Path

import pytest

from tasks.config import ModelConfig
from tasks.models import ModelError, load_adapter
from tasks.models.prompting import strip_echo
from tests.helpers import write_dataset


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    write_dataset(tmp_path, n=5)
    return [str(tmp_path / "images" / f"{i:03d}.png") for i in range(5)]


def plain_generate(model_dir: Path, paths: list[str], max_new_tokens: int) -> list[str]:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(model_dir).eval()
    pixels = AutoImageProcessor.from_pretrained(model_dir)(
        images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def test_generate_equals_plain_transformers_for_any_batch_size(tiny_captioner_dir, images):
    expected = plain_generate(tiny_captioner_dir, images, max_new_tokens=6)
    assert any(expected)
    for batch_size in (1, 3, 8):
        config = ModelConfig(kind="captioner", path=str(tiny_captioner_dir),
                             batch_size=batch_size, generation={"max_new_tokens": 6})
        generated = load_adapter(config).generate(images)
        assert generated.texts == expected and generated.failures == {}


def test_beam_search_and_broken_image(tiny_captioner_dir, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    config = ModelConfig(kind="captioner", path=str(tiny_captioner_dir), batch_size=2,
                         generation={"max_new_tokens": 4, "num_beams": 3})
    ticks = []
    generated = load_adapter(config).generate([images[0], str(broken)], progress=ticks.append)
    assert generated.texts[1] is None and "decode failed" in generated.failures[1]
    assert isinstance(generated.texts[0], str) and sum(ticks) == 2


def test_dual_encoder_folder_is_not_a_captioner(tiny_clip_dir):
    with pytest.raises(ModelError, match="image-to-text"):
        load_adapter(ModelConfig(kind="captioner", path=str(tiny_clip_dir)))


def test_strip_echo_removes_the_prompt_by_token_count():
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 3, 0]])
    assert strip_echo(ids, torch.tensor([[5, 6], [5, 6]])).tolist() == [[7, 8, 9], [7, 3, 0]]
    assert strip_echo(ids, None).tolist() == [[6, 7, 8, 9], [6, 7, 3, 0]]  # a start token
    with pytest.raises(ModelError, match="did not return the prompt"):
        strip_echo(ids, torch.tensor([[5, 6], [5, 7]]))
