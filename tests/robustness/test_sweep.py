"""The sweep's parts without Prefect: corrupted images written once (atomically, by content,
undecodable ones left to fail with their reason), the text side of every task kind, the
summaries against their definitions, and the plain sweep on captioning, VQA and matching."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.config_io import build_config
from tasks.io import decode_images
from tasks.kinds.base import Scores
from tasks.robustness.corruptions import corrupt
from tasks.robustness.perturbations import perturb_text
from tasks.robustness.sweep import (
    Outcome,
    corruption_summary,
    error_of,
    overall_summary,
    summarize,
)
from tasks.robustness.variants import (
    corrupted_items,
    image_store,
    perturbed_inputs,
    plan_variants,
    text_skip_reason,
)
from tasks.stats.estimates import Estimate
from tests.helpers import write_dataset

KEY = re.compile(r"^[/\w.\- ]+$")


def items_of(root: Path, n: int = 3) -> pd.DataFrame:
    write_dataset(root, n=n)
    paths = sorted((root / "images").glob("*.png"))
    return pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n)], "image_path": [str(p) for p in paths],
        "image_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths],
        "captions": [["a red square", "a picture of a red square"]] * n})


def test_corrupted_images_are_written_once_by_content_and_reused(tmp_path: Path):
    items = items_of(tmp_path / "ds")
    items = pd.concat([items, items.iloc[[0]].assign(item_id="dup")], ignore_index=True)
    store = image_store(tmp_path / "cache", "gaussian_noise", 3, seed=1)
    out, counts = corrupted_items(items, "gaussian_noise", 3, 1, store, workers=2)
    assert (counts.written, counts.reused, counts.undecodable) == (3, 0, 0)  # dup: once
    for row, original in zip(out.itertuples(), items.itertuples(), strict=True):
        path = Path(row.image_path)
        assert path.is_relative_to(store) and path.name == f"{original.image_sha256}.png"
        assert row.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        with Image.open(original.image_path) as image:
            expected = corrupt(image.convert("RGB"), "gaussian_noise", 3, seed=1,
                               image_sha256=original.image_sha256)
        assert np.array_equal(np.asarray(Image.open(path)), expected)
    assert not [p for p in store.rglob(".*")]  # no staging files left
    again, counts = corrupted_items(items, "gaussian_noise", 3, 1, store, workers=1)
    assert (counts.written, counts.reused) == (0, 3) and again.equals(out)
    other = image_store(tmp_path / "cache", "gaussian_noise", 4, seed=1)
    assert other != store and image_store(tmp_path / "cache", "gaussian_noise", 3, 2) != store


def test_an_undecodable_image_keeps_its_path_digest_and_failure_reason(tmp_path: Path):
    items = items_of(tmp_path / "ds", n=2)
    broken = Path(items.loc[1, "image_path"])
    broken.write_bytes(broken.read_bytes()[:60])  # header only: opens, does not decode
    store = image_store(tmp_path / "cache", "jpeg", 2, seed=0)
    out, counts = corrupted_items(items, "jpeg", 2, 0, store, workers=1)
    assert counts.undecodable == 1 and counts.written == 1
    assert out.loc[1, "image_path"] == str(broken)
    assert out.loc[1, "image_sha256"] == items.loc[1, "image_sha256"]
    _, _, before = decode_images([str(broken)])
    _, _, after = decode_images([out.loc[1, "image_path"]])
    assert before == after and "decode failed" in before[0]


def config_for(task: str, tmp_path: Path, **fields) -> object:
    return build_config({"task": task, "model": {"path": str(tmp_path)},
                         "dataset": {"path": str(tmp_path / "data.jsonl")},
                         "robustness": {"seed": 5}, **fields})


def test_text_sides_of_every_kind(tmp_path: Path):
    from tasks.config import TextPerturbation

    items = items_of(tmp_path / "ds", n=2).assign(question=["what colour is it?", None])
    swap = TextPerturbation(name="char_swap", rate=0.5)
    expected = [[perturb_text(c, "char_swap", 0.5, seed=5) for c in row]
                for row in items["captions"]]
    for task in ("retrieval", "matching"):
        out, config = perturbed_inputs(items, config_for(task, tmp_path), swap)
        assert [list(c) for c in out["captions"]] == expected and out is not items
    out, _ = perturbed_inputs(items, config_for("vqa", tmp_path, model={
        "kind": "vqa", "path": str(tmp_path)}), swap)
    assert out["question"].iloc[0] == perturb_text("what colour is it?", "char_swap", 0.5,
                                                   seed=5)
    assert pd.isna(out["question"].iloc[1])  # a missing question stays missing
    assert out["captions"].equals(items["captions"])  # the answers stay
    config = config_for("zero_shot_classification", tmp_path,
                        zero_shot={"templates": ["a photo of a {}.", "{} in the snow"]})
    out, variant = perturbed_inputs(items, config, swap)
    assert out is items and variant.zero_shot.templates == [
        perturb_text(t, "char_swap", 0.5, seed=5, protect="{}") for t in
        config.zero_shot.templates]
    assert config.zero_shot.templates == ["a photo of a {}.", "{} in the snow"]
    assert "references" in (text_skip_reason("captioning") or "")
    assert text_skip_reason("retrieval") is None


def test_variant_plan_labels_are_unique_and_mlflow_safe(tmp_path: Path):
    config = config_for("retrieval", tmp_path, robustness={
        "corruptions": ["fog", "jpeg", "fog"], "severities": [5, 1],
        "text": [{"name": "char_swap", "rate": 0.1}, {"name": "char_swap", "rate": 0.3},
                 {"name": "word_shuffle", "window": 2}, {"name": "word_shuffle", "window": 4},
                 {"name": "lowercase"}, {"name": "lowercase"}]})
    labels = [v.label for v in plan_variants(config.robustness)]
    assert labels == ["fog.1", "fog.5", "jpeg.1", "jpeg.5", "text.char_swap-0.1",
                      "text.char_swap-0.3", "text.word_shuffle-0.1-w2",
                      "text.word_shuffle-0.1-w4", "text.lowercase"]
    assert all(KEY.match(label) for label in labels)


def scores(metrics: dict[str, float], higher: dict[str, bool] | None = None) -> Scores:
    estimates = {k: Estimate("mean", (k,)) for k in metrics if not k.endswith("_ci_low")
                 and not k.endswith("_ci_high") and k != "threshold"}
    return Scores(metrics=metrics, higher_is_better=higher or {k: True for k in metrics},
                  per_sample_path="", review_column="status", review_worst_is_high=False,
                  estimates=estimates)


def test_summaries_follow_their_definitions():
    clean = scores({"accuracy": 0.8, "cider": 1.5, "mean_rank": 2.0, "threshold": 0.3},
                   {"accuracy": True, "cider": True, "mean_rank": False, "threshold": True})
    values = {"accuracy": [0.6, 0.4], "cider": [1.2, 0.6], "mean_rank": [3.0, 5.0]}
    out = corruption_summary(values, clean)
    assert out["mean"] == pytest.approx({"accuracy": 0.5, "cider": 0.9, "mean_rank": 4.0})
    assert out["relative_drop"] == pytest.approx(
        {"accuracy": (0.8 - 0.5) / 0.8, "cider": (1.5 - 0.9) / 1.5, "mean_rank": 1.0})
    # CE: mean error over severities / clean error; no error for an unbounded metric
    assert out["ce"] == pytest.approx({"accuracy": ((0.4 + 0.6) / 2) / 0.2, "mean_rank": 2.0})
    assert error_of("cider", 0.5, True) is None and error_of("accuracy", 1.3, True) is None
    perfect = scores({"accuracy": 1.0})
    assert corruption_summary({"accuracy": [0.9]}, perfect)["ce"] == {}  # clean error 0
    two = {"a": {"mean": {"accuracy": 0.5}, "ce": {"accuracy": 2.5}},
           "b": {"mean": {"accuracy": 0.7}, "ce": {"accuracy": 1.5}}}
    overall = overall_summary(two, clean)
    assert overall["mean"]["accuracy"] == pytest.approx(0.6)
    assert overall["ce"]["accuracy"] == pytest.approx(2.0)
    assert overall["relative_drop"]["accuracy"] == pytest.approx(0.25)


def test_summarize_keys_and_section(tmp_path: Path):
    config = config_for("zero_shot_classification", tmp_path, robustness={
        "corruptions": ["jpeg"], "severities": [1, 3], "text": [{"name": "uppercase"}]})
    clean = scores({"accuracy": 0.5, "accuracy_ci_low": 0.2, "accuracy_ci_high": 0.8,
                    "recall.yes/no": 0.5, "threshold": 0.2})
    variants = plan_variants(config.robustness)
    results = [{"accuracy": 0.4, "accuracy_ci_low": 0.1, "accuracy_ci_high": 0.7,
                "recall.yes/no": 0.25, "threshold": 0.1},
               {"accuracy": 0.2, "recall.yes/no": math.nan, "threshold": 0.1},
               {"accuracy": 0.6, "recall.yes/no": 0.5, "threshold": 0.3}]
    outcomes = [Outcome(v, scores(r), "miss", None, 0.1) for v, r in zip(variants, results,
                                                                            strict=True)]
    result = summarize(outcomes, clean, config.robustness, "accuracy")
    metrics = result.metrics
    assert metrics["robust.jpeg.1.accuracy"] == 0.4
    assert metrics["robust.jpeg.1.accuracy_ci_low"] == 0.1
    assert "robust.jpeg.3.recall.yes/no" not in metrics  # NaN is not logged
    assert metrics["robust.jpeg.mean.accuracy"] == pytest.approx(0.3)
    assert metrics["robust.jpeg.relative_drop.accuracy"] == pytest.approx(0.4)
    assert metrics["robust.jpeg.ce.accuracy"] == pytest.approx(0.7 / 0.5)
    assert "robust.jpeg.mean.recall.yes/no" not in metrics  # not defined at every severity
    assert "robust.jpeg.mean.threshold" not in metrics  # a setting, not an estimate
    assert metrics["robust.all.ce.accuracy"] == pytest.approx(1.4)
    assert metrics["robust.text.uppercase.accuracy"] == 0.6
    assert metrics["robust.text.uppercase.relative_drop.accuracy"] == pytest.approx(-0.2)
    assert all(KEY.match(k) for k in metrics)
    section = result.section
    assert section["corruptions"]["jpeg"]["severities"]["3"]["accuracy"] == 0.2
    assert section["text"]["uppercase"]["perturbation"]["name"] == "uppercase"
    assert [v["variant"] for v in section["variants"]] == ["jpeg.1", "jpeg.3", "text.uppercase"]
    json.dumps(section)  # report.json can hold it


# -- the plain sweep on the other kinds --------------------------------------------------------


def clean_run(config, tmp_path: Path):
    from tasks.steps import load_data, run_inference, score

    run_dir = tmp_path / "run"
    dataset = load_data.fn(config, run_dir)
    inference = run_inference.fn(dataset, config, tmp_path / "cache" / "inference")
    return dataset, inference, score.fn(dataset, inference, config, run_dir), run_dir


def vqa_manifest(root: Path) -> Path:
    write_dataset(root, n=4)
    rows = [{"id": f"q{i}", "image": f"images/{i:03d}.png", "question": "what color is it",
             "answers": [color] * 10} for i, color in enumerate(["red", "green", "blue",
                                                                  "yellow"])]
    (root / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "vqa.jsonl"


@pytest.mark.parametrize("task", ["captioning", "vqa", "matching"])
def test_plain_sweep_runs_for_the_other_kinds(tmp_path: Path, task: str, tiny_clip_dir: Path,
                                              tiny_captioner_dir: Path):
    from tasks.robustness.sweep import run_sweep

    fields: dict = {"robustness": {"corruptions": ["contrast"], "severities": [4],
                                   "text": [{"name": "word_shuffle", "rate": 1.0}]},
                    "statistics": {"bootstrap": 50}, "work_dir": str(tmp_path / "work")}
    if task == "matching":
        fields |= {"model": {"path": str(tiny_clip_dir)},
                   "dataset": {"path": str(write_dataset(tmp_path / "ds", n=4))}}
    elif task == "captioning":
        fields |= {"model": {"kind": "captioner", "path": str(tiny_captioner_dir),
                             "generation": {"max_new_tokens": 3}},
                   "dataset": {"path": str(write_dataset(tmp_path / "ds", n=4))},
                   "metrics": ["bleu", "rouge_l"]}
    else:
        fields |= {"model": {"kind": "vqa", "path": str(tiny_captioner_dir),
                             "generation": {"max_new_tokens": 3}},
                   "dataset": {"path": str(vqa_manifest(tmp_path / "ds")),
                               "columns": {"captions": "answers", "label": None}}}
    config = build_config({"task": task, **fields})
    dataset, inference, clean, run_dir = clean_run(config, tmp_path)
    result = run_sweep(dataset, inference, clean, config, run_dir, tmp_path / "cache")
    headline = result.section["headline"]
    assert f"robust.contrast.4.{headline}" in result.metrics
    assert f"robust.contrast.mean.{headline}" in result.metrics
    assert result.section["model_loads"] == 1
    variant_dir = run_dir / "robustness"
    if task == "captioning":
        assert any("text perturbations skipped" in w for w in result.warnings)
        assert [v["variant"] for v in result.section["variants"]] == ["contrast.4"]
        return
    assert f"robust.text.word_shuffle.{headline}" in result.metrics
    if task == "vqa":
        questions = pd.read_parquet(variant_dir / "text.word_shuffle" / "data" /
                                    "items.parquet")["question"]
        assert questions.tolist() == [perturb_text("what color is it", "word_shuffle", 1.0,
                                                   seed=0)] * 4
    else:
        pairs = pd.read_parquet(variant_dir / "text.word_shuffle" / "data" / "pairs.parquet")
        clean_pairs = pd.read_parquet(run_dir / "data" / "pairs.parquet")
        assert pairs["text"].tolist() == [perturb_text(t, "word_shuffle", 1.0, seed=0)
                                          for t in clean_pairs["text"]]


def test_unknown_names_fail_the_config_check_before_anything_runs(tmp_path: Path):
    from tasks.config_io import ConfigError
    from tasks.plan import check_config

    config = config_for("retrieval", tmp_path, robustness={
        "corruptions": ["fog", "snow"], "text": [{"name": "emoji"}]})
    with pytest.raises(ConfigError) as error:
        check_config(config)
    text = str(error.value)
    assert "robustness.corruptions: unknown image corruption 'snow'" in text
    assert "robustness.text[0].name: unknown text perturbation 'emoji'" in text
    assert "fog" in text.split("snow")[1]  # the known names are listed


def test_adversarial_results_go_into_the_section_metrics_warnings_and_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The sweep's side of the adversarial entry point, with a stand-in module."""
    import sys
    import types
    from dataclasses import dataclass, field

    from tasks.robustness.sweep import RobustnessError, RobustnessResult, add_adversarial

    @dataclass
    class Result:
        metrics: dict
        per_sample: pd.DataFrame
        curve: list
        skipped: str | None = None
        warnings: list = field(default_factory=list)

    answers = {"value": Result({"adv.fgsm.eps_0.0039.accuracy": 0.25}, pd.DataFrame(
        {"item_id": ["a"], "attack": ["fgsm"], "correct": [False]}),
        [{"attack": "fgsm", "epsilon": 1 / 255, "metric": "accuracy", "value": 0.25}],
        warnings=["2 items left out"])}
    module = types.ModuleType("tasks.robustness.adversarial")
    module.adversarial_metrics = lambda dataset, config, run_dir: answers["value"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tasks.robustness.adversarial", module)
    config = config_for("zero_shot_classification", tmp_path,
                        robustness={"adversarial": {"epsilons": [1 / 255]}})
    result = RobustnessResult({}, {})
    add_adversarial(result, None, config, tmp_path)  # type: ignore[arg-type]
    assert result.metrics == {"adv.fgsm.eps_0.0039.accuracy": 0.25}
    assert result.section["adversarial"]["curve"][0]["value"] == 0.25
    assert result.warnings == ["robustness: adversarial: 2 items left out"]
    assert pd.read_parquet(result.tables["adversarial"])["attack"].tolist() == ["fgsm"]
    answers["value"] = Result({}, pd.DataFrame(), [], skipped="no gradients")
    result = RobustnessResult({}, {})
    add_adversarial(result, None, config, tmp_path)  # type: ignore[arg-type]
    assert result.warnings == ["robustness: adversarial attacks skipped: no gradients"]
    assert result.section["adversarial"]["skipped"] == "no gradients" and not result.tables
    monkeypatch.setitem(sys.modules, "tasks.robustness.adversarial", None)
    with pytest.raises(RobustnessError, match="no adversarial attacks"):
        add_adversarial(RobustnessResult({}, {}), None, config, tmp_path)  # type: ignore[arg-type]
