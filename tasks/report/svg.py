"""A matplotlib figure as SVG markup to inline in the HTML: deterministic (a fixed hash salt,
no date, no metadata block) and self-contained (text as ``<text>`` in the page's fonts, no
links), with its element ids prefixed so that several figures can share one page."""

from __future__ import annotations

import io
import re
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from tasks.report.plots import DRAWING

SVG_RC: dict[Any, Any] = {"svg.hashsalt": "bifocal-report", "svg.fonttype": "none",
                          "svg.image_inline": True}
ID = re.compile(r'\bid="([^"]+)"')


def to_svg(figure: Figure, prefix: str) -> str:
    """The figure's ``<svg>`` element (no XML prolog or doctype), ids made unique by
    ``prefix`` (letters, digits, ``-``)."""
    buffer = io.StringIO()
    with DRAWING, rc_context(SVG_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return prefix_ids(text, prefix)


def prefix_ids(svg: str, prefix: str) -> str:
    """Every ``id="x"`` becomes ``id="<prefix>-x"``, and so do its references (``#x`` in
    ``href`` / ``xlink:href`` and ``url(#x)``)."""
    names = set(ID.findall(svg))
    if not names:
        return svg

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in names else match.group(0)

    return re.sub(r'(\bid="|href="#|url\(#)([^")]+)', rename, svg)
