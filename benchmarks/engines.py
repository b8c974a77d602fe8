"""Inference engines on one machine: ``execution.engine`` local vs dask vs ray, same evaluation.

Reuses ``flow_overhead.py``'s seeded synthetic dataset (PNG shapes, 5 captions each, JSONL
manifest) and randomly initialised narrow CLIP, its temporary Prefect server
(``prefect_test_harness``) and its evaluate config (MLflow in sqlite, report in the work
folder), with the same model, data, ``model.batch_size`` and ``inference.shard_size`` for every
engine and the inference cache disabled (``inference.cache: false``). With the cache off the
remote engines still engage: ``tasks.kinds.sharded`` skips only the cache read, so every shard
is a miss, becomes a ``ShardJob`` and runs as a ``compute-shard`` task on a worker. Each run
also gets its own, emptied ``work_dir``, so its shard folders (and their meta.json) are this
run's alone.

Engines: ``local`` (shards computed in the flow's process, torch with all cores), ``dask`` (a
``LocalCluster`` of ``--workers`` processes with ``--threads-per-worker`` threads, started and
closed by every run) and ``ray`` (a local Ray instance of ``--workers`` CPUs, started and shut
down by every run; skipped with the reason printed when ``prefect_ray`` cannot be imported).
Each worker process imports torch and loads the model once per run. One warm-up evaluate on
``WARMUP_ITEMS`` items (local) absorbs imports and the MLflow database creation; the engines
then alternate ``--repeat`` times and the fastest run of each is kept.

Prints per engine: wall time; the inference stage (report.json ``timings_s``); the worker
processes that computed shards (pids in the shards' meta.json), their model loads (in a fresh
worker this includes importing torch and transformers, which the flow's process has done
before) and the shards' compute time; the busiest process's load + compute (the critical path
of the model work) and the rest of the stage (an upper bound of the engine's own cost: cluster
or Ray start-up and shutdown, task submission, pickling, Prefect task runs, and any time the
busiest worker waited); the speed-up local_wall / engine_wall (< 1: slower than local); the
largest absolute metric difference vs local (expected: 0, the same shards and model); and the
load average and CPU count at the start and the end.

Run: ``.venv/bin/python benchmarks/engines.py [--images 200 --shard-size 50 --layers 2
--batch-size 32 --workers 2 --repeat 2 --engines local,dask,ray --work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _memory import load_average
from flow_overhead import (
    WARMUP_ITEMS,
    Setup,
    Timed,
    fastest,
    flow_config,
    inference_performance,
    prefect_server,
    prepare,
    stage_timings,
    timed,
)

from flows.settings import apply_defaults

ENGINES = ("local", "dask", "ray")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layers", type=int, default=2, help="vision transformer layers")
    parser.add_argument("--shard-size", type=int, default=50, help="inference.shard_size")
    parser.add_argument("--workers", type=int, default=2,
                        help="dask: LocalCluster worker processes; ray: CPUs of the instance")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="comma-separated subset of local,dask,ray (local always runs)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="alternating runs of every engine; the fastest of each is kept")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data, model, MLflow and reports (default: a temp dir; "
                        "data and model are reused when the setup matches)")
    return parser.parse_args()


def engines_to_run(requested: str) -> list[str]:
    """``local`` first, then the requested remote engines; ray dropped (reason printed) when
    prefect-ray is missing."""
    names = [name.strip() for name in requested.split(",") if name.strip()]
    unknown = set(names) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines: {sorted(unknown)} (choose from {ENGINES})")
    out = ["local", *[name for name in ENGINES[1:] if name in names]]
    if "ray" in out:
        try:
            import prefect_ray  # noqa: F401
        except ImportError as error:
            print(f"ray skipped: prefect_ray is not importable ({error}); "
                  "pip install -c constraints.txt 'bifocal[ray]'")
            out.remove("ray")
    return out


def engine_config(base: Any, engine: str, args: argparse.Namespace) -> Any:
    """``base`` (flow_overhead's config, cache off) with ``engine`` and the shard size."""
    from tasks.config import ExecutionConfig

    execution = ExecutionConfig(engine=engine, workers=args.workers,
                                threads_per_worker=args.threads_per_worker)
    inference = base.inference.model_copy(update={"shard_size": args.shard_size})
    return base.model_copy(update={"execution": execution, "inference": inference})


@dataclass
class Shards:
    """What the run's shard folders (meta.json) say about where the model work ran."""

    count: int
    workers: int  # distinct worker processes (0: the flow's own process)
    loads: list[float]  # model loads, s (one per process that loaded it)
    compute_s: float  # sum of the shards' compute, model load excluded
    busiest_s: float  # the busiest process's model load + compute


def shard_facts(work_dir: Path) -> Shards:
    """Read every shard's meta.json under the run's inference cache."""
    metas = [json.loads(path.read_text())
             for path in (work_dir / "cache" / "inference").rglob("meta.json")]
    busy: dict[int, float] = {}
    loads: list[float] = []
    for meta in metas:
        performance = meta.get("performance", {})
        load = performance.get("model_load_s") or 0.0
        if performance.get("model_load_s") is not None:
            loads.append(load)
        pid = meta.get("worker", {}).get("pid", 0)
        busy[pid] = busy.get(pid, 0.0) + load + performance.get("compute_s", 0.0)
    pids = set(busy) - {0}
    return Shards(len(metas), len(pids), loads,
                  sum(m.get("performance", {}).get("compute_s", 0.0) for m in metas),
                  max(busy.values(), default=0.0))


def max_metric_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference over the numeric metrics both runs have."""
    keys = [k for k in a if k in b and isinstance(a[k], int | float)
            and isinstance(b[k], int | float)]
    return max((abs(float(a[k]) - float(b[k])) for k in keys), default=float("nan"))


def report_engine(engine: str, best: Timed, local: Timed, args: argparse.Namespace,
                  folder: Path) -> None:
    """One engine's lines (see the module docstring)."""
    inference_s = stage_timings(best.value)["inference"]
    shards = shard_facts(folder)
    where = (f"{shards.workers} worker processes" if shards.workers
             else "the flow's process")
    loads = ", ".join(f"{s:.2f}" for s in shards.loads) or "none"
    print(f"{engine}:")
    print(f"  wall {best.wall_s:7.2f} s   inference stage {inference_s:7.2f} s   "
          f"speed-up local/{engine} {local.wall_s / best.wall_s:.3f}")
    print(f"  {shards.count} shards computed in {where}; model loads (s): {loads}; shards' "
          f"compute {shards.compute_s:.2f} s in all; busiest process load+compute "
          f"{shards.busiest_s:.2f} s; rest of the stage {inference_s - shards.busiest_s:.2f} s")
    print(f"  inference performance (report.json): {inference_performance(best.value)}")
    print(f"  max |metric difference| vs local: "
          f"{max_metric_difference(best.value['metrics'], local.value['metrics']):.3g} "
          "(expected: 0)")


def run(work: Path, args: argparse.Namespace) -> None:
    import torch

    engines = engines_to_run(args.engines)
    setup = Setup(args.images, args.image_size, args.layers)
    prepared = timed(lambda: prepare(work, setup))
    manifest, model_dir = prepared.value
    print(f"setup: {setup.images} images {setup.image_size}px x 5 captions, CLIP vision "
          f"{setup.layers} layers; batch {args.batch_size}; shard size {args.shard_size} "
          f"({-(-setup.images // args.shard_size)} shards); workers {args.workers} x "
          f"{args.threads_per_worker} threads; flow-process torch threads "
          f"{torch.get_num_threads()}; build {prepared.wall_s:.1f}s; work {work}")
    print(f"cpus: {os.cpu_count()} (usable here: {len(os.sched_getaffinity(0))}); "
          f"load average at the start: {load_average()}")

    from flows.evaluate import evaluate

    def evaluate_with(engine: str, folder: str, limit: int | None = None) -> Timed:
        shutil.rmtree(work / folder, ignore_errors=True)  # every shard a fresh miss
        base = flow_config(manifest, model_dir, work, args.batch_size, cache=False,
                           limit=limit, run_folder=folder)
        config = engine_config(base, engine, args)
        return timed(lambda: evaluate(config))

    with prefect_server() as startup_s:
        print(f"prefect temporary server start-up: {startup_s:.2f} s")
        warm = evaluate_with("local", "warmup", WARMUP_ITEMS)
        print(f"warm-up (local) on {WARMUP_ITEMS} items: {warm.wall_s:.2f} s")
        runs: dict[str, list[Timed]] = {engine: [] for engine in engines}
        for index in range(args.repeat):
            for engine in engines:
                runs[engine].append(evaluate_with(engine, f"{engine}-{index}"))
            print(f"run {index + 1}: " + "   ".join(
                f"{engine} {runs[engine][-1].wall_s:7.2f} s" for engine in engines))

    best = {engine: fastest(timed_runs) for engine, timed_runs in runs.items()}
    folders = {engine: work / f"{engine}-{runs[engine].index(best[engine])}"
               for engine in engines}
    for engine in engines:
        report_engine(engine, best[engine], best["local"], args, folders[engine])
    print(f"load average at the end: {load_average()}")


def main() -> None:
    args = parse_args()
    apply_defaults()
    if args.work is not None:
        run(args.work.resolve(), args)
        return
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
