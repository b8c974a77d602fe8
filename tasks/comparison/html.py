"""``comparison.html``: the paired comparison as one self-contained page (plain logic).

The baseline and candidate runs (names, ids, links); per candidate the per-metric deltas with
their intervals, raw and Holm-adjusted p-values, ↑/↓/≈ verdicts and effect sizes, a forest plot
of the deltas, the gate's decision and rules when a gate was given, and the items that changed
most (at most ``CHANGED_ROWS`` per direction) side by side, with a downscaled thumbnail where the
per-sample table names a readable local image. The page renders from ``comparison.json``
(``comparison_document``) plus ``ComparisonMedia``; it loads nothing (``tasks.comparison.page``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.comparison.constants import CHANGED_ROWS
from tasks.comparison.page import (
    figure,
    finite,
    gate_html,
    interval,
    link,
    number,
    page,
    svg_figure,
    table,
    text,
    whiskers,
)
from tasks.comparison.render import format_p

if TYPE_CHECKING:
    from tasks.comparison.runs import RunData

FILENAME = "comparison.html"
THUMBNAIL_PX = 120
IMAGE_COLUMNS = ("image_path",)  # local image files the per-sample tables name
SIDE_COLUMNS = 3  # text columns shown for A and B side by side
SIDE_CHARS = 160
VERDICTS = {"↑": ("↑", "up", "significantly better"), "↓": ("↓", "down", "significantly worse"),
            "=": ("≈", "same", "no significant difference")}

# row id -> {"image": data URI or "" (unreadable / none), "sides": {column: [A text, B text]}}
Media = dict[str, dict[str, Any]]


@dataclass
class ComparisonReport:
    """What the page shows: ``document`` is comparison.json; ``media`` one entry per
    comparison (same order), ``links`` UI addresses of runs on http(s) tracking servers."""

    document: dict[str, Any]
    media: list[Media] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # the comparison's own MLflow run
    date: str = ""


# ---- images and texts of the changed rows (from the runs' per-sample tables) -------------------


def changed_ids(comparison: dict[str, Any], limit: int = CHANGED_ROWS) -> list[str]:
    """Row ids of the listed changed rows, better ones first (at most ``limit`` each way)."""
    changed, key = comparison.get("changed_rows") or {}, comparison["row_key"]
    return [str(r[key]) for name in ("gained", "lost") for r in (changed.get(name) or [])[:limit]]


def _rows_by_id(run: RunData, key: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    table = run.table
    if key not in table.columns:
        return {}
    found = table[table[key].astype(str).isin(ids)].drop_duplicates(key)
    return {str(record[key]): record for record in found.to_dict("records")}


def thumbnail(path: Any, cache: dict[str, str]) -> str:
    """A ≤ ``THUMBNAIL_PX`` JPEG data URI of a local image file, "" when there is none or it
    cannot be read (opened with the project's safe opener: size limits, decode checks)."""
    from tasks.review.sheet import image_data_uri

    if not isinstance(path, str) or not path or "://" in path:
        return ""
    if path not in cache:
        try:
            cache[path] = image_data_uri(path, THUMBNAIL_PX)
        except (OSError, ValueError):
            cache[path] = ""
    return cache[path]


def _image_path(*rows: dict[str, Any] | None) -> Any:
    return next((row[c] for row in rows if row for c in IMAGE_COLUMNS if row.get(c)), None)


def side_texts(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str
               ) -> dict[str, list[str]]:
    """Text columns whose values differ between A and B (e.g. the retrieved caption)."""
    if not a or not b:
        return {}
    skip = {key, "status", "reason", *IMAGE_COLUMNS}
    out: dict[str, list[str]] = {}
    for column in a:
        x, y = a.get(column), b.get(column)
        if column in skip or not isinstance(x, str) or not isinstance(y, str) or x == y:
            continue
        out[str(column)] = [x[:SIDE_CHARS], y[:SIDE_CHARS]]
        if len(out) == SIDE_COLUMNS:
            break
    return out


def pair_media(baseline: RunData, candidate: RunData, comparison: dict[str, Any],
               cache: dict[str, str] | None = None) -> Media:
    """Thumbnail and side-by-side texts of each listed changed row of one comparison."""
    cache = {} if cache is None else cache
    key, ids = comparison["row_key"], changed_ids(comparison)
    rows_a, rows_b = _rows_by_id(baseline, key, ids), _rows_by_id(candidate, key, ids)
    return {i: {"image": thumbnail(_image_path(rows_a.get(i), rows_b.get(i)), cache),
                "sides": side_texts(rows_a.get(i), rows_b.get(i), key)} for i in ids}


def comparison_media(runs: list[RunData], document: dict[str, Any]) -> list[Media]:
    """``pair_media`` of every comparison (run 0 is the baseline of each)."""
    cache: dict[str, str] = {}
    return [pair_media(runs[0], run, comparison, cache)
            for run, comparison in zip(runs[1:], document["comparisons"], strict=True)]


# ---- sections ---------------------------------------------------------------------------------


def _run_link(report: ComparisonReport, run_id: str) -> str:
    return link(report.links.get(run_id), run_id) if report.links.get(run_id) else (
        f"<code>{text(run_id)}</code>")


def _short(value: Any) -> str:
    return f"<code>{text(str(value)[:12])}</code>" if value else "-"


def header_html(report: ComparisonReport) -> str:
    document, settings = report.document, report.document.get("settings") or {}
    names = ", ".join(str(c.get("run_name")) for c in document.get("candidates") or [])
    baseline = (document.get("baseline") or {}).get("run_name", "")
    level = round(100 * float(settings.get("level", 0.95)), 1)
    where = ""
    if report.run_id:
        where = f"MLflow comparison run {_run_link(report, report.run_id)} · "
    return (f"<header><h1>Paired comparison · {text(names)} vs {text(baseline)}</h1>\n"
            f'<p class="meta">{where}{text(report.date)}</p>\n'
            f'<p class="meta settings">delta = B − A with a {level:g}% paired bootstrap CI '
            f"({text(settings.get('bootstrap', ''))} resamples, {text(settings.get('method', ''))}"
            f", seed {text(settings.get('seed', ''))}); p two-sided ("
            f"{text(settings.get('permutations', ''))} permutations or McNemar), Holm-adjusted "
            f"over each comparison's metrics; ↑/↓ = p_holm &lt; {text(settings.get('alpha', ''))}"
            "</p></header>")


def runs_html(report: ComparisonReport) -> str:
    document = report.document
    runs = [("baseline (A)", document.get("baseline") or {})]
    runs += [(f"candidate (B{i + 1})" if len(document.get("candidates") or []) > 1
              else "candidate (B)", c) for i, c in enumerate(document.get("candidates") or [])]
    rows = [[text(role), text(run.get("run_name", "")), _run_link(report, str(run.get("run_id"))),
             f"<code>{text(run.get('model_path') or '-')}</code>",
             _short(run.get("dataset_fingerprint")), _short(run.get("model_fingerprint"))]
            for role, run in runs]
    headers = ["role", "run", "MLflow run id", "model", "dataset fingerprint", "model fingerprint"]
    return '<section id="runs"><h2>Runs</h2>' + table(headers, rows, "runs") + "</section>"


def verdict_html(metric: dict[str, Any]) -> str:
    symbol, cls, title = VERDICTS.get(str(metric.get("verdict")), VERDICTS["="])
    return f'<span class="badge verdict {cls}" title="{title}">{symbol}</span>'


def metric_row(metric: dict[str, Any]) -> list[str]:
    """metric (direction), A, B, delta [CI], p (test), p_holm, effect, verdict."""
    arrow = "↑" if metric.get("higher_is_better", True) else "↓"
    bounds = interval(metric.get("ci_low"), metric.get("ci_high"), sign=True)
    return [f"{text(metric.get('metric', ''))} <span class=\"ci\">{arrow}</span>",
            f'<td class="num">{number(metric.get("a"))}</td>',
            f'<td class="num">{number(metric.get("b"))}</td>',
            f'<td class="num delta" data-metric="{text(metric.get("metric", ""))}" '
            f'data-value="{finite(metric.get("delta"))!r}">{number(metric.get("delta"), sign=True)}'
            f' <span class="ci">{bounds}</span></td>',
            f'<td class="num">{text(format_p(finite(metric.get("pvalue"))))} '
            f'<span class="ci">({text(metric.get("test", ""))})</span></td>',
            f'<td class="num">{text(format_p(finite(metric.get("p_holm"))))}</td>',
            f'<td class="num">{number(metric.get("effect_size"), 2, sign=True)}</td>',
            verdict_html(metric)]


METRIC_HEADERS = ["metric", "A", "B", "delta [CI]", "p (test)", "p_holm", "effect", "verdict"]


def metrics_html(comparison: dict[str, Any]) -> str:
    rows = [metric_row(m) for m in comparison.get("metrics") or []]
    html = table(METRIC_HEADERS, rows, "metrics") if rows else "<p>No metric compared.</p>"
    skipped = comparison.get("not_compared") or {}
    if skipped:
        html += ("<p>Not compared: " + "; ".join(f"<code>{text(k)}</code> ({text(v)})"
                                                  for k, v in skipped.items()) + "</p>")
    return html


# ---- forest plot --------------------------------------------------------------------------------

COLORS = {"up": "#1a7f37", "down": "#cf222e", "same": "#57606a"}


def _forest_row(axes: Any, metric: dict[str, Any]) -> None:
    """One metric: the delta, its interval whiskers, the zero line; its own x scale."""
    delta = float(metric["delta"])
    down, up = whiskers(delta, metric.get("ci_low"), metric.get("ci_high"))
    color = COLORS[VERDICTS.get(str(metric.get("verdict")), VERDICTS["="])[1]]
    axes.axvline(0.0, color="#8c959f", linewidth=0.8, linestyle="--")
    axes.errorbar([delta], [0.0], xerr=[[down], [up]], fmt="o", color=color, markersize=5,
                  capsize=3, linewidth=1.2)
    arrow = "↑" if metric.get("higher_is_better", True) else "↓"
    axes.set_yticks([0.0], [f"{metric['metric']} {arrow}"])
    axes.set_ylim(-1, 1)
    axes.spines["left"].set_visible(False)
    axes.tick_params(axis="y", length=0)


def forest_html(comparison: dict[str, Any], key: str) -> str:
    """The deltas with their intervals, one row per metric (each on its own scale)."""
    metrics = [m for m in comparison.get("metrics") or [] if finite(m.get("delta")) is not None]
    if not metrics:
        return ""
    with figure(6.0, 0.3 + 0.55 * len(metrics)) as fig:
        for index, metric in enumerate(metrics):
            _forest_row(fig.add_subplot(len(metrics), 1, index + 1), metric)
        fig.suptitle("delta = B − A with its confidence interval (0 = no change)", fontsize=8)
        caption = ("Forest plot of the deltas: green significantly better, red significantly "
                   "worse, grey no significant difference; each metric on its own scale")
        return svg_figure(fig, key, caption)


# ---- changed items ----------------------------------------------------------------------------


def _image_cell(media: dict[str, Any] | None, row_id: str) -> str:
    uri = (media or {}).get("image") or ""
    if uri.startswith("data:image/"):
        return f'<img class="thumb" src="{text(uri)}" alt="{text(row_id)}">'
    return '<div class="thumb placeholder" role="img" aria-label="no image">no image</div>'


def _context_columns(rows: list[dict[str, Any]], key: str, sides: set[str]) -> list[str]:
    skip = {key, "a", "b", "delta", *IMAGE_COLUMNS, *sides}
    return list(dict.fromkeys(c for r in rows for c in r if c not in skip))


def changed_table(rows: list[dict[str, Any]], key: str, media: Media) -> str:
    """Row id, thumbnail, context, A, B, delta and A's and B's differing texts side by side."""
    rows = rows[:CHANGED_ROWS]
    sides = list(dict.fromkeys(c for r in rows for c in media.get(str(r[key]), {})
                               .get("sides", {})))
    context = _context_columns(rows, key, set(sides))
    headers = ["thumbnail", key, *context, "A", "B", "delta",
               *[f"{c} ({side})" for c in sides for side in ("A", "B")]]
    body = []
    for record in rows:
        row_id, item = str(record[key]), media.get(str(record[key]), {})
        texts = item.get("sides", {})
        body.append([_image_cell(item, row_id), f"<code>{text(row_id)}</code>",
                     *[text(record.get(c) if record.get(c) is not None else "") for c in context],
                     f'<td class="num">{number(record.get("a"), 3)}</td>',
                     f'<td class="num">{number(record.get("b"), 3)}</td>',
                     f'<td class="num">{number(record.get("delta"), 3, sign=True)}</td>',
                     *[text(texts.get(c, ["", ""])[side]) for c in sides for side in (0, 1)]])
    return table(headers, body, "changed side")


def changed_html(comparison: dict[str, Any], media: Media) -> str:
    changed, key = comparison.get("changed_rows") or {}, comparison["row_key"]
    head = '<h3>Items that changed most</h3>'
    if not changed or changed.get("kind") == "none":
        reason = changed.get("reason") or "no per-row values to compare"
        return f'<div class="changed">{head}<p>Not available: {text(reason)}.</p></div>'
    verb = "flipped" if changed.get("kind") == "flips" else "changed"
    parts = [head, f'<p class="meta">Rows that {verb} on <code>{text(changed["metric"])}</code>: '
             f'{int(changed.get("gained_total", 0))} better, {int(changed.get("lost_total", 0))} '
             f"worse in B (at most {CHANGED_ROWS} shown each way).</p>"]
    for name, title in (("gained", "Better in B"), ("lost", "Worse in B")):
        rows = changed.get(name) or []
        total = int(changed.get(f"{name}_total", len(rows)))
        more = f" (+{total - min(len(rows), CHANGED_ROWS)} more)" if total > CHANGED_ROWS else ""
        parts.append(f"<h4>{title}{more}</h4>")
        parts.append(changed_table(rows, key, media) if rows else "<p>None.</p>")
    return f'<div class="changed">{"".join(parts)}</div>'


def _rows_line(comparison: dict[str, Any]) -> str:
    rows = comparison.get("rows") or {}
    return (f'<p class="meta">{int(rows.get("compared", 0))} rows compared on '
            f'<code>{text(comparison.get("row_key", ""))}</code> (baseline scored '
            f'{int(rows.get("baseline_scored", 0))}, candidate '
            f'{int(rows.get("candidate_scored", 0))})</p>')


def pair_html(report: ComparisonReport, index: int) -> str:
    """One candidate against the baseline."""
    comparison, gates = report.document["comparisons"][index], report.document.get("gates")
    a, b = comparison["baseline"], comparison["candidate"]
    parts = [f'<h2>{text(b.get("run_name", ""))} vs {text(a.get("run_name", ""))}</h2>',
             _rows_line(comparison)]
    parts += [f'<p class="note">{text(note)}</p>' for note in comparison.get("notes") or []]
    parts += [metrics_html(comparison), forest_html(comparison, f"forest-{index}")]
    if gates is not None and index < len(gates):
        parts.append(f"<h3>Gate</h3>{gate_html(gates[index], report.links)}")
    media = report.media[index] if index < len(report.media) else {}
    parts.append(changed_html(comparison, media))
    return f'<section class="pair" id="pair-{index}">{"".join(parts)}</section>'


def render_comparison_report(report: ComparisonReport) -> str:
    """The whole page."""
    pairs = [pair_html(report, i) for i in range(len(report.document.get("comparisons") or []))]
    body = "\n".join([header_html(report), runs_html(report), *pairs])
    return page("Paired comparison", body)


def write_comparison_report(report: ComparisonReport, folder: Path) -> Path:
    """``folder/comparison.html``."""
    path = folder / FILENAME
    path.write_text(render_comparison_report(report), encoding="utf-8")
    return path
