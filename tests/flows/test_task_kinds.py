"""End-to-end runs of the other task kinds through the evaluate flow (tiny random models)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e


# metrics whose value is a setting, not an estimate over items
NO_INTERVAL = {"threshold"}


def assert_intervals(result: dict, allowed_missing: set[str] = frozenset()) -> None:
    """Every metric of the run has a bootstrap interval around its value."""
    metrics = result["metrics"]
    values = {k for k in metrics if not k.endswith(("_ci_low", "_ci_high"))}
    missing = {k for k in values - NO_INTERVAL - allowed_missing
               if f"{k}_ci_low" not in metrics}
    assert not missing, f"no interval for {sorted(missing)}"
    for key in values - NO_INTERVAL - missing - allowed_missing:
        assert metrics[f"{key}_ci_low"] <= metrics[key] + 1e-12 <= metrics[f"{key}_ci_high"] \
            + 2e-12, key


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
    assert_intervals(result)
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
    assert_intervals(result)
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
    single = {"vqa_accuracy.answer_type.yes_no", "vqa_accuracy.question_type.is_it"}
    assert_intervals(result, allowed_missing=single)  # one question each: no interval
    assert any("no confidence interval" in w and "yes_no" in w for w in result["warnings"])
    per_sample = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    assert len(per_sample) == 5 and (per_sample["status"] == "scored").all()
    expected = [question_accuracy(p, list(a)) for p, a in
                zip(per_sample["prediction"], per_sample["captions"], strict=True)]
    assert per_sample["vqa_accuracy"].tolist() == pytest.approx(expected)
    assert result["metrics"]["vqa_accuracy"] == pytest.approx(sum(expected) / 5)
    assert "vqa_accuracy.answer_type.yes_no" in result["metrics"]


@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_matching_flow(prefect_harness, tmp_path: Path, tiny_clip_dir: Path, negatives: str):
    from flows.evaluate import evaluate
    from tasks.kinds.matching.score import calibration_split

    manifest = write_dataset(tmp_path / "ds", n=10)
    config = build_config(base_config(
        tmp_path, task="matching", model={"path": str(tiny_clip_dir)},
        dataset={"path": str(manifest)},
        matching={"negatives": negatives, "negatives_per_positive": 1,
                  "calibration_fraction": 0.3},
    ))
    result = evaluate(config)
    assert_intervals(result)
    table = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    assert len(table) == 40 and table["label"].sum() == 20  # 2 captions + 2 negatives each
    negative = table[table["label"] == 0]
    assert (negative["pair_kind"] == negatives).all()
    for row in negative.itertuples():  # a negative is never one of the image's own captions
        assert row.text not in list(row.captions)
    held = calibration_split(table["item_id"], 0.3, config.seed)
    assert (table["status"][held] == "calibration").all() and held.sum() == 12
    scored = table[table["status"] == "scored"]
    threshold = result["metrics"]["threshold"]
    assert result["metrics"]["accuracy"] == pytest.approx(
        ((scored["score"] >= threshold).astype(int) == scored["label"]).mean())
    assert 0 <= result["metrics"]["auroc"] <= 1


def test_matching_with_dataset_pairs_and_given_threshold(prefect_harness, tmp_path: Path,
                                                         tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    root = tmp_path / "ds"
    write_dataset(root, n=4)
    rows = [{"id": f"p{i}", "image": f"images/{i % 4:03d}.png", "captions": [f"text {i}"],
             "match": i % 2} for i in range(8)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = build_config(base_config(
        tmp_path, task="matching", model={"path": str(tiny_clip_dir)},
        dataset={"path": str(root / "pairs.jsonl"), "columns": {"label": None}},
        matching={"negatives": "dataset", "threshold": 0.0},
    ))
    result = evaluate(config)
    assert_intervals(result)
    table = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    assert table["label"].tolist() == [0, 1] * 4 and (table["status"] == "scored").all()
    assert result["metrics"]["threshold"] == 0.0


def test_matching_with_a_custom_fusion_model(prefect_harness, tmp_path: Path):
    """The seed article's image + BERT cross-attention classifier as a torch_module."""
    import torch
    from safetensors.torch import save_file

    from flows.evaluate import evaluate
    from tests.helpers import WORDS, word_tokenizer
    from tests.models.fusion_example import FusionClassifier

    tokenizer = word_tokenizer(WORDS)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    torch.manual_seed(0)
    model = FusionClassifier(vocab_size=len(tokenizer))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              tmp_path / "fusion.safetensors")
    manifest = write_dataset(tmp_path / "ds", n=6)
    config = build_config(base_config(
        tmp_path, task="matching",
        model={"kind": "torch_module", "path": str(tmp_path / "fusion.safetensors"),
               "torch_module": {"module": "tests.models.fusion_example:FusionClassifier",
                                "init_kwargs": {"vocab_size": len(tokenizer)},
                                "tokenizer": str(tmp_path / "tokenizer"), "image_size": 32,
                                "mean": "dataset", "std": "dataset"}},
        dataset={"path": str(manifest)},
        matching={"negatives": "random", "threshold": 0.5},
    ))
    result = evaluate(config)
    assert_intervals(result)
    table = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    assert len(table) == 24 and table["score"].between(0, 1).all()
    assert (table["status"] == "scored").all()
    again = evaluate(config)
    assert again["inference_cache"] == "hit"
    # the dataset statistics and the resolved device/dtype are logged, also from the cache
    from tasks.models.torch_module import compute_dataset_stats

    mean, std = compute_dataset_stats(sorted({str(p) for p in table["image_path"]}), 32,
                                      "center_crop")
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri)
    for run_id in (result["mlflow_run_id"], again["mlflow_run_id"]):
        params = client.get_run(run_id).data.params
        assert params["resolved.device"] == "cpu" and params["resolved.dtype"] == "float32"
        assert params["resolved.normalization.mean_source"] == "dataset"
        assert json.loads(params["resolved.normalization.mean"]) == pytest.approx(mean)
        assert json.loads(params["resolved.normalization.std"]) == pytest.approx(std)
