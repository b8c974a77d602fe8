"""The offline HTML review sheet: one self-contained file a person opens from disk, rates the
queued items in, and saves the ratings from as a CSV built in the browser.

Everything is inline: the CSS, the script, the images (base64 JPEG thumbnails, ``THUMBNAIL_PX``
on the longest side). A Content-Security-Policy allows only the page's own script and style
(by hash) and ``data:`` images, so nothing is fetched even from a text that slipped through.
Item texts are HTML-escaped server-side; the data the script needs (run id, fields, review
ids) sits in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped.

The saved file is ``ratings-<first 8 characters of the run id>.csv`` with the columns
``review_id,run_id,reviewer,<rating field names in schema order>``: one line per item with at
least one answer, RFC 4180 quoting, CRLF line ends, UTF-8 without BOM. Answers also survive a
reload (``localStorage``, keyed by run id).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Mapping
from html import escape
from typing import Any

import pandas as pd

from tasks.config import RatingField
from tasks.review.queue import as_strings, text_or_none

THUMBNAIL_PX = 384
DATA_ID = "sheet-data"
STORAGE_PREFIX = "bifocal-review:"

STYLE = """
html{scroll-padding-top:8rem}
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #ccc;
padding:.6rem 1.5rem;display:flex;flex-wrap:wrap;gap:.4rem 1.5rem;align-items:center}
header h1{font-size:1.15rem;margin:0;flex-basis:100%}
main{max-width:1100px;margin:0 auto;padding:1rem 1.5rem}
code{background:#f0f0f0;padding:0 .2rem;word-break:break-all}
.item{background:#fff;border:1px solid #ddd;border-left:5px solid #ddd;border-radius:4px;
margin:0 0 1.2rem;padding:.6rem 1rem}
.item.done{border-left-color:#2e8b57}
.item h2{font-size:1rem;margin:.2rem 0 .6rem}
.cols{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;flex:0 0 auto}
figure img{max-width:384px;max-height:384px;display:block;background:#eee}
.noimg{width:240px;min-height:120px;padding:.6rem;background:#f6e7e7;border:1px dashed #b55;
color:#7a1f1f;font-size:.9rem}
.texts{flex:1 1 320px;min-width:0}
dt{font-weight:600;margin-top:.4rem} dd{margin:.1rem 0 0 1rem;white-space:pre-wrap}
dd ol{margin:0;padding-left:1.2rem}
.meta{color:#555;font-size:.9rem;margin:0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.15rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
fieldset{border:1px solid #ccc;border-radius:4px;margin:.6rem 0;padding:.3rem .8rem .5rem}
legend{font-weight:600;padding:0 .3rem}
.opt{display:inline-block;margin:.15rem .8rem .15rem 0;white-space:nowrap}
.opt input{margin-right:.25rem}
input:focus-visible,textarea:focus-visible,button:focus-visible{outline:3px solid #1a73e8;
outline-offset:1px}
.clear{margin-left:.5rem;font-size:.8rem}
textarea{width:100%;box-sizing:border-box;min-height:3.5rem;font:inherit}
.text label{display:block;font-weight:600;margin:.6rem 0 .2rem}
#message{margin:0;font-weight:600;color:#7a1f1f}
#message.ok{color:#1e6b3c}
.req{color:#7a1f1f}
"""

SCRIPT = r"""
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("sheet-data").textContent);
  const key = cfg.storage_key;
  const reviewer = document.getElementById("reviewer");
  const message = document.getElementById("message");
  const group = (i, f) => "a" + i + "-" + f.name;

  function valueOf(i, f) {
    const name = group(i, f);
    if (f.type === "text") return document.getElementById(name).value;
    const box = document.querySelector('input[name="' + name + '"]:checked');
    return box ? box.value : "";
  }
  function setValue(i, f, value) {
    const name = group(i, f);
    const text = typeof value === "string" ? value : "";
    if (f.type === "text") { document.getElementById(name).value = text; return; }
    document.querySelectorAll('input[name="' + name + '"]').forEach((box) => {
      box.checked = box.value === text;
    });
  }
  const answers = (i) => cfg.fields.map((f) => valueOf(i, f));
  const answered = (values) => values.some((v) => v.trim() !== "");
  function isRated(values) {
    const needed = cfg.fields.map((f) => f.required);
    if (!needed.some(Boolean)) return answered(values);
    return values.every((v, k) => !needed[k] || v !== "");
  }

  function csvCell(value) {
    const text = String(value);
    return /[",\r\n]|^\s|\s$/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  const csvLine = (cells) => cells.map(csvCell).join(",") + "\r\n";
  function buildCsv(name) {
    let out = csvLine(cfg.columns);
    let rows = 0;
    cfg.items.forEach((id, i) => {
      const values = answers(i);
      if (!answered(values)) return;
      out += csvLine([id, cfg.run_id, name].concat(values));
      rows += 1;
    });
    return {text: out, rows: rows};
  }

  function say(text, ok) {
    message.textContent = text;
    message.className = ok ? "ok" : "";
  }
  function progress() {
    let done = 0;
    cfg.items.forEach((_, i) => {
      const rated = isRated(answers(i));
      document.getElementById("item-" + i).classList.toggle("done", rated);
      if (rated) done += 1;
    });
    document.getElementById("progress").textContent =
      done + " of " + cfg.items.length + " rated";
  }

  function store() {
    const state = {reviewer: reviewer.value, answers: {}};
    cfg.items.forEach((id, i) => {
      const values = answers(i);
      if (answered(values)) {
        state.answers[id] = {};
        cfg.fields.forEach((f, k) => { state.answers[id][f.name] = values[k]; });
      }
    });
    try { localStorage.setItem(key, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }
  function restore() {
    let state = null;
    try { state = JSON.parse(localStorage.getItem(key) || "null"); } catch (e) { return; }
    if (!state || typeof state !== "object") return;
    if (typeof state.reviewer === "string") reviewer.value = state.reviewer;
    const saved = state.answers || {};
    cfg.items.forEach((id, i) => {
      if (!Object.prototype.hasOwnProperty.call(saved, id)) return;
      cfg.fields.forEach((f) => { setValue(i, f, (saved[id] || {})[f.name]); });
    });
  }

  function download(text) {
    const url = URL.createObjectURL(new Blob([text], {type: "text/csv;charset=utf-8"}));
    const link = document.createElement("a");
    link.href = url;
    link.download = cfg.file_name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }
  function save() {
    const name = reviewer.value.trim();
    if (!name) {
      say("Enter your name in \u201cReviewer\u201d before saving.", false);
      reviewer.focus();
      return;
    }
    const csv = buildCsv(name);
    if (csv.rows === 0) { say("Nothing answered yet: there is nothing to save.", false); return; }
    download(csv.text);
    say("Saved " + csv.rows + " answered items to " + cfg.file_name + ".", true);
  }

  document.addEventListener("input", () => { progress(); store(); });
  document.addEventListener("change", () => { progress(); store(); });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.clear");
    if (!button) return;
    document.querySelectorAll('input[name="' + button.dataset.group + '"]')
      .forEach((box) => { box.checked = false; });
    progress();
    store();
  });
  document.getElementById("save").addEventListener("click", save);
  restore();
  progress();
  window.bifocalSheet = {csvCell: csvCell, buildCsv: buildCsv};
})();
"""


def render_sheet(queue: pd.DataFrame, schema: list[RatingField], run_id: str,
                 title: str) -> str:
    """The review sheet of a queue (``tasks/review/queue.py``) as one offline HTML page."""
    rows = queue.to_dict(orient="records")
    items = "".join(_item(index, row, schema, len(rows)) for index, row in enumerate(rows))
    data = _data_json(rows, schema, run_id)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_policy()}">
<meta name="referrer" content="no-referrer">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
{_header(title, run_id, len(rows))}
<main>{items or '<p>The queue is empty: nothing to review.</p>'}</main>
<script type="application/json" id="{DATA_ID}">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def ratings_file_name(run_id: str) -> str:
    """``ratings-<first 8 characters of the run id>.csv`` (characters outside ``[A-Za-z0-9_-]``
    dropped, so the name is safe on every file system)."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "", str(run_id)[:8])
    return f"ratings-{stem}.csv" if stem else "ratings.csv"


def csv_columns(schema: list[RatingField]) -> list[str]:
    """The columns of the CSV the sheet saves, in order."""
    return ["review_id", "run_id", "reviewer", *(field.name for field in schema)]


def image_data_uri(path: str, size: int = THUMBNAIL_PX) -> str:
    """A JPEG thumbnail (longest side ``size``) as a data URI, opened the project's safe way
    (``tasks.io.open_image``); raises its errors (``OSError`` / ``ValueError``)."""
    from tasks.io import open_image

    image = open_image(path)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- page parts ---------------------------------------------------------------------------------


def _policy() -> str:
    """CSP: nothing from anywhere, except this page's own script and style and data: images."""
    return ("default-src 'none'; img-src data:; "
            f"style-src '{_digest(STYLE)}'; script-src '{_digest(SCRIPT)}'; "
            "base-uri 'none'; form-action 'none'")


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode("ascii")


def _header(title: str, run_id: str, total: int) -> str:
    return f"""<header>
<h1>{escape(title)}</h1>
<span>Run <code>{escape(run_id)}</code></span>
<span><label for="reviewer">Reviewer</label>
<input id="reviewer" name="reviewer" autocomplete="name" required aria-required="true"
placeholder="your name"></span>
<span id="progress" aria-live="polite">0 of {total} rated</span>
<button type="button" id="save">Save ratings (CSV)</button>
<p id="message" role="alert"></p>
</header>"""


def _data_json(rows: list[dict[str, Any]], schema: list[RatingField], run_id: str) -> str:
    """What the script needs, as JSON safe inside a ``<script>`` element."""
    data = {
        "run_id": run_id,
        "file_name": ratings_file_name(run_id),
        "storage_key": STORAGE_PREFIX + run_id,
        "columns": csv_columns(schema),
        "fields": [{"name": field.name, "type": field.type,
                    "required": field.required and field.type != "text"} for field in schema],
        "items": [str(row.get("review_id", "")) for row in rows],
    }
    return _script_safe(json.dumps(data, ensure_ascii=False))


def _script_safe(text: str) -> str:
    """JSON with ``<``, ``>`` and ``&`` as unicode escapes: still the same JSON, and no ``</``
    or ``<!--`` can end or confuse the script element."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _item(index: int, row: Mapping[str, Any], schema: list[RatingField], total: int) -> str:
    review_id = str(row.get("review_id", ""))
    fields = "".join(_field(index, field) for field in schema)
    return f"""<section class="item" id="item-{index}" aria-labelledby="h-{index}">
<h2 id="h-{index}">Item {index + 1} of {total} · <code>{escape(review_id)}</code></h2>
<div class="cols">{_figure(row.get("image_path"), review_id)}
<div class="texts">{_meta(row)}{_texts(row)}{_scores(row.get("scores"))}</div></div>
{fields}</section>
"""


def _figure(path: Any, review_id: str) -> str:
    """The thumbnail, or a placeholder that says why there is none."""
    from tasks.io import DECODE_ERRORS, error_text

    if text_or_none(path) is None:
        return _placeholder("no image path")
    try:
        src = image_data_uri(str(path))
    except DECODE_ERRORS as error:
        return _placeholder(error_text(error))
    return f'<figure><img src="{src}" alt="image of item {escape(review_id)}"></figure>'


def _placeholder(reason: str) -> str:
    return (f'<figure><div class="noimg" role="img" aria-label="image unavailable">'
            f"Image unavailable: {escape(reason)}</div></figure>")


def _meta(row: Mapping[str, Any]) -> str:
    strategy = text_or_none(row.get("review_strategy")) or "unknown"
    status = text_or_none(row.get("status")) or ""
    reason = text_or_none(row.get("reason"))
    why = f": {escape(reason)}" if reason else ""
    return (f'<p class="meta">Chosen by <b>{escape(strategy)}</b>'
            f"{' · status ' + escape(status) + why if status else ''}</p>")


def _texts(row: Mapping[str, Any]) -> str:
    parts = []
    for label, key in (("Question", "question"), ("Model prediction", "prediction")):
        text = text_or_none(row.get(key))
        if text is not None:
            parts.append(f"<dt>{label}</dt><dd>{escape(text)}</dd>")
    references = as_strings(row.get("references"))
    if references:
        listed = "".join(f"<li>{escape(text)}</li>" for text in references)
        parts.append(f"<dt>References</dt><dd><ol>{listed}</ol></dd>")
    return f"<dl>{''.join(parts)}</dl>" if parts else ""


def _scores(scores: Any) -> str:
    if not isinstance(scores, Mapping) or not scores:
        return ""
    rows = "".join(f'<tr><th scope="row">{escape(str(name))}</th>'
                   f'<td class="num">{_number(value)}</td></tr>'
                   for name, value in scores.items())
    return f"<table><caption class=\"meta\">Scores</caption>{rows}</table>"


def _number(value: Any) -> str:
    try:
        return escape(f"{float(value):.4g}")
    except (TypeError, ValueError):
        return escape(str(value))


# -- answer controls ----------------------------------------------------------------------------


def _field(index: int, field: RatingField) -> str:
    group = f"a{index}-{field.name}"
    question = escape(field.title or field.name)
    if field.type == "text":
        return (f'<div class="text"><label for="{group}">{question}</label>'
                f'<textarea id="{group}" name="{group}" rows="2"></textarea></div>')
    options = (range(field.min, field.max + 1) if field.type == "rating" else field.choices)
    radios = "".join(_radio(group, value) for value in dict.fromkeys(map(str, options)))
    required = ' <span class="req">(required)</span>' if field.required else ""
    return (f'<fieldset class="{field.type}"><legend>{question}{required}</legend>{radios}'
            f'<button type="button" class="clear" data-group="{group}" '
            f'aria-label="Clear {question}">clear</button></fieldset>')


def _radio(group: str, value: str) -> str:
    ident = f"{group}-{_slug(value)}"
    return (f'<span class="opt"><input type="radio" id="{ident}" name="{group}" '
            f'value="{escape(value)}"><label for="{ident}">{escape(value)}</label></span>')


def _slug(value: str) -> str:
    """An id-safe form of a choice: readable letters kept, the rest hashed in."""
    plain = re.sub(r"[^A-Za-z0-9_-]", "", value)
    if plain == value and value:
        return value
    return f"{plain[:24]}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"

