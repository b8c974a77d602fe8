"""The report's robustness part, from report.json's ``robustness`` section: a severity x
corruption table of the headline metric (with intervals, the mean over severities, the relative
drop and the CE), the text perturbations, the adversarial attacks, and two figures: the headline
metric against the severity per corruption, and accuracy (the headline) against the attack's
epsilon. Every text from the data is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tasks.report.plots import new_figure, styled
from tasks.report.sections import number, table

ATTACK_STYLES = ("-o", "--s", ":^", "-.d")


def with_interval(values: dict[str, Any], key: str) -> str:
    """``0.4123 [0.3100, 0.5200]`` (the interval small), or the value alone."""
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    shown = number(values.get(key))
    if low is None or high is None:
        return shown
    return f'{shown} <span class="small">[{number(low)}, {number(high)}]</span>'


def section(report: dict[str, Any]) -> str:
    """The robustness section; empty when the run has none."""
    robust = report.get("robustness")
    if not robust:
        return ""
    headline = str(robust.get("headline", ""))
    parts = [f'<section id="robustness"><h2>Robustness</h2>'
             f"<p>{escape(headline)} of the clean run: "
             f"<b>{number((robust.get('clean') or {}).get(headline))}</b>. Every metric of "
             "every variant (with its interval) is in report.json (<code>robustness</code>) "
             "and robustness.csv.</p>",
             corruption_table(robust, headline), text_table(robust, headline),
             adversarial_table(robust, report), definitions(robust), "</section>"]
    return "".join(parts)


def corruption_table(robust: dict[str, Any], headline: str) -> str:
    corruptions = robust.get("corruptions") or {}
    if not corruptions:
        return ""
    severities = [str(s) for s in (robust.get("settings") or {}).get("severities", [])]
    head = ["corruption", *[f"severity {s}" for s in severities], "mean", "relative drop",
            "CE"]
    rows = []
    for name, entry in corruptions.items():
        cells = [with_interval((entry.get("severities") or {}).get(s) or {}, headline)
                 for s in severities]
        rows.append([escape(name), *cells,
                     *[number((entry.get(part) or {}).get(headline))
                       for part in ("mean", "relative_drop", "ce")]])
    overall = robust.get("all") or {}
    if overall.get("mean"):
        rows.append(["<b>all corruptions</b>", *[""] * len(severities),
                     *[number((overall.get(part) or {}).get(headline))
                       for part in ("mean", "relative_drop", "ce")]])
    return (f'<h3 id="robustness-corruptions">Image corruptions: {escape(headline)} by '
            f"severity</h3>" + table(head, rows, "robustness"))


def text_table(robust: dict[str, Any], headline: str) -> str:
    text = robust.get("text") or {}
    if not text:
        return ""
    rows = [[escape(name), escape(str((entry.get("perturbation") or {}).get("rate", ""))),
             with_interval(entry.get("metrics") or {}, headline),
             number((entry.get("relative_drop") or {}).get(headline))]
            for name, entry in text.items()]
    return (f'<h3 id="robustness-text">Text perturbations: {escape(headline)}</h3>'
            + table(["perturbation", "rate", escape(headline), "relative drop"], rows,
                    "robustness"))


def adversarial_table(robust: dict[str, Any], report: dict[str, Any]) -> str:
    adversarial = robust.get("adversarial")
    if adversarial is None:
        return ""
    title = '<h3 id="robustness-adversarial">Adversarial attacks</h3>'
    if adversarial.get("skipped"):
        return f'{title}<p class="note">Skipped: {escape(str(adversarial["skipped"]))}</p>'
    rows = [[escape(str(point.get("attack", ""))), number(point.get("epsilon")),
             f"{float(point.get('epsilon', 0)) * 255:.3g}/255",
             escape(str(point.get("metric", ""))), with_interval(
                 {"v": point.get("value"), "v_ci_low": point.get("ci_low"),
                  "v_ci_high": point.get("ci_high")}, "v")]
            for point in adversarial.get("curve") or []]
    return title + table(["attack", "epsilon", "epsilon (pixel levels)", "metric", "value"],
                         rows, "robustness")


def definitions(robust: dict[str, Any]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>"
                    for k, v in (robust.get("definitions") or {}).items())
    return f'<dl class="small">{items}</dl>' if items else ""


# -- figures ----------------------------------------------------------------------------------


@styled
def severity_figure(series: Sequence[tuple[str, np.ndarray, np.ndarray]], clean: float | None,
                    metric: str) -> Figure:
    """One line per corruption: (name, severities, values); the clean value dashed."""
    figure, (ax,) = new_figure()
    for name, severities, values in series:
        ax.plot(severities, values, marker="o", markersize=3, label=name)
    if clean is not None and np.isfinite(clean):
        ax.axhline(clean, color="#333", linestyle="--", linewidth=1, label=f"clean {clean:.3g}")
    ax.set(xlabel="severity", ylabel=metric, title=f"{metric} under image corruptions")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=7, ncols=2)
    return figure


@styled
def epsilon_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], clean: float | None,
                   metric: str) -> Figure:
    """One line per attack: (name, epsilons in [0, 1] pixel units, values), from epsilon 0 at
    the clean value when the curve has no epsilon-0 point of its own (the attacked items' clean
    value, which differs from the run's with ``adversarial.limit``); x in 1/255 steps."""
    figure, (ax,) = new_figure()
    for index, (name, epsilons, values) in enumerate(curves):
        x, y = epsilons * 255, values
        if clean is not None and np.isfinite(clean) and not (epsilons == 0).any():
            x, y = np.concatenate([[0.0], x]), np.concatenate([[clean], y])
        ax.plot(x, y, ATTACK_STYLES[index % len(ATTACK_STYLES)], markersize=4, label=name)
    ax.set(xlabel="epsilon (pixel levels of 255, L-infinity)", ylabel=metric,
           title=f"{metric} against the attack budget")
    ax.legend(loc="best")
    return figure


def severity_series(robust: dict[str, Any], metric: str
                    ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    series = []
    for name, entry in (robust.get("corruptions") or {}).items():
        points = sorted((int(s), float(values[metric]))
                        for s, values in (entry.get("severities") or {}).items()
                        if values.get(metric) is not None)
        if points:
            series.append((name, np.array([p[0] for p in points]),
                           np.array([p[1] for p in points])))
    return series


def epsilon_curves(adversarial: dict[str, Any], metric: str
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    curves = []
    points = [p for p in adversarial.get("curve") or [] if p.get("metric") == metric]
    for attack in dict.fromkeys(str(p.get("attack")) for p in points):
        chosen = sorted((float(p["epsilon"]), float(p["value"])) for p in points
                        if str(p.get("attack")) == attack)
        curves.append((attack, np.array([c[0] for c in chosen]),
                       np.array([c[1] for c in chosen])))
    return curves


def curve_metric(adversarial: dict[str, Any], headline: str) -> str | None:
    """The curve's metric to draw: the headline when the attacks report it, else the first."""
    metrics = list(dict.fromkeys(str(p.get("metric")) for p in adversarial.get("curve") or []))
    if not metrics:
        return None
    return headline if headline in metrics else metrics[0]


def figures(report: dict[str, Any]) -> list[tuple[str, str, Figure]]:
    """(name, title, figure) of the robustness plots the report's section allows."""
    robust = report.get("robustness") or {}
    headline = str(robust.get("headline") or report.get("headline", ""))
    clean = (report.get("metrics") or {}).get(headline)
    out = []
    series = severity_series(robust, headline)
    if series:
        out.append(("robustness_corruptions", f"{headline} by corruption severity",
                    severity_figure(series, clean, headline)))
    adversarial = robust.get("adversarial") or {}
    metric = curve_metric(adversarial, headline)
    if metric is not None:
        base = (report.get("metrics") or {}).get(metric)
        out.append(("robustness_epsilon", f"{metric} against epsilon",
                    epsilon_figure(epsilon_curves(adversarial, metric), base, metric)))
    return out
