"""NDCG@k, mAP@k and MRR of the retrieval metric against torchmetrics' RetrievalNormalizedDCG /
RetrievalMAP / RetrievalMRR, scikit-learn's ndcg_score / average_precision_score and a full
stable sort (ties), in both directions, per sample and averaged; block size and the candidate
bound do not change them; the keys reach report.json and MLflow with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_normalized_dcg,
    retrieval_reciprocal_rank,
)
from torchmetrics.retrieval import RetrievalMAP, RetrievalMRR, RetrievalNormalizedDCG

from tasks.metrics import get_metric
from tasks.metrics import retrieval as module
from tasks.metrics.ranking import SCORE_DECIMALS
from tasks.metrics.retrieval import RetrievalInputs

KS = (1, 5, 10)


def random_case(seed: int, n_images: int, captions: int | None, dim: int = 16,
                noise: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images and noisy captions; ``captions=None``: 1..5 captions per image, shuffled order."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, dim)).astype(np.float32)
    if captions is None:
        owner = np.repeat(np.arange(n_images), rng.integers(1, 6, n_images))
        rng.shuffle(owner)
    else:
        owner = np.repeat(np.arange(n_images), captions)
    texts = (images[owner] + noise * rng.normal(size=(len(owner), dim))).astype(np.float32)
    return images, texts, owner


def similarities(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """The similarities the metric ranks: float32 cosine of the normalised rows (images x
    texts) rounded to ``SCORE_DECIMALS`` decimals, as a float64 array, minus a column-index
    epsilon far below the grid step, so that the references see the metric's order (ties on
    the grid go to the lower column) as a strict one."""
    a = images / np.linalg.norm(images, axis=1, keepdims=True)
    b = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    cosine = a.astype(np.float32) @ b.astype(np.float32).T
    grid = np.rint(cosine * np.float32(10**SCORE_DECIMALS)).astype(np.float64)  # float32 product
    return (grid - np.arange(len(b)) / (2 * len(b))) / 10**SCORE_DECIMALS


def assert_no_ties(scores: np.ndarray) -> None:
    """The case is tie-free (also after torchmetrics' +2 shift), so every order is strict."""
    for values in (scores, scores + 2.0):
        assert (np.diff(np.sort(values, axis=1), axis=1) > 0).all()


def run(images, texts, owner, ks=KS):
    return get_metric("retrieval")(RetrievalInputs(images, texts, owner), ks=ks)


def torchmetrics_per_query(scores: np.ndarray, relevant: np.ndarray, k: int
                           ) -> dict[str, np.ndarray]:
    """Per row: torchmetrics' NDCG@k, AP@k and RR, and the relevant items in its top k.
    Scores are shifted by +2: torchmetrics' AP and RR drop candidates with a score <= 0; they
    enter as their row order (``strict_order``): torchmetrics computes in float32."""
    preds = torch.from_numpy(strict_order(scores) + 2.0)
    target = torch.from_numpy(relevant)
    out: dict[str, list[float]] = {"ndcg": [], "ap": [], "rr": [], "found": []}
    for p, t in zip(preds, target, strict=True):
        out["ndcg"].append(retrieval_normalized_dcg(p, t, top_k=k).item())
        out["ap"].append(retrieval_average_precision(p, t, top_k=k).item())
        out["rr"].append(retrieval_reciprocal_rank(p, t).item())
        out["found"].append(t[torch.topk(p, min(k, len(p))).indices].sum().item())
    return {key: np.array(value) for key, value in out.items()}


def torchmetrics_means(scores: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, float]:
    """The class metrics over all queries (one ``indexes`` group per row)."""
    preds = torch.from_numpy(strict_order(scores) + 2.0).flatten()
    target = torch.from_numpy(relevant).flatten()
    indexes = torch.arange(scores.shape[0]).repeat_interleave(scores.shape[1])
    out = {}
    for name, metric in (("ndcg", RetrievalNormalizedDCG(top_k=k)),
                         ("map", RetrievalMAP(top_k=k)), ("mrr", RetrievalMRR())):
        metric.update(preds, target, indexes=indexes)
        out[name] = metric.compute().item()
    return out


@pytest.mark.parametrize(("seed", "n_images", "captions"),
                         [(0, 40, 5), (1, 60, 1), (2, 30, None), (3, 25, 3)])
def test_image_to_text_matches_torchmetrics(seed, n_images, captions):
    images, texts, owner = random_case(seed, n_images, captions)
    scores = similarities(images, texts)
    assert_no_ties(scores)
    relevant = owner[None, :] == np.arange(n_images)[:, None]  # images x texts
    result = run(images, texts, owner)
    per_sample, corpus = result.per_sample, result.corpus
    count = relevant.sum(axis=1)
    for k in KS:
        reference = torchmetrics_per_query(scores, relevant, k)
        np.testing.assert_allclose(per_sample[f"i2t_ndcg_at_{k}"], reference["ndcg"], atol=1e-6)
        # torchmetrics divides the precision sum by the relevant items it found in the top k;
        # ours by min(R, k): the same sum, rescaled
        np.testing.assert_allclose(per_sample[f"i2t_ap_at_{k}"] * np.minimum(count, k),
                                   reference["ap"] * reference["found"], atol=1e-6)
        means = torchmetrics_means(scores, relevant, k)
        assert corpus[f"i2t_ndcg_at_{k}"] == pytest.approx(means["ndcg"], abs=1e-6)
        if captions == 1 or k == 1:  # min(R, k) = 1: the two AP normalisations coincide
            assert corpus[f"i2t_map_at_{k}"] == pytest.approx(means["map"], abs=1e-6)
        assert corpus["i2t_mrr"] == pytest.approx(means["mrr"], abs=1e-6)
    np.testing.assert_allclose(per_sample["i2t_rr"], reference["rr"], atol=1e-6)
    assert 0 < corpus["i2t_ndcg_at_10"] < 1 and 0 < corpus["i2t_map_at_10"] < 1


@pytest.mark.parametrize(("seed", "n_images", "captions"), [(4, 40, 5), (5, 30, None)])
def test_text_to_image_matches_torchmetrics(seed, n_images, captions):
    images, texts, owner = random_case(seed, n_images, captions)
    scores = similarities(texts, images)  # texts x images
    assert_no_ties(scores)
    relevant = owner[:, None] == np.arange(n_images)[None, :]
    result = run(images, texts, owner)
    per_sample, corpus = result.per_sample, result.corpus
    for k in KS:
        reference = torchmetrics_per_query(scores, relevant, k)
        # per image: the sum over its captions (the per-sample table's unit is the image)
        for ours, theirs in ((f"t2i_ndcg_sum_at_{k}", "ndcg"), (f"t2i_ap_sum_at_{k}", "ap")):
            expected = np.bincount(owner, weights=reference[theirs], minlength=n_images)
            np.testing.assert_allclose(per_sample[ours], expected, atol=1e-6)
        means = torchmetrics_means(scores, relevant, k)
        assert corpus[f"t2i_ndcg_at_{k}"] == pytest.approx(means["ndcg"], abs=1e-6)
        assert corpus[f"t2i_map_at_{k}"] == pytest.approx(means["map"], abs=1e-6)  # R = 1
        assert corpus["t2i_mrr"] == pytest.approx(means["mrr"], abs=1e-6)
    expected = np.bincount(owner, weights=reference["rr"], minlength=n_images)
    np.testing.assert_allclose(per_sample["t2i_rr_sum"], expected, atol=1e-6)


@pytest.mark.parametrize("k", KS)
def test_ndcg_matches_scikit_learn(k):
    images, texts, owner = random_case(6, 35, None)
    scores = similarities(images, texts)
    assert_no_ties(scores)
    relevant = (owner[None, :] == np.arange(35)[:, None]).astype(int)
    result = run(images, texts, owner)
    i2t = [ndcg_score(relevant[[i]], scores[[i]], k=k) for i in range(35)]
    np.testing.assert_allclose(result.per_sample[f"i2t_ndcg_at_{k}"], i2t, atol=1e-6)
    assert result.corpus[f"i2t_ndcg_at_{k}"] == pytest.approx(
        ndcg_score(relevant, scores, k=k), abs=1e-6)
    assert result.corpus[f"t2i_ndcg_at_{k}"] == pytest.approx(
        ndcg_score(relevant.T, scores.T, k=k), abs=1e-6)


def test_full_depth_average_precision_is_scikit_learns():
    """With k = the gallery size, min(R, k) = R: AP@k is the uncut average precision."""
    images, texts, owner = random_case(7, 20, None)
    scores = similarities(images, texts)
    assert_no_ties(scores)
    result = run(images, texts, owner, ks=(len(texts),))
    expected = [average_precision_score(owner == i, scores[i]) for i in range(20)]
    np.testing.assert_allclose(result.per_sample[f"i2t_ap_at_{len(texts)}"], expected,
                               atol=1e-6)
    full = [ndcg_score((owner == i)[None].astype(int), scores[[i]]) for i in range(20)]
    np.testing.assert_allclose(result.per_sample[f"i2t_ndcg_at_{len(texts)}"], full,
                               atol=1e-6)


def strict_order(scores: np.ndarray) -> np.ndarray:
    """Per row, ``1 - position / columns`` of each column in a stable descending sort: the
    same order, with steps of ``1 / columns`` that float32 keeps apart."""
    return 1.0 - stable_positions(scores) / scores.shape[1]


def stable_positions(scores: np.ndarray) -> np.ndarray:
    """Per row, each column's 0-based position in a stable descending sort (ties: lower
    column first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(scores.shape[1])[None, :], axis=1)
    return positions


def reference_values(scores: np.ndarray, relevant: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NDCG@k, AP@k (over min(R, k)) and RR from a full stable sort, written out directly."""
    positions = stable_positions(scores)
    ndcg, ap, rr = [], [], []
    for pos, rel in zip(positions, relevant, strict=True):
        ranks = np.sort(pos[rel]) + 1
        shown = ranks[ranks <= k]
        dcg = sum(1 / np.log2(r + 1) for r in shown)
        ideal = sum(1 / np.log2(r + 1) for r in range(1, min(len(ranks), k) + 1))
        ndcg.append(dcg / ideal)
        ap.append(sum((i + 1) / r for i, r in enumerate(shown)) / min(len(ranks), k))
        rr.append(1 / ranks[0])
    return np.array(ndcg), np.array(ap), np.array(rr)


def tied_case(seed: int, n_images: int, captions: int) -> tuple[np.ndarray, ...]:
    """Vectors of +-1/2 on 4 dims: unit norm, every similarity a multiple of 1/4 exactly, so
    ties are many and exact."""
    rng = np.random.default_rng(seed)
    images = rng.choice([-0.5, 0.5], size=(n_images, 4)).astype(np.float32)
    owner = np.repeat(np.arange(n_images), captions)
    texts = rng.choice([-0.5, 0.5], size=(len(owner), 4)).astype(np.float32)
    return images, texts, owner


def test_ties_follow_the_stable_index_order_of_the_ranks():
    images, texts, owner = tied_case(8, 12, 3)
    scores = similarities(images, texts)
    relevant = owner[None, :] == np.arange(12)[:, None]
    result = run(images, texts, owner)
    per_sample = result.per_sample
    for k in KS:
        ndcg, ap, rr = reference_values(scores, relevant, k)
        np.testing.assert_allclose(per_sample[f"i2t_ndcg_at_{k}"], ndcg, atol=1e-12)
        np.testing.assert_allclose(per_sample[f"i2t_ap_at_{k}"], ap, atol=1e-12)
        # torchmetrics agrees once ties are broken the way the ranks break them
        broken = -stable_positions(scores).astype(np.float64)
        reference = torchmetrics_per_query(broken + scores.shape[1], relevant, k)
        np.testing.assert_allclose(per_sample[f"i2t_ndcg_at_{k}"], reference["ndcg"],
                                   atol=1e-6)
    np.testing.assert_allclose(per_sample["i2t_rr"], rr, atol=1e-12)
    # the reciprocal ranks are those of the recall metric's ranks, both ways
    np.testing.assert_array_equal(per_sample["i2t_rr"], 1 / per_sample["i2t_rank"])
    t2i = per_sample["t2i_rank"]
    np.testing.assert_allclose(per_sample["t2i_rr_sum"],
                               np.bincount(owner, weights=1 / t2i, minlength=12))
    t_ndcg, t_ap, _ = reference_values(scores.T, relevant.T, 5)
    np.testing.assert_allclose(per_sample["t2i_ndcg_sum_at_5"],
                               np.bincount(owner, weights=t_ndcg, minlength=12))
    np.testing.assert_allclose(per_sample["t2i_ap_sum_at_5"],
                               np.bincount(owner, weights=t_ap, minlength=12))


def test_gallery_of_identical_texts_ranks_by_index():
    images = np.eye(3, 4, dtype=np.float32)
    texts = np.ones((6, 4), dtype=np.float32)
    owner = np.array([2, 0, 1, 2, 0, 1])
    result = run(images, texts, owner, ks=(1, 2))
    # every image sees texts 0..5 in index order: image 2 owns positions 1 and 4
    ndcg_2 = 1 / (1 + 1 / np.log2(3))  # DCG 1 at position 1, ideal 1 + 1/log2(3)
    np.testing.assert_allclose(result.per_sample["i2t_ndcg_at_2"], [1 / np.log2(3) / (
        1 + 1 / np.log2(3)), 0.0, ndcg_2])
    np.testing.assert_allclose(result.per_sample["i2t_ap_at_2"], [0.25, 0.0, 0.5])
    np.testing.assert_allclose(result.per_sample["i2t_rr"], [0.5, 1 / 3, 1.0])


def test_image_without_caption_is_left_out():
    images, texts, owner = random_case(9, 10, 2)
    images = np.vstack([images, np.ones((1, images.shape[1]), np.float32)])
    result = run(images, texts, owner)
    assert np.isnan(result.per_sample["i2t_ndcg_at_5"][-1])
    assert np.isnan(result.per_sample["i2t_rr"][-1])
    assert result.per_sample["t2i_rr_sum"][-1] == 0
    assert result.corpus["i2t_mrr"] == pytest.approx(np.mean(result.per_sample["i2t_rr"][:-1]))


@pytest.mark.parametrize(("block_bytes", "subsample", "per_depth"),
                         [(4 * 300 * 7, 16, 64), (4 * 300, 16, 64), (4 * 300 * 7, 1000, 1),
                          (4 * 300 * 7, 1, 64)])
def test_blocks_and_candidate_bound_do_not_change_results(monkeypatch, block_bytes, subsample,
                                                          per_depth):
    images, texts, owner = random_case(10, 100, 3)
    full = run(images, texts, owner)
    monkeypatch.setattr(module, "BLOCK_BYTES", block_bytes)  # 7 rows or 1 row per block
    monkeypatch.setattr(module, "SUBSAMPLE", subsample)
    monkeypatch.setattr(module, "CANDIDATES_PER_DEPTH", per_depth)
    chunked = run(images, texts, owner)
    assert full.per_sample.keys() == chunked.per_sample.keys()
    for key, value in full.per_sample.items():
        np.testing.assert_array_equal(value, chunked.per_sample[key], err_msg=key)
    assert full.corpus == chunked.corpus


def test_crowded_rows_use_the_exact_threshold(monkeypatch):
    """The sampled texts (the first 16 of 200) point away from all images: the cheap bound (the
    best of those) keeps more than 64 * depth texts, so rows fall back to the exact value."""
    rng = np.random.default_rng(11)
    images = rng.normal(size=(5, 8)).astype(np.float32) + 1.0
    owner = rng.integers(0, 5, 200)
    texts = (images[owner] + rng.normal(scale=0.5, size=(200, 8))).astype(np.float32)
    texts[:16] = -images.sum(axis=0)
    scores = similarities(images, texts)
    relevant = owner[None, :] == np.arange(5)[:, None]
    widths: list[int] = []
    kth_largest = module._kth_largest
    monkeypatch.setattr(module, "_kth_largest",
                        lambda values, k: widths.append(values.shape[1]) or kth_largest(values, k))
    result = run(images, texts, owner, ks=(1,))
    assert widths == [16, 200]  # the sampled bound, then the exact value
    ndcg, ap, rr = reference_values(scores, relevant, 1)
    np.testing.assert_allclose(result.per_sample["i2t_ndcg_at_1"], ndcg, atol=1e-12)
    np.testing.assert_allclose(result.per_sample["i2t_rr"], rr, atol=1e-12)


def test_estimates_rebuild_the_corpus_values():
    import pandas as pd

    from tasks.scoring_io import statistics_table
    from tasks.stats.estimates import point_value

    images, texts, owner = random_case(12, 30, None)
    inputs = RetrievalInputs(images, texts, owner)
    result = get_metric("retrieval")(inputs, ks=KS)
    table = statistics_table(inputs, result.per_sample)
    assert isinstance(table, pd.DataFrame) and len(table) == 30
    for direction in ("i2t", "t2i"):
        keys = [f"{direction}_{m}_at_{k}" for m in ("ndcg", "map") for k in KS]
        for key in [*keys, f"{direction}_mrr"]:
            assert point_value(result.estimates[key], table) == pytest.approx(
                result.corpus[key], abs=1e-12), key
    assert get_metric("retrieval").outputs["t2i_map_at_10"] is True


def test_intervals_resample_images_like_scipy(capsys, tmp_path: Path):
    from scipy.stats import bootstrap

    from flows.cli import main
    from tasks.stats.resampling import chunk_rows

    images, texts, owner = random_case(13, 50, 2)
    for name, array in (("i", images), ("t", texts), ("o", owner)):
        np.save(tmp_path / f"{name}.npy", array)
    assert main(["score", "retrieval", "--image-embeddings", str(tmp_path / "i.npy"),
                 "--text-embeddings", str(tmp_path / "t.npy"), "--text-to-image",
                 str(tmp_path / "o.npy"), "--bootstrap", "300", "--seed", "7"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    scores = similarities(texts, images)
    per_text = torchmetrics_per_query(scores, owner[:, None] == np.arange(50)[None, :], 5)

    def t2i_ndcg(index):  # images are the unit: all captions of a drawn image count
        return np.concatenate([per_text["ndcg"][owner == i] for i in index.astype(int)]).mean()

    interval = bootstrap((np.arange(50),), t2i_ndcg, n_resamples=300, method="percentile",
                         vectorized=False, batch=chunk_rows(50), rng=np.random.default_rng(7),
                         paired=True).confidence_interval
    assert metrics["t2i_ndcg_at_5_ci_low"] == pytest.approx(interval.low, abs=1e-6)
    assert metrics["t2i_ndcg_at_5_ci_high"] == pytest.approx(interval.high, abs=1e-6)
    for key in ("i2t_ndcg_at_10", "i2t_map_at_5", "i2t_mrr", "t2i_map_at_10", "t2i_mrr"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key


@pytest.mark.e2e
def test_ranking_metrics_reach_report_and_mlflow(prefect_harness, tmp_path: Path,
                                                 tiny_clip_dir: Path):
    from mlflow import MlflowClient

    from flows.evaluate import evaluate
    from tasks.config_io import build_config
    from tests.helpers import write_dataset

    manifest = write_dataset(tmp_path / "ds", n=12)
    config = build_config({
        "model": {"path": str(tiny_clip_dir), "batch_size": 4},
        "dataset": {"path": str(manifest)},
        "review": {"size": 2, "seed": 1},
        "report": {"destination": str(tmp_path / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "experiment": "ranking"},
        "statistics": {"bootstrap": 100, "seed": 1},
        "work_dir": str(tmp_path / "work"),
    })
    result = evaluate(config)
    report = json.loads((Path(result["report"]) / "report.json").read_text())
    logged = MlflowClient(tracking_uri=config.tracking.tracking_uri).get_run(
        result["mlflow_run_id"]).data.metrics
    html = (Path(result["report"]) / "report.html").read_text()
    for key in ("i2t_ndcg_at_10", "t2i_ndcg_at_1", "i2t_map_at_10", "t2i_map_at_5",
                "i2t_mrr", "t2i_mrr"):
        assert key in report["estimates"], key
        low, high = report["metrics"][f"{key}_ci_low"], report["metrics"][f"{key}_ci_high"]
        assert low <= report["metrics"][key] <= high, key
        assert logged[key] == pytest.approx(report["metrics"][key])
        assert logged[f"{key}_ci_high"] == pytest.approx(high)
        assert f'data-metric="{key}"' in html, key
    # i2t MRR is the mean reciprocal of the per-image ranks the report stores
    import pandas as pd

    table = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    scored = table[table["status"] == "scored"]
    assert report["metrics"]["i2t_mrr"] == pytest.approx(np.mean(1 / scored["i2t_rank"]))
