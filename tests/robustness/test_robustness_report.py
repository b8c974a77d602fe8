"""The report's robustness part from a synthetic report.json section: the severity x corruption
table (values, intervals, summaries), text and adversarial tables, escaping, and the two figures
(their plotted data read back from the matplotlib artists)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.report.figures import report_figures
from tasks.report.html import render
from tasks.report.robustness import figures, section
from tasks.report.svg import to_svg


def robust_report(adversarial: dict | None = None) -> dict:
    corruptions = {
        "fog": {"severities": {"1": {"accuracy": 0.7, "accuracy_ci_low": 0.6,
                                     "accuracy_ci_high": 0.8},
                               "3": {"accuracy": 0.5}},
                "mean": {"accuracy": 0.6}, "relative_drop": {"accuracy": 0.25},
                "ce": {"accuracy": 2.0}},
        "jpeg": {"severities": {"1": {"accuracy": 0.75}, "3": {"accuracy": 0.65}},
                 "mean": {"accuracy": 0.7}, "relative_drop": {"accuracy": 0.125},
                 "ce": {"accuracy": 1.5}},
    }
    robust = {"settings": {"severities": [1, 3]}, "headline": "accuracy",
              "clean": {"accuracy": 0.8}, "corruptions": corruptions,
              "all": {"mean": {"accuracy": 0.65}, "relative_drop": {"accuracy": 0.1875},
                      "ce": {"accuracy": 1.75}},
              "text": {"<b>typo</b>": {"perturbation": {"name": "char_swap", "rate": 0.1},
                                       "metrics": {"accuracy": 0.72},
                                       "relative_drop": {"accuracy": 0.1}}},
              "definitions": {"ce": "mean error / clean error"}, "variants": []}
    if adversarial is not None:
        robust["adversarial"] = adversarial
    return {"task": "zero_shot_classification", "run_name": "r", "headline": "accuracy",
            "metrics": {"accuracy": 0.8}, "robustness": robust, "counts": {},
            "mlflow_run_id": "0" * 32}


CURVE = [{"attack": "fgsm", "epsilon": 1 / 255, "metric": "accuracy", "value": 0.5},
         {"attack": "fgsm", "epsilon": 4 / 255, "metric": "accuracy", "value": 0.2},
         {"attack": "pgd", "epsilon": 4 / 255, "metric": "accuracy", "value": 0.1},
         {"attack": "pgd", "epsilon": 1 / 255, "metric": "accuracy", "value": 0.4}]


def test_section_tables():
    html = section(robust_report({"curve": CURVE, "skipped": None}))
    rows = html.split("<tr>")
    fog = next(r for r in rows if r.startswith("<td>fog</td>"))
    assert "0.7000 <span" in fog and "[0.6000, 0.8000]" in fog and "0.5000" in fog
    assert fog.endswith("<td>0.6000</td><td>0.2500</td><td>2.0000</td></tr>")
    overall = next(r for r in rows if "all corruptions" in r)
    assert "0.6500" in overall and "1.7500" in overall
    assert "&lt;b&gt;typo&lt;/b&gt;" in html and "<b>typo</b>" not in html
    assert "<td>pgd</td><td>0.0157</td><td>4/255</td>" in html
    assert section({"task": "retrieval"}) == ""
    skipped = section(robust_report({"curve": [], "skipped": "captioners have no gradient"}))
    assert "Skipped: captioners have no gradient" in skipped


def test_figures_plot_the_section():
    named = {name: figure for name, _, figure in figures(robust_report({"curve": CURVE}))}
    assert set(named) == {"robustness_corruptions", "robustness_epsilon"}
    lines = {line.get_label(): line for line in named["robustness_corruptions"].axes[0].lines}
    assert np.array_equal(lines["fog"].get_xdata(), [1, 3])
    assert np.allclose(lines["jpeg"].get_ydata(), [0.75, 0.65])
    assert np.allclose(lines["clean 0.8"].get_ydata(), [0.8, 0.8])
    curves = {line.get_label(): line for line in named["robustness_epsilon"].axes[0].lines}
    assert np.allclose(curves["pgd"].get_xdata(), [0, 1, 4])  # pixel levels, from clean
    assert np.allclose(curves["pgd"].get_ydata(), [0.8, 0.4, 0.1])
    for name, figure in named.items():
        assert "<svg" in to_svg(figure, name)
    assert [n for n, _, _ in figures(robust_report())] == ["robustness_corruptions"]


def test_the_page_and_the_run_plots_include_robustness():
    report = robust_report({"curve": CURVE})
    per_sample = pd.DataFrame({"item_id": ["a", "b"], "status": ["scored", "scored"],
                               "label": ["x", "y"], "prediction": ["x", "x"],
                               "correct": [True, False], "margin": [0.1, 0.2]})
    names = [p.name for p in report_figures(report, per_sample).plots]
    assert {"robustness_corruptions", "robustness_epsilon"} <= set(names)
    html = render(report, per_sample)
    assert 'id="robustness"' in html and 'id="plot-robustness_epsilon"' in html
