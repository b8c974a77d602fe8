"""Which plots an evaluation's report holds, by task kind, from report.json and the per-sample
table: the same figures go inline into report.html (SVG) and onto the MLflow run (PNG).

retrieval: recall@k curves both ways with bootstrap bands, the rank distributions;
captioning: per-sample metric histograms (CIDEr, CLIPScore, ...); vqa: the VQA accuracy
distribution; zero-shot classification: the confusion matrix and the margins of right and
wrong predictions; matching: scores by label, accuracy / precision / recall against the
threshold and the calibration curve. Every kind with slices: the headline metric per slice.
Without scored rows nothing is drawn and a note says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.report import plots
from tasks.report.curves import largest_k, recall_curves, settings_of
from tasks.report.sweeps import calibration_bins, sweep_points, threshold_sweep

logger = logging.getLogger(__name__)

# per-sample columns of captioning worth a histogram, in this order (those present)
MAX_SLICES = 40  # bars in the slice plot (the largest slices; all are in the slices table)
CAPTION_COLUMNS = ("cider", "clip_score", "ref_clip_score", "rouge_l", "semantic_similarity")


@dataclass(frozen=True)
class Plot:
    name: str  # file-safe: plots/<name>.png on the run, the figure's id in the HTML
    title: str
    figure: Figure


@dataclass
class Plots:
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a plot is missing


@dataclass(frozen=True)
class Inputs:
    """What the plot builders read."""

    report: dict[str, Any]
    scored: pd.DataFrame  # the per-sample rows with status "scored"
    files: dict[str, str]  # report files by name (confusion_matrix.csv)


Builder = Callable[[Inputs], list[Plot]]


def report_figures(report: dict[str, Any], per_sample: pd.DataFrame,
                   files: dict[str, str] | None = None) -> Plots:
    """Every plot of the report; a builder that fails leaves a note, not a broken report."""
    scored = per_sample[per_sample["status"] == "scored"] if "status" in per_sample \
        else per_sample
    if scored.empty:
        failed = int((per_sample.get("status") == "failed").sum()) if len(per_sample) else 0
        return Plots(notes=[f"No scored rows ({failed} failed of {len(per_sample)}): "
                            "there is nothing to plot."])
    inputs, out = Inputs(report, scored, files or {}), Plots()
    for builder in [*KIND_PLOTS.get(report["task"], []), slice_plots, robustness_plots]:
        try:
            out.plots += builder(inputs)
        except Exception as error:  # noqa: BLE001 - one plot must not cost the whole report
            logger.warning("report plot %s failed: %s", builder.__name__, error, exc_info=True)
            out.notes.append(f"{builder.__name__} could not be drawn: "
                             f"{type(error).__name__}: {error}")
    return out


def level(report: dict[str, Any]) -> float:
    return float((report.get("statistics") or {}).get("level", 0.95))


def values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's finite values as float64 (empty when absent)."""
    if column not in frame:
        return np.empty(0)
    array = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    return array[np.isfinite(array)]


# -- per kind ---------------------------------------------------------------------------------


def retrieval_plots(inputs: Inputs) -> list[Plot]:
    """Recall@k curves (bootstrap bands) and the rank distributions."""
    report, scored = inputs.report, inputs.scored
    curves = recall_curves(scored, settings_of(report), largest_k(report["metrics"]))
    if not curves:
        return []
    ranks = [("image → text", values(scored, "i2t_rank")),
             ("text → image", np.concatenate([np.asarray(r, np.float64)
                                             for r in scored["t2i_ranks"]]))]
    ranks = [(name, r[r > 0]) for name, r in ranks]
    return [Plot("recall_at_k", "Recall@k", plots.recall_figure(curves, level(report))),
            Plot("ranks", "Rank distribution", plots.ranks_figure(ranks))]


def captioning_plots(inputs: Inputs) -> list[Plot]:
    """Histograms of the per-sample caption metrics the run has (at most three)."""
    panels = [(c, values(inputs.scored, c)) for c in CAPTION_COLUMNS]
    panels = [(c, v) for c, v in panels if len(v)][:3]
    if not panels:
        return []
    return [Plot("caption_scores", "Per-image scores",
                 plots.histogram_figure(panels, "Per-image caption scores"))]


def vqa_plots(inputs: Inputs) -> list[Plot]:
    """The distribution of per-question VQA accuracy."""
    accuracy = values(inputs.scored, "vqa_accuracy")
    if not len(accuracy):
        return []
    return [Plot("vqa_accuracy", "VQA accuracy per question", plots.histogram_figure(
        [("vqa_accuracy", accuracy)], "VQA accuracy per question"))]


def classification_plots(inputs: Inputs) -> list[Plot]:
    """The confusion matrix and the top-two margins of right and wrong predictions."""
    labels, matrix = confusion(inputs)
    out = [Plot("confusion_matrix", "Confusion matrix", plots.confusion_figure(labels, matrix))]
    if "margin" in inputs.scored and "correct" in inputs.scored:
        correct = inputs.scored["correct"].astype(bool)
        panels = [(f"margin ({name})", values(inputs.scored[mask], "margin"))
                  for name, mask in (("correct", correct), ("wrong", ~correct))]
        panels = [(n, v) for n, v in panels if len(v)]
        if panels:
            out.append(Plot("margins", "Margins", plots.histogram_figure(
                panels, "Best minus second-best class similarity")))
    return out


def confusion(inputs: Inputs) -> tuple[list[str], np.ndarray]:
    """(class names, counts) from the run's confusion_matrix.csv, else from the table."""
    path = inputs.files.get("confusion_matrix.csv")
    if path and Path(path).is_file():
        frame = pd.read_csv(path, index_col=0)
        return [str(c) for c in frame.columns], frame.to_numpy(np.int64)
    scored = inputs.scored
    table = pd.crosstab(scored["label"].astype(str), scored["prediction"].astype(str))
    names = sorted(set(table.index) | set(table.columns))
    table = table.reindex(index=names, columns=names, fill_value=0)
    return names, table.to_numpy(np.int64)


def matching_plots(inputs: Inputs) -> list[Plot]:
    """Scores by label, the threshold sweep and the calibration curve of the scored pairs."""
    scored = inputs.scored.dropna(subset=["score"])
    scores = scored["score"].to_numpy(np.float64)
    labels = scored["label"].to_numpy(np.int64)
    threshold = float(inputs.report["metrics"].get("threshold", np.nan))
    sweep = threshold_sweep(scores, labels, sweep_points(scores, threshold))
    probabilities = bool(len(scores)) and scores.min() >= 0 and scores.max() <= 1
    return [
        Plot("match_scores", "Scores by label",
             plots.scores_by_label_figure(scores, labels, threshold)),
        Plot("threshold", "Threshold", plots.threshold_figure(sweep, threshold)),
        Plot("calibration", "Calibration", plots.calibration_figure(
            calibration_bins(scores, labels), probabilities)),
    ]


def slice_plots(inputs: Inputs) -> list[Plot]:
    """The headline metric per scored slice, with its interval (the ``MAX_SLICES`` largest
    slices when there are more)."""
    report = inputs.report
    headline = report.get("headline", "")
    results = (report.get("slices") or {}).get("results") or []
    shown = [r for r in results if headline in (r.get("metrics") or {})]
    if not shown:
        return []
    if len(shown) > MAX_SLICES:
        largest = sorted(shown, key=lambda r: -int(r.get("size", 0)))[:MAX_SLICES]
        kept = {id(r) for r in largest}
        shown = [r for r in shown if id(r) in kept]
    cells = [r["metrics"][headline] for r in shown]
    names = [f"{r['slice']} (n={r['size']})" for r in shown]
    value, low, high = (np.array([c.get(k, np.nan) for c in cells], np.float64)
                        for k in ("value", "ci_low", "ci_high"))
    figure = plots.slice_figure(names, value, low, high, headline, level(report))
    return [Plot("slices", f"{headline} per slice", figure)]


def text_to_image_plots(inputs: Inputs) -> list[Plot]:
    """Per generated image: CLIPScore against its prompt, distance to the nearest reference."""
    panels = [(c, values(inputs.scored, c)) for c in ("clip_score",
                                                      "nearest_reference_distance")]
    panels = [(c, v) for c, v in panels if len(v)]
    if not panels:
        return []
    return [Plot("generated_images", "Generated images", plots.histogram_figure(
        panels, "Per generated image"))]


def robustness_plots(inputs: Inputs) -> list[Plot]:
    """The headline metric by corruption severity, and against the attacks' epsilon
    (``tasks.report.robustness``), when the run has a robustness section."""
    from tasks.report.robustness import figures

    return [Plot(name, title, figure) for name, title, figure in figures(inputs.report)]


KIND_PLOTS: dict[str, list[Builder]] = {
    "retrieval": [retrieval_plots],
    "captioning": [captioning_plots],
    "vqa": [vqa_plots],
    "zero_shot_classification": [classification_plots],
    "matching": [matching_plots],
    "text_to_image": [text_to_image_plots],
}


def run_figures(report_dir: Path, report: dict[str, Any] | None, per_sample: pd.DataFrame,
                files: dict[str, str] | None = None) -> dict[str, Figure]:
    """The report's figures by name, for the MLflow run; ``report`` defaults to
    ``report_dir/report.json`` (no figures without either)."""
    if report is None:
        path = report_dir / "report.json"
        if not path.is_file():
            return {}
        report = json.loads(path.read_text(encoding="utf-8"))
    return {plot.name: plot.figure for plot in report_figures(report, per_sample, files).plots}
