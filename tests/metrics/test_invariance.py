"""Batch-size invariance: retrieval metrics do not change with the inference batch size or shard
size, and float noise in the embeddings does not flip near-ties (similarities are ranked on a
grid of ``SCORE_DECIMALS`` decimals, ties to the lower index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import save_dataset
from tasks.kinds import get_task_kind, kind_code_version
from tasks.kinds.sharded import Inference, load_arrays
from tasks.metrics import get_metric
from tasks.metrics.ranking import SCORE_DECIMALS, rounded_scores
from tasks.metrics.retrieval import RetrievalInputs
from tests.helpers import write_dataset

NOISE = 5e-7  # relative change of one coordinate: cosines move by ~2e-7 (float32 noise)


def near_tie_case(noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images e0, e1, e2. Text 0 (image 1's) and text 1 (image 0's) are equally similar to
    image 0 (0.6); text 2 (image 2's) is equally similar to images 1 and 2 (3 / sqrt(34)).
    ``noise`` makes text 1 and text 2's similarity to image 2 larger by a few float32 ulps."""
    images = np.eye(3, 4, dtype=np.float32)
    texts = np.array([[3, 0, 0, 4], [3 * (1 + noise), 0, 0, 4], [0, 3, 3 * (1 + noise), 4],
                      [0, 1, 0, 0]], dtype=np.float32)
    return images, texts, np.array([1, 0, 2, 1])


def plain_ranks(images: np.ndarray, texts: np.ndarray, owner: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """i2t and t2i ranks from a stable descending sort of the unrounded float32 cosines."""
    a = images / np.linalg.norm(images, axis=1, keepdims=True)
    b = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    sims = a @ b.T
    i2t_order = np.argsort(-sims, axis=1, kind="stable")
    i2t = (owner[i2t_order] == np.arange(len(a))[:, None]).argmax(axis=1) + 1
    t2i_order = np.argsort(-sims.T, axis=1, kind="stable")
    return i2t, (t2i_order == owner[:, None]).argmax(axis=1) + 1


def test_float_noise_does_not_flip_near_ties():
    exact, noisy = near_tie_case(0.0), near_tie_case(NOISE)
    a = noisy[1] / np.linalg.norm(noisy[1], axis=1, keepdims=True)
    gaps = (a[1, 0] - a[0, 0], a[2, 2] - a[2, 1])  # the noise: above 0, far below the grid
    assert all(0 < gap < 0.1 ** (SCORE_DECIMALS + 1) for gap in gaps), gaps
    # hand-checked: ties go to the lower index (image 0's caption is second, text 2's image too)
    assert [r.tolist() for r in plain_ranks(*exact)] == [[2, 1, 1], [2, 1, 2, 1]]
    assert [r.tolist() for r in plain_ranks(*noisy)] == [[1, 1, 1], [2, 1, 1, 1]]  # flipped
    metric = get_metric("retrieval")
    with_noise = metric(RetrievalInputs(*noisy), ks=(1, 2))
    without = metric(RetrievalInputs(*exact), ks=(1, 2))
    assert with_noise.per_sample["i2t_rank"].tolist() == [2, 1, 1]
    assert with_noise.per_sample["t2i_rank"].tolist() == [2, 1, 2, 1]
    assert with_noise.corpus == without.corpus
    for key, value in without.per_sample.items():
        np.testing.assert_array_equal(with_noise.per_sample[key], value, err_msg=key)


def evaluate_without_prefect(manifest: Path, model: Path, work: Path, batch_size: int,
                             shard_size: int) -> tuple[dict[str, float], np.ndarray, pd.DataFrame]:
    """data -> inference -> retrieval scoring (no Prefect): metrics with their intervals, the
    text embeddings and the per-sample table."""
    config = build_config({
        "model": {"path": str(model), "batch_size": batch_size, "device": "cpu"},
        "dataset": {"path": str(manifest)},
        "inference": {"shard_size": shard_size, "cache": False},
        "statistics": {"bootstrap": 50, "seed": 1}, "work_dir": str(work)})
    kind = get_task_kind("retrieval")
    dataset = save_dataset(load_dataset(config.dataset), work / "data")
    inference = kind.infer(Inference(dataset, config, work / "cache", kind_code_version(kind)))
    scores = kind.score(dataset, inference, config, work / "scores")
    return (scores.metrics, load_arrays(inference, "text_embeddings"),
            pd.read_parquet(scores.per_sample_path))


def test_batch_and_shard_sizes_give_identical_metrics(tmp_path: Path, tiny_clip_dir: Path):
    """The tiny CLIP's embeddings differ in the last bits between batch sizes (other kernels,
    other padding); every metric, interval and per-sample value is identical."""
    manifest = write_dataset(tmp_path / "ds", n=12)  # repeated captions: exact ties abound
    runs = {(batch, shard): evaluate_without_prefect(manifest, tiny_clip_dir,
                                                     tmp_path / f"b{batch}-s{shard}", batch, shard)
            for batch, shard in ((1, 100), (3, 2), (8, 100), (8, 2))}
    metrics, texts, table = runs[(1, 100)]
    assert {"i2t_recall_at_1", "t2i_mrr", "t2i_ndcg_at_5_ci_low"} <= set(metrics)
    for key, (other_metrics, other_texts, other_table) in runs.items():
        np.testing.assert_allclose(other_texts, texts, atol=1e-5)  # the same model, up to noise
        assert other_metrics == metrics, key
        pd.testing.assert_frame_equal(other_table, table, check_exact=True)


@pytest.mark.parametrize("noise", [1e-7, 3e-7])
def test_rounding_grid_absorbs_noise_between_grid_points(noise):
    """Scores on the grid points k / 10**SCORE_DECIMALS and the same plus noise rank alike;
    the grid values are those of ``np.round(scores, SCORE_DECIMALS)``."""

    grid = np.arange(-5, 6, dtype=np.float32) / np.float32(10**SCORE_DECIMALS) + np.float32(0.5)
    noisy = grid + np.float32(noise) * np.where(np.arange(len(grid)) % 2, 1, -1)
    np.testing.assert_array_equal(rounded_scores(noisy), rounded_scores(grid))
    np.testing.assert_allclose(rounded_scores(grid) / 10**SCORE_DECIMALS,
                               np.round(grid.astype(np.float64), SCORE_DECIMALS), atol=1e-12)
