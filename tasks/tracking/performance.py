"""Inference performance: throughput, batch and item latency, model load time, peak memory.

What is measured, and how (nothing is timed per item, nothing slows inference down):

* **Batches.** The one batch loop (``tasks.models.batching.run_batches``) reads the clock twice
  per batch, around the model call, while a ``Recorder`` is active (``recording``); on a CUDA
  device it synchronises once per batch, before the second read, so the batch's kernels are
  inside its time. The latency of a batch is that model call; the latency of an item is its
  batch's latency divided by the rows the batch computed (p50/p95 over items, each item weighing
  once). Decoding and preprocessing run ahead in threads and are not in batch latency. Texts an
  encoder embeds (``encode_texts``, through ``batching.run_all``: the same loop, so the same
  out-of-memory halving) are not recorded as batches (``unrecorded``): they are inside the
  entry's compute time, not in the batch latencies.
* **Entries.** ``tasks.kinds.sharded.Inference`` times every cache entry it computes (a shard,
  or a side entry such as zero-shot class embeddings): wall time of the kind's compute, less any
  model load that happened inside it. Throughput is the rows of the computed shards (items,
  pairs or questions: the rows a kind shards) per second of that compute time.
* **Model load**: wall time of loading the adapter (``load_adapter``), when this run loaded it.
* **Peak memory.** CPU: the resident set's high-water mark of the process (Linux ``VmHWM``),
  reset when the inference stage starts (``/proc/self/clear_refs``), so it is the peak during
  the stage; where it cannot be reset (or on other systems, ``ru_maxrss``) it is the process's
  lifetime peak and ``peak_rss_scope`` says so. CUDA: ``torch.cuda.max_memory_allocated`` of
  the model's device, reset before the model loads. Both are process-wide: evaluations running
  concurrently in one process share them.

The cache: an entry loaded from the inference cache runs no model, so this run measures nothing
for it. The MLflow metrics (``perf_*``) are always this run's own measurements; on a full cache
hit there are none, and report.json's ``performance`` says why. Every computed shard keeps its
measurements in its ``meta.json`` (``performance``), and report.json carries those of the
entries it loaded under ``performance.cached``, labelled as measured by the run(s) that computed
them (with when), never logged as this run's metrics.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

In = TypeVar("In")
Out = TypeVar("Out")

MB = 1024 * 1024
STATUS_KEY = "bifocal.performance"  # MLflow tag: measured / partial / not measured
CACHED_NOTE = ("measured by the run(s) that computed these cache entries (their meta.json), "
               "not by this run")


@dataclass
class EntryMeasure:
    """One computed cache entry's measurements, as kept in its meta.json."""

    items: int  # rows of the shard (0 for a side entry)
    compute_s: float = 0.0  # wall time of the compute, model load excluded
    batch_s: list[float] = field(default_factory=list)  # model call per batch
    batch_items: list[int] = field(default_factory=list)  # rows each batch computed
    model_load_s: float | None = None  # when the model loaded inside this entry
    peak_rss_mb: float | None = None  # the stage's peak so far, when the entry finished
    cuda_max_allocated_mb: float | None = None
    device: str | None = None
    measured_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Collects one inference stage's measurements (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.batch_s: list[float] = []
        self.batch_items: list[int] = []
        self.entries: list[EntryMeasure] = []
        self.carried: list[dict[str, Any]] = []  # meta of entries loaded from the cache
        self.cached_entries = 0
        self.model_load_s: float | None = None
        self.device: str | None = None
        self._synchronize: Callable[[], None] | None = None
        self.rss_scope, self.rss_start_mb = reset_peak_rss()

    # -- batches: called by the batch loop, twice per batch --------------------------------

    def call(self, run: Callable[[In], Out], inputs: In, items: int) -> Out:
        """``run(inputs)``, timed as one batch of ``items`` rows."""
        started = self.clock()
        output = run(inputs)
        if self._synchronize is not None:
            self._synchronize()
        self.batch_s.append(self.clock() - started)
        self.batch_items.append(items)
        return output

    # -- model load and entries: called by Inference ---------------------------------------

    @contextmanager
    def loading(self, device: str) -> Iterator[None]:
        """Time the model load; on CUDA, reset the device's peak-memory statistics first."""
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        started = self.clock()
        yield
        self.model_load_s = (self.model_load_s or 0.0) + self.clock() - started
        self.device = device
        if device.startswith("cuda"):
            import torch

            self._synchronize = cuda_synchronizer(torch, device)

    @contextmanager
    def entry(self, items: int) -> Iterator[EntryMeasure]:
        """Time one computed entry while this recorder is the active one; the measure is
        complete when the block ends."""
        measure = EntryMeasure(items)
        first_batch, load_before = len(self.batch_s), self.model_load_s or 0.0
        started = self.clock()
        with recording(self):
            yield measure
        load = (self.model_load_s or 0.0) - load_before
        measure.compute_s = self.clock() - started - load
        measure.batch_s = self.batch_s[first_batch:]
        measure.batch_items = self.batch_items[first_batch:]
        measure.model_load_s = load if load else None
        measure.peak_rss_mb = peak_rss_mb()
        measure.cuda_max_allocated_mb = self.cuda_max_allocated_mb()
        measure.device = self.device
        measure.measured_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.entries.append(measure)

    def carry(self, meta: dict[str, Any]) -> None:
        """An entry loaded from the cache, with the measurements its meta.json kept (if any)."""
        self.cached_entries += 1
        if isinstance(meta.get("performance"), dict):
            self.carried.append(meta["performance"])

    def cuda_max_allocated_mb(self) -> float | None:
        if not (self.device or "").startswith("cuda"):
            return None
        import torch

        return torch.cuda.max_memory_allocated(self.device) / MB

    # -- the stage's summary ---------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """report.json's ``performance``: this run's metrics (logged to MLflow), the status with
        its reason, and the carried measurements of cached entries, labelled as such."""
        metrics = entry_metrics([e.to_json() for e in self.entries])
        if self.model_load_s is not None:
            metrics["perf_model_load_s"] = self.model_load_s
        if self.entries or self.model_load_s is not None:  # a model ran or loaded
            metrics |= memory_metrics(self.rss_start_mb, peak_rss_mb(),
                                      self.cuda_max_allocated_mb())
        computed = len(self.entries)
        out: dict[str, Any] = {
            "status": status(computed, self.cached_entries),
            "note": note(computed, self.cached_entries, self.model_load_s is not None),
            "entries": {"computed": computed, "cached": self.cached_entries},
            "device": self.device, "peak_rss_scope": self.rss_scope,
            "metrics": {k: round(v, 6) for k, v in metrics.items()},
        }
        if self.carried:
            out["cached"] = carried_summary(self.carried, self.cached_entries)
        return out


def cuda_synchronizer(torch: Any, device: str) -> Callable[[], None]:
    """``torch.cuda.synchronize(device)``: once per batch, before the batch's clock stops."""

    def synchronize() -> None:
        torch.cuda.synchronize(device)

    return synchronize


# -- the active recorder ------------------------------------------------------------------------

_ACTIVE: ContextVar[Recorder | None] = ContextVar("bifocal_performance", default=None)


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Make ``recorder`` the one the batch loop reports to (in this thread / context)."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


@contextmanager
def unrecorded() -> Iterator[None]:
    """No recorder inside (texts embedded alongside images stay out of batch latency)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_recorder() -> Recorder | None:
    return _ACTIVE.get()


# -- numbers ------------------------------------------------------------------------------------


def entry_metrics(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput and latencies of computed entries (EntryMeasure dicts); {} for none."""
    if not entries:
        return {}
    items = sum(int(e.get("items", 0)) for e in entries)
    compute = sum(float(e.get("compute_s", 0.0)) for e in entries)
    metrics: dict[str, float] = {"perf_items": float(items), "perf_compute_s": compute}
    if compute > 0 and items:
        metrics["perf_items_per_s"] = items / compute
    batch_s = np.array([s for e in entries for s in e.get("batch_s", [])], dtype=np.float64)
    sizes = np.array([n for e in entries for n in e.get("batch_items", [])], dtype=np.int64)
    return metrics | latency_metrics(batch_s, sizes)


def latency_metrics(batch_s: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """Mean, p50 and p95 of batch latency (over batches) and item latency (over items: each
    item weighs once, with its batch's latency / rows), in milliseconds."""
    if not len(batch_s):
        return {}
    out = {"perf_batches": float(len(batch_s)), "perf_batch_items": float(sizes.sum()),
           "perf_batch_latency_mean_ms": 1000 * float(batch_s.mean()),
           "perf_batch_latency_p50_ms": 1000 * float(np.percentile(batch_s, 50)),
           "perf_batch_latency_p95_ms": 1000 * float(np.percentile(batch_s, 95))}
    if sizes.sum() > 0:
        per_item = np.repeat(batch_s / np.maximum(sizes, 1), sizes)
        out |= {"perf_item_latency_mean_ms": 1000 * float(batch_s.sum() / sizes.sum()),
                "perf_item_latency_p50_ms": 1000 * float(np.percentile(per_item, 50)),
                "perf_item_latency_p95_ms": 1000 * float(np.percentile(per_item, 95))}
    return out


def memory_metrics(start_mb: float | None, peak_mb: float | None,
                   cuda_mb: float | None) -> dict[str, float]:
    values = {"perf_rss_start_mb": start_mb, "perf_peak_rss_mb": peak_mb,
              "perf_cuda_max_allocated_mb": cuda_mb}
    return {k: float(v) for k, v in values.items() if v is not None}


def carried_summary(carried: list[dict[str, Any]], cached_entries: int) -> dict[str, Any]:
    """The cached entries' own measurements, summed like this run's, labelled as carried."""
    metrics = entry_metrics(carried)
    loads = [float(e["model_load_s"]) for e in carried if e.get("model_load_s") is not None]
    if loads:
        metrics["perf_model_load_s"] = max(loads)
    peaks = {key: [float(e[source]) for e in carried if e.get(source) is not None]
             for key, source in (("perf_peak_rss_mb", "peak_rss_mb"),
                                 ("perf_cuda_max_allocated_mb", "cuda_max_allocated_mb"))}
    metrics |= {key: max(values) for key, values in peaks.items() if values}
    times = sorted(str(e.get("measured_at", "")) for e in carried if e.get("measured_at"))
    return {"note": CACHED_NOTE, "entries": len(carried), "of_cached": cached_entries,
            "measured_at": [times[0], times[-1]] if times else [],
            "devices": sorted({str(e["device"]) for e in carried if e.get("device")}),
            "metrics": {k: round(v, 6) for k, v in metrics.items()}}


def status(computed: int, cached: int) -> str:
    if computed and cached:
        return "partial"
    return "measured" if computed else "not measured"


def note(computed: int, cached: int, loaded: bool) -> str:
    """Why the metrics are what they are, in one sentence."""
    if computed and not cached:
        return f"measured in this run: every entry ({computed}) was computed"
    if computed:
        return (f"measured in this run on the {computed} computed entries; {cached} came from "
                "the inference cache and are not in this run's metrics")
    if not cached:
        return "nothing to infer: no entries"
    loaded_note = " (the model was loaded, e.g. to mine hard negatives: its load time and " \
        "memory are measured)" if loaded else ""
    return ("not measured: inference cache hit, every entry came from the cache and no model "
            f"ran in this run{loaded_note}; see performance.cached for the measurements of the "
            "run(s) that computed them")


def performance_metrics(performance: dict[str, Any] | None) -> dict[str, float]:
    """The MLflow metrics: this run's measurements only (never the carried ones)."""
    return dict((performance or {}).get("metrics") or {})


def performance_tags(performance: dict[str, Any] | None) -> dict[str, str]:
    return {STATUS_KEY: str(performance["status"])} if performance else {}


# -- memory of the process ------------------------------------------------------------------


def reset_peak_rss() -> tuple[str, float | None]:
    """Reset the process's RSS high-water mark (Linux) and return (scope of later peaks, the
    RSS now in MiB): "inference stage" after a reset, "process lifetime" where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        scope = "inference stage"
    except OSError:
        scope = "process lifetime"
    return scope, current_rss_mb()


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float | None:
    """The RSS high-water mark in MiB: ``VmHWM``, else ``ru_maxrss``; None where neither is."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes there, KiB on Linux
