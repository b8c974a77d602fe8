"""Example galleries: the best, the worst and a seeded random choice of scored rows, each a card
with the image (a JPEG thumbnail of at most ``THUMBNAIL_PX``, embedded), the texts a person
judges it by and its scores; then the failed rows with their reasons.

Order per kind (``ORDER``): the per-sample column that ranks rows, whether higher is better,
and ties broken by the ``margin`` column where there is one (the most confident first), so the
worst of a classifier are its confident mistakes. The galleries never repeat a row: with few
rows the best and the worst take a third each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from tasks.report.sections import number

THUMBNAIL_PX = 160
CAPTION_SCORES = ("cider", "clip_score", "ref_clip_score", "bleu_4", "rouge_l")
ORDER: dict[str, tuple[tuple[str, ...], bool]] = {
    "retrieval": (("i2t_rank",), False),
    "captioning": (CAPTION_SCORES, True),
    "vqa": (("vqa_accuracy",), True),
    "zero_shot_classification": (("correct",), True),
    "matching": (("correct",), True),
    "text_to_image": (("clip_score",), True),
}
Row = Mapping[str, Any]
MATCH = {0: "no match", 1: "match"}


def pick(scored: pd.DataFrame, task: str, count: int, seed: int
         ) -> dict[str, pd.DataFrame]:
    """``{"best": ..., "worst": ..., "random": ...}``, at most ``count`` rows each, disjoint."""
    share = min(count, max(1, len(scored) // 3))
    best = rank(scored, task, best=True).head(share)
    worst = rank(scored.drop(best.index), task, best=False).head(share)
    rest = scored.drop(best.index.union(worst.index))
    chosen = np.random.default_rng(seed).permutation(len(rest))[:min(count, len(rest))]
    return {"best": best, "worst": worst, "random": rest.iloc[np.sort(chosen)]}


def rank(scored: pd.DataFrame, task: str, best: bool) -> pd.DataFrame:
    """The rows best (or worst) first, the most confident first among equals (largest
    ``margin``), then in table order."""
    columns, higher = ORDER.get(task, ((), True))
    column = next((c for c in columns if c in scored and scored[c].notna().any()), None)
    if column is None:
        return scored
    key = pd.to_numeric(scored[column], errors="coerce").astype(float)
    if not higher:  # a rank: 0 means not ranked (an image without captions), never the best
        key = key.where(key > 0)
    frame = scored.assign(_key=key)
    by, ascending = ["_key"], [higher != best]
    if "margin" in scored:
        by, ascending = [*by, "margin"], [*ascending, False]
    ordered = frame.sort_values(by, ascending=ascending, kind="stable", na_position="last")
    return ordered.drop(columns="_key")


# -- cards -----------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    """A list cell (list, tuple, numpy array) as a list; anything else as no items."""
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    return []


def text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def items_list(values: list[Any], marks: list[bool] | None = None) -> str:
    """An ordered list of texts; ``marks`` flags the correct ones (✓)."""
    if not values:
        return "<i>none</i>"
    flags = marks or [False] * len(values)
    cells = "".join(f'<li class="hit">✓ {escape(text(v))}</li>' if flag
                    else f"<li>{escape(text(v))}</li>" for v, flag in zip(values, flags,
                                                                      strict=False))
    return f"<ol>{cells}</ol>"


def answers_list(values: list[Any]) -> str:
    """Human answers with their counts, most frequent first ("red ×9")."""
    counted = pd.Series([text(v) for v in values]).value_counts() if values else {}
    return ", ".join(f"{escape(str(k))} ×{v}" for k, v in dict(counted).items()) or "<i>none</i>"


def verdict(correct: Any) -> str:
    if correct is None or (isinstance(correct, float) and math.isnan(correct)):
        return ""
    return ' <span class="ok">✓</span>' if bool(correct) else ' <span class="bad">✗</span>'


# per kind: (title, the per-sample column shown, its HTML) of each text on a card
Texts = Callable[[Row, dict[str, Any]], list[tuple[str, str, str]]]


def retrieval_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [("Retrieved (top 3)", "top_captions", items_list(as_list(row.get("top_captions")),
                                             as_list(row.get("top_correct")))),
            ("Captions", "captions", items_list(as_list(row.get("captions"))))]


def captioning_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [("Prediction", "prediction", escape(text(row.get("prediction"))) or "<i>empty</i>"),
            ("References", "captions", items_list(as_list(row.get("captions"))))]


def vqa_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    column = ((report.get("config") or {}).get("vqa") or {}).get("question_column", "question")
    return [("Question", column, escape(text(row.get(column, row.get("question"))))),
            ("Answer", "prediction", escape(text(row.get("prediction"))) or "<i>empty</i>"),
            ("Human answers", "captions", answers_list(as_list(row.get("captions"))))]


def classification_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [("Label", "label", escape(text(row.get("label")))),
            ("Predicted", "prediction",
             escape(text(row.get("prediction"))) + verdict(row.get("correct")))]


def matching_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The pair's text, its label and the prediction at the threshold (marked right or
    wrong), the image's own captions."""
    label, correct = row.get("label"), row.get("correct")
    if label is None or text(correct) == "":
        return [("Pair text", "text", escape(text(row.get("text"))))]
    predicted = int(label) if bool(correct) else 1 - int(label)
    return [("Pair text", "text", escape(text(row.get("text")))),
            ("Label", "label", MATCH[int(label)]),
            ("Predicted", "correct", MATCH[predicted] + verdict(correct)),
            ("Captions of the image", "captions", items_list(as_list(row.get("captions"))))]


def prompt_texts(row: Row, report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The prompt a generated image was made from, and its nearest reference image."""
    return [("Prompt", "prompt", escape(text(row.get("prompt"))) or "<i>none</i>"),
            ("Nearest reference", "nearest_reference",
             escape(text(row.get("nearest_reference"))))]


TEXTS: dict[str, tuple[Texts, tuple[str, ...]]] = {
    "retrieval": (retrieval_texts, ("i2t_rank", "best_t2i_rank", "margin")),
    "captioning": (captioning_texts, CAPTION_SCORES),
    "vqa": (vqa_texts, ("vqa_accuracy",)),
    "zero_shot_classification": (classification_texts, ("margin",)),
    "matching": (matching_texts, ("score", "margin")),
    "text_to_image": (prompt_texts, ("clip_score", "nearest_reference_distance")),
}


def card(row: Row, report: dict[str, Any], image: Callable[[Any, str], str]) -> str:
    """One example: thumbnail, id, texts and scores."""
    texts, score_columns = TEXTS.get(report["task"], (captioning_texts, ()))
    key = str(row.get(report.get("row_key", "item_id"), row.get("item_id", "")))
    dl = "".join(f'<dt>{escape(title)}</dt><dd data-column="{escape(column)}">{body}</dd>'
                 for title, column, body in texts(row, report))
    scores = " · ".join(f'<span class="score">{escape(c)} <b>{number(row[c])}</b></span>'
                        for c in score_columns if c in row and text(row[c]) != "")
    return (f'<article class="card">{image(row.get("image_path"), key)}<div class="body">'
            f'<p class="id"><code>{escape(key)}</code></p><p class="scores">{scores}</p>'
            f"<dl>{dl}</dl></div></article>")


def galleries(per_sample: pd.DataFrame, report: dict[str, Any],
              image: Callable[[Any, str], str]) -> str:
    """The best / worst / random galleries and the failed rows (each at most
    ``report.examples`` from the config)."""
    config = report.get("config") or {}
    count = int((config.get("report") or {}).get("examples", 8))
    scored = per_sample[per_sample["status"] == "scored"] if "status" in per_sample \
        else per_sample
    parts = ['<section id="examples"><h2>Examples</h2>']
    if scored.empty or count == 0:
        parts.append('<p class="none">No scored rows to show.</p>' if count else
                     '<p class="none">Examples are turned off (report.examples = 0).</p>')
    for name, rows in (pick(scored, report["task"], count, int(config.get("seed", 0)))
                       .items() if len(scored) and count else []):
        cards = "".join(card(r, report, image) for r in rows.to_dict(orient="records"))
        parts.append(f'<h3>{name.capitalize()}</h3><div class="gallery" id="gallery-{name}">'
                     f"{cards or '<p class=none>none</p>'}</div>")
    parts.append(failed(per_sample, report, count))
    return "".join(parts) + "</section>"


def failed(per_sample: pd.DataFrame, report: dict[str, Any], count: int) -> str:
    """The first failed rows with their reasons."""
    if "status" not in per_sample:
        return ""
    rows = per_sample[per_sample["status"] == "failed"]
    if rows.empty:
        return ""
    key = report.get("row_key", "item_id")
    items = "".join(f"<li><code>{escape(text(r.get(key)))}</code>: "
                    f"{escape(text(r.get('reason'))) or 'unknown'}</li>"
                    for r in rows.head(max(count, 1)).to_dict(orient="records"))
    return (f'<h3 id="failed">Failed ({len(rows)})</h3><ul class="failed">{items}</ul>'
            + (f"<p>… and {len(rows) - max(count, 1)} more (per_sample.csv)</p>"
               if len(rows) > max(count, 1) else ""))
