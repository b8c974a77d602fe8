"""The report's plots on small synthetic tables: recall@k curves against an independent numpy
computation (values and bootstrap intervals) and against the run's own interval of the same
metric; the threshold sweep and calibration bins against scikit-learn / numpy; every plot
function draws, renders to self-contained SVG and renders the same twice."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, precision_score, recall_score

from tasks.metrics.retrieval import image_statistics, retrieval_estimates
from tasks.report import plots
from tasks.report.curves import RecallCurve, cumulative_hits, largest_k, recall_curves
from tasks.report.figures import report_figures
from tasks.report.svg import prefix_ids, to_svg
from tasks.report.sweeps import calibration_bins, sweep_points, threshold_sweep
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.estimates import interval

SETTINGS = BootstrapSettings(resamples=300, level=0.9, seed=7)


def retrieval_table(n: int = 12, texts: int = 2, seed: int = 0) -> pd.DataFrame:
    """Per-image ranks like retrieval scoring writes them (one failed image at the end)."""
    rng = np.random.default_rng(seed)
    t2i = [rng.integers(1, n + 1, size=texts).tolist() for _ in range(n)]
    i2t = rng.integers(1, n * texts + 1, size=n)
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)] + ["bad"],
                         "status": ["scored"] * n + ["failed"],
                         "i2t_rank": [*i2t.tolist(), 0], "t2i_ranks": [*t2i, []]})


def numpy_recall(table: pd.DataFrame, k: int) -> tuple[float, float]:
    """Recall@k both ways, written out with numpy (images as the unit for t2i)."""
    scored = table[table["status"] == "scored"]
    i2t = scored["i2t_rank"].to_numpy()
    ranks = np.concatenate([np.asarray(r) for r in scored["t2i_ranks"]])
    return float(np.mean(i2t[i2t > 0] <= k)), float(np.mean(ranks <= k))


def numpy_interval(per_image: np.ndarray, texts: np.ndarray, settings: BootstrapSettings
                   ) -> tuple[float, float]:
    """Percentile interval of sum(values) / sum(texts) over resampled images."""
    n = len(per_image)
    index = np.random.default_rng(settings.seed).integers(0, n, (settings.resamples, n))
    boot = per_image[index].sum(axis=1) / texts[index].sum(axis=1)
    alpha = (1 - settings.level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(low), float(high)


def test_recall_curves_equal_a_numpy_computation():
    table = retrieval_table()
    i2t, t2i = recall_curves(table, SETTINGS, max_k=5)
    assert len(i2t.values) == 10 and len(t2i.values) == 10  # at least MIN_K
    assert (i2t.queries, i2t.gallery, t2i.queries, t2i.gallery) == (12, 24, 24, 12)
    scored = table[table["status"] == "scored"]
    ranks = [np.asarray(r) for r in scored["t2i_ranks"]]
    for k in range(1, 11):
        expected_i2t, expected_t2i = numpy_recall(table, k)
        assert i2t.values[k - 1] == pytest.approx(expected_i2t)
        assert t2i.values[k - 1] == pytest.approx(expected_t2i)
        hits = (scored["i2t_rank"].to_numpy() <= k).astype(float)
        assert (i2t.low[k - 1], i2t.high[k - 1]) == pytest.approx(
            numpy_interval(hits, np.ones(12), SETTINGS))
        t2i_hits = np.array([np.sum(r <= k) for r in ranks], dtype=float)
        assert (t2i.low[k - 1], t2i.high[k - 1]) == pytest.approx(
            numpy_interval(t2i_hits, np.full(12, 2.0), SETTINGS))


def test_curve_intervals_are_the_runs_metric_intervals():
    """The band at k = 1 and 5 is the interval logged for the recall@k metric."""
    table = retrieval_table(n=20, texts=3, seed=4)
    scored = table[table["status"] == "scored"]
    t2i = np.concatenate([np.asarray(r) for r in scored["t2i_ranks"]])
    owners = np.repeat(np.arange(20), 3)
    columns = image_statistics(scored["i2t_rank"].to_numpy(), t2i, owners, (1, 5))
    per_image = pd.DataFrame(columns)
    curves = {c.direction: c for c in recall_curves(table, SETTINGS, max_k=5)}
    for key, estimate in retrieval_estimates((1, 5)).items():
        match = re.fullmatch(r"(i2t|t2i)_recall_at_(\d+)", key)
        if not match:
            continue
        bounds = interval(estimate, per_image, SETTINGS)
        curve, k = curves[match.group(1)], int(match.group(2))
        assert curve.values[k - 1] == pytest.approx(bounds.estimate)
        assert (curve.low[k - 1], curve.high[k - 1]) == pytest.approx((bounds.low, bounds.high))


def test_curves_are_bounded_by_the_gallery_and_handle_no_resampling():
    table = retrieval_table(n=3, texts=1)
    curves = recall_curves(table, BootstrapSettings(resamples=0), max_k=50)
    assert [len(c.values) for c in curves] == [3, 3]
    assert all(np.isnan(c.low).all() and c.values[-1] == 1.0 for c in curves)
    assert recall_curves(table.iloc[[3]], SETTINGS, max_k=5) == []  # only the failed row
    assert largest_k({"i2t_recall_at_5": 0.1, "t2i_recall_at_50": 0.2, "x": 1}) == 50


def test_cumulative_hits_count_ranks_up_to_k():
    hits = cumulative_hits([np.array([1, 3]), np.array([], np.int64), np.array([2, 0, 9])], 3)
    np.testing.assert_array_equal(hits, [[1, 1, 2], [0, 0, 0], [0, 1, 1]])


def test_threshold_sweep_matches_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(size=40) + labels
    points = sweep_points(scores, extra=0.25)
    assert 0.25 in points and len(points) == 41
    sweep = threshold_sweep(scores, labels, points)
    for index in (0, 10, 25):
        predicted = (scores >= points[index]).astype(int)
        assert sweep.accuracy[index] == pytest.approx(accuracy_score(labels, predicted))
        assert sweep.precision[index] == pytest.approx(precision_score(labels, predicted))
        assert sweep.recall[index] == pytest.approx(recall_score(labels, predicted))
    above = threshold_sweep(scores, labels, np.array([scores.max() + 1]))
    assert np.isnan(above.precision[0]) and above.recall[0] == 0
    assert len(sweep_points(rng.normal(size=5000))) <= 200


def test_calibration_bins_count_every_pair_once():
    scores = np.array([0.0, 0.1, 0.3, 0.4, 0.9, 1.0])  # bins of 0.25: the third is empty
    labels = np.array([0, 0, 1, 0, 1, 1])
    calibration = calibration_bins(scores, labels, bins=4)
    assert calibration.pairs.tolist() == [2, 2, 2]
    np.testing.assert_allclose(calibration.positive_rate, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(calibration.mean_score, [0.05, 0.35, 0.95])
    assert calibration_bins(np.array([0.3, 0.3]), np.array([1, 0])).pairs.tolist() == [2]


def figures() -> dict[str, Figure]:
    """One figure of every plot function, from small synthetic inputs."""
    rng = np.random.default_rng(0)
    curve = RecallCurve("i2t", np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, np.nan]),
                        np.array([0.3, 0.7, np.nan]), 10, 20)
    scores, labels = rng.normal(size=30), rng.integers(0, 2, 30)
    return {
        "recall": plots.recall_figure([curve], 0.95),
        "slices": plots.slice_figure(["a=1 (n=5)", "a=2 (n=0)"], np.array([0.4, np.nan]),
                                     np.array([0.2, np.nan]), np.array([0.6, np.nan]),
                                     "accuracy", 0.95),
        "confusion": plots.confusion_figure(["cat", "dog"], np.array([[3, 1], [0, 4]])),
        "histogram": plots.histogram_figure([("cider", rng.random(20)),
                                             ("vqa", np.array([0, 0.3, 1.0, 1.0])),
                                             ("same", np.array([0.0, 0.0]))], "scores"),
        "ranks": plots.ranks_figure([("i2t", np.array([1, 2, 2, 7])),
                                     ("t2i", rng.integers(1, 500, 40))]),
        "by_label": plots.scores_by_label_figure(scores, labels, 0.1),
        "threshold": plots.threshold_figure(
            threshold_sweep(scores, labels, sweep_points(scores, 0.1)), 0.1),
        "calibration": plots.calibration_figure(calibration_bins(scores, labels), False),
        "human": plots.human_vs_metric_figure([
            ("cider", rng.random(12), rng.integers(1, 6, 12).astype(float), "rho 0.10"),
            ("i2t_rank", rng.integers(1, 50, 12).astype(float),
             rng.integers(1, 6, 12).astype(float), "rho -0.70")]),
    }


EXTERNAL = re.compile(r'(?:href|src)="(?!#|data:)|url\((?!#)|@import|https?://(?!www\.w3\.org)')


def test_every_plot_renders_to_self_contained_deterministic_svg():
    first, second = figures(), figures()
    for name, figure in first.items():
        svg = to_svg(figure, f"plot-{name}")
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>"), name
        assert not EXTERNAL.search(svg), (name, EXTERNAL.search(svg))
        assert "<metadata" not in svg and "<?xml" not in svg and "DOCTYPE" not in svg
        assert svg == to_svg(second[name], f"plot-{name}"), f"{name} is not deterministic"
        ids = re.findall(r'\bid="([^"]+)"', svg)
        assert all(i.startswith(f"plot-{name}-") for i in ids)
        for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', svg):
            assert ref in ids, (name, ref)


def test_figures_in_one_page_share_no_ids():
    svgs = [to_svg(figure, f"plot-{name}") for name, figure in figures().items()]
    ids = [i for svg in svgs for i in re.findall(r'\bid="([^"]+)"', svg)]
    assert len(ids) == len(set(ids))
    assert prefix_ids('<g id="a"><use href="#a"/><path clip-path="url(#a)"/></g>', "p") == \
        '<g id="p-a"><use href="#p-a"/><path clip-path="url(#p-a)"/></g>'


def kind_tables() -> dict[str, tuple[dict, pd.DataFrame]]:
    """(report, per-sample table) per kind, as small as scoring would write them."""
    rng = np.random.default_rng(3)
    base = {"statistics": {"bootstrap": 50, "level": 0.95, "seed": 0}, "metrics": {}}
    scored = ["scored"] * 6
    labels = ["cat", "dog", "cat", "dog", "cat", "dog"]
    prediction = ["cat", "cat", "cat", "dog", "dog", "dog"]
    return {
        "retrieval": (base | {"task": "retrieval"}, retrieval_table(n=6)),
        "captioning": (base | {"task": "captioning"}, pd.DataFrame(
            {"status": scored, "cider": rng.random(6), "clip_score": rng.random(6)})),
        "vqa": (base | {"task": "vqa"}, pd.DataFrame(
            {"status": scored, "vqa_accuracy": [0, 0.3, 0.6, 1, 1, 0.9]})),
        "zero_shot_classification": (base | {"task": "zero_shot_classification"},
                                     pd.DataFrame({"status": scored, "label": labels,
                                                   "prediction": prediction,
                                                   "correct": [a == b for a, b in
                                                               zip(labels, prediction,
                                                                   strict=True)],
                                                   "margin": rng.random(6)})),
        "matching": (base | {"task": "matching", "metrics": {"threshold": 0.5}}, pd.DataFrame(
            {"status": scored, "score": rng.random(6), "label": [0, 1] * 3})),
    }


EXPECTED = {"retrieval": ["recall_at_k", "ranks"], "captioning": ["caption_scores"],
            "vqa": ["vqa_accuracy"], "zero_shot_classification": ["confusion_matrix", "margins"],
            "matching": ["match_scores", "threshold", "calibration"]}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_report_figures_per_kind(kind: str):
    report, table = kind_tables()[kind]
    drawn = report_figures(report, table)
    assert [p.name for p in drawn.plots] == EXPECTED[kind] and drawn.notes == []
    slices = {"results": [{"slice": "a=x", "size": 3, "status": "scored",
                           "metrics": {"h": {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8}}},
                          {"slice": "a=y", "size": 1, "status": "too small", "metrics": {}}]}
    with_slices = report_figures(report | {"headline": "h", "slices": slices}, table)
    assert [p.name for p in with_slices.plots] == [*EXPECTED[kind], "slices"]


def test_confusion_matrix_is_read_from_the_runs_file(tmp_path):
    report, table = kind_tables()["zero_shot_classification"]
    frame = pd.DataFrame([[2, 1, 0], [0, 2, 0], [0, 0, 1]], index=["cat", "dog", "emu"],
                         columns=["cat", "dog", "emu"])
    frame.to_csv(tmp_path / "confusion_matrix.csv")
    drawn = report_figures(report, table, {"confusion_matrix.csv": str(tmp_path /
                                                                      "confusion_matrix.csv")})
    svg = to_svg(drawn.plots[0].figure, "c")
    assert "emu" in svg and "3 classes" in svg


def test_no_scored_rows_and_a_failing_plot_leave_notes(monkeypatch: pytest.MonkeyPatch):
    report, table = kind_tables()["vqa"]
    failed = table.assign(status="failed", vqa_accuracy=np.nan)
    drawn = report_figures(report, failed)
    assert drawn.plots == [] and "No scored rows (6 failed of 6)" in drawn.notes[0]

    def broken(*args: object) -> Figure:
        raise ValueError("boom")

    monkeypatch.setattr(plots, "histogram_figure", broken)
    drawn = report_figures(report, table)
    assert drawn.plots == [] and "vqa_plots could not be drawn: ValueError: boom" in drawn.notes
