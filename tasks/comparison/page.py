"""Self-contained HTML pages for the suite and comparison reports: the page shell (inline CSS,
a Content-Security-Policy that lets nothing load from anywhere), escaping and number helpers,
inline SVG figures drawn with matplotlib at build time (deterministic: fixed ``svg.hashsalt``,
no date, ids prefixed per figure) and the gate's decision, which both reports show.

Nothing here imports pandas or MLflow; matplotlib is imported when a figure is drawn."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import TYPE_CHECKING, Any

from tasks.comparison.render import format_p

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# no script at all; inline styles only (matplotlib's SVG carries style attributes);
# images only as data: URIs; nothing may be fetched, framed or submitted
POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
          "form-action 'none'")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#1f2328;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
h3{margin-top:1.4rem}
.meta{color:#57606a;margin:.2rem 0} .meta code{color:#1f2328}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
td,th{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#57606a;font-size:.85em}
.best{background:#dafbe1;font-weight:600}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:.85em;
font-weight:600;border:1px solid transparent}
.ok,.passed,.up{background:#dafbe1;color:#116329;border-color:#aceebb}
.failed,.down{background:#ffebe9;color:#a40e26;border-color:#ffcecb}
.skipped,.same,.none{background:#f6f8fa;color:#57606a;border-color:#d0d7de}
.error{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85em;
max-width:60rem;word-break:break-word}
.note{background:#fff8c5;padding:.4rem .8rem;border-left:4px solid #d4a72c;margin:.4rem 0}
figure{display:inline-block;margin:.4rem 1rem .8rem 0;vertical-align:top}
figure svg{max-width:100%;height:auto}
figcaption{color:#57606a;font-size:.85rem}
.thumb{width:120px;height:120px;object-fit:contain;background:#f6f8fa;display:block}
.placeholder{display:flex;align-items:center;justify-content:center;color:#8c959f;
font-size:.8rem;border:1px dashed #d0d7de}
.side td{max-width:22rem;word-break:break-word}
code{background:#f6f8fa;padding:0 .25rem;border-radius:4px}
"""


# ---- text -----------------------------------------------------------------------------------


def text(value: Any) -> str:
    """HTML-escaped ``str(value)`` (quotes too: safe in attributes)."""
    return escape(str(value), quote=True)


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (None, NaN, inf, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def number(value: Any, digits: int = 4, sign: bool = False) -> str:
    """``0.1234`` / ``+0.1234``; ``n/a`` for a missing value."""
    found = finite(value)
    if found is None:
        return "n/a"
    return f"{found:+.{digits}f}" if sign else f"{found:.{digits}f}"


def interval(low: Any, high: Any, digits: int = 4, sign: bool = False) -> str:
    """``[low, high]``, or an empty string when either end is missing."""
    if finite(low) is None or finite(high) is None:
        return ""
    return f"[{number(low, digits, sign)}, {number(high, digits, sign)}]"


def whiskers(value: float, low: Any, high: Any) -> tuple[float, float]:
    """Distances from ``value`` down to ``low`` and up to ``high`` (0 where an end is
    missing): matplotlib's asymmetric error bars."""
    bottom, top = finite(low), finite(high)
    return (max(0.0, value - bottom) if bottom is not None else 0.0,
            max(0.0, top - value) if top is not None else 0.0)


def is_web(address: str | None) -> bool:
    return bool(address) and str(address).startswith(("http://", "https://"))


def link(address: str | None, label: str) -> str:
    """A link when ``address`` is http(s); otherwise the label, with the address as text."""
    if address and is_web(address):
        return f'<a href="{text(address)}">{text(label)}</a>'
    if address and address != label:
        return f"{text(label)} <span class=\"meta\">({text(address)})</span>"
    return text(label)


def badge(label: str, kind: str) -> str:
    return f'<span class="badge {text(kind)}">{text(label)}</span>'


def row(cells: list[str], tag: str = "td") -> str:
    """One table row of cells that are already HTML (``<td>`` / ``<th>`` added unless the
    cell is one already)."""
    parts = [c if c.startswith(("<td", "<th")) else f"<{tag}>{c}</{tag}>" for c in cells]
    return "<tr>" + "".join(parts) + "</tr>"


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table in a horizontally scrolling box; headers are text, cells HTML."""
    head = row([text(h) for h in headers], "th")
    body = "".join(row(cells) for cells in rows)
    attribute = f' class="{text(cls)}"' if cls else ""
    return f'<div class="scroll"><table{attribute}>{head}{body}</table></div>'


def page(title: str, body: str) -> str:
    """The whole document: charset, CSP, inline CSS, no external anything."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="generator" content="bifocal">\n<link rel="icon" href="data:,">\n'
            f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head><body>\n"
            f"{body}\n</body></html>\n")


# ---- figures --------------------------------------------------------------------------------

SVG_RC: dict[Any, Any] = {
    "svg.hashsalt": "bifocal", "svg.fonttype": "path", "text.parse_math": False,
    "font.size": 8, "axes.titlesize": 9, "axes.spines.top": False, "axes.spines.right": False,
}
_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


@contextmanager
def figure(width: float, height: float) -> Iterator[Figure]:
    """A matplotlib ``Figure`` (no pyplot state) drawn under the deterministic SVG settings."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(SVG_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def svg_markup(fig: Figure, key: str, label: str) -> str:
    """``fig`` as inline ``<svg>``: no XML prologue or metadata, ids prefixed with ``key`` (so
    several figures can share a page), an accessible label."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(SVG_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue(), count=1))
    prefix = re.sub(r"[^\w-]", "_", key)
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{text(label)}" ', 1).strip()


def svg_figure(fig: Figure, key: str, caption: str) -> str:
    """``<figure>`` with the inline SVG and a caption."""
    return (f'<figure id="{text(key)}">{svg_markup(fig, key, caption)}'
            f"<figcaption>{text(caption)}</figcaption></figure>")


# ---- the gate ---------------------------------------------------------------------------------


def _rule_row(rule: dict[str, Any]) -> list[str]:
    held = bool(rule.get("held"))
    return [text(rule.get("metric", "")),
            f'<td class="num">{number(rule.get("delta"), sign=True)} <span class="ci">'
            f'{interval(rule.get("ci_low"), rule.get("ci_high"), sign=True)}</span></td>',
            f'<td class="num">{text(format_p(finite(rule.get("pvalue"))))}</td>',
            f'<td class="num">{text(format_p(finite(rule.get("p_holm"))))}</td>',
            f'<td class="num">{number(rule.get("allowed_drop"))}</td>',
            f'<td class="num">{text(rule.get("alpha", ""))}</td>',
            badge("held" if held else "failed", "passed" if held else "failed"),
            text(rule.get("reason", ""))]


def gate_html(gate: dict[str, Any], links: dict[str, str] | None = None) -> str:
    """The gate's decision (a ``GateResult.to_json()``): status, runs, reason, each rule with
    delta, CI, p-values and allowed drop, notes, and the promotion when one happened."""
    links = links or {}
    status = str(gate.get("status") or ("passed" if gate.get("passed") else "failed"))
    candidate, baseline = str(gate.get("candidate_run") or ""), gate.get("baseline_run")
    parts = [f'<p class="gate-status">Gate {badge(status, status)} {text(gate.get("reason", ""))}'
             "</p>",
             f'<p class="meta">Candidate run {link(links.get(candidate), candidate)}; baseline '
             f"{link(links.get(str(baseline)), str(baseline)) if baseline else 'none'} "
             f"(<code>{text(gate.get('baseline_selector', ''))}</code>)</p>"]
    parts += [f'<p class="note">{text(note)}</p>' for note in gate.get("notes") or []]
    rules = gate.get("rules") or []
    if rules:
        headers = ["rule", "delta [CI]", "p", "p_holm", "allowed drop", "alpha", "held", "why"]
        parts.append(table(headers, [_rule_row(rule) for rule in rules], "gate-rules"))
    parts.append(promotion_html(gate.get("promoted")))
    return "\n".join(part for part in parts if part)


def promotion_html(promoted: dict[str, Any] | None) -> str:
    if not promoted:
        return '<p class="promotion">Promotion: none.</p>'
    return (f'<p class="promotion">Promoted: <code>{text(promoted.get("model_name", ""))}'
            f"</code> version {text(promoted.get('version', ''))} is now "
            f"<code>@{text(promoted.get('alias', ''))}</code> (run "
            f"<code>{text(promoted.get('run_id', ''))}</code>).</p>")
