"""Where inference shards are computed: in the flow's process (``execution.engine: local``, the
default; ``tasks.kinds.sharded`` computes them inline) or as Prefect tasks on Dask workers
(``engine: dask``, prefect-dask's ``DaskTaskRunner``) or Ray workers (``engine: ray``,
prefect-ray's ``RayTaskRunner``).

Protocol of the remote engines: the flow's process computes every shard's cache key and reads the
cache as the local path does; only the shards that miss become ``ShardJob``s. The jobs run as
``compute-shard`` task runs of a small ``infer-shards`` subflow whose task runner is built from
the config: for dask a ``LocalCluster`` of ``workers`` processes with ``threads_per_worker``
threads each, or the existing scheduler at ``address``; for ray a local Ray instance with
``workers`` CPUs (one shard per CPU; Ray reuses its worker processes), or the cluster at
``address``. With ``gpus``, every shard task takes one GPU (``gpu_request``): a local Dask
cluster has one single-GPU worker per GPU (``gpu_cluster``: ``CUDA_VISIBLE_DEVICES`` per worker
process and a ``GPU`` resource), a local Ray instance declares ``gpus`` GPUs and Ray sets each
task's ``CUDA_VISIBLE_DEVICES``; an existing cluster must offer ``GPU`` resources (checked before
anything is submitted, so a cluster without them is an error, not a wait). A job is pickled
(cloudpickle) with the kind's ``compute`` closure and the ``Inference`` it closes over, minus
the loaded adapter, the progress bar and the recorder; on the worker, ``Inference.adapter``
takes the model from ``worker_adapter``, a per-process cache keyed by the model fingerprint and
settings, so each worker loads the model once. Each job writes its shard through the shared
``FolderCache`` (atomic rename), and the flow then reads the shard folders exactly as after
local inference, so scoring does not know where the shards were computed. The cache folder
(``work_dir``) must therefore be a path every worker sees.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config import ExecutionConfig
from tasks.kinds.cache import FolderCache

# -- the worker side: one model per worker process ---------------------------------------------

_KEPT: dict[str, Any] = {}  # adapter key -> the adapter this worker process loaded
_LOCK = threading.Lock()


def worker_adapter(key: str, load: Callable[[], Any]) -> Any:
    """The adapter kept in this process under ``key`` (the model fingerprint and settings), or
    ``load()``'s, kept. One model at a time: a new key drops the previous one (a long-lived
    cluster that evaluates many checkpoints would otherwise fill its memory)."""
    with _LOCK:  # threads_per_worker > 1: one load per process
        if key not in _KEPT:
            _KEPT.clear()
            _KEPT[key] = load()
        return _KEPT[key]


def kept_adapters() -> list[str]:
    """Keys of the adapters this process keeps (for tests and diagnostics)."""
    return list(_KEPT)


# -- the flow side ------------------------------------------------------------------------------


@dataclass
class ShardJob:
    """One shard that missed the cache: ``write(folder)`` fills the entry ``key``."""

    cache: FolderCache
    key: str
    write: Callable[[Path], None]


def task_runner(execution: ExecutionConfig) -> Any:
    """The task runner of ``execution.engine``: ``dask_runner`` or ``ray_runner``."""
    return ray_runner(execution) if execution.engine == "ray" else dask_runner(execution)


def _runner_class(engine: str) -> Any:
    """``prefect_<engine>``'s task runner class; a clear error without the extra installed."""
    import importlib

    try:
        module = importlib.import_module(f"prefect_{engine}")
    except ImportError as error:  # pragma: no cover - an install without the extra
        raise RuntimeError(f"execution.engine {engine} needs prefect-{engine}: "
                           f"pip install -c constraints.txt 'bifocal[{engine}]'") from error
    return getattr(module, f"{engine.capitalize()}TaskRunner")


def ray_runner(execution: ExecutionConfig) -> Any:
    """The ``RayTaskRunner`` of ``execution``: the cluster at ``address``, or a local Ray
    instance of ``workers`` CPUs (no dashboard) started for the subflow and shut down after."""
    RayTaskRunner = _runner_class("ray")
    if execution.address:
        return RayTaskRunner(address=execution.address)
    return RayTaskRunner(init_kwargs={
        "num_cpus": max(execution.workers, execution.gpus), "num_gpus": execution.gpus,
        "include_dashboard": False, "log_to_driver": False})


def dask_runner(execution: ExecutionConfig) -> Any:
    """The ``DaskTaskRunner`` of ``execution``: the scheduler at ``address``, or a
    ``LocalCluster`` of ``workers`` processes started for the subflow and closed after it."""
    DaskTaskRunner = _runner_class("dask")
    if execution.address:
        return DaskTaskRunner(address=execution.address)
    if execution.gpus:
        return DaskTaskRunner(cluster_class=f"{__name__}.gpu_cluster", cluster_kwargs={
            "devices": visible_gpus(execution.gpus),
            "threads_per_worker": execution.threads_per_worker})
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": execution.workers, "processes": True,
                        "threads_per_worker": execution.threads_per_worker})


def visible_gpus(count: int) -> list[str]:
    """The first ``count`` GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (its
    own list when set, else ``0..count-1``); more than CUDA reports here is an error."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else \
        [str(n) for n in range(count)]
    available = len(devices) if visible else _cuda_devices(count)
    if count > available:
        raise RuntimeError(f"execution.gpus is {count} but this machine has {available} "
                           "GPU(s) for the local cluster")
    return devices[:count]


def _cuda_devices(default: int) -> int:
    """GPUs CUDA reports here; ``default`` without CUDA (a cluster of CPU stand-ins)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else default


def gpu_cluster(devices: list[str], threads_per_worker: int = 1, asynchronous: bool = False
                ) -> Any:
    """A local Dask cluster with one worker process per GPU in ``devices``: the worker's
    nanny starts it with ``CUDA_VISIBLE_DEVICES`` set to its GPU alone (so it is ``cuda:0``
    there) and a ``GPU`` resource of 1, which every shard task asks for."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"gpu-{device}": {"cls": Nanny, "options": {
        "nthreads": threads_per_worker, "resources": {"GPU": 1},
        "env": {"CUDA_VISIBLE_DEVICES": device}}} for device in devices}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, asynchronous=asynchronous)


# Jobs of a running subflow and their execution settings, by batch id: the subflow runs in this
# process, and passing the jobs (data frames, closures) as flow parameters would make Prefect
# try to serialize them.
_BATCHES: dict[str, tuple[list[ShardJob], ExecutionConfig]] = {}


def compute_shard(job: ShardJob) -> str:
    """Write one shard into the shared cache (on a Dask worker); its folder."""
    return str(job.cache.put(job.key, job.write))


def infer_shards(batch: str) -> list[str]:
    """Submit every job of ``batch`` to the subflow's task runner; their folders, in order."""
    from prefect import task

    shard = task(compute_shard, name="compute-shard", cache_policy=_no_cache(),
                 persist_result=False)
    jobs, execution = _BATCHES[batch]
    with gpu_request(execution):
        futures = [shard.submit(job) for job in jobs]
    return [future.result() for future in futures]


@contextmanager
def gpu_request(execution: ExecutionConfig) -> Iterator[None]:
    """Tasks submitted inside ask for one GPU each when ``execution.gpus`` is set: Ray's
    ``num_gpus=1`` (prefect-ray's ``remote_options``) or Dask's resource ``GPU=1``
    (``dask.annotate``), after checking that the running cluster has GPU resources."""
    if not execution.gpus:
        yield
        return
    _require_gpu_resources(execution.engine)
    if execution.engine == "ray":
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=1):
            yield
        return
    import dask

    with dask.annotate(resources={"GPU": 1}):
        yield


def _require_gpu_resources(engine: str) -> None:
    """A task asking for a GPU on a cluster without one would wait forever: refuse instead."""
    total = _cluster_gpus(engine)
    if total < 1:
        raise RuntimeError(
            f"execution.gpus asks for a GPU per shard, but the {engine} cluster offers none "
            "(start Dask workers with --resources GPU=1, Ray nodes with --num-gpus)")


def _cluster_gpus(engine: str) -> float:
    """GPU resources of the cluster the running subflow's task runner is connected to."""
    if engine == "ray":
        import ray

        return float(ray.cluster_resources().get("GPU", 0))
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    client = context.task_runner.client if context is not None else None
    workers = client.scheduler_info()["workers"].values() if client is not None else []
    return float(sum(worker.get("resources", {}).get("GPU", 0) for worker in workers))


def _no_cache() -> Any:
    from prefect.cache_policies import NO_CACHE

    return NO_CACHE


def run_jobs(jobs: list[ShardJob], execution: ExecutionConfig) -> list[Path]:
    """Compute ``jobs`` on Dask or Ray workers through the ``infer-shards`` subflow; the
    entries' folders, in the jobs' order."""
    from prefect import flow

    batch = uuid.uuid4().hex
    _BATCHES[batch] = jobs, execution
    try:
        subflow = flow(infer_shards, name="infer-shards", task_runner=task_runner(execution),
                       validate_parameters=False, persist_result=False)
        with _shared_api():
            return [Path(folder) for folder in subflow(batch)]
    finally:
        del _BATCHES[batch]


@contextmanager
def _shared_api() -> Iterator[None]:
    """Without PREFECT_API_URL, Prefect runs a temporary server inside this process's tree,
    and every worker would start its own: name the running one, so that the settings the task
    runner sends with each task point the workers at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = _temporary_server()
    if PREFECT_API_URL.value() or server is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def _temporary_server() -> Any:
    """Prefect's temporary server of this process, when one is running."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    return server if server is not None and server.running else None
