"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global state): each function takes plain arrays and returns a ``Figure``. ``tasks.report.svg``
turns one into inline SVG for the HTML; MLflow gets the same figure as a PNG."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tasks.report.curves import RecallCurve
from tasks.report.sweeps import Calibration, Sweep

STYLE: dict[Any, Any] = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "legend.frameon": False}
DIRECTIONS = {"i2t": ("image → text", "#1f77b4"), "t2i": ("text → image", "#d62728")}
LABELS = {0: ("no match", "#d62728"), 1: ("match", "#2ca02c")}
WIDTH, HEIGHT = 6.4, 3.4  # inches
ANNOTATED, NAMED = 20, 40  # confusion matrices: counts in cells / class names up to this size
P = ParamSpec("P")
# rcParams are process-global: figures are drawn and saved one at a time under this lock, so
# that concurrent reports (a suite's threads) never restore each other's settings
DRAWING = threading.RLock()


def styled(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw under the report's style (text, legends and axes read rcParams as they are made)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with DRAWING, rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(panels: int = 1, height: float = HEIGHT) -> tuple[Figure, list[Axes]]:
    """A figure on an Agg canvas with ``panels`` axes side by side."""
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


@styled
def recall_figure(curves: Sequence[RecallCurve], level: float) -> Figure:
    """Recall@k against k for both directions, the bootstrap interval as a band."""
    figure, (ax,) = new_figure()
    for curve in curves:
        label, color = DIRECTIONS[curve.direction]
        ax.plot(curve.ks, curve.values, marker="o", markersize=3, color=color,
                label=f"{label} ({curve.queries} queries, {curve.gallery} candidates)")
        defined = np.isfinite(curve.low) & np.isfinite(curve.high)
        if defined.any():
            ax.fill_between(curve.ks[defined], curve.low[defined], curve.high[defined],
                            color=color, alpha=0.2, linewidth=0)
    ax.set(xlabel="k", ylabel="recall@k", ylim=(0, 1.02),
           title=f"Recall@k with {level:.0%} bootstrap intervals (over images)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right")
    return figure


@styled
def slice_figure(names: Sequence[str], values: np.ndarray, low: np.ndarray, high: np.ndarray,
                 metric: str, level: float) -> Figure:
    """One horizontal bar per slice with its interval as whiskers (none where undefined)."""
    figure, (ax,) = new_figure(height=max(1.6, 0.32 * len(names) + 1.0))
    rows = np.arange(len(names))
    ax.barh(rows, values, color="#7fa7d1")
    defined = np.isfinite(low) & np.isfinite(high)
    errors = np.vstack([values - low, high - values])[:, defined]
    ax.errorbar(values[defined], rows[defined], xerr=errors, fmt="none", ecolor="#333",
                capsize=3, linewidth=1)
    ax.set_yticks(rows, list(names))
    ax.invert_yaxis()
    ax.set(xlabel=metric, title=f"{metric} per slice ({level:.0%} intervals)")
    return figure


@styled
def confusion_figure(labels: Sequence[str], matrix: np.ndarray) -> Figure:
    """Counts per (label, predicted) cell, coloured by the share of the label's row; counts
    written in the cells up to ``ANNOTATED`` classes, class names up to ``NAMED``."""
    size = min(8.0, 2.2 + 0.45 * len(labels))
    figure, (ax,) = new_figure(height=size)
    figure.set_size_inches(size + 0.8, size)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.grid(False)
    if len(labels) <= ANNOTATED:
        for (row, column), count in np.ndenumerate(matrix):
            ax.text(column, row, str(int(count)), ha="center", va="center", fontsize=8,
                    color="white" if shares[row, column] > 0.6 else "#222")
    if len(labels) <= NAMED:
        ticks = np.arange(len(labels)).tolist()
        ax.set_xticks(ticks, list(labels), rotation=45, ha="right")
        ax.set_yticks(ticks, list(labels))
    ax.set(xlabel="predicted", ylabel="label", title=f"Confusion matrix ({len(labels)} classes)")
    return figure


@styled
def histogram_figure(panels: Sequence[tuple[str, np.ndarray]], title: str) -> Figure:
    """One histogram per (metric, per-sample values) panel, side by side."""
    figure, axes = new_figure(len(panels))
    for ax, (name, values) in zip(axes, panels, strict=True):
        _histogram(ax, values)
        ax.set(xlabel=name, ylabel="items" if ax is axes[0] else None)
    figure.suptitle(title)
    return figure


def _histogram(ax: Axes, values: np.ndarray) -> None:
    """One bar per value when the values sit on a coarse grid (0/1, VQA accuracy's tenths,
    integers) and are few, else 20 bins; a single value is one bar."""
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= 12 and np.allclose(distinct * 10, np.round(distinct * 10)):
        step = float(np.diff(distinct).min()) if len(distinct) > 1 else 0.1
        ax.bar(distinct, counts, width=0.8 * step, color="#7fa7d1")
        ax.set_xticks(distinct.tolist(), [f"{v:.3g}" for v in distinct])
    elif len(distinct) == 1:
        ax.bar(distinct, counts, width=0.01 * max(1.0, abs(float(distinct[0]))),
               color="#7fa7d1")
    else:
        ax.hist(values, bins=20, color="#7fa7d1")


@styled
def ranks_figure(panels: Sequence[tuple[str, np.ndarray]]) -> Figure:
    """Distribution of the 1-based ranks per direction: one bar per rank up to 20, then
    logarithmic bins."""
    figure, axes = new_figure(len(panels))
    for ax, (name, ranks) in zip(axes, panels, strict=True):
        top = int(ranks.max()) if len(ranks) else 1
        if top <= 20:
            ax.hist(ranks, bins=np.arange(0.5, top + 1.5).tolist(), color="#7fa7d1")
        else:
            ax.hist(ranks, bins=np.geomspace(1, top + 1, 25).tolist(), color="#7fa7d1")
            ax.set_xscale("log")
        ax.set(xlabel=f"{name} rank (1 = correct first)", ylabel="queries")
    figure.suptitle("Rank of the correct item")
    return figure


@styled
def scores_by_label_figure(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Figure:
    """Score histograms of matching and non-matching pairs, the threshold as a line."""
    figure, (ax,) = new_figure()
    edges = np.histogram_bin_edges(scores, bins=20)
    for value, (name, color) in LABELS.items():
        chosen = scores[labels == value]
        ax.hist(chosen, bins=edges.tolist(), alpha=0.55, color=color,
                label=f"{name} ({len(chosen)})")
    _threshold_line(ax, threshold)
    ax.set(xlabel="score", ylabel="pairs", title="Scores by label")
    ax.legend()
    return figure


@styled
def threshold_figure(sweep: Sweep, threshold: float) -> Figure:
    """Accuracy, precision and recall against the threshold, the chosen one marked."""
    figure, (ax,) = new_figure()
    for name, values in (("accuracy", sweep.accuracy), ("precision", sweep.precision),
                         ("recall", sweep.recall)):
        ax.plot(sweep.thresholds, values, label=name, linewidth=1.5)
    _threshold_line(ax, threshold)
    ax.set(xlabel="threshold (match when score ≥ threshold)", ylim=(0, 1.02),
           title="Accuracy, precision and recall by threshold")
    ax.legend(loc="best")
    return figure


@styled
def calibration_figure(calibration: Calibration, probabilities: bool) -> Figure:
    """Fraction of matching pairs per score bin against the bin's mean score (the diagonal
    when the scores are probabilities)."""
    figure, (ax,) = new_figure()
    ax.plot(calibration.mean_score, calibration.positive_rate, marker="o", color="#1f77b4",
            label="pairs per bin: " + ", ".join(str(int(n)) for n in calibration.pairs))
    if probabilities:
        ax.plot([0, 1], [0, 1], linestyle="--", color="#999", label="perfect calibration")
    ax.set(xlabel="mean score in bin", ylabel="fraction matching", ylim=(-0.02, 1.02),
           title="Calibration of the scores")
    ax.legend(loc="upper left", fontsize=7)
    return figure


def _threshold_line(ax: Axes, threshold: float) -> None:
    if np.isfinite(threshold):
        ax.axvline(threshold, color="#333", linestyle="--", linewidth=1,
                   label=f"threshold {threshold:.3g}")


@styled
def human_vs_metric_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, str]]
                           ) -> Figure:
    """Per reviewed item, an automatic metric (x) against the mean human rating (y); one panel
    per (metric, values, ratings, caption), e.g. the caption "Spearman rho -0.81"."""
    figure, axes = new_figure(len(panels))
    for ax, (name, values, ratings, caption) in zip(axes, panels, strict=True):
        ax.scatter(values, ratings, s=14, alpha=0.7, color="#1f77b4")
        ax.set_xlabel(name)
        ax.set_ylabel("mean human rating")
        ax.set_title(caption)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure
