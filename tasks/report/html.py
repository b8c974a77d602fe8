"""report.html: one self-contained page per evaluation that opens from disk, in MLflow's
artifact view and from S3 alike. No script, no external font, style or image: the CSS is inline,
plots are inline SVG, thumbnails are ``data:`` JPEGs, and a Content-Security-Policy forbids
fetching anything else (an injected ``<script>`` or remote image would not load).

Sections, each present whatever the run (no scores, skipped metrics, rejects, empty slices):
summary header, metrics, inference performance, plots, robustness (when run), slices, examples,
review queue, counts.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from tasks.report import performance, robustness, sections
from tasks.report.figures import Plots, report_figures
from tasks.report.galleries import THUMBNAIL_PX, galleries

POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
          "form-action 'none'")
STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.5rem 2rem;color:#222;
max-width:1150px;line-height:1.4}
h1{font-size:1.5rem;margin:.2rem 0} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem} h3{margin:1.2rem 0 .4rem}
header p{margin:.3rem 0} .small{font-size:.85rem;color:#555}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.92rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .num,td.value{text-align:right;font-variant-numeric:tabular-nums}
tr.headline{background:#eef5ff;font-weight:600} td.arrow{text-align:center}
.warn{background:#fff4d6;padding:.4rem .8rem;border-left:4px solid #e0a800}
.note,.none{color:#666;font-style:italic}
code{background:#f3f3f3;padding:0 .2rem;word-break:break-all}
.count,.score{white-space:nowrap}
figure.plot{margin:1rem 0;border:1px solid #eee;padding:.5rem;background:#fff}
figure.plot figcaption{font-weight:600;margin-bottom:.3rem}
figure.plot svg{max-width:100%;height:auto}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:.8rem}
.card{display:flex;gap:.7rem;border:1px solid #ddd;border-radius:4px;padding:.5rem;
background:#fafafa}
.card img{width:160px;height:160px;object-fit:contain;background:#eee;flex:none}
.noimg{width:160px;height:160px;flex:none;background:#f6e7e7;color:#7a1f1f;font-size:.8rem;
padding:.4rem;box-sizing:border-box}
.card .body{min-width:0;font-size:.88rem} .card p{margin:0 0 .3rem}
dt{font-weight:600} dd{margin:0 0 .3rem .6rem} dd ol{margin:0;padding-left:1.2rem}
li.hit{color:#1e6b3c;font-weight:600} .ok{color:#1e6b3c} .bad{color:#b00020}
"""


def render(report: dict[str, Any], per_sample: pd.DataFrame,
           files: dict[str, str] | None = None, plots: Plots | None = None) -> str:
    """The whole page; ``plots`` default to ``report_figures`` of the same inputs."""
    plots = plots if plots is not None else report_figures(report, per_sample, files)
    figures = [(p.name, p.title, p.figure) for p in plots.plots]
    body = "\n".join([
        sections.header(report, per_sample),
        sections.metrics(report),
        performance.section(report),
        sections.plots_section(figures, plots.notes),
        robustness.section(report),
        sections.slices(report),
        galleries(per_sample, report, Thumbnails()),
        sections.review(report),
        sections.counts(report, per_sample),
    ])
    model = str(((report.get("config") or {}).get("model") or {}).get("path", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bifocal report: {escape(report['task'])} · {escape(model)}</title>
<style>{STYLE}</style></head>
<body>
{body}
</body></html>
"""


class Thumbnails:
    """``(image path, row id) -> <img>`` with an embedded JPEG thumbnail, or a placeholder
    saying why there is none; each path is read once per page."""

    def __init__(self, size: int = THUMBNAIL_PX) -> None:
        self.size = size
        self.done: dict[str, str] = {}

    def __call__(self, path: Any, key: str) -> str:
        if path is None or str(path) in ("", "nan", "None"):
            return self._placeholder("no image path")
        src = self.done.get(str(path))
        if src is None:
            src = self.done[str(path)] = self._encode(str(path))
        if not src.startswith("data:"):
            return self._placeholder(src)
        return f'<img src="{src}" alt="image of {escape(key)}" loading="eager">'

    def _encode(self, path: str) -> str:
        """The data URI, or the reason the image could not be read."""
        from tasks.io import DECODE_ERRORS, error_text
        from tasks.review.sheet import image_data_uri

        try:
            return image_data_uri(path, self.size)
        except DECODE_ERRORS as error:
            return error_text(error)

    @staticmethod
    def _placeholder(reason: str) -> str:
        return (f'<div class="noimg" role="img" aria-label="image unavailable">'
                f"Image unavailable: {escape(reason)}</div>")
