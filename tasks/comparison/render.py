"""comparison.json, comparison.md, the stdout table and the MLflow metrics of a comparison."""

from __future__ import annotations

import math
import time
from typing import Any

from tasks.comparison.constants import UNSAFE_KEY
from tasks.comparison.pairs import PairComparison, clean_json, verdict
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.compare import MetricComparison
from tasks.tracking import mlflow_log as ml


def settings_json(settings: BootstrapSettings, permutations: int, alpha: float
                  ) -> dict[str, Any]:
    return {"bootstrap": settings.resamples, "level": settings.level,
            "method": settings.method, "seed": settings.seed, "permutations": permutations,
            "alpha": alpha}


def comparison_document(pairs: list[PairComparison], settings: BootstrapSettings,
                        permutations: int, alpha: float,
                        gates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything, as comparison.json."""
    document: dict[str, Any] = {
        "baseline": pairs[0].baseline if pairs else None,
        "candidates": [pair.candidate for pair in pairs],
        "settings": settings_json(settings, permutations, alpha),
        "comparisons": [pair.to_json() for pair in pairs],
    }
    if gates is not None:
        document["gates"] = gates
    return clean_json(document)


def _num(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def metric_cells(result: MetricComparison, alpha: float) -> list[str]:
    """metric, A, B, delta [CI], p (test), p_holm, effect, verdict."""
    interval = f"[{_num(result.ci_low, sign=True)}, {_num(result.ci_high, sign=True)}]"
    return [result.metric, _num(result.a), _num(result.b),
            f"{_num(result.delta, sign=True)} {interval}",
            f"{format_p(result.pvalue)} ({result.test})", format_p(result.p_holm),
            _num(result.effect_size, 2, sign=True), verdict(result, alpha)]


HEADERS = ["metric", "A", "B", "delta [CI]", "p (test)", "p_holm", "effect", "verdict"]


def _pair_heading(pair: PairComparison, settings: dict[str, Any]) -> list[str]:
    a, b = pair.baseline, pair.candidate
    level = round(100 * settings["level"], 1)
    return [f"A (baseline): {a['run_name']} ({a['run_id']})",
            f"B (candidate): {b['run_name']} ({b['run_id']})",
            f"rows compared: {pair.rows['compared']} ({pair.row_key}); delta = B - A with a "
            f"{level:g}% paired bootstrap CI ({settings['bootstrap']} resamples, "
            f"{settings['method']}, seed {settings['seed']}); p two-sided, Holm-adjusted over "
            f"{len(pair.metrics)} metrics; ↑/↓ = p_holm < {pair.alpha:g}"]


def _changed_lines(pair: PairComparison) -> list[str]:
    changed = pair.changed
    if not changed or changed.get("kind") == "none":
        return []
    flips = changed["kind"] == "flips"
    what = "flipped" if flips else "changed most"
    lines = [f"rows that {what} on {changed['metric']}: {changed['gained_total']} better, "
             f"{changed['lost_total']} worse in B"]
    for name in ("gained", "lost"):
        if changed[name]:
            ids = ", ".join(str(row[pair.row_key]) if flips else
                            f"{row[pair.row_key]} ({_num(row['delta'], 3, sign=True)})"
                            for row in changed[name])
            more = changed[f"{name}_total"] - len(changed[name])
            lines.append(f"  {'better' if name == 'gained' else 'worse'}: {ids}"
                         + (f" (+{more} more)" if more > 0 else ""))
    return lines


def render_text(document: dict[str, Any], pairs: list[PairComparison]) -> str:
    """Plain-text tables for stdout."""
    out: list[str] = []
    for pair in pairs:
        rows = [HEADERS] + [metric_cells(m, pair.alpha) for m in pair.metrics]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
        out += _pair_heading(pair, document["settings"])
        out += [f"note: {note}" for note in pair.notes]
        out.append("")
        out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                for row in rows]
        if pair.not_compared:
            out.append("")
            out += [f"not compared: {k} ({v})" for k, v in pair.not_compared.items()]
        changed = _changed_lines(pair)
        if changed:
            out.append("")
            out += changed
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(document: dict[str, Any], pairs: list[PairComparison]) -> str:
    """comparison.md: one table per compared run."""
    out = ["# Paired comparison", ""]
    for pair in pairs:
        a, b = pair.baseline, pair.candidate
        out += [f"## {b['run_name']} vs {a['run_name']}", ""]
        out += [f"- {line}" for line in _pair_heading(pair, document["settings"])]
        out += [f"- **note:** {note}" for note in pair.notes]
        out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in metric_cells(m, pair.alpha))
                + " |" for m in pair.metrics]
        if pair.not_compared:
            out += ["", "Not compared: " + "; ".join(f"`{k}` ({v})"
                                                     for k, v in pair.not_compared.items())]
        changed = _changed_lines(pair)
        if changed:
            out += ["", changed[0], ""] + [f"- {line.strip()}" for line in changed[1:]]
        out.append("")
    return "\n".join(out)


def table_rows(pairs: list[PairComparison]) -> list[dict[str, str]]:
    """Rows for a Prefect table artifact (strings: NaN never reaches JSON)."""
    rows = []
    for pair in pairs:
        for result in pair.metrics:
            cells = dict(zip(HEADERS, metric_cells(result, pair.alpha), strict=True))
            rows.append({"candidate": str(pair.candidate["run_name"])} | cells)
    return rows


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric key (``[/\\w.\\- ]``)."""
    return UNSAFE_KEY.sub("_", ".".join(parts))


def comparison_metrics(pairs: list[PairComparison]) -> list[tuple[str, float, int]]:
    """(key, value, step) for the comparison run: ``delta.<metric>``, ``ci_low.<metric>``,
    ``ci_high.<metric>``, ``p.<metric>``, ``p_holm.<metric>``; step = the candidate's position
    (0 for the first compared run)."""
    out: list[tuple[str, float, int]] = []
    for step, pair in enumerate(pairs):
        out.append(("rows_compared", float(pair.rows["compared"]), step))
        for result in pair.metrics:
            values = {"delta": result.delta, "ci_low": result.ci_low,
                      "ci_high": result.ci_high, "p": result.pvalue, "p_holm": result.p_holm}
            out += [(metric_key(name, result.metric), float(value), step)
                    for name, value in values.items() if math.isfinite(value)]
    return out


def log_metric_steps(uri: str, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(key, value, now, step) for key, value, step in metrics]
    client = ml.client(uri)
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start : start + 1000])
