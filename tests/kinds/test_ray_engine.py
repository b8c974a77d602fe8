"""execution.engine ray: inference shards as Prefect tasks on a local Ray instance (prefect-ray)
give the single-process run's metrics and are computed in Ray's worker processes, each loading
the model at most once, each task holding one of the instance's GPUs (declared: on this CPU
machine they are names Ray hands out in CUDA_VISIBLE_DEVICES; the model runs on the CPU); the
task runner follows the config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks.config import ExecutionConfig
from tasks.kinds.execution import task_runner
from tests.helpers import write_dataset
from tests.kinds.test_dask_engine import _config


def test_the_ray_runner_follows_the_config():
    from prefect_dask import DaskTaskRunner
    from prefect_ray import RayTaskRunner

    local = task_runner(ExecutionConfig(engine="ray", workers=3))
    assert isinstance(local, RayTaskRunner) and local.address is None
    assert local.init_kwargs["num_cpus"] == 3 and local.init_kwargs["include_dashboard"] is False
    assert local.init_kwargs["num_gpus"] == 0
    gpus = task_runner(ExecutionConfig(engine="ray", workers=1, gpus=2)).init_kwargs
    assert (gpus["num_cpus"], gpus["num_gpus"]) == (2, 2)
    remote = task_runner(ExecutionConfig(engine="ray", address="ray://head:10001"))
    assert isinstance(remote, RayTaskRunner) and remote.address == "ray://head:10001"
    assert isinstance(task_runner(ExecutionConfig(engine="dask")), DaskTaskRunner)


@pytest.mark.e2e
def test_ray_workers_give_the_single_process_metrics(prefect_harness, tmp_path: Path,
                                                     tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=12)  # 3 shards of 4
    local = evaluate(_config(tmp_path, manifest, tiny_clip_dir, "local", {}))
    ray_config = _config(tmp_path, manifest, tiny_clip_dir, "ray",
                         {"engine": "ray", "workers": 2, "gpus": 2})
    first = evaluate(ray_config)
    assert first["metrics"] == local["metrics"]  # exactly: same shards, same model, same code

    cache = Path(ray_config.work_dir) / "cache" / "inference"
    metas = [json.loads(path.read_text()) for path in cache.rglob("meta.json")]
    assert len(metas) == 3
    pids = {meta["worker"]["pid"] for meta in metas}
    assert os.getpid() not in pids and 1 <= len(pids) <= 3  # computed in Ray's workers
    loads = [meta for meta in metas if meta["performance"]["model_load_s"] is not None]
    assert len(loads) == len(pids)  # one model load per worker process
    assert {meta["worker"]["cuda_visible_devices"] for meta in metas} <= {"0", "1"}
    report = json.loads((Path(first["report"]) / "report.json").read_text())
    assert report["performance"]["entries"] == {"computed": 3, "cached": 0}
