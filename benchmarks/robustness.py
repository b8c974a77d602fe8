"""Cost of the robustness sweep against its number of variants, cold and with a warm cache.

Builds (seeded, ``flow_overhead``'s builders) a synthetic retrieval dataset of PNG shapes (5
captions each) and a small randomly initialised CLIP, starts a temporary Prefect server
(``prefect_test_harness``) and runs ``flows.evaluate.evaluate`` in this process, MLflow in a
temporary sqlite database. Variants are image corruptions at one severity, so ``n`` variants
are the first ``n`` corruptions of ``--corruptions``:

1. cold: n = 0, 1, 2, 4, 8 variants, each in a fresh work folder (empty inference cache, no
   corrupted images): wall time, the ``robustness`` stage of report.json's ``timings_s``, the
   seconds report.json records per variant, and that time split into building the variant
   (corrupting and writing the PNGs, the items table), inference and scoring (metrics with
   their bootstrap intervals). The split comes from timers this script wraps around the
   sweep's ``variant_data`` and the task kind's ``infer`` / ``score``;
2. warm: the largest sweep again in the work folder of its cold run: every variant should be
   an inference cache hit with every corrupted image reused and no model load (checked in
   report.json);
3. one more: the warm folder with the next corruption added: only that variant is computed
   (one ``miss``, every other variant a ``hit``), and its marginal cost over the warm run.

One warm-up flow absorbs imports and the creation of the MLflow database first. The schedule
repeats ``--repeat`` times (ascending n, then descending, so a drift in machine load does not
favour one end); the tables hold medians of wall time and of this process's CPU time (the
Prefect server's is not included). torch runs ``--threads 1`` by default: two intra-op threads
on a shared 2-core machine made wall times jump by 5x between identical runs. The growth per
variant is a least-squares line over n. Exits 1 when a cache check fails.

Run: ``.venv/bin/python benchmarks/robustness.py [--images 200 --counts 0,1,2,4,8 --repeat 2]``
(the tables go to stdout, the flows' Prefect logs to stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _memory import load_average
from flow_overhead import Setup, prefect_server, prepare

from flows.settings import apply_defaults

# similar-cost corruptions first; the last one is the variant added to a warm sweep
CORRUPTIONS = ("gaussian_noise", "shot_noise", "gaussian_blur", "jpeg", "pixelate",
               "brightness", "contrast", "saturate", "occlusion")
PHASES = ("images", "inference", "scoring")
WARMUP_ITEMS = 16


# --- per-variant phase timers ----------------------------------------------------------------


class PhaseClock:
    """Seconds per variant and phase: ``images`` (``variant_data``: corrupt and write the PNGs,
    the items table), ``inference`` and ``scoring`` (the task kind's ``infer`` and ``score``)
    as the sweep calls them. The clean run's own inference and scoring are not counted."""

    def __init__(self) -> None:
        self.current = ""
        self.phases: dict[str, dict[str, float]] = {}

    def reset(self) -> None:
        self.current, self.phases = "", {}

    def timed(self, phase: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)  # keeps __module__: the kind's code version is read from it
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                entry = self.phases.setdefault(self.current, dict.fromkeys(PHASES, 0.0))
                entry[phase] += time.perf_counter() - started
        return wrapper

    @contextmanager
    def installed(self) -> Iterator[PhaseClock]:
        """Patch ``tasks.robustness.sweep``'s ``variant_data`` and ``get_task_kind``."""
        from tasks.robustness import sweep

        variant_data, get_task_kind = sweep.variant_data, sweep.get_task_kind
        build = self.timed("images", variant_data)

        def timed_variant_data(variant: Any, *args: Any, **kwargs: Any) -> Any:
            self.current = variant.label
            return build(variant, *args, **kwargs)

        def timed_kind(name: str) -> Any:
            kind: Any = get_task_kind(name)  # a TaskKindSpec (frozen dataclass)
            return dataclasses.replace(kind, infer=self.timed("inference", kind.infer),
                                       score=self.timed("scoring", kind.score))

        sweep.variant_data, sweep.get_task_kind = timed_variant_data, timed_kind
        try:
            yield self
        finally:
            sweep.variant_data, sweep.get_task_kind = variant_data, get_task_kind


# --- flow runs -------------------------------------------------------------------------------


@dataclass
class Run:
    """One flow run: wall time, its report.json and the sweep's phase timers."""

    variants: int
    wall_s: float
    cpu_s: float  # CPU time of this process, all threads (not the Prefect server's)
    report: dict[str, Any]
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def section(self) -> dict[str, Any]:
        return self.report.get("robustness") or {"variants": [], "model_loads": 0}

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(self.section["variants"])

    @property
    def sweep_s(self) -> float:
        return float(self.report["timings_s"].get("robustness", 0.0))

    def phase_total(self, phase: str) -> float:
        return sum(entry[phase] for entry in self.phases.values())

    def caches(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry["inference_cache"]] = out.get(entry["inference_cache"], 0) + 1
        return out

    def images(self) -> dict[str, int]:
        out = {"written": 0, "reused": 0}
        for entry in self.entries:
            for key in out:
                out[key] += entry.get("images", {}).get(key, 0)
        return out


@dataclass
class Bench:
    manifest: Path
    model_dir: Path
    root: Path
    args: argparse.Namespace
    clock: PhaseClock

    def config(self, folder: str, variants: int, limit: int | None = None) -> Any:
        from tasks.config_io import build_config

        return build_config({
            "task": "retrieval",
            "model": {"path": str(self.model_dir), "batch_size": self.args.batch_size,
                      "device": "cpu"},
            "dataset": {"path": str(self.manifest), "limit": limit},
            "robustness": {"corruptions": list(self.args.corruptions[:variants]),
                           "severities": [self.args.severity], "seed": 0},
            "statistics": {"bootstrap": self.args.bootstrap},
            "report": {"destination": str(self.root / "reports" / folder)},
            "tracking": {"tracking_uri": f"sqlite:///{self.root / 'mlflow.db'}",
                         "experiment": "robustness-benchmark"},
            "work_dir": str(self.root / "work" / folder),
        })

    def run(self, folder: str, variants: int, limit: int | None = None) -> Run:
        from flows.evaluate import evaluate

        config = self.config(folder, variants, limit)
        self.clock.reset()
        started, cpu = time.perf_counter(), time.process_time()
        result = evaluate(config)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        report = json.loads((Path(result["report"]) / "report.json").read_text())
        return Run(variants, wall, cpu, report, dict(self.clock.phases))


@dataclass
class Repeat:
    cold: dict[int, Run]
    warm: Run
    more: Run


def one_repeat(bench: Bench, index: int, counts: list[int]) -> Repeat:
    """Cold runs for every count (ascending on even repeats, descending on odd ones), then the
    largest sweep warm and with one more variant in the same work folder."""
    cold: dict[int, Run] = {}
    for n in counts if index % 2 == 0 else counts[::-1]:
        cold[n] = bench.run(f"r{index}-cold-{n}", n)
        print(f"  repeat {index + 1}: {n} variant(s) cold {cold[n].wall_s:7.2f} s, cpu "
              f"{cold[n].cpu_s:6.2f} s (sweep {cold[n].sweep_s:6.2f} s, caches "
              f"{cold[n].caches()})", flush=True)
    top = max(counts)
    warm = bench.run(f"r{index}-cold-{top}", top)
    more = bench.run(f"r{index}-cold-{top}", top + 1)
    print(f"  repeat {index + 1}: {top} variants warm {warm.wall_s:7.2f} s "
          f"(caches {warm.caches()}); {top + 1} variants {more.wall_s:7.2f} s "
          f"(caches {more.caches()})", flush=True)
    return Repeat(cold, warm, more)


# --- report ----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def fit_line(xs: list[int], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of ys over xs."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    predicted = slope * np.asarray(xs, float) + intercept
    residual = float(np.sum((np.asarray(ys) - predicted) ** 2))
    total = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
    return float(slope), float(intercept), 1.0 - residual / total if total else 1.0


def print_cold_table(repeats: list[Repeat], counts: list[int]
                     ) -> tuple[dict[int, float], dict[int, float]]:
    """Medians per count; returns the median wall and CPU seconds per count."""
    walls = {n: median([r.cold[n].wall_s for r in repeats]) for n in counts}
    cpus = {n: median([r.cold[n].cpu_s for r in repeats]) for n in counts}
    base = min(counts)
    print(f"\ncold runs (medians of {len(repeats)}; images / infer / score: the sweep's time "
          "split by phase)")
    print(f"{'variants':>8} {'wall s':>7} {'/clean':>7} {'cpu s':>7} {'/clean':>7} "
          f"{'sweep s':>8} {'s/variant':>9} {'images':>7} {'infer':>7} {'score':>7}  caches")
    for n in counts:
        runs = [r.cold[n] for r in repeats]
        sweep = median([run.sweep_s for run in runs])
        parts = [median([run.phase_total(p) for run in runs]) for p in PHASES]
        per = f"{sweep / n:9.2f}" if n else f"{'-':>9}"
        print(f"{n:>8} {walls[n]:7.2f} {walls[n] / walls[base]:7.2f} {cpus[n]:7.2f} "
              f"{cpus[n] / cpus[base]:7.2f} {sweep:8.2f} {per} "
              + " ".join(f"{p:7.2f}" for p in parts) + f"  {runs[0].caches() or '-'}")
    return walls, cpus


def print_variant_table(repeats: list[Repeat], top: int) -> None:
    """Per variant of the largest cold sweep: report.json's seconds and the phase split."""
    runs = [r.cold[top] for r in repeats]
    print(f"\nper variant, cold sweep of {top} (medians; seconds from report.json "
          "robustness.variants[i].seconds):")
    print(f"  {'variant':<18} {'report s':>8} {'images':>7} {'infer':>7} {'score':>7}")
    for i, entry in enumerate(runs[0].entries):
        label = entry["variant"]
        seconds = median([run.entries[i]["seconds"] for run in runs])
        parts = [median([run.phases.get(label, {}).get(p, 0.0) for run in runs])
                 for p in PHASES]
        print(f"  {label:<18} {seconds:8.2f} " + " ".join(f"{p:7.2f}" for p in parts))


def check_warm(run: Run, top: int) -> list[str]:
    """What report.json must say of a warm rerun; returns the failures."""
    problems = []
    if run.caches() != {"hit": top}:
        problems.append(f"variant caches {run.caches()}, expected {top} hit")
    if run.images()["written"]:
        problems.append(f"{run.images()['written']} corrupted images written again")
    if run.section.get("model_loads"):
        problems.append(f"model loaded {run.section['model_loads']} time(s) by the sweep")
    if run.report.get("inference_cache") != "hit":
        problems.append(f"clean inference cache {run.report.get('inference_cache')}")
    return problems


def check_more(run: Run, top: int) -> list[str]:
    """One new variant on a warm sweep: it misses, every other variant hits."""
    states = [entry["inference_cache"] for entry in run.entries]
    expected = ["hit"] * top + ["miss"]
    problems = [] if states == expected else [f"variant caches {states}, expected {expected}"]
    rewritten = sum(entry.get("images", {}).get("written", 0) for entry in run.entries[:-1])
    if rewritten:
        problems.append(f"{rewritten} images of the cached variants written again")
    return problems


def print_warm(repeats: list[Repeat], top: int, walls: dict[int, float],
               cpus: dict[int, float]) -> None:
    """The warm re-run against the cold run of the same sweep, and what report.json says."""
    warm = median([r.warm.wall_s for r in repeats])
    warm_cpu = median([r.warm.cpu_s for r in repeats])
    warm_sweep = median([r.warm.sweep_s for r in repeats])
    cold_sweep = median([r.cold[top].sweep_s for r in repeats])
    print(f"\nwarm re-run of the {top}-variant sweep (same work folder): wall {warm:.2f} s vs "
          f"{walls[top]:.2f} s cold (warm/cold {warm / walls[top]:.3f}), cpu {warm_cpu:.2f} s "
          f"vs {cpus[top]:.2f} s ({warm_cpu / cpus[top]:.3f}); sweep stage {warm_sweep:.2f} s "
          f"vs {cold_sweep:.2f} s ({warm_sweep / cold_sweep:.3f}); warm / clean-only cold run "
          f"{warm / walls[min(walls)]:.3f}")
    split = {p: round(median([r.warm.phase_total(p) for r in repeats]), 2) for p in PHASES}
    print(f"  warm sweep by phase (s): {split} (images: hashing the reused PNGs and the items "
          "table; scoring is recomputed)")
    last = repeats[-1].warm
    print(f"  report.json: variants {last.caches()}, images {last.images()}, sweep model "
          f"loads {last.section.get('model_loads')}, clean inference cache "
          f"{last.report.get('inference_cache')}")


def print_one_more(repeats: list[Repeat], top: int) -> None:
    """One variant added to the warm sweep: its marginal cost and the cache states."""
    warm = median([r.warm.wall_s for r in repeats])
    more = median([r.more.wall_s for r in repeats])
    cpu = median([r.more.cpu_s - r.warm.cpu_s for r in repeats])
    new_seconds = median([r.more.entries[-1]["seconds"] for r in repeats])
    cached = median([sum(e["seconds"] for e in r.more.entries[:-1]) for r in repeats])
    cold_variant = median([sum(e["seconds"] for e in r.cold[top].entries) / top
                           for r in repeats])
    last = repeats[-1].more
    print(f"one more variant ({last.entries[-1]['variant']}) on the warm sweep: wall "
          f"{more:.2f} s, marginal {more - warm:.2f} s over the warm run (cpu {cpu:.2f} s); "
          f"report.json seconds of the new variant {new_seconds:.2f} s (a cold variant "
          f"averaged {cold_variant:.2f} s), of the {top} cached ones together {cached:.2f} s")
    print(f"  report.json: variants {[e['inference_cache'] for e in last.entries]}, images "
          f"{last.images()}, sweep model loads {last.section.get('model_loads')}")


def cache_problems(repeats: list[Repeat], top: int) -> list[str]:
    problems = [f"repeat {i + 1} warm: {p}" for i, r in enumerate(repeats)
                for p in check_warm(r.warm, top)]
    return problems + [f"repeat {i + 1} one more: {p}" for i, r in enumerate(repeats)
                       for p in check_more(r.more, top)]


def print_growth(walls: dict[int, float], cpus: dict[int, float], repeats: list[Repeat],
                 counts: list[int]) -> None:
    top, base = max(counts), min(counts)
    print(f"\ngrowth per added variant (least squares over n = {','.join(map(str, counts))}, "
          "and the end points):")
    for name, series in (("wall", walls), ("cpu", cpus)):
        slope, intercept, r2 = fit_line(counts, [series[n] for n in counts])
        print(f"  {name:<4}: {slope:.2f} s per variant (intercept {intercept:.2f} s, R² "
              f"{r2:.4f}); ({series[top]:.2f} - {series[base]:.2f}) / {top - base} = "
              f"{(series[top] - series[base]) / (top - base):.2f} s; {top} variants / "
              f"clean-only {series[top] / series[base]:.2f}")
    per_variant = {n: median([r.cold[n].sweep_s for r in repeats]) / n for n in counts if n}
    print("  sweep stage per variant: " + ", ".join(f"n={n}: {v:.2f} s"
                                                    for n, v in per_variant.items()))


# --- driver ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2, help="vision transformer layers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--counts", default="0,1,2,4,8",
                        help="variant counts of the cold runs (comma separated)")
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS),
                        help="corruption order: n variants are the first n; one more than "
                        "the largest count is needed")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="statistics.bootstrap resamples (the project default)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 keeps a loaded 2-core machine from "
                        "oversubscription, which makes wall times erratic)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data, model, MLflow and runs (default: a temp dir)")
    args = parser.parse_args()
    args.counts = sorted({0, *(int(n) for n in args.counts.split(","))})  # 0: the baseline
    if max(args.counts) < 1:
        parser.error("--counts needs a count above 0")
    args.corruptions = [c for c in args.corruptions.split(",") if c]
    if len(args.corruptions) <= max(args.counts):
        parser.error(f"--corruptions needs more than {max(args.counts)} names")
    return args


def run(root: Path, args: argparse.Namespace) -> bool:
    """Build, measure, print; False when a cache check failed."""
    import torch

    torch.set_num_threads(args.threads)
    setup = Setup(args.images, args.image_size, args.layers)
    shutil.rmtree(root / "work", ignore_errors=True)  # every run below starts cold
    shutil.rmtree(root / "reports", ignore_errors=True)
    started = time.perf_counter()
    manifest, model_dir = prepare(root / "setup", setup)
    print(f"setup: {setup.images} images {setup.image_size}px x 5 captions, retrieval, CLIP "
          f"vision {setup.layers} layers; batch {args.batch_size}; bootstrap {args.bootstrap}; "
          f"severity {args.severity}; torch threads {torch.get_num_threads()}; build "
          f"{time.perf_counter() - started:.1f} s")
    print(f"load average at the start: {load_average()}")
    bench = Bench(manifest, model_dir, root, args, PhaseClock())
    with prefect_server() as startup_s, bench.clock.installed():
        print(f"prefect temporary server start-up: {startup_s:.2f} s")
        warm_up = bench.run("warm-up", 1, limit=WARMUP_ITEMS)
        print(f"warm-up flow on {WARMUP_ITEMS} items, 1 variant: {warm_up.wall_s:.2f} s "
              "(first flow of the process: imports, the MLflow db)", flush=True)
        repeats = [one_repeat(bench, i, args.counts) for i in range(args.repeat)]
    walls, cpus = print_cold_table(repeats, args.counts)
    top = max(args.counts)
    print_variant_table(repeats, top)
    print_growth(walls, cpus, repeats, args.counts)
    print_warm(repeats, top, walls, cpus)
    print_one_more(repeats, top)
    problems = cache_problems(repeats, top)
    print("cache checks: " + ("; ".join(problems) if problems else "all passed (warm: every "
                              "variant hit, no image written, no model load; one more: only "
                              "the new variant missed and wrote images)"))
    print(f"load average at the end: {load_average()}")
    return not problems


def main() -> None:
    args = parse_args()
    apply_defaults()
    if args.work is not None:
        passed = run(args.work.resolve(), args)
    else:
        with tempfile.TemporaryDirectory(prefix="robustness-bench-") as tmp:
            passed = run(Path(tmp), args)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
