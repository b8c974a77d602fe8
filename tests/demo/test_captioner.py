"""Fast tests for the demo VQA manifest and the demo captioner (tiny sizes, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.config import ModelConfig
from tasks.demo.benchmark import build_benchmark, load_manifest
from tasks.demo.captioner import (
    IGNORE_INDEX,
    CaptionerSpec,
    CaptionerTrainConfig,
    build_image_processor,
    build_tokenizer,
    decoder_example,
    encode_split,
    evaluate_demo_captioner,
    sequence_loss,
    tokenizer_words,
    train_demo_captioner,
)
from tasks.demo.derived import (
    N_HUMAN_ANSWERS,
    SIZE_QUESTIONS,
    all_questions,
    question_words,
    write_vqa_manifest,
)
from tasks.models import load_adapter

TINY_SPEC = CaptionerSpec(patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=32,
                          text_layers=1, heads=2)
TINY_CFG = CaptionerTrainConfig(batch_size=16, lr=3e-3, warmup_frac=0.1)
STEPS = 40
LINE_KEYS = {"id", "image", "question", "answers", "question_type", "answer_type"}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_benchmark(root, seed=0, n_train=48, n_test=8, image_size=32)
    return root


@pytest.fixture(scope="module")
def trained(tiny_bench: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("captioner")
    return train_demo_captioner(tiny_bench, out, steps=STEPS, seed=0, log=None,
                                spec=TINY_SPEC, cfg=TINY_CFG)


# --- derived VQA manifest ---


def test_vqa_manifest_is_deterministic(tiny_bench: Path, tmp_path: Path) -> None:
    first = write_vqa_manifest(tiny_bench, "test", tmp_path / "a.jsonl", seed=0).read_bytes()
    again = write_vqa_manifest(tiny_bench, "test", tmp_path / "b.jsonl", seed=0).read_bytes()
    other = write_vqa_manifest(tiny_bench, "test", tmp_path / "c.jsonl", seed=1).read_bytes()
    assert first == again
    assert first != other


def test_vqa_manifest_schema_and_answers(tiny_bench: Path) -> None:
    path = write_vqa_manifest(tiny_bench, "train", tiny_bench / "vqa_train.jsonl", seed=0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    records = {r["id"]: r for r in load_manifest(tiny_bench / "train.jsonl")}
    per_image: dict[str, int] = {}
    for line in lines:
        assert set(line) == LINE_KEYS
        image_id, k = line["id"].rsplit("-q", 1)
        per_image[image_id] = per_image.get(image_id, 0) + 1
        record = records[image_id]
        assert line["image"] == record["image"] and (tiny_bench / line["image"]).is_file()
        truth = {q.question: q for q in all_questions(record)}[line["question"]]
        answers = line["answers"]
        assert len(answers) == N_HUMAN_ANSWERS and answers.count(truth.answer) >= 4
        assert line["question_type"] == truth.question_type
        assert line["answer_type"] == truth.answer_type
        assert line["answer_type"] in ("other", "yes/no")
        if line["question"] == SIZE_QUESTIONS["large"]:
            assert truth.answer == ("yes" if record["size"] == "large" else "no")
        if line["question"] == "what color is the shape?":
            assert truth.answer == record["color"]
    assert set(per_image) == set(records)
    assert set(per_image.values()) <= {2, 3}
    assert any(len(set(line["answers"])) > 1 for line in lines)  # some human variation


# --- tokenizer and label construction ---


def test_tokenizer_round_trips_captions_and_questions(tiny_bench: Path) -> None:
    tokenizer = build_tokenizer(tokenizer_words())
    texts = [c for r in load_manifest(tiny_bench / "train.jsonl") for c in r["captions"]]
    texts += [q.question + " " + q.answer
              for r in load_manifest(tiny_bench / "test.jsonl") for q in all_questions(r)]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert set(question_words()) <= set(tokenizer_words())


def test_decoder_example_masks_the_prompt() -> None:
    bos, eos = 2, 3
    inputs, labels = decoder_example([10, 11, 12], [20, 21], bos, eos)
    assert inputs == [bos, 10, 11, 12, 20, 21]
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 20, 21, eos]
    inputs, labels = decoder_example([], [30, 31], bos, eos)  # a caption: loss everywhere
    assert inputs == [bos, 30, 31] and labels == [30, 31, eos]


def test_encoded_questions_train_on_answers_only(tiny_bench: Path) -> None:
    tokenizer = build_tokenizer(tokenizer_words())
    data = encode_split(tiny_bench, "test", tokenizer, build_image_processor(TINY_SPEC))
    record = load_manifest(tiny_bench / "test.jsonl")[0]
    for j, question in enumerate(all_questions(record)):
        labels = data.labels[0, data.n_captions + j].tolist()
        asked = tokenizer(question.question, add_special_tokens=False)["input_ids"]
        answer = tokenizer(question.answer, add_special_tokens=False)["input_ids"]
        assert labels[: len(asked)] == [IGNORE_INDEX] * len(asked)
        assert [t for t in labels if t != IGNORE_INDEX] == [*answer, tokenizer.eos_token_id]
        inputs = data.inputs[0, data.n_captions + j, : len(asked) + 1].tolist()
        assert inputs == [tokenizer.bos_token_id, *asked]  # the prompt the adapter feeds
    caption = data.labels[0, 0].tolist()
    assert caption[0] != IGNORE_INDEX


def test_sequence_loss_ignores_masked_positions() -> None:
    import torch

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 3], [1, 2, 3, IGNORE_INDEX]])
    changed = logits.clone()
    changed[0, :2] += 100.0 * torch.randn(2, 7)
    changed[1, 3] -= 50.0
    assert torch.allclose(sequence_loss(logits, labels), sequence_loss(changed, labels))


# --- training and loading through the adapters ---


def test_training_reduces_the_loss(trained) -> None:
    losses = trained.losses
    assert len(losses) == STEPS
    assert sum(losses[-5:]) / 5 < 0.8 * (sum(losses[:5]) / 5)
    assert (trained.model_dir / "model.safetensors").is_file()


def test_training_is_deterministic(trained, tiny_bench: Path, tmp_path: Path) -> None:
    again = train_demo_captioner(tiny_bench, tmp_path / "again", steps=STEPS, seed=0, log=None,
                                 spec=TINY_SPEC, cfg=TINY_CFG)
    assert again.losses == trained.losses


def test_loads_through_captioner_and_vqa_adapters(trained, tiny_bench: Path) -> None:
    records = load_manifest(tiny_bench / "test.jsonl")
    paths = [str(tiny_bench / r["image"]) for r in records[:4]]
    path = str(trained.model_dir)
    captions = load_adapter(ModelConfig(kind="captioner", path=path, device="cpu",
                                        batch_size=3)).generate(paths)
    assert captions.failures == {} and all(isinstance(t, str) for t in captions.texts)
    questions = ["what color is the shape?", "is the shape large?", "what shape is it?",
                 "where is the shape?"]
    answers = load_adapter(ModelConfig(kind="vqa", path=path, device="cpu")).answer(
        paths, questions)
    assert answers.failures == {} and all(isinstance(t, str) for t in answers.texts)
    for question, answer in zip(questions, answers.texts, strict=True):
        assert not answer.startswith(question)  # the echoed question is stripped


def test_evaluate_reports_caption_and_vqa_metrics(trained, tiny_bench: Path) -> None:
    metrics = evaluate_demo_captioner(trained.model_dir, tiny_bench, batch_size=4)
    for key in ("bleu_4", "cider", "bleu_4_shuffled", "vqa_accuracy",
                "vqa_accuracy.answer_type.other", "vqa_accuracy_prior"):
        assert 0.0 <= metrics[key] < 10.0, key
    assert metrics["n_images"] == 8
