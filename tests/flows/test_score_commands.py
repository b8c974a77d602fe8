"""The `bifocal score captioning|vqa|classification` commands: one JSON document on stdout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score

from tasks.metrics.vqa import question_accuracy


def bifocal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "score", *args],
                          capture_output=True, text=True, timeout=300)


def write(path: Path, data) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data))
    return str(path)


def test_score_captioning_formats_and_unmatched_ids(tmp_path: Path):
    from pycocoevalcap.bleu.bleu import Bleu

    predictions = [{"image_id": 1, "caption": "a man riding a horse"},
                   {"image_id": 2, "caption": "two dogs play in the snow"},
                   {"image_id": 3, "caption": "a plate of food"},
                   {"image_id": 9, "caption": "no references for this one"}]
    references = {"annotations": [
        {"image_id": 1, "caption": "a man rides a brown horse"},
        {"image_id": 1, "caption": "a person on a horse"},
        {"image_id": 2, "caption": "dogs playing in snow"},
        {"image_id": 3, "caption": "a plate with food on a table"},
        {"image_id": 4, "caption": "nobody predicted this one"}]}
    result = bifocal("captioning", "--predictions", write(tmp_path / "p.json", predictions),
                     "--references", write(tmp_path / "r.json", references),
                     "--metrics", "bleu,rouge_l,cider")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document["per_sample"]) == {"1", "2", "3"}
    assert document["skipped"] == {"4": "no prediction",
                                   "9": "no reference/answer for this id"}
    # pycocoevalcap on already-lowercase, punctuation-free text (its tokenizer is a no-op here)
    gts = {"1": ["a man rides a brown horse", "a person on a horse"],
           "2": ["dogs playing in snow"], "3": ["a plate with food on a table"]}
    res = {"1": ["a man riding a horse"], "2": ["two dogs play in the snow"],
           "3": ["a plate of food"]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert document["metrics"]["bleu_4"] == pytest.approx(bleu[3], abs=1e-9)
    assert {"rouge_l", "cider"} <= set(document["metrics"])


def test_score_vqa_with_answer_objects(tmp_path: Path):
    answers = [{"question_id": 1, "answers": [{"answer": "Two"}] * 3 + [{"answer": "3"}] * 7,
                "question_type": "how many", "answer_type": "number"},
               {"question_id": 2, "answers": ["yes"] * 10, "answer_type": "yes/no",
                "question_type": "is the"}]
    predictions = {"1": "2", "2": "yes"}
    result = bifocal("vqa", "--predictions", write(tmp_path / "p.json", predictions),
                     "--answers", write(tmp_path / "a.jsonl", answers))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = question_accuracy("2", ["Two"] * 3 + ["3"] * 7)
    assert document["per_sample"]["1"]["vqa_accuracy"] == pytest.approx(expected)
    assert document["metrics"]["vqa_accuracy.answer_type.yes_no"] == 1.0


def test_score_classification_and_clear_errors(tmp_path: Path):
    labels = {str(i): ["cat", "dog", "bird"][i % 3] for i in range(12)}
    predictions = {str(i): ["cat", "dog", "bird"][(i * 2) % 3] for i in range(12)}
    result = bifocal("classification", "--predictions", write(tmp_path / "p.json", predictions),
                     "--labels", write(tmp_path / "l.json", labels))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(list(labels.values()), list(predictions.values())))
    (tmp_path / "bad.json").write_text("{not json")
    bad = bifocal("classification", "--predictions", str(tmp_path / "bad.json"),
                  "--labels", str(tmp_path / "l.json"))
    assert bad.returncode == 2 and "is not valid JSON" in bad.stderr and bad.stdout == ""
    disjoint = bifocal("classification", "--predictions", write(tmp_path / "x.json", {"a": "cat"}),
                       "--labels", str(tmp_path / "l.json"))
    assert disjoint.returncode == 2 and "no id has both" in disjoint.stderr
