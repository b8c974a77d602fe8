"""The per-sample ``margin`` columns the review's margin strategy samples from."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.arrays import l2_normalize
from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.kinds.base import InferenceRef
from tasks.kinds.matching.score import score as score_matching
from tasks.kinds.retrieval import score as retrieval
from tasks.kinds.zero_shot.score import score as score_zero_shot
from tasks.kinds.zero_shot.score import top_two_margin
from tasks.metrics.retrieval import RetrievalInputs
from tests.helpers import write_dataset


def best_minus_second(sims: np.ndarray) -> np.ndarray:
    ordered = np.sort(sims, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def setup(tmp_path: Path, task: str, **fields) -> tuple[DatasetRef, object, Path]:
    manifest = write_dataset(tmp_path / "ds", n=8)
    config = build_config({"task": task, "model": {"path": "m"},
                           "dataset": {"path": str(manifest)}, **fields})
    shard = tmp_path / "shard"
    shard.mkdir()
    return save_dataset(load_dataset(config.dataset), tmp_path / "run"), config, shard


def ref(shard: Path, **fields) -> InferenceRef:
    return InferenceRef("fp", [str(shard)], 0, "model", "code", **fields)


def test_top_two_margin():
    sims = np.random.default_rng(0).normal(size=(20, 5))
    np.testing.assert_allclose(top_two_margin(sims), best_minus_second(sims))
    assert np.isnan(top_two_margin(sims[:, :1])).all()
    assert top_two_margin(np.array([[0.3, 0.3, 0.1]]))[0] == 0


def test_retrieval_margins_and_top_captions_in_blocks_match_the_full_matrix(
        monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(1)
    inputs = RetrievalInputs(rng.normal(size=(9, 4)), rng.normal(size=(13, 4)),
                             np.arange(13) % 9)
    full = l2_normalize(inputs.image_embeddings) @ l2_normalize(inputs.text_embeddings).T
    monkeypatch.setattr(retrieval, "BLOCK_BYTES", 4 * 13 * 2)  # two images per block
    margins, top = retrieval.caption_margins(inputs)
    np.testing.assert_allclose(margins, best_minus_second(full), rtol=1e-5)
    np.testing.assert_array_equal(top, full.argmax(axis=1))


def test_zero_shot_margin_is_the_top_two_class_similarity_gap(tmp_path: Path):
    names = ["red", "green", "blue", "yellow"]
    dataset, config, shard = setup(tmp_path, "zero_shot_classification",
                                   zero_shot={"class_names": names})
    images = np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)
    np.save(shard / "image_embeddings.npy", images)
    np.save(tmp_path / "classes.npy", np.eye(4, dtype=np.float32))
    inference = ref(shard, failures={2: "decode failed"}, class_names=names,
                    class_embeddings_path=str(tmp_path / "classes.npy"))
    table = pd.read_parquet(score_zero_shot(dataset, inference, config, tmp_path / "s")
                            .per_sample_path)
    expected = best_minus_second(l2_normalize(images))
    expected[2] = np.nan
    np.testing.assert_allclose(table["margin"], expected, rtol=1e-5)


def test_retrieval_margin_and_top_caption_columns(tmp_path: Path):
    dataset, config, shard = setup(tmp_path, "retrieval")
    rng = np.random.default_rng(3)
    images, texts = rng.normal(size=(8, 4)), rng.normal(size=(16, 4))
    np.save(shard / "image_embeddings.npy", images.astype(np.float32))
    np.save(shard / "text_embeddings.npy", texts.astype(np.float32))
    result = retrieval.score(dataset, ref(shard, failures={5: "decode failed"}), config,
                             tmp_path / "s")
    table = pd.read_parquet(result.per_sample_path)
    kept_texts = np.repeat(np.arange(8), 2) != 5
    expected = np.full(8, np.nan)
    ok = np.arange(8) != 5
    expected[ok] = best_minus_second(l2_normalize(images[ok]) @ l2_normalize(texts[kept_texts]).T)
    np.testing.assert_allclose(table["margin"], expected, rtol=1e-5)
    # the caption each image retrieves, by the same similarities
    sims = l2_normalize(images[ok]) @ l2_normalize(texts[kept_texts]).T
    captions = np.array([c for cs in dataset.load_items()["captions"] for c in cs])[kept_texts]
    assert table["top_caption"][ok].tolist() == captions[sims.argmax(axis=1)].tolist()
    assert pd.isna(table["top_caption"][5])


def test_matching_margin_is_the_distance_to_the_threshold(tmp_path: Path):
    dataset, config, shard = setup(tmp_path, "matching", matching={"threshold": 0.5})
    items = dataset.load_items()
    pairs = pd.DataFrame({"pair_id": [f"p{k}" for k in range(8)], "item_id": items["item_id"],
                          "image_path": items["image_path"], "text": "a square",
                          "label": [1, 0] * 4, "pair_kind": ["positive", "random"] * 4})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    scores = np.array([0.9, 0.1, 0.45, 0.55, 0.5, 0.2, 0.0, 1.0], dtype=np.float32)
    np.save(shard / "scores.npy", scores)
    inference = ref(shard, failures={6: "decode failed"},
                    pairs_path=str(tmp_path / "pairs.parquet"))
    table = pd.read_parquet(score_matching(dataset, inference, config, tmp_path / "s")
                            .per_sample_path)
    expected = np.abs(scores - 0.5).astype(np.float64)
    expected[6] = np.nan
    np.testing.assert_allclose(table["margin"], expected, rtol=1e-6)
