"""``suite_report.html``: one self-contained page per suite run (plain logic, no Prefect).

The suite's name, date and MLflow run; the grid of models x datasets with each evaluation's
status; the leaderboard with bootstrap intervals, the best value per dataset marked and each
metric's direction; one small plot per headline metric (every model's value with its interval,
per dataset); the evaluations that failed or were skipped, with their errors; the gate's
decision and the promotion when the suite has a gate. Figures are inline SVG drawn at build
time; the page loads nothing (see ``tasks.comparison.page``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.comparison.page import (
    badge,
    figure,
    finite,
    gate_html,
    interval,
    is_web,
    link,
    number,
    page,
    svg_figure,
    table,
    text,
    whiskers,
)
from tasks.suite.leaderboard import default_higher_is_better

FILENAME = "suite_report.html"
PLOTTED = 6  # headline metrics plotted at most
COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#6e7781",
          "#bf3989", "#9a6700", "#0550ae"]


@dataclass
class SuiteReport:
    """What the page shows; ``leaderboard`` is ``leaderboard_records`` of the suite's table."""

    name: str
    date: str
    run_id: str
    run_link: str  # a UI address for http(s) tracking servers, else how to open the run
    tracking_uri: str
    leaderboard: list[dict[str, Any]]
    higher_is_better: dict[str, bool]
    models: list[str]
    datasets: list[str]
    headline: str | None = None
    level: float = 0.95
    gate_setup: str | None = None  # "model@dataset vs baseline" when the suite has a gate
    promote_setup: str | None = None  # "name@alias" when a passed gate promotes
    gate: dict[str, Any] | None = None  # GateResult.to_json() of the gated evaluation
    run_links: dict[str, str] = field(default_factory=dict)  # evaluation run id -> UI address


# ---- what is shown --------------------------------------------------------------------------


def report_metrics(records: list[dict[str, Any]]) -> list[str]:
    """The leaderboard's metrics, in column order (those with a ``<metric>_best`` column)."""
    keys = list(records[0]) if records else []
    return [k.removesuffix("_best") for k in keys
            if k.endswith("_best") and k.removesuffix("_best") in keys]


def plotted_metrics(report: SuiteReport, limit: int = PLOTTED) -> list[str]:
    """Headline metrics: the task's headline first, then the metrics with intervals."""
    metrics = report_metrics(report.leaderboard)
    keys = set(report.leaderboard[0]) if report.leaderboard else set()
    chosen = [report.headline] if report.headline in metrics else []
    chosen += [m for m in metrics if f"{m}_ci_low" in keys and m not in chosen]
    return (chosen or metrics[:1])[:limit]


def higher(report: SuiteReport, metric: str) -> bool:
    return report.higher_is_better.get(metric, default_higher_is_better(metric))


def _arrow(report: SuiteReport, metric: str) -> str:
    up = higher(report, metric)
    title = "higher is better" if up else "lower is better"
    return f'<span class="arrow" title="{title}" aria-label="{title}">{"↑" if up else "↓"}</span>'


def _ordered(report: SuiteReport) -> list[dict[str, Any]]:
    """Leaderboard rows grouped by dataset (suite order), models in suite order within."""
    datasets = {name: i for i, name in enumerate(report.datasets)}
    models = {name: i for i, name in enumerate(report.models)}
    return sorted(report.leaderboard, key=lambda r: (datasets.get(r["dataset"], len(datasets)),
                                                     models.get(r["model"], len(models))))


def _run_cell(report: SuiteReport, run_id: Any) -> str:
    if not run_id:
        return "-"
    address = report.run_links.get(str(run_id))
    label = f"<code>{text(str(run_id)[:8])}</code>"
    return f'<a href="{text(address)}">{label}</a>' if is_web(address) else label


# ---- sections -------------------------------------------------------------------------------


def header_html(report: SuiteReport) -> str:
    counts = {s: sum(r["status"] == s for r in report.leaderboard)
              for s in ("ok", "failed", "skipped")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return (f'<header><h1>Suite · {text(report.name)}</h1>\n'
            f'<p class="meta">Run on <time>{text(report.date)}</time> · '
            f"{len(report.leaderboard)} evaluations ({text(summary or 'none')})</p>\n"
            f'<p class="meta">MLflow suite run <code>{text(report.run_id)}</code> · '
            f"{_open(report.run_link)} · tracking <code>{text(report.tracking_uri)}</code></p>"
            "</header>")


def _open(run_link: str) -> str:
    """A link to the run in the MLflow UI, or how to open it (a local store)."""
    if is_web(run_link):
        return link(run_link, "open in MLflow")
    return f"open with <code>{text(run_link)}</code>" if run_link else ""


def grid_html(report: SuiteReport) -> str:
    """Models x datasets, each cell the evaluation's status and run."""
    cells = {(r["model"], r["dataset"]): r for r in report.leaderboard}
    rows = []
    for model in report.models:
        line = [f"<th>{text(model)}</th>"]
        for dataset in report.datasets:
            found = cells.get((model, dataset))
            line.append("-" if found is None else
                        f'{badge(found["status"], found["status"])} '
                        f'{_run_cell(report, found.get("mlflow_run_id"))}')
        rows.append(line)
    return ('<section id="grid"><h2>Evaluations</h2>'
            + table(["model \\ dataset", *report.datasets], rows, "grid") + "</section>")


def _metric_cell(report: SuiteReport, record: dict[str, Any], metric: str) -> str:
    value = finite(record.get(metric))
    if value is None:
        return '<td class="num">-</td>'
    best = bool(record.get(f"{metric}_best"))
    bounds = interval(record.get(f"{metric}_ci_low"), record.get(f"{metric}_ci_high"))
    mark = ' <span title="best on this dataset">★</span>' if best else ""
    ci = f' <span class="ci">{bounds}</span>' if bounds else ""
    return (f'<td class="num{" best" if best else ""}" data-metric="{text(metric)}" '
            f'data-value="{value!r}">{number(value)}{mark}{ci}</td>')


def leaderboard_html(report: SuiteReport) -> str:
    metrics = report_metrics(report.leaderboard)
    headers = ["dataset", "model", "status", *[f"{m} {'↑' if higher(report, m) else '↓'}"
                                               for m in metrics], "MLflow run"]
    rows = [[text(r["dataset"]), text(r["model"]), badge(r["status"], r["status"]),
             *[_metric_cell(report, r, m) for m in metrics],
             _run_cell(report, r.get("mlflow_run_id"))] for r in _ordered(report)]
    level = round(100 * report.level, 1)
    legend = (f"★ best value per dataset · ↑ higher is better, ↓ lower is better · "
              f"[low, high]: {level:g}% bootstrap confidence interval")
    return ('<section id="leaderboard"><h2>Leaderboard</h2>'
            + (table(headers, rows, "leaderboard") if metrics else "<p>No metrics.</p>")
            + f'<p class="meta legend">{text(legend)}</p></section>')


def _draw(report: SuiteReport, metric: str, key: str) -> str:
    """Each model's value with its interval whiskers, grouped by dataset."""
    rows = [r for r in report.leaderboard if finite(r.get(metric)) is not None]
    width = min(7.0, 1.8 + 1.1 * len(report.datasets))
    with figure(width, 2.4) as fig:
        axes = fig.add_subplot()
        step = 0.7 / max(1, len(report.models))
        for m, model in enumerate(report.models):
            points = [(d, r) for d, name in enumerate(report.datasets) for r in rows
                      if r["model"] == model and r["dataset"] == name]
            _points(axes, points, metric, (m - (len(report.models) - 1) / 2) * step,
                    COLORS[m % len(COLORS)], model)
        axes.set_xticks(range(len(report.datasets)), report.datasets)
        axes.set_xlim(-0.6, len(report.datasets) - 0.4)
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} ({'higher' if higher(report, metric) else 'lower'} is better)")
        axes.grid(axis="y", color="#d0d7de", linewidth=0.5)
        if report.models:
            axes.legend(fontsize=7, frameon=False, loc="best")
        caption = f"{metric}: each model's value with its interval, per dataset"
        return svg_figure(fig, key, caption)


def _points(axes: Any, points: list[tuple[int, dict[str, Any]]], metric: str, offset: float,
            color: str, model: str) -> None:
    """One model's values (and interval whiskers where known) at dataset positions."""
    if not points:
        return
    ys = [float(r[metric]) for _, r in points]
    bars = [whiskers(y, r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high"))
            for y, (_, r) in zip(ys, points, strict=True)]
    axes.errorbar([d + offset for d, _ in points], ys,
                  yerr=[[w[0] for w in bars], [w[1] for w in bars]], fmt="o",
                  color=color, markersize=4, capsize=3, linewidth=1, label=model)


def plots_html(report: SuiteReport) -> str:
    metrics = plotted_metrics(report)
    if not metrics or not any(r["status"] == "ok" for r in report.leaderboard):
        return ""
    figures = [_draw(report, metric, f"plot-{i}") for i, metric in enumerate(metrics)]
    return '<section id="plots"><h2>Headline metrics</h2>' + "".join(figures) + "</section>"


def failures_html(report: SuiteReport) -> str:
    bad = [r for r in report.leaderboard if r["status"] != "ok"]
    if not bad:
        return ('<section id="failures"><h2>Failed evaluations</h2>'
                "<p>None: every evaluation finished.</p></section>")
    rows = [[f"<code>{text(r['model'])}@{text(r['dataset'])}</code>",
             badge(r["status"], r["status"]),
             f'<div class="error">{text(r.get("error") or "")}</div>',
             _run_cell(report, r.get("mlflow_run_id"))] for r in bad]
    return ('<section id="failures"><h2>Failed evaluations</h2>'
            + table(["evaluation", "status", "error", "MLflow run"], rows, "failures")
            + "</section>")


def suite_gate_html(report: SuiteReport) -> str:
    if report.gate_setup is None:
        return ""
    setup = f'<p class="meta">Gate: <code>{text(report.gate_setup)}</code>'
    if report.promote_setup:
        setup += f"; a pass promotes to <code>{text(report.promote_setup)}</code>"
    body = (gate_html(report.gate, report.run_links) if report.gate is not None else
            "<p>No decision: the gated evaluation did not reach its gate (see the failed "
            "evaluations).</p>")
    return f'<section id="gate"><h2>Gate</h2>{setup}.</p>{body}</section>'


def render_suite_report(report: SuiteReport) -> str:
    """The whole page."""
    body = "\n".join(part for part in (header_html(report), grid_html(report),
                                       leaderboard_html(report), plots_html(report),
                                       failures_html(report), suite_gate_html(report)) if part)
    return page(f"Suite {report.name}", body)


def write_suite_report(report: SuiteReport, folder: Path) -> Path:
    """``folder/suite_report.html``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    path.write_text(render_suite_report(report), encoding="utf-8")
    return path
