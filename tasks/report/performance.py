"""The report's inference-performance block (report.json ``performance``): this run's
measurements, or why there are none, and the measurements carried from cached entries, labelled.
Kept apart from the metrics table: these are not measures of the model's quality."""

from __future__ import annotations

from html import escape
from typing import Any

from tasks.report.sections import number, table

LABELS = {
    "perf_items_per_s": "throughput (items/s)",
    "perf_items": "items computed",
    "perf_compute_s": "compute time, model load excluded (s)",
    "perf_batches": "batches",
    "perf_batch_items": "rows in batches",
    "perf_batch_latency_mean_ms": "batch latency, mean (ms)",
    "perf_batch_latency_p50_ms": "batch latency, p50 (ms)",
    "perf_batch_latency_p95_ms": "batch latency, p95 (ms)",
    "perf_item_latency_mean_ms": "item latency, mean (ms)",
    "perf_item_latency_p50_ms": "item latency, p50 (ms)",
    "perf_item_latency_p95_ms": "item latency, p95 (ms)",
    "perf_model_load_s": "model load (s)",
    "perf_rss_start_mb": "RSS at the start of inference (MiB)",
    "perf_peak_rss_mb": "peak RSS (MiB)",
    "perf_cuda_max_allocated_mb": "CUDA max allocated (MiB)",
}


COUNTS = {"perf_items", "perf_batches", "perf_batch_items"}


def rows(metrics: dict[str, float]) -> list[list[str]]:
    ordered = [k for k in LABELS if k in metrics] + sorted(set(metrics) - set(LABELS))
    shown = {k: int(v) if k in COUNTS else v for k, v in metrics.items()}
    return [[escape(LABELS.get(k, k)), f"<code>{escape(k)}</code>",
             f'<span class="num" data-perf="{escape(k)}">{number(shown[k])}</span>']
            for k in ordered]


def section(report: dict[str, Any]) -> str:
    """HTML: the status sentence, this run's table and the carried table (when any)."""
    perf = report.get("performance") or {}
    if not perf:
        return ('<section id="performance"><h2>Inference performance</h2><p class="none">'
                "not recorded in this report</p></section>")
    facts = [f"device {escape(str(perf.get('device')))}" if perf.get("device") else "",
             f"peak RSS over the {escape(str(perf.get('peak_rss_scope', '?')))}"
             if "perf_peak_rss_mb" in (perf.get("metrics") or {}) else ""]
    parts = ['<section id="performance"><h2>Inference performance</h2>'
             '<p class="note" id="performance-note">'
             + " · ".join([escape(str(perf.get("note", "")))] + [f for f in facts if f])
             + "</p>"]
    if perf.get("metrics"):
        parts.append(table(["measured in this run", "MLflow metric", "value"],
                           rows(perf["metrics"]), "performance"))
    cached = perf.get("cached")
    if cached:
        when = " to ".join(dict.fromkeys(cached.get("measured_at") or [])) or "an unknown time"
        devices = ", ".join(cached.get("devices") or []) or "an unknown device"
        parts.append(f'<p class="note" id="performance-cached">Carried from the cache '
                     f"({cached.get('entries')} of {cached.get('of_cached')} cached entries, "
                     f"measured {escape(when)} on {escape(devices)}): "
                     f"{escape(str(cached.get('note', '')))}.</p>")
        parts.append(table(["carried from the cache", "as metric", "value"],
                           rows(cached.get("metrics") or {}), "performance cached"))
    return "".join(parts) + "</section>"


def summary_line(report: dict[str, Any]) -> str | None:
    """One markdown line for the Prefect artifact; None when there is no performance block."""
    perf = report.get("performance") or {}
    metrics = perf.get("metrics") or {}
    if not perf:
        return None
    if "perf_items_per_s" not in metrics:
        return f"Performance: {perf.get('note', 'not measured')}"
    shown = [f"{metrics['perf_items_per_s']:.4g} items/s"]
    shown += [f"batch p50/p95 {metrics['perf_batch_latency_p50_ms']:.4g}/"
              f"{metrics['perf_batch_latency_p95_ms']:.4g} ms"] \
        if "perf_batch_latency_p50_ms" in metrics else []
    shown += [f"model load {metrics['perf_model_load_s']:.3g} s"] \
        if "perf_model_load_s" in metrics else []
    shown += [f"peak RSS {metrics['perf_peak_rss_mb']:.0f} MiB"] \
        if "perf_peak_rss_mb" in metrics else []
    shown += [f"CUDA max allocated {metrics['perf_cuda_max_allocated_mb']:.0f} MiB"] \
        if "perf_cuda_max_allocated_mb" in metrics else []
    return f"Performance ({perf.get('status')}): " + ", ".join(shown)
