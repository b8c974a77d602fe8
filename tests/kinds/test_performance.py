"""Inference performance: what Inference measures per entry, what a cache hit carries, and the
numbers of a real evaluate run (report.json, report.html, MLflow)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import EvalConfig
from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.kinds.sharded import Inference, ShardOutput
from tasks.models.base import ADAPTERS, Adapter
from tasks.models.batching import Prepared, run_batches
from tasks.models.contracts import ImageEmbeddings, ImageTextEncoder
from tests.helpers import write_dataset

LOAD_S = 0.05
BATCH_S = 0.005


class SleepyEncoder(Adapter):
    """Loads in LOAD_S; embeds images through the shared batch loop, BATCH_S per batch."""

    def __init__(self, config) -> None:
        self.config, self.device = config, "cpu"
        time.sleep(LOAD_S)

    @classmethod
    def fingerprint(cls, config, dataset_digest: str) -> str:
        return "sleepy-model"

    def describe(self) -> dict[str, str]:
        return {"device": "cpu", "dtype": "float32"}

    def encode_images(self, paths: Sequence[str], progress=None, workers: int = 2
                      ) -> ImageEmbeddings:
        def run(rows: list[int]) -> np.ndarray:
            time.sleep(BATCH_S)
            return np.array([[len(paths[r])] for r in rows], np.float32)

        results = run_batches(len(paths), self.config.batch_size,
                              lambda rows: Prepared(rows, list(range(len(rows)))), run,
                              workers=workers)
        return ImageEmbeddings(np.concatenate([out for _, out in results.outputs]), {})

    def encode_texts(self, texts, progress=None) -> np.ndarray:
        return np.ones((len(texts), 1), np.float32)

    def count_truncated(self, texts) -> int:
        return 0


ADAPTERS.add("sleepy_encoder", SleepyEncoder)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[DatasetRef, EvalConfig]:
    manifest = write_dataset(tmp_path / "ds", n=7)
    config = build_config({"model": {"kind": "sleepy_encoder", "path": "fake", "batch_size": 2},
                           "dataset": {"path": str(manifest)},
                           "inference": {"shard_size": 3}})
    return save_dataset(load_dataset(config.dataset), tmp_path / "run"), config


def embed(dataset: DatasetRef, config: EvalConfig, cache: Path) -> tuple[dict, object, float]:
    """Run the images through a fresh Inference: (performance, reference, wall seconds)."""
    run = Inference(dataset, config, cache, "v1")

    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        images = run.adapter(ImageTextEncoder).encode_images(list(shard["image_path"]))
        np.save(folder / "x.npy", images.vectors)
        return ShardOutput(images.failures)

    started = time.perf_counter()
    ref = run.shards(run.items, task="t", compute=compute,
                     key=lambda shard: list(shard["image_sha256"]))
    return run.performance(), ref, time.perf_counter() - started


def test_computed_shards_are_measured_and_keep_their_measurements(setup, tmp_path: Path):
    dataset, config = setup
    perf, ref, wall = embed(dataset, config, tmp_path / "cache")
    metrics = perf["metrics"]
    assert perf["status"] == "measured" and perf["entries"] == {"computed": 3, "cached": 0}
    assert "cached" not in perf
    # shards of 3, 3, 1 rows in batches of 2: 2 + 2 + 1 batches
    assert metrics["perf_items"] == 7 and metrics["perf_batches"] == 5
    assert metrics["perf_batch_items"] == 7
    assert metrics["perf_items_per_s"] * metrics["perf_compute_s"] == pytest.approx(7, rel=1e-3)
    assert metrics["perf_model_load_s"] >= LOAD_S
    assert metrics["perf_compute_s"] >= 5 * BATCH_S  # every batch inside, the load is not:
    assert metrics["perf_compute_s"] + metrics["perf_model_load_s"] <= wall
    assert BATCH_S * 1000 <= metrics["perf_batch_latency_p50_ms"] \
        <= metrics["perf_batch_latency_p95_ms"]
    assert metrics["perf_batch_latency_mean_ms"] * 5 / 1000 <= metrics["perf_compute_s"]
    assert metrics["perf_item_latency_mean_ms"] * 7 == pytest.approx(
        metrics["perf_batch_latency_mean_ms"] * 5, rel=1e-3)
    assert metrics["perf_peak_rss_mb"] >= metrics["perf_rss_start_mb"] > 0
    metas = [json.loads((Path(f) / "meta.json").read_text()) for f in ref.shard_folders]
    assert [m["performance"]["items"] for m in metas] == [3, 3, 1]
    assert [len(m["performance"]["batch_s"]) for m in metas] == [2, 2, 1]
    assert [m["performance"]["model_load_s"] is not None for m in metas] == [True, False, False]


def test_a_cache_hit_measures_nothing_and_carries_the_computing_run(setup, tmp_path: Path):
    dataset, config = setup
    first, ref, _ = embed(dataset, config, tmp_path / "cache")
    again, hit, _ = embed(dataset, config, tmp_path / "cache")
    assert hit.cache_hit and again["status"] == "not measured" and again["metrics"] == {}
    assert "cache hit" in again["note"] and again["entries"] == {"computed": 0, "cached": 3}
    cached = again["cached"]
    assert cached["entries"] == 3 and "not by this run" in cached["note"]
    timing = [k for k in first["metrics"] if "latency" in k or k in (
        "perf_items", "perf_batches", "perf_compute_s", "perf_items_per_s", "perf_model_load_s")]
    assert {k: cached["metrics"][k] for k in timing} == {k: first["metrics"][k] for k in timing}
    assert cached["metrics"]["perf_peak_rss_mb"] <= first["metrics"]["perf_peak_rss_mb"]

    shutil.rmtree(ref.shard_folders[2])  # the 1-row shard goes: recomputed, the rest cached
    partial, _, _ = embed(dataset, config, tmp_path / "cache")
    assert partial["status"] == "partial" and partial["entries"] == {"computed": 1, "cached": 2}
    assert partial["metrics"]["perf_items"] == 1 and partial["metrics"]["perf_batches"] == 1
    assert partial["metrics"]["perf_model_load_s"] >= LOAD_S
    assert partial["cached"]["metrics"]["perf_items"] == 6


@pytest.mark.e2e
def test_an_evaluation_records_performance(prefect_harness, tmp_path: Path,
                                           tiny_clip_dir: Path):
    from mlflow import MlflowClient

    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=8)
    config = build_config({
        "task": "zero_shot_classification", "model": {"path": str(tiny_clip_dir),
                                                      "batch_size": 3},
        "dataset": {"path": str(manifest), "columns": {"captions": None}},
        "zero_shot": {"templates": ["a {} square"]}, "review": {"size": 2},
        "report": {"destination": str(tmp_path / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "experiment": "perf"},
        "work_dir": str(tmp_path / "work")})
    result = evaluate(config)
    report = json.loads((Path(result["report"]) / "report.json").read_text())
    perf, timings = report["performance"], report["timings_s"]
    metrics = perf["metrics"]
    assert perf["status"] == "measured" and perf["device"] == "cpu"
    # 8 images in batches of 3 through the batch loop; the class prompts are an entry too
    assert metrics["perf_items"] == 8 and metrics["perf_batches"] >= math.ceil(8 / 3)
    assert perf["entries"] == {"computed": 2, "cached": 0}  # one shard + class embeddings
    assert metrics["perf_items_per_s"] * metrics["perf_compute_s"] == pytest.approx(8, rel=1e-3)
    assert metrics["perf_compute_s"] + metrics["perf_model_load_s"] <= timings["inference"]
    assert 0 < metrics["perf_batch_latency_p50_ms"] <= metrics["perf_batch_latency_p95_ms"]
    assert metrics["perf_item_latency_p50_ms"] <= metrics["perf_item_latency_p95_ms"]
    assert metrics["perf_peak_rss_mb"] >= metrics["perf_rss_start_mb"] > 0
    assert not any(k.startswith("perf_") for k in result["metrics"])  # not quality metrics
    assert not any(k.startswith("perf_") for k in report["estimates"])
    client = MlflowClient(config.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("perf_")}
    assert logged == pytest.approx(metrics) and run.data.tags["bifocal.performance"] == "measured"
    html = (Path(result["report"]) / "report.html").read_text()
    assert 'id="performance"' in html and 'data-perf="perf_items_per_s"' in html

    again = evaluate(config)
    assert again["inference_cache"] == "hit"
    second = json.loads((Path(again["report"]) / "report.json").read_text())["performance"]
    assert second["status"] == "not measured" and second["metrics"] == {}
    assert second["cached"]["metrics"]["perf_items"] == 8
    assert second["cached"]["metrics"]["perf_compute_s"] == metrics["perf_compute_s"]
    rerun = client.get_run(again["mlflow_run_id"])
    assert not any(k.startswith("perf_") for k in rerun.data.metrics)
    assert rerun.data.tags["bifocal.performance"] == "not measured"
    html = (Path(again["report"]) / "report.html").read_text()
    assert "inference cache hit" in html and 'id="performance-cached"' in html
