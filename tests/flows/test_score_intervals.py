"""`bifocal score ... --bootstrap N`: the same <metric>_ci_low / _ci_high keys as a run, equal
to scipy.stats.bootstrap on the same resamples (same seed and batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import bootstrap
from sklearn.metrics import f1_score

from flows.cli import main
from tasks.stats.resampling import chunk_rows


def run_cli(capsys, *args: str) -> dict:
    assert main(["score", *args]) == 0
    return json.loads(capsys.readouterr().out)


def scipy_interval(statistic, data: tuple, n: int, resamples: int, vectorized: bool
                   ) -> tuple[float, float]:
    result = bootstrap(data, statistic, n_resamples=resamples, method="percentile",
                       confidence_level=0.95, vectorized=vectorized, batch=chunk_rows(n),
                       rng=np.random.default_rng(7), paired=True)
    return result.confidence_interval.low, result.confidence_interval.high


@pytest.fixture
def classification(tmp_path: Path) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "bird"]
    labels = [classes[i] for i in rng.integers(0, 3, 120)]
    predictions = [label if rng.random() < 0.6 else classes[rng.integers(0, 3)]
                   for label in labels]
    ids = [f"q{i}" for i in range(120)]
    (tmp_path / "p.json").write_text(json.dumps(dict(zip(ids, predictions, strict=True))))
    (tmp_path / "l.json").write_text(json.dumps(dict(zip(ids, labels, strict=True))))
    return classes, labels, predictions


def test_classification_intervals_equal_scipy(capsys, tmp_path: Path, classification):
    classes, labels, predictions = classification
    document = run_cli(capsys, "classification", "--predictions", str(tmp_path / "p.json"),
                       "--labels", str(tmp_path / "l.json"), "--bootstrap", "400",
                       "--seed", "7")
    metrics = document["metrics"]
    correct = (np.array(labels) == np.array(predictions)).astype(float)
    low, high = scipy_interval(np.mean, (correct,), len(correct), 400, True)
    assert metrics["accuracy_ci_low"] == pytest.approx(low, abs=1e-12)
    assert metrics["accuracy_ci_high"] == pytest.approx(high, abs=1e-12)

    truth, guess = np.array(labels), np.array(predictions)

    def macro_f1(index):
        index = index.astype(int)
        return f1_score(truth[index], guess[index], labels=classes, average="macro",
                        zero_division=0)

    low, high = scipy_interval(macro_f1, (np.arange(len(truth)),), len(truth), 400, False)
    assert metrics["macro_f1_ci_low"] == pytest.approx(low, abs=1e-12)
    assert metrics["macro_f1_ci_high"] == pytest.approx(high, abs=1e-12)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_recall", "recall.cat"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]


def test_retrieval_intervals_resample_images(capsys, tmp_path: Path):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(60, 8)).astype(np.float32)
    owner = np.repeat(np.arange(60), 2)
    texts = (images[owner] + rng.normal(scale=1.5, size=(120, 8))).astype(np.float32)
    for name, array in (("i", images), ("t", texts), ("o", owner)):
        np.save(tmp_path / f"{name}.npy", array)
    document = run_cli(capsys, "retrieval", "--image-embeddings", str(tmp_path / "i.npy"),
                       "--text-embeddings", str(tmp_path / "t.npy"), "--text-to-image",
                       str(tmp_path / "o.npy"), "--bootstrap", "300", "--seed", "7",
                       "--per-sample")
    metrics, per_sample = document["metrics"], document["per_sample"]
    t2i = np.array(per_sample["t2i_rank"])

    def t2i_recall(index):  # images are the unit: all captions of a drawn image count
        index = index.astype(int)
        hits = np.concatenate([t2i[owner == i] <= 5 for i in index])
        return hits.mean()

    low, high = scipy_interval(t2i_recall, (np.arange(60),), 60, 300, False)
    assert metrics["t2i_recall_at_5_ci_low"] == pytest.approx(low, abs=1e-12)
    assert metrics["t2i_recall_at_5_ci_high"] == pytest.approx(high, abs=1e-12)
    i2t = np.array(per_sample["i2t_rank"], dtype=float)
    low, high = scipy_interval(np.median, (i2t,), 60, 300, True)
    assert metrics["i2t_median_rank_ci_low"] == pytest.approx(low)
    assert metrics["i2t_median_rank_ci_high"] == pytest.approx(high)
    assert "t2i_median_rank_ci_low" in metrics and "bleu.stat.0" not in per_sample


def test_no_intervals_without_bootstrap(capsys, tmp_path: Path, classification):
    document = run_cli(capsys, "classification", "--predictions", str(tmp_path / "p.json"),
                       "--labels", str(tmp_path / "l.json"))
    assert not any(key.endswith("_ci_low") for key in document["metrics"])
