"""Retrieval scoring on a torch device (``tasks.metrics._similarity_torch``) gives the numpy
path's results: ranks, NDCG / mAP relevance, margins and top captions, ties included.

Exact comparisons use embeddings whose similarities are exact in float32 whatever order a BLAS
sums them in (``exact_embeddings``), so any difference is the scoring's, not float noise. The
CPU tests run torch on ``device="cpu"``; the CUDA tests repeat them on a GPU and are skipped
where there is none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.kinds.base import InferenceRef
from tasks.kinds.retrieval import score as retrieval_kind
from tasks.metrics import _similarity_torch as device_scoring
from tasks.metrics import get_metric
from tasks.metrics import retrieval as retrieval_metric
from tasks.metrics.base import MetricResult
from tasks.metrics.ranking import rounded_scores
from tasks.metrics.retrieval import RetrievalInputs
from tests.helpers import write_dataset

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def exact_embeddings(rng: np.random.Generator, rows: int, dims: int = 24) -> np.ndarray:
    """Rows with 4 or 16 entries of +-1 (the norm, 2 or 4, is exact): normalised, entries are
    +-1/2 or +-1/4, so every cosine is a multiple of 1/16, exact in float32 in any summation
    order, and many tie. A quarter of the rows repeat earlier ones exactly."""
    out = np.zeros((rows, dims), dtype=np.float32)
    for row in range(rows):
        columns = rng.choice(dims, size=rng.choice([4, 16]), replace=False)
        out[row, columns] = rng.choice([-1.0, 1.0], size=len(columns))
    repeats = rng.choice(rows, size=rows // 4, replace=False)
    out[repeats] = out[rng.integers(0, max(rows // 2, 1), size=len(repeats))]
    return out


def case(name: str, seed: int = 0) -> tuple[RetrievalInputs, tuple[int, ...]]:
    """Inputs with ties and duplicates; some images without captions (the first ten in
    ``"captionless"``, so whole blocks have none), a gallery smaller than max(ks) (``"small"``),
    identical texts (``"identical"``) and no texts at all (``"no_texts"``)."""
    rng = np.random.default_rng(seed)
    images, texts, ks = 40, 90, (1, 5, 10)
    if name == "small":
        images, texts, ks = 12, 30, (1, 5, 50)
    if name == "no_texts":
        texts = 0
    image_rows, text_rows = exact_embeddings(rng, images), exact_embeddings(rng, texts)
    owner = rng.integers(10 if name == "captionless" else 0, images - 3, size=texts)
    if name == "identical":
        text_rows[:] = text_rows[0]
    return RetrievalInputs(image_rows, text_rows, owner), ks


CASES = ["ties", "captionless", "small", "identical", "no_texts"]


def on(inputs: RetrievalInputs, device: str | None) -> RetrievalInputs:
    return RetrievalInputs(inputs.image_embeddings, inputs.text_embeddings,
                           inputs.text_to_image, scoring_device=device)


def assert_same(ours: MetricResult, expected: MetricResult) -> None:
    np.testing.assert_equal(ours.corpus, expected.corpus)
    assert ours.per_sample.keys() == expected.per_sample.keys()
    for key, values in expected.per_sample.items():
        np.testing.assert_array_equal(ours.per_sample[key], values, err_msg=key)
        assert ours.per_sample[key].dtype == values.dtype, key
    assert ours.extra == expected.extra


def small_blocks(monkeypatch: pytest.MonkeyPatch, rows: int = 7) -> None:
    """About ``rows`` query rows per similarity block (90 columns), so several blocks run."""
    monkeypatch.setattr(retrieval_metric, "BLOCK_BYTES", 4 * 90 * rows)
    monkeypatch.setattr(retrieval_kind, "BLOCK_BYTES", 4 * 90 * rows)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_torch_cpu_metrics_equal_numpy(name: str, blocks: str, monkeypatch: pytest.MonkeyPatch):
    if blocks == "small":
        small_blocks(monkeypatch)
    inputs, ks = case(name)
    metric = get_metric("retrieval")
    assert_same(metric(on(inputs, "cpu"), ks=ks), metric(inputs, ks=ks))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("count", [1, 3, 60])
def test_torch_cpu_caption_ranking_equals_numpy(name: str, count: int,
                                                monkeypatch: pytest.MonkeyPatch):
    small_blocks(monkeypatch, rows=5)
    inputs, _ = case(name, seed=1)
    ours = retrieval_kind.caption_ranking(on(inputs, "cpu"), count)
    expected = retrieval_kind.caption_ranking(inputs, count)
    for got, want in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.shape == want.shape


def test_random_embeddings_rank_alike():
    """Ordinary float embeddings: BLAS libraries may sum dot products in another order, which
    the 1e-5 grid absorbs unless a pair straddles a grid boundary, so (almost) every rank
    agrees; here on 4,000 queries at most one may differ, by one place."""
    rng = np.random.default_rng(7)
    images, texts = rng.normal(size=(800, 64)), rng.normal(size=(3200, 64))
    inputs = RetrievalInputs(images, texts, rng.integers(0, 800, size=3200))
    ours = get_metric("retrieval")(on(inputs, "cpu"), ks=(1, 5, 10)).per_sample
    expected = get_metric("retrieval")(inputs, ks=(1, 5, 10)).per_sample
    for key in ("i2t_rank", "t2i_rank"):
        differ = ours[key] != expected[key]
        assert differ.sum() <= 1 and np.abs(ours[key] - expected[key]).max() <= 1, key


def tie_heavy_scores(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Small integers as float32: most entries of a row tie with others; one row is constant."""
    sims = rng.integers(-2, 3, size=(rows, columns)).astype(np.float32)
    sims[0] = 1.0
    return sims


@pytest.mark.parametrize("depth", [1, 4, 12, 30])
def test_top_relevance_and_most_similar_break_ties_by_index(depth: int):
    rng = np.random.default_rng(3)
    sims = tie_heavy_scores(rng, 9, 12)
    owner_row = rng.integers(0, 9, size=12)
    np.testing.assert_array_equal(
        device_scoring.top_relevance(torch.from_numpy(sims), owner_row, depth),
        retrieval_metric.top_relevance(sims.copy(), owner_row, depth))
    np.testing.assert_array_equal(device_scoring.most_similar(torch.from_numpy(sims), depth),
                                  retrieval_kind.most_similar(sims, depth))


def test_most_similar_keeps_the_lower_index_among_ties_at_the_cut():
    sims = np.array([[0, 2, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]], dtype=np.float32)
    expected = [[1, 3], [0, 1]]
    np.testing.assert_array_equal(retrieval_kind.most_similar(sims, 2), expected)
    np.testing.assert_array_equal(device_scoring.most_similar(torch.from_numpy(sims), 2),
                                  expected)


def test_rounding_is_the_numpy_grid_half_to_even():
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.uniform(-1, 1, 10_000), [0.0, -0.0, 1.0, -1.0]])
    scores = scores.astype(np.float32)
    np.testing.assert_array_equal(device_scoring.rounded(torch.from_numpy(scores.copy())),
                                  rounded_scores(scores))
    halves = np.array([0.5, 1.5, 2.5, -0.5, -2.5], dtype=np.float32)
    np.testing.assert_array_equal(torch.from_numpy(halves).round().numpy(), np.rint(halves))


def tf32_setting() -> tuple[str, object, object]:
    """The CUDA matmul TF32 switch: its name, its full-precision and its TF32 value."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return "fp32_precision", "ieee", "tf32"
    return "allow_tf32", False, True


@pytest.fixture
def tf32_on() -> Iterator[None]:
    """TF32 asked for (as ``torch.set_float32_matmul_precision("high")`` would), undone after."""
    matmul = torch.backends.cuda.matmul
    name, _, fast = tf32_setting()
    before = getattr(matmul, name)
    setattr(matmul, name, fast)
    yield
    setattr(matmul, name, before)


def test_full_float32_turns_tf32_off_and_restores_the_setting(tf32_on: None):
    matmul = torch.backends.cuda.matmul
    name, full, fast = tf32_setting()
    with device_scoring.full_float32():
        assert getattr(matmul, name) == full
    assert getattr(matmul, name) == fast


def test_scoring_device_is_the_model_device_when_it_is_cuda(monkeypatch: pytest.MonkeyPatch):
    assert retrieval_kind.scoring_device("cpu") is None
    assert retrieval_kind.scoring_device("mps") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert retrieval_kind.scoring_device("auto") is None
    assert retrieval_kind.scoring_device("cuda:1") is None  # not there: numpy
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert retrieval_kind.scoring_device("auto") == "cuda"
    assert retrieval_kind.scoring_device("cuda:1") == "cuda:1"


def test_metric_options_stay_ks_only():
    assert list(get_metric("retrieval").options()) == ["ks"]


def kind_scores(tmp_path: Path, devices: list[str | None], monkeypatch: pytest.MonkeyPatch
                ) -> list[pd.DataFrame]:
    """The retrieval kind's per-item table with scoring on each of ``devices`` (None: numpy),
    one image failed."""
    manifest = write_dataset(tmp_path / "ds", n=8)
    config = build_config({"task": "retrieval", "model": {"path": "m"},
                           "dataset": {"path": str(manifest)}})
    dataset: DatasetRef = save_dataset(load_dataset(config.dataset), tmp_path / "run")
    shard = tmp_path / "shard"
    shard.mkdir()
    rng = np.random.default_rng(3)
    np.save(shard / "image_embeddings.npy", exact_embeddings(rng, 8))
    np.save(shard / "text_embeddings.npy", exact_embeddings(rng, 16))
    inference = InferenceRef("fp", [str(shard)], 0, "model", "code", failures={5: "failed"})
    tables = []
    for number, device in enumerate(devices):
        monkeypatch.setattr(retrieval_kind, "scoring_device", lambda _, device=device: device)
        result = retrieval_kind.score(dataset, inference, config, tmp_path / f"scores{number}")
        tables.append(pd.read_parquet(result.per_sample_path))
    return tables


def test_kind_scores_on_the_device_as_with_numpy(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    ours, expected = kind_scores(tmp_path, ["cpu", None], monkeypatch)
    pd.testing.assert_frame_equal(ours, expected)
    assert expected["top_captions"].map(len).tolist() == [3] * 5 + [0] + [3] * 2


@needs_cuda
@pytest.mark.parametrize("name", CASES)
def test_cuda_metrics_and_caption_ranking_equal_numpy(name: str,
                                                      monkeypatch: pytest.MonkeyPatch):
    small_blocks(monkeypatch)
    inputs, ks = case(name)
    metric = get_metric("retrieval")
    assert_same(metric(on(inputs, "cuda"), ks=ks), metric(inputs, ks=ks))
    for got, want in zip(retrieval_kind.caption_ranking(on(inputs, "cuda"), 3),
                         retrieval_kind.caption_ranking(inputs, 3), strict=True):
        np.testing.assert_array_equal(got, want)


@needs_cuda
def test_cuda_random_embeddings_rank_alike(tf32_on: None):
    """As ``test_random_embeddings_rank_alike`` on the GPU, with TF32 asked for (the scoring
    turns it off)."""
    rng = np.random.default_rng(7)
    images, texts = rng.normal(size=(800, 64)), rng.normal(size=(3200, 64))
    inputs = RetrievalInputs(images, texts, rng.integers(0, 800, size=3200))
    ours = get_metric("retrieval")(on(inputs, "cuda"), ks=(1, 5, 10)).per_sample
    expected = get_metric("retrieval")(inputs, ks=(1, 5, 10)).per_sample
    for key in ("i2t_rank", "t2i_rank"):
        differ = ours[key] != expected[key]
        assert differ.sum() <= 2 and np.abs(ours[key] - expected[key]).max() <= 1, key
