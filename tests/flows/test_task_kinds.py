"""End-to-end runs of the other task kinds through the evaluate flow (tiny random models)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config import build_config
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e


def base_config(tmp_path: Path, **fields) -> dict:
    return {
        "review": {"size": 3},
        "report": {"destination": str(tmp_path / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "k"},
        "work_dir": str(tmp_path / "work"),
        **fields,
    }


def test_zero_shot_classification_flow(prefect_harness, tmp_path: Path, tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=8)
    config = build_config(base_config(
        tmp_path, task="zero_shot_classification",
        model={"path": str(tiny_clip_dir)},
        dataset={"path": str(manifest), "columns": {"captions": None}},
        zero_shot={"templates": ["a {} square", "a picture of a {} square"]},
    ))
    result = evaluate(config)
    assert {"accuracy", "macro_f1", "weighted_f1", "recall.red"} <= set(result["metrics"])
    report = Path(result["report"])
    matrix = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert sorted(matrix.index) == ["blue", "green", "red", "yellow"]
    assert int(matrix.to_numpy().sum()) == 8
    per_sample = pd.read_parquet(report / "per_sample.parquet")
    assert (per_sample["correct"] == (per_sample["prediction"] == per_sample["label"])).all()
    run = MlflowClient(config.tracking.tracking_uri).get_run(result["mlflow_run_id"])
    assert run.data.metrics["accuracy"] == pytest.approx(per_sample["correct"].mean())


def test_captioning_flow(prefect_harness, tmp_path: Path, tiny_captioner_dir: Path,
                         tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=6)
    config = build_config(base_config(
        tmp_path, task="captioning",
        model={"kind": "captioner", "path": str(tiny_captioner_dir),
               "generation": {"max_new_tokens": 5}},
        dataset={"path": str(manifest)},
        metrics=["bleu", "rouge_l", "cider", "clip_score"],
        metric_options={"clip_score": {"model": str(tiny_clip_dir)}},
    ))
    result = evaluate(config)
    assert {"bleu_4", "rouge_l", "cider", "clip_score", "ref_clip_score"} <= set(
        result["metrics"])
    report = Path(result["report"])
    per_sample = pd.read_parquet(report / "per_sample.parquet")
    assert per_sample["prediction"].map(lambda p: isinstance(p, str)).all()
    assert per_sample["cider"].notna().all()
    html = (report / "report.html").read_text()
    assert "prediction" in html and "data:image/jpeg" in html
    again = evaluate(config)
    assert again["inference_cache"] == "hit" and again["metrics"] == result["metrics"]
    summary = json.loads((report / "report.json").read_text())
    assert summary["task"] == "captioning" and summary["counts"]["images_scored"] == 6


def test_vqa_flow(prefect_harness, tmp_path: Path, tiny_captioner_dir: Path):
    from flows.evaluate import evaluate
    from tasks.metrics.vqa import question_accuracy

    root = tmp_path / "ds"
    write_dataset(root, n=4)
    rows = []
    for index, color in enumerate(["red", "green", "blue", "yellow"]):
        rows.append({"id": f"q{index}", "image": f"images/{index:03d}.png",
                     "question": "what color is the square", "answers": [color] * 9 + ["big"],
                     "question_type": "what color", "answer_type": "other"})
    rows.append({"id": "q4", "image": "images/000.png", "question": "is it a square",
                 "answers": ["yes"] * 10, "question_type": "is it", "answer_type": "yes/no"})
    manifest = root / "vqa.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = build_config(base_config(
        tmp_path, task="vqa",
        model={"kind": "vqa", "path": str(tiny_captioner_dir),
               "generation": {"max_new_tokens": 3}},
        dataset={"path": str(manifest), "columns": {"captions": "answers", "label": None}},
    ))
    result = evaluate(config)
    per_sample = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    assert len(per_sample) == 5 and (per_sample["status"] == "scored").all()
    expected = [question_accuracy(p, list(a)) for p, a in
                zip(per_sample["prediction"], per_sample["captions"], strict=True)]
    assert per_sample["vqa_accuracy"].tolist() == pytest.approx(expected)
    assert result["metrics"]["vqa_accuracy"] == pytest.approx(sum(expected) / 5)
    assert "vqa_accuracy.answer_type.yes_no" in result["metrics"]
