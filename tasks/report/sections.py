"""The report's text sections as HTML fragments: the header (what was evaluated, when, the
counts with reasons, warnings, links to the MLflow and Prefect runs), the metrics table with
intervals and direction arrows, skipped metrics, slices, the review queue and the plots. Every
text from the data is escaped."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import pandas as pd

from tasks.report.links import mlflow_run_url
from tasks.report.svg import to_svg
from tasks.stats.estimates import is_interval_key

ARROWS = {True: ("↑", "higher is better"), False: ("↓", "lower is better")}


def number(value: Any) -> str:
    """4 decimals for floats, integers as they are, "–" for NaN / missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def table(head: list[str], rows: list[list[str]], css: str = "") -> str:
    """A table of already escaped cells."""
    if not rows:
        return '<p class="none">none</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def link(url: str | None, text: str) -> str:
    """An anchor for an http(s) ``url``, else the text (escaped) as code."""
    if url and url.startswith(("http://", "https://")):
        return f'<a href="{escape(url)}" rel="noreferrer" target="_blank">{escape(text)}</a>'
    return f"<code>{escape(text)}</code>"


# -- header -----------------------------------------------------------------------------------


def header(report: dict[str, Any], per_sample: pd.DataFrame) -> str:
    """Title, model and dataset, date, fingerprints, counts line, run links and warnings."""
    config = report.get("config") or {}
    model, dataset = config.get("model") or {}, config.get("dataset") or {}
    fingerprints = " · ".join(f"{escape(k)} <code>{escape(str(v))[:16]}</code>"
                              for k, v in (report.get("fingerprints") or {}).items())
    return f"""<header id="summary">
<h1>{escape(report['task'])} · {escape(str(report.get('run_name', '')))}</h1>
<p>Model <code>{escape(str(model.get('path', '?')))}</code> ({escape(str(model.get('kind', '')))})
on <code>{escape(str(dataset.get('path', '?')))}</code>,
made {escape(str(report.get('created_at', 'at an unknown time')))}.</p>
<p class="small">Fingerprints: {fingerprints or 'none'}</p>
{counts_line(report, per_sample)}
{run_links(report)}
{warnings(report)}
</header>"""


def counts_line(report: dict[str, Any], per_sample: pd.DataFrame) -> str:
    """Rows in / scored / rejected / failed, one line; the reasons are in the counts section."""
    counts = report.get("counts") or {}
    status = per_sample["status"] if "status" in per_sample else pd.Series(dtype=str)
    unit = "pairs" if report.get("row_key") == "pair_id" else "items"
    parts = [("rows in", counts.get("rows_in", "?")), (f"{unit} scored", int((status == "scored")
                                                                            .sum())),
             ("rows rejected", counts.get("rejected_rows", counts.get("rejected", 0))),
             (f"{unit} failed", int((status == "failed").sum()))]
    cells = " · ".join(f'<span class="count" data-count="{escape(name)}">{escape(name)} '
                       f"<b>{escape(str(value))}</b></span>" for name, value in parts)
    return f'<p id="counts-line">{cells}</p>'


def run_links(report: dict[str, Any]) -> str:
    """The MLflow run (a link on a tracking server) and the Prefect flow run (a link on a real
    server, else its id)."""
    run_id = str(report.get("mlflow_run_id", ""))
    mlflow = link(mlflow_run_url(report.get("mlflow_tracking_uri"), run_id), run_id)
    prefect = report.get("prefect") or {}
    flow = (link(prefect.get("flow_run_url"), f"{prefect.get('flow_run_name', '')} "
                                              f"({prefect['flow_run_id']})")
            if prefect.get("flow_run_id") else "none recorded")
    return (f'<p id="links">MLflow run {mlflow} · Prefect flow run {flow}</p>')


def warnings(report: dict[str, Any]) -> str:
    shown = list(report.get("warnings") or []) + list((report.get("review") or {})
                                                      .get("warnings") or [])
    return "".join(f'<p class="warn">⚠ {escape(str(w))}</p>' for w in shown)


# -- metrics ----------------------------------------------------------------------------------


def metrics(report: dict[str, Any]) -> str:
    """Every metric with its interval and direction, the headline first; skipped metrics."""
    values = report.get("metrics") or {}
    better = report.get("higher_is_better") or {}
    headline = report.get("headline", "")
    level = float((report.get("statistics") or {}).get("level", 0.95))
    keys = sorted((k for k in values if not is_interval_key(k)), key=lambda k: k != headline)
    rows = [metric_row(k, values, better.get(k), k == headline) for k in keys]
    body = "".join(rows) or '<tr><td colspan="4">no metrics</td></tr>'
    return (f'<section id="metrics"><h2>Metrics</h2><table class="metrics"><thead><tr>'
            f"<th>metric</th><th>value</th><th>{level:.0%} interval</th><th>better</th>"
            f"</tr></thead><tbody>{body}</tbody></table>{skipped(report)}</section>")


def metric_row(key: str, values: dict[str, float], higher: bool | None, headline: bool) -> str:
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    bounds = f"[{number(low)}, {number(high)}]" if low is not None and high is not None else "–"
    arrow, title = ARROWS.get(higher, ("", "")) if higher is not None else ("", "")
    css = ' class="headline"' if headline else ""
    return (f'<tr{css} data-metric="{escape(key)}"><td>{escape(key)}</td>'
            f'<td class="num value">{number(values[key])}</td><td class="num">{bounds}</td>'
            f'<td class="arrow" title="{title}">{arrow}</td></tr>')


def skipped(report: dict[str, Any]) -> str:
    rows = [[escape(str(k)), escape(str(v))] for k, v in (report.get("skipped") or {}).items()]
    if not rows:
        return ""
    return '<h3 id="skipped">Skipped metrics</h3>' + table(["metric", "reason"], rows)


# -- counts -----------------------------------------------------------------------------------


def counts(report: dict[str, Any], per_sample: pd.DataFrame) -> str:
    """All counts, rejected rows by reason and failed rows by reason."""
    rows = [[escape(str(k)), f'<span class="num">{number(v)}</span>']
            for k, v in (report.get("counts") or {}).items()]
    rejects = [[escape(str(k)), str(v)] for k, v in (report.get("rejects_by_reason") or {})
               .items()]
    failed = failure_reasons(per_sample)
    return (f'<section id="counts"><h2>Counts</h2>{table(["count", "value"], rows)}'
            f'<h3>Rejected rows by reason</h3>{table(["reason", "rows"], rejects)}'
            f'<h3>Failed rows by reason</h3>{table(["reason", "rows"], failed)}</section>')


def failure_reasons(per_sample: pd.DataFrame) -> list[list[str]]:
    """(reason head, rows) of the failed rows; details after a colon are grouped away."""
    if "status" not in per_sample:
        return []
    failed = per_sample[per_sample["status"] == "failed"]
    reasons = failed.get("reason", pd.Series("", index=failed.index)).fillna("").astype(str)
    heads = reasons.str.split(":").str[0].replace("", "unknown")
    return [[escape(str(k)), str(v)] for k, v in heads.value_counts().items()]


# -- slices -----------------------------------------------------------------------------------


def slices(report: dict[str, Any]) -> str:
    """Per slice: rows, status, the headline metric with its interval, the test against the
    rest of the rows; slices that were too small are listed, not dropped."""
    section = report.get("slices")
    if not section:
        return ""
    headline = report.get("headline", "")
    rows = [slice_row(r, headline) for r in section.get("results") or []]
    head = ["slice", "rows", "status", f"{escape(headline)} [interval]", "Δ vs rest",
            "p (Holm)"]
    return f'<section id="slices"><h2>Slices</h2>{table(head, rows)}</section>'


def slice_row(result: dict[str, Any], headline: str) -> list[str]:
    cell = (result.get("metrics") or {}).get(headline)
    value = (f"{number(cell.get('value'))} [{number(cell.get('ci_low'))}, "
             f"{number(cell.get('ci_high'))}]" if cell else "–")
    test = result.get("headline_vs_rest") or {}
    return [escape(str(result.get("slice", ""))), str(result.get("size", 0)),
            escape(str(result.get("status", ""))), value, number(test.get("delta")),
            number(test.get("p_holm", test.get("p")))]


# -- review queue -----------------------------------------------------------------------------


def review(report: dict[str, Any]) -> str:
    """A link to the review sheet and the queue's items per sampling strategy."""
    queue = report.get("review") or {}
    if not queue.get("items"):
        return ('<section id="review"><h2>Review queue</h2>'
                '<p class="none">No review queue for this run.</p></section>')
    files = set(queue.get("files") or [])
    sheet = ('<p><a href="review/review_sheet.html">Open the review sheet</a> '
             "(review/review_sheet.html)</p>" if "review/review_sheet.html" in files else "")
    rows = [[escape(str(k)), str(v)] for k, v in (queue.get("strategies") or {}).items()]
    return (f'<section id="review"><h2>Review queue</h2><p>{int(queue["items"])} items '
            f"queued for human review.</p>{sheet}{table(['strategy', 'items'], rows)}"
            "</section>")


# -- plots ------------------------------------------------------------------------------------


def plots_section(figures: list[tuple[str, str, Any]], notes: list[str]) -> str:
    """Each (name, title, figure) as inline SVG, and the notes on plots left out."""
    parts = [f'<figure class="plot" id="plot-{escape(name)}"><figcaption>{escape(title)}'
             f"</figcaption>{to_svg(figure, f'plot-{name}')}</figure>"
             for name, title, figure in figures]
    notes_html = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return f'<section id="plots"><h2>Plots</h2>{notes_html}{"".join(parts)}</section>'
