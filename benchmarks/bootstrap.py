"""Bootstrap intervals: ``tasks.stats`` vs ``scipy.stats.bootstrap`` on the same data.

Cases (targets on the 2-core development VM: < 2 s for the mean, < 5 s for BLEU):

* mean: 10,000 resamples of the mean of 25,000 per-sample values (CLIPScore-like);
* BLEU-4: 1,000 resamples of corpus BLEU-4 on 5,000 seeded synthetic images (5 references
  each, ``caption_metrics.make_corpus``). Ours sums per-item sufficient statistics
  (``counts @ stats``); scipy gets a vectorised statistic that recomputes BLEU from the same
  statistics (``stats[i].sum(axis=-2)``). Computing the statistics (PTB tokenisation and
  n-grams, once per run) is timed separately.

Both sides run percentile and BCa. scipy gets ``batch=chunk_rows(n)`` and the same seed, so it
draws exactly our resamples: the intervals must agree to rounding (the last column), and memory
stays bounded on both sides (``--scipy-batch 0`` gives scipy its default, all resamples in one
batch: 250 M indices for the mean case). The sides alternate ``--repeat`` times; the table shows
the median time of each, the ratio scipy / ours and the largest peak RSS above the level before
the call (``_memory.measure``).

Run: ``.venv/bin/python benchmarks/bootstrap.py [--repeat 5 --images 5000 --values 25000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from _memory import MIB, load_average, measure
from caption_metrics import make_corpus
from scipy import stats

from tasks.metrics.captioning.bleu import bleu_sufficient_statistics
from tasks.metrics.captioning.inputs import CaptionInputs
from tasks.stats import (
    BootstrapSettings,
    Interval,
    bleu_statistic,
    bootstrap_corpus,
    bootstrap_mean,
)
from tasks.stats.bootstrap import Method
from tasks.stats.resampling import chunk_rows

SCIPY_METHOD = {"percentile": "percentile", "bca": "BCa"}
METHODS: tuple[Method, ...] = ("percentile", "bca")


def ours_mean(values: np.ndarray, resamples: int, method: Method) -> tuple[float, float]:
    interval = bootstrap_mean(values, BootstrapSettings(resamples, 0.95, method, seed=0))
    return interval.low, interval.high


def scipy_mean(values: np.ndarray, resamples: int, method: Method, batch: int | None
               ) -> tuple[float, float]:
    result = stats.bootstrap((values,), np.mean, n_resamples=resamples, batch=batch,
                             method=SCIPY_METHOD[method], rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def ours_bleu(per_item: np.ndarray, resamples: int, method: Method) -> tuple[float, float]:
    settings = BootstrapSettings(resamples, 0.95, method, seed=0)
    interval: Interval = bootstrap_corpus(per_item, bleu_statistic(4), settings)
    return interval.low, interval.high


def scipy_bleu(per_item: np.ndarray, resamples: int, method: Method, batch: int | None
               ) -> tuple[float, float]:
    bleu4, width = bleu_statistic(4), per_item.shape[1]

    def recompute(i: np.ndarray, axis: int) -> np.ndarray:
        """BLEU-4 of resampled (or jackknife) item indices from their summed statistics."""
        return bleu4(per_item[i].sum(axis=-2).reshape(-1, width)).reshape(i.shape[:-1])

    result = stats.bootstrap((np.arange(len(per_item)),), recompute, n_resamples=resamples,
                             batch=batch, method=SCIPY_METHOD[method],
                             rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(label: str, ours: Callable[[], tuple[float, float]],
            theirs: Callable[[], tuple[float, float]], repeat: int) -> None:
    """Alternate the two sides ``repeat`` times; print one table row of medians (time) and
    maxima (peak RSS above the level before the call)."""
    ours_runs, their_runs = [], []
    for _ in range(repeat):
        ours_runs.append(measure(ours))
        their_runs.append(measure(theirs))
    mine = statistics.median(run.seconds for run in ours_runs)
    base = statistics.median(run.seconds for run in their_runs)
    ours_mib = max(run.peak_bytes for run in ours_runs) / MIB
    their_mib = max(run.peak_bytes for run in their_runs) / MIB
    ours_ci, their_ci = ours_runs[-1].value, their_runs[-1].value
    diff = max(abs(a - b) for a, b in zip(ours_ci, their_ci, strict=True))
    print(f"  {label:<38} {mine:7.3f} {base:7.3f} {base / mine:6.1f}x {ours_mib:8.0f} "
          f"{their_mib:9.0f}  {diff:8.1e}  [{ours_ci[0]:.5f}, {ours_ci[1]:.5f}]", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=int, default=25_000, help="items of the mean case")
    parser.add_argument("--mean-resamples", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=5000, help="images of the BLEU case")
    parser.add_argument("--bleu-resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs; medians shown")
    parser.add_argument("--scipy-batch", type=int, default=-1,
                        help="scipy's batch: -1 = our chunk size (same resamples), 0 = default")
    return parser.parse_args()


def scipy_batch(args: argparse.Namespace, n: int) -> int | None:
    return chunk_rows(n) if args.scipy_batch < 0 else (args.scipy_batch or None)


def main() -> None:
    args = parse_args()
    values = np.clip(np.random.default_rng(0).normal(0.72, 0.05, args.values), 0, 1)
    start = time.perf_counter()
    per_item = bleu_sufficient_statistics(CaptionInputs(*make_corpus(args.images, 5, 0)))
    stats_s = time.perf_counter() - start
    per_item = per_item.astype(np.float64)
    print(f"bootstrap intervals, repeat {args.repeat} (median seconds); load {load_average()}")
    print(f"BLEU sufficient statistics of {args.images} images x 5 refs (tokenise + n-grams, "
          f"once): {stats_s:.2f} s")
    print(f"  {'case':<38} {'ours s':>7} {'scipy s':>7} {'ratio':>7} {'ours MiB':>8} "
          f"{'scipy MiB':>9}  {'max|dCI|':>8}  ours CI")
    for method in METHODS:
        batch = scipy_batch(args, args.values)
        compare(f"mean {args.mean_resamples:,} x {args.values:,} {method}",
                partial(ours_mean, values, args.mean_resamples, method),
                partial(scipy_mean, values, args.mean_resamples, method, batch), args.repeat)
    for method in METHODS:
        batch = scipy_batch(args, args.images)
        compare(f"BLEU-4 {args.bleu_resamples:,} x {args.images:,} images {method}",
                partial(ours_bleu, per_item, args.bleu_resamples, method),
                partial(scipy_bleu, per_item, args.bleu_resamples, method, batch), args.repeat)
    print(f"(load at the end: {load_average()})")


if __name__ == "__main__":
    main()
