"""A self-contained, readable HTML report (inline thumbnails, no external assets)."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

import pandas as pd

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4d6;padding:.5rem 1rem;border-left:4px solid #e0a800}
img{width:96px;height:96px;object-fit:contain;background:#eee}
code{background:#f3f3f3;padding:0 .2rem}
"""


def thumbnail(path: str, size: int = 96) -> str:
    """Inline JPEG data URI, or an empty string when the image cannot be read."""
    from tasks.io import open_image

    try:
        image = open_image(path)
    except (OSError, ValueError, SyntaxError):
        return ""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, list | tuple):
        return "<td>" + "<br>".join(escape(str(v)) for v in value) + "</td>"
    return f"<td>{escape(str(value))}</td>"


def _bounds(metrics: dict[str, float], key: str) -> str:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(report: dict[str, Any], examples: pd.DataFrame, display_columns: list[str]) -> str:
    values = report["metrics"]
    level = report.get("statistics", {}).get("level", 0.95)
    metrics = [{"metric": k, "value": v, f"{level:.0%} interval": _bounds(values, k),
                "better": "higher" if report["higher_is_better"].get(k) else "lower"}
               for k, v in values.items() if not k.endswith(("_ci_low", "_ci_high"))]
    counts = [{"count": k, "value": v} for k, v in report["counts"].items()]
    fingerprints = [{"what": k, "fingerprint": v} for k, v in report["fingerprints"].items()]
    example_rows = []
    for row in examples.to_dict(orient="records"):
        src = thumbnail(row["image_path"])
        image = f'<img src="{src}" alt="{escape(row["item_id"])}">' if src else "(unreadable)"
        example_rows.append(
            "<tr><td>" + image + "</td><td>" + escape(str(row["item_id"])) + "</td>"
            + _cell(list(row["captions"]))
            + "".join(_cell(row.get(c)) for c in display_columns)
            + _cell(row.get("review_strategy", "")) + "</tr>"
        )
    header = "".join(f"<th>{escape(c)}</th>" for c in ["image", "id", "captions",
                                                        *display_columns, "why shown"])
    warnings = "".join(f'<p class="warn">{escape(w)}</p>' for w in report["warnings"])
    rejects = _table([{"reason": k, "rows": v}
                      for k, v in report.get("rejects_by_reason", {}).items()])
    skipped = _table([{"metric": k, "reason": v} for k, v in report["skipped"].items()]) \
        if report["skipped"] else ""
    model = report["config"]["model"]["path"]
    dataset = report["config"]["dataset"]["path"]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Bifocal report: {escape(report['task'])} · {escape(model)}</title><style>{STYLE}</style>
</head><body>
<h1>{escape(report['task'])} evaluation</h1>
<p>Model <code>{escape(model)}</code> on <code>{escape(dataset)}</code>.
MLflow run <code>{escape(str(report.get('mlflow_run_id')))}</code>.</p>
{warnings}
<h2>Metrics</h2>{_table(metrics)}
{'<h2>Skipped metrics</h2>' + skipped if skipped else ''}
<h2>Counts</h2>{_table(counts)}
<h2>Rejected rows</h2>{rejects}
<h2>Examples</h2><table><tr>{header}</tr>{''.join(example_rows)}</table>
<h2>Fingerprints</h2>{_table(fingerprints)}
</body></html>"""
