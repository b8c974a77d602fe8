"""execution.engine dask: inference shards as Prefect tasks on a two-worker Dask LocalCluster
give the single-process run's metrics, are computed in the worker processes (each loading the
model once) and land in the shared cache, so a rerun computes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.config import EvalConfig, ExecutionConfig
from tasks.config_io import build_config
from tests.helpers import write_dataset


def test_execution_defaults_to_the_local_engine(tmp_path: Path):
    config = build_config({"model": {"path": "m"}, "dataset": {"path": str(tmp_path)}})
    assert config.execution == ExecutionConfig()
    assert (config.execution.engine, config.execution.address) == ("local", None)
    dask = build_config({"model": {"path": "m"}, "dataset": {"path": str(tmp_path)},
                         "execution": {"engine": "dask", "workers": 3,
                                       "address": "tcp://scheduler:8786"}})
    assert dask.execution.workers == 3 and dask.execution.threads_per_worker == 1
    assert dask.execution.address == "tcp://scheduler:8786"
    for wrong in ({"engine": "spark"}, {"workers": 0}, {"threads": 2}):
        with pytest.raises(ValidationError):
            EvalConfig.model_validate({"model": {"path": "m"}, "dataset": {"path": "d"},
                                       "execution": wrong})


def _config(tmp_path: Path, manifest: Path, model: Path, name: str,
            execution: dict[str, Any]) -> EvalConfig:
    return build_config({
        "model": {"path": str(model), "batch_size": 3},
        "dataset": {"path": str(manifest)}, "inference": {"shard_size": 4},
        "execution": execution, "review": {"size": 0},
        "report": {"destination": str(tmp_path / name / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "experiment": "dask"},
        "work_dir": str(tmp_path / name / "work")})


@pytest.mark.e2e
def test_two_dask_workers_give_the_single_process_metrics(prefect_harness, tmp_path: Path,
                                                          tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=12)  # 3 shards of 4
    local = evaluate(_config(tmp_path, manifest, tiny_clip_dir, "local", {}))
    dask_config = _config(tmp_path, manifest, tiny_clip_dir, "dask",
                          {"engine": "dask", "workers": 2})
    first = evaluate(dask_config)
    assert first["metrics"] == local["metrics"]  # exactly: same shards, same model, same code

    cache = Path(dask_config.work_dir) / "cache" / "inference"
    metas = [json.loads(path.read_text()) for path in cache.rglob("meta.json")]
    assert len(metas) == 3
    pids = {meta["worker"]["pid"] for meta in metas}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # computed in the worker processes
    # each worker loaded the model at most once: one load per worker, in its first shard
    loads = [meta for meta in metas if meta["performance"]["model_load_s"] is not None]
    assert len(loads) == len(pids)
    first_report = json.loads((Path(first["report"]) / "report.json").read_text())
    assert first_report["performance"]["entries"] == {"computed": 3, "cached": 0}

    again = evaluate(dask_config)  # every shard from the cache: no cluster, no model
    assert again["metrics"] == local["metrics"]
    report = json.loads((Path(again["report"]) / "report.json").read_text())
    assert report["performance"]["entries"] == {"computed": 0, "cached": 3}


def test_a_worker_keeps_one_model_and_loads_it_once():
    from tasks.kinds.execution import kept_adapters, worker_adapter

    loads: list[str] = []

    def loader(name: str):
        return lambda: loads.append(name) or object()

    first = worker_adapter("model-a", loader("a"))
    assert worker_adapter("model-a", loader("a")) is first and loads == ["a"]
    second = worker_adapter("model-b", loader("b"))  # another checkpoint: the first is dropped
    assert second is not first and loads == ["a", "b"] and kept_adapters() == ["model-b"]
    assert worker_adapter("model-a", loader("a")) is not first and loads == ["a", "b", "a"]


def test_gpu_workers_see_one_gpu_each(monkeypatch: pytest.MonkeyPatch):
    import torch

    from tasks.kinds.execution import visible_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus(2) == ["0", "1"]
    with pytest.raises(RuntimeError, match="execution.gpus is 3 but this machine has 2"):
        visible_gpus(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,7")  # the process's own share
    assert visible_gpus(2) == ["4", "6"]
    with pytest.raises(RuntimeError, match="has 3 GPU"):
        visible_gpus(4)


@pytest.mark.e2e
def test_a_local_gpu_cluster_gives_each_worker_its_own_gpu(prefect_harness, tmp_path: Path,
                                                           tiny_clip_dir: Path):
    """Two GPU slots on a CPU machine (CUDA_VISIBLE_DEVICES only names them; the model runs
    on the CPU): every shard runs in a worker that sees exactly one of the two, and the
    metrics equal the single-process run's."""
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=12)
    local = evaluate(_config(tmp_path, manifest, tiny_clip_dir, "local", {}))
    config = _config(tmp_path, manifest, tiny_clip_dir, "gpus",
                     {"engine": "dask", "gpus": 2})
    assert evaluate(config)["metrics"] == local["metrics"]
    metas = [json.loads(path.read_text())
             for path in (Path(config.work_dir) / "cache" / "inference").rglob("meta.json")]
    seen = {meta["worker"]["pid"]: meta["worker"]["cuda_visible_devices"] for meta in metas}
    assert len(metas) == 3 and set(seen.values()) <= {"0", "1"}
    assert len(set(seen.values())) == len(seen)  # one GPU per worker process


@pytest.mark.e2e
def test_asking_a_cluster_without_gpus_for_one_is_an_error_not_a_wait(
        prefect_harness, tmp_path: Path, tiny_clip_dir: Path):
    from distributed import LocalCluster

    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        config = _config(tmp_path, manifest, tiny_clip_dir, "no-gpu",
                         {"engine": "dask", "gpus": 1, "address": cluster.scheduler_address})
        with pytest.raises(Exception, match="offers none"):
            evaluate(config)
