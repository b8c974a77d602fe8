"""The ``captioner`` and ``vqa`` adapters on every generative family (tiny models of
``tests/models/zoo_generators.py``), checked against ``model.generate`` called directly, one
image at a time, with the prompt built the way each family's documentation builds it, greedy
(the checkpoint's own generation_config), decoded after slicing off the prompt's tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.config import GenerationSettings, ModelConfig
from tasks.models import load_adapter
from tests.helpers import draw, write_dataset
from tests.models import zoo_generators as zoo

MAX_NEW = 5
# Questions of different token lengths: batched, the shorter ones are padded.
QUESTIONS = ["what color is the square", "is it big", "what",
             "how many squares are there in the image", "which shape is this"]
CAPTION_INSTRUCTION = "Provide a one-sentence caption for the provided image."
CHAT_QUESTION = "{}\nAnswer the question using a single word or phrase."
Reference = Callable[[Path, list[Any], list[str | None], dict[str, Any]], list[str]]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``zoo_dir("llava")``: the tiny model, built once for the module."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            builder = getattr(zoo, f"build_{name}")
            built[name] = builder(tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four 32-px squares and one 48 x 32 image (Qwen-VL gives it more image tokens)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    write_dataset(root, n=4)
    wide = root / "images" / "wide.png"
    draw(wide, (200, 40, 40))
    Image.open(wide).resize((48, 32)).save(wide)
    return [*(str(root / "images" / f"{i:03d}.png") for i in range(4)), str(wide)]


def rgb(paths: list[str]) -> list[Any]:
    from PIL import Image

    return [Image.open(path).convert("RGB") for path in paths]


def decode(tokenizer: Any, ids: Any) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()


def generate(model: Any, inputs: Any, settings: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        return model.generate(**inputs, **settings)


# --- references: one image at a time, as each family's documentation calls it --------------

def ref_blip(folder: Path, images: list[Any], prompts: list[str | None],
             settings: dict[str, Any]) -> list[str]:
    """BlipForConditionalGeneration: ``processor(image[, text])``; generate() returns its
    decoder prompt first: [BOS] and the prompt's tokens, [SEP] dropped."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    processor = BlipProcessor.from_pretrained(folder)
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=image, text=prompt, return_tensors="pt") if prompt \
            else processor(images=image, return_tensors="pt")
        out = generate(model, inputs, settings)
        skip = inputs["input_ids"].shape[1] - 1 if prompt else 1
        texts.append(decode(processor.tokenizer, out[0, skip:]))
    return texts


def ref_blip_vqa(folder: Path, images: list[Any], prompts: list[str | None],
                 settings: dict[str, Any]) -> list[str]:
    """BlipForQuestionAnswering: ``processor(image, question)``; the output is the answer."""
    from transformers import BlipForQuestionAnswering, BlipProcessor

    model = BlipForQuestionAnswering.from_pretrained(folder).eval()
    processor = BlipProcessor.from_pretrained(folder)
    return [decode(processor.tokenizer, generate(model, processor(
        images=image, text=prompt, return_tensors="pt"), settings)[0])
        for image, prompt in zip(images, prompts, strict=True)]


def ref_blip2(folder: Path, images: list[Any], prompts: list[str | None],
              settings: dict[str, Any]) -> list[str]:
    """Blip2ForConditionalGeneration: ``processor(image, "Question: ... Answer:")``, or an
    empty text for a caption (the query tokens and the tokenizer's BOS/EOS: what generate()
    builds itself from the pixels alone, which it cannot for T5, whose config has no BOS); OPT
    returns the prompt first, Flan-T5 the decoder start token."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=image, text=prompt or "", return_tensors="pt")
        out = generate(model, inputs, settings)[0]
        if not model.config.text_config.is_encoder_decoder:
            out = out[inputs["input_ids"].shape[1]:]
        texts.append(decode(processor.tokenizer, out))
    return texts


def ref_git(folder: Path, images: list[Any], prompts: list[str | None],
            settings: dict[str, Any]) -> list[str]:
    """GitForCausalLM: captioning from the pixels alone; VQA from ``[CLS]`` + the question's
    ids without special tokens (GIT's documented VQA usage)."""
    import torch
    from transformers import GitForCausalLM, GitProcessor

    model = GitForCausalLM.from_pretrained(folder).eval()
    processor = GitProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        pixels = processor(images=image, return_tensors="pt").pixel_values
        if not prompt:
            texts.append(decode(tokenizer, generate(model, {"pixel_values": pixels},
                                                    settings)[0]))
            continue
        ids = [tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
        out = generate(model, {"pixel_values": pixels, "input_ids": torch.tensor([ids])},
                       settings)
        texts.append(decode(tokenizer, out[0, len(ids):]))
    return texts


def ref_vit_gpt2(folder: Path, images: list[Any], prompts: list[str | None],
                 settings: dict[str, Any]) -> list[str]:
    """VisionEncoderDecoderModel: a prompt continues the decoder start token."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(folder).eval()
    image_processor = AutoImageProcessor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = {"pixel_values": image_processor(images=image, return_tensors="pt")
                  ["pixel_values"]}
        start = 0
        if prompt:
            ids = [model.config.decoder_start_token_id,
                   *tokenizer(prompt, add_special_tokens=False).input_ids]
            inputs["decoder_input_ids"] = torch.tensor([ids])
            start = len(ids)
        texts.append(decode(tokenizer, generate(model, inputs, settings)[0, start:]))
    return texts


def ref_llava(folder: Path, images: list[Any], prompts: list[str | None],
              settings: dict[str, Any]) -> list[str]:
    """LlavaForConditionalGeneration, as transformers' LLaVA docs: a conversation through the
    processor's chat template, ``processor(images=image, text=prompt)``, the prompt's tokens
    sliced off the output."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    processor = LlavaProcessor.from_pretrained(folder)
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        conversation = [{"role": "user", "content": [{"type": "text", "text": prompt},
                                                     {"type": "image"}]}]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = processor(images=image, text=text, return_tensors="pt")
        out = generate(model, inputs, settings)
        texts.append(decode(processor.tokenizer, out[0, inputs["input_ids"].shape[1]:]))
    return texts


def ref_qwen(folder: Path, images: list[Any], prompts: list[str | None],
             settings: dict[str, Any]) -> list[str]:
    """Qwen2-VL / Qwen2.5-VL as their model cards, with the processor's work written out (its
    class needs torchvision here): the chat template, ``<|image_pad|>`` repeated once per
    2 x 2 group of 14-px patches, ``mm_token_type_ids`` marking the image tokens."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = (folder / "chat_template.jinja").read_text()
    pad_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    texts = []
    for image, prompt in zip(images, prompts, strict=True):
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
        text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
        vision = image_processor(images=[image], return_tensors="pt")
        count = int(vision["image_grid_thw"][0].prod()) // image_processor.merge_size ** 2
        encoded = tokenizer([text.replace("<|image_pad|>", "<|image_pad|>" * count)],
                            return_tensors="pt")
        inputs = {**encoded, **vision, "mm_token_type_ids": (encoded.input_ids == pad_id).long()}
        out = generate(model, inputs, settings)
        texts.append(decode(tokenizer, out[0, encoded.input_ids.shape[1]:]))
    return texts


# family -> (captioning builder, VQA builder, reference, default caption prompt, VQA template)
FAMILIES: dict[str, tuple[str | None, str | None, Reference, str | None, str]] = {
    "blip": ("blip", None, ref_blip, None, "{}"),
    "blip-vqa": (None, "blip_vqa", ref_blip_vqa, None, "{}"),
    "blip2": ("blip2", "blip2", ref_blip2, None, "Question: {} Answer:"),
    "blip2-t5": ("blip2_t5", "blip2_t5", ref_blip2, None, "Question: {} Answer:"),
    "git": ("git", "git", ref_git, None, "{}"),
    "vit-gpt2": ("vit_gpt2", "vit_gpt2", ref_vit_gpt2, None, "{}"),
    "llava": ("llava", "llava", ref_llava, CAPTION_INSTRUCTION, CHAT_QUESTION),
    "qwen2-vl": ("qwen2_vl", "qwen2_vl", ref_qwen, CAPTION_INSTRUCTION, CHAT_QUESTION),
    "qwen2.5-vl": ("qwen2_5_vl", "qwen2_5_vl", ref_qwen, CAPTION_INSTRUCTION, CHAT_QUESTION),
}
CAPTIONING = [name for name, spec in FAMILIES.items() if spec[0]]
VQA = [name for name, spec in FAMILIES.items() if spec[1]]


def adapter(kind: str, folder: Path, batch_size: int, **generation: Any) -> Any:
    return load_adapter(ModelConfig(kind=kind, path=str(folder), batch_size=batch_size,
                                    generation={"max_new_tokens": MAX_NEW, **generation}))


@pytest.mark.parametrize("family", CAPTIONING)
def test_captions_equal_plain_generate_at_any_batch_size(family, zoo_dir, images):
    builder, _, reference, prompt, _ = FAMILIES[family]
    assert builder is not None
    folder = zoo_dir(builder)
    expected = reference(folder, rgb(images), [prompt] * len(images),
                         {"max_new_tokens": MAX_NEW})
    assert any(expected)
    for batch_size in (1, len(images)):
        generated = adapter("captioner", folder, batch_size).generate(images)
        assert generated.texts == expected and generated.failures == {}


@pytest.mark.parametrize("family", VQA)
def test_answers_equal_plain_generate_at_any_batch_size(family, zoo_dir, images):
    """Questions of different lengths, batched: left padding (decoder-only) or batches of equal
    length (absolute positions) keep every answer what it is alone."""
    _, builder, reference, _, template = FAMILIES[family]
    assert builder is not None
    folder = zoo_dir(builder)
    expected = reference(folder, rgb(images), [template.format(q) for q in QUESTIONS],
                         {"max_new_tokens": MAX_NEW})
    assert len(set(expected)) > 1, expected  # answers depend on the image and question
    for batch_size in (1, len(images)):
        answers = adapter("vqa", folder, batch_size).answer(images, QUESTIONS)
        assert answers.texts == expected and answers.failures == {}


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_prompt_is_removed_by_token_count_where_string_matching_fails(family, zoo_dir, images):
    """A chat model's decoded output starts with the chat template's roles and markers, not
    with the question's prompt, so stripping the prompt string would keep the whole echo."""
    import torch

    _, builder, _, _, template = FAMILIES[family]
    assert builder is not None
    vqa = adapter("vqa", zoo_dir(builder), len(images))
    prompts = [template.format(q) for q in QUESTIONS]
    whole, new = [""] * len(images), [""] * len(images)
    for batch in vqa.prompter.batches(rgb(images), prompts):  # GIT: one per prompt length
        with torch.no_grad():
            ids = vqa.model.generate(**batch.inputs, max_new_tokens=MAX_NEW)
        echo = batch.inputs["input_ids"].shape[1]
        for position, all_ids, new_ids in zip(batch.positions, ids, ids[:, echo:], strict=True):
            whole[position] = vqa.tokenizer.decode(all_ids, skip_special_tokens=True)
            new[position] = vqa.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
    assert not any(w.lower().startswith(p.lower()) for w, p in zip(whole, prompts, strict=True))
    assert vqa.answer(images, QUESTIONS).texts == new


def test_image_token_counts(zoo_dir, images):
    """LLaVA: one ``<image>`` per 8-px patch of the 32-px crop (16, CLS dropped); Qwen2-VL: one
    ``<|image_pad|>`` per 2 x 2 patch group, more for the larger image, left padded."""
    llava = adapter("vqa", zoo_dir("llava"), 5)
    ids = llava.prompter.batches(rgb(images), QUESTIONS)[0].inputs["input_ids"]
    image_id = llava.tokenizer.convert_tokens_to_ids("<image>")
    assert (ids == image_id).sum(dim=1).tolist() == [16] * 5
    qwen = adapter("vqa", zoo_dir("qwen2_vl"), 5)
    inputs = qwen.prompter.batches(rgb(images), ["what"] * 5)[0].inputs
    pad_id = qwen.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    counts = (inputs["input_ids"] == pad_id).sum(dim=1).tolist()
    assert counts == [int(g.prod()) // 4 for g in inputs["image_grid_thw"]] == [4] * 4 + [6]
    assert (inputs["attention_mask"][:4, 0] == 0).all()  # the shorter rows padded on the left


def test_image_token_put_before_the_text_without_a_chat_template(zoo_dir, images, tmp_path):
    """A LLaVA-style processor without a chat template: ``<image>`` + newline + the prompt,
    which the processor expands (a base checkpoint's usage)."""
    import shutil

    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    folder = tmp_path / "llava-no-template"
    shutil.copytree(zoo_dir("llava"), folder)
    (folder / "chat_template.jinja").unlink()
    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    processor = LlavaProcessor.from_pretrained(folder)
    assert not processor.chat_template
    expected = []
    for image, question in zip(rgb(images), QUESTIONS, strict=True):
        inputs = processor(images=image, text=f"<image>\n{question}", return_tensors="pt")
        out = generate(model, inputs, {"max_new_tokens": MAX_NEW})
        expected.append(decode(processor.tokenizer, out[0, inputs["input_ids"].shape[1]:]))
    vqa = adapter("vqa", folder, 5)
    assert vqa.question_template == "{question}"
    assert vqa.answer(images, QUESTIONS).texts == expected
    assert vqa.describe()["prompt_format"] == "image token + prompt"


def test_checkpoint_generation_config_unless_the_config_sets_it(zoo_dir, images):
    """Qwen2-VL-Instruct's generation_config (top-k 1 sampling, repetition penalty 1.05) is
    what runs when the config sets only max_new_tokens; settings the config sets override it."""
    folder = zoo_dir("qwen2_vl")
    prompts = [CHAT_QUESTION.format(q) for q in QUESTIONS]
    expected = ref_qwen(folder, rgb(images), prompts, {"max_new_tokens": MAX_NEW})
    assert adapter("vqa", folder, 5).answer(images, QUESTIONS).texts == expected
    greedy = {"max_new_tokens": MAX_NEW, "do_sample": False, "repetition_penalty": 1.0}
    assert ref_qwen(folder, rgb(images), prompts, greedy) != expected  # the penalty counts
    beams = {"max_new_tokens": MAX_NEW, "num_beams": 2, "do_sample": False}
    expected = ref_qwen(folder, rgb(images), prompts, beams)
    assert adapter("vqa", folder, 5, num_beams=2, do_sample=False).answer(
        images, QUESTIONS).texts == expected


def test_generation_kwargs_only_what_the_config_sets():
    from transformers import GenerationConfig

    from tasks.models.captioner import generation_kwargs

    tokenizer = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 1})()
    checkpoint = GenerationConfig(do_sample=True, top_k=1, repetition_penalty=1.05)
    assert generation_kwargs(GenerationSettings(), checkpoint, tokenizer) == \
        {"max_new_tokens": 32}  # Bifocal's default where the checkpoint has none
    assert generation_kwargs(GenerationSettings(), GenerationConfig(max_new_tokens=7),
                             tokenizer) == {}
    chosen = GenerationSettings(num_beams=3, do_sample=False, temperature=0.5)
    assert generation_kwargs(chosen, checkpoint, tokenizer) == \
        {"max_new_tokens": 32, "num_beams": 3, "do_sample": False}  # no sampling: no temperature
    sampled = GenerationSettings(temperature=0.5, top_p=0.9, max_new_tokens=4)
    assert generation_kwargs(sampled, checkpoint, tokenizer) == \
        {"max_new_tokens": 4, "temperature": 0.5, "top_p": 0.9}


@pytest.mark.parametrize(("family", "template"), [
    ("blip_vqa", "{question}"), ("blip2", "Question: {question} Answer:"),
    ("llava", "{question}\nAnswer the question using a single word or phrase."),
    ("git", "{question}")])
def test_question_template_is_the_familys_unless_the_config_sets_one(family, template,
                                                                     zoo_dir):
    folder = zoo_dir(family)
    assert adapter("vqa", folder, 1).question_template == template
    assert adapter("vqa", folder, 1, question_template="{question}").question_template == \
        "{question}"


def test_vqa_on_a_captioning_checkpoint_keeps_its_class(zoo_dir):
    """A BLIP captioning checkpoint is prompted with the question, never loaded as a VQA head
    whose question encoder would be random."""
    vqa = adapter("vqa", zoo_dir("blip"), 1)
    assert type(vqa.model).__name__ == "BlipForConditionalGeneration"
    assert type(adapter("vqa", zoo_dir("blip_vqa"), 1).model).__name__ == \
        "BlipForQuestionAnswering"


def test_blip2_match_probability_equals_plain_transformers(zoo_dir, images):
    """Blip2ForImageTextRetrieval as its docs call it: ``processor(images, text)``, the ITM
    head (``use_image_text_matching_head=True``), softmax over (no match, match)."""
    import numpy as np
    import torch
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    folder = zoo_dir("blip2_itm")
    texts = ["a red square", "green", "a picture of a big blue square on white", "yellow",
             "is it red"]
    model = Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    expected = []
    for image, text in zip(rgb(images), texts, strict=True):
        with torch.no_grad():
            output = model(**processor(images=image, text=text, return_tensors="pt"),
                           use_image_text_matching_head=True)
        expected.append(float(torch.softmax(output.logits_per_image, dim=1)[0, 1]))
    assert np.ptp(expected) > 0.05  # the head tells pairs apart
    for batch_size in (1, 5):
        itm = load_adapter(ModelConfig(kind="itm", path=str(folder), batch_size=batch_size))
        scores = itm.score_pairs(images, texts)
        np.testing.assert_allclose(scores.scores, expected, rtol=1e-4, atol=1e-5)
        assert scores.failures == {}
