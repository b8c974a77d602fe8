"""Evaluation of a saved demo captioner through the real ``captioner`` and ``vqa`` adapters."""

from __future__ import annotations

import random
from pathlib import Path

from tasks.demo.benchmark import load_manifest
from tasks.demo.captioner.training import Log
from tasks.demo.derived import vqa_records


def evaluate_demo_captioner(model_dir: Path, dataset_root: Path, *, split: str = "test",
                            seed: int = 0, batch_size: int = 128,
                            log: Log | None = None) -> dict[str, float]:
    """Caption and VQA metrics of a saved captioner, evaluated like ``bifocal`` does.

    Loads ``model_dir`` through the ``captioner`` and ``vqa`` adapters. Baselines:
    ``*_shuffled`` scores each image with another image's generated caption, and
    ``vqa_accuracy_prior`` answers every question with its most frequent answer in the split
    (a blind guess that knows the answer distribution). ``log`` gets a few examples.
    """
    from collections import Counter

    from tasks.config import ModelConfig
    from tasks.metrics import get_metric
    from tasks.metrics.captioning import CaptionInputs
    from tasks.metrics.vqa import VQAInputs
    from tasks.models import load_adapter

    root = Path(dataset_root)
    records = load_manifest(root / f"{split}.jsonl")

    def adapter(kind: str):
        return load_adapter(ModelConfig(kind=kind, path=str(model_dir), device="cpu",
                                        batch_size=batch_size))

    paths = [str(root / r["image"]) for r in records]
    captions = adapter("captioner").generate(paths).texts
    ids, refs = [r["id"] for r in records], [r["captions"] for r in records]
    shuffled = captions[1:] + captions[:1]
    results: dict[str, float] = {}
    for name, predictions in (("", captions), ("_shuffled", shuffled)):
        inputs = CaptionInputs(ids, [p or "" for p in predictions], refs)
        results[f"bleu_4{name}"] = get_metric("bleu")(inputs).corpus["bleu_4"]
        results[f"cider{name}"] = get_metric("cider")(inputs).corpus["cider"]

    lines = vqa_records(records, split, seed)
    answers = adapter("vqa").answer([str(root / q["image"]) for q in lines],
                                    [q["question"] for q in lines]).texts
    metric = get_metric("vqa_accuracy")
    vqa = metric(VQAInputs([q["id"] for q in lines], [a or "" for a in answers],
                           [q["answers"] for q in lines], [q["question_type"] for q in lines],
                           [q["answer_type"] for q in lines]))
    results.update(vqa.corpus)
    per_question = vqa.per_sample["vqa_accuracy"]
    for question in sorted({q["question"] for q in lines}):
        rows = [i for i, q in enumerate(lines) if q["question"] == question]
        results[f"vqa_accuracy.question.{question}"] = float(per_question[rows].mean())
    counts: dict[str, Counter] = {}
    for q in lines:
        truth = Counter(q["answers"]).most_common(1)[0][0]  # the exact answer (>= 7 of 10)
        counts.setdefault(q["question"], Counter())[truth] += 1
    prior = {question: c.most_common(1)[0][0] for question, c in counts.items()}
    blind = metric(VQAInputs([q["id"] for q in lines], [prior[q["question"]] for q in lines],
                             [q["answers"] for q in lines]))
    results["vqa_accuracy_prior"] = blind.corpus["vqa_accuracy"]
    results["n_images"], results["n_questions"] = float(len(records)), float(len(lines))
    if log is not None:
        _log_examples(log, captions, refs, lines, answers)
    return results


def _log_examples(log: Log, captions: list, refs: list, lines: list, answers: list,
                  k: int = 4) -> None:
    rng = random.Random(0)
    for i in rng.sample(range(len(captions)), min(k, len(captions))):
        log(f"  caption: {captions[i]!r}  (a reference: {refs[i][0]!r})")
    for i in rng.sample(range(len(lines)), min(k, len(lines))):
        log(f"  {lines[i]['question']} -> {answers[i]!r}  (answer: {lines[i]['answers'][0]!r})")
