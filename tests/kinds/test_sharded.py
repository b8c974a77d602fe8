"""The inference skeleton: shards, the cache, failures by row, runtime facts, adapter families,
and the hard-negative miner's settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import EvalConfig
from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.kinds.matching import infer as matching_infer
from tasks.kinds.sharded import Inference, ShardOutput
from tasks.models.base import ADAPTERS, Adapter, ModelError
from tasks.models.contracts import CaptionGenerator, ImageEmbeddings, ImageTextEncoder
from tests.helpers import write_dataset

LOADS: list[str] = []


class CountingEncoder(Adapter):
    """Embeds an image as its path length; fails every third image."""

    def __init__(self, config) -> None:  # no checkpoint to read
        self.config, self.device = config, "cpu"
        LOADS.append(config.path)

    @classmethod
    def fingerprint(cls, config, dataset_digest: str) -> str:
        return "fake-model"

    def describe(self) -> dict[str, str]:
        return {"device": "cpu", "dtype": "float32"}

    def encode_images(self, paths: Sequence[str], progress=None, workers: int = 2
                      ) -> ImageEmbeddings:
        failures = {i: "broken" for i, path in enumerate(paths) if path.endswith(("2.png",))}
        return ImageEmbeddings(np.array([[len(p)] for p in paths], np.float32), failures)

    def encode_texts(self, texts, progress=None) -> np.ndarray:
        return np.ones((len(texts), 1), np.float32)

    def count_truncated(self, texts) -> int:
        return 0


ADAPTERS.add("counting_encoder", CountingEncoder)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[DatasetRef, EvalConfig]:
    manifest = write_dataset(tmp_path / "ds", n=7)
    config = build_config({"model": {"kind": "counting_encoder", "path": "fake"},
                           "dataset": {"path": str(manifest)},
                           "inference": {"shard_size": 3}})
    return save_dataset(load_dataset(config.dataset), tmp_path / "run"), config


def embed(run: Inference) -> object:
    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        images = run.adapter(ImageTextEncoder).encode_images(list(shard["image_path"]))
        np.save(folder / "x.npy", images.vectors)
        return ShardOutput(images.failures)

    return run.shards(run.items, task="t", compute=compute,
                      key=lambda shard: list(shard["image_sha256"]))


def test_shards_are_cached_and_failures_keep_their_rows(setup, tmp_path: Path):
    dataset, config = setup
    LOADS.clear()
    first = embed(Inference(dataset, config, tmp_path / "cache", "v1"))
    assert len(first.shard_folders) == 3 and first.shards_cached == 0 and LOADS == ["fake"]
    items = dataset.load_items()
    broken = [i for i, p in enumerate(items["image_path"]) if p.endswith("2.png")]
    assert sorted(first.failures) == broken and first.runtime == {"device": "cpu",
                                                                  "dtype": "float32"}
    again = embed(Inference(dataset, config, tmp_path / "cache", "v1"))
    assert again.cache_hit and again.fingerprint == first.fingerprint and LOADS == ["fake"]
    assert again.failures == first.failures and again.runtime == first.runtime
    changed = embed(Inference(dataset, config, tmp_path / "cache", "v2"))  # new code version
    assert changed.shards_cached == 0 and changed.fingerprint != first.fingerprint
    off = config.model_copy(update={"inference": config.inference.model_copy(
        update={"cache": False})})
    assert embed(Inference(dataset, off, tmp_path / "cache", "v1")).shards_cached == 0
    meta = json.loads((Path(first.shard_folders[0]) / "meta.json").read_text())
    assert set(meta) == {"failures", "truncated_texts", "runtime", "performance"}


def test_an_adapter_without_the_family_is_refused_before_loading(setup, tmp_path: Path):
    dataset, config = setup
    LOADS.clear()
    run = Inference(dataset, config, tmp_path / "cache", "v1")
    with pytest.raises(ModelError, match="'counting_encoder' cannot run .* no generate"):
        run.adapter(CaptionGenerator)
    assert LOADS == []


def test_the_hard_negative_miner_runs_with_the_evaluation_settings(setup, tmp_path: Path,
                                                                    monkeypatch):
    dataset, _ = setup
    config = build_config({
        "task": "matching", "dataset": {"path": "unused"},
        "model": {"kind": "itm", "path": "itm-model", "batch_size": 7, "dtype": "bfloat16",
                  "amp": True, "device": "cpu"},
        "matching": {"negatives": "hard", "hard_negative_model": "clip-model"}})
    seen = []
    monkeypatch.setattr(matching_infer, "load_adapter",
                        lambda model: seen.append(model) or CountingEncoder(model))
    miner = matching_infer._miner(Inference(dataset, config, tmp_path / "cache", "v1"))
    assert isinstance(miner, CountingEncoder)
    (model,) = seen
    assert (model.kind, model.path, model.batch_size, model.dtype, model.amp, model.device) == \
        ("dual_encoder", "clip-model", 7, "bfloat16", "bf16", "cpu")  # amp true on CPU


def test_load_arrays_maps_the_shards_and_copies_the_kept_rows_once(tmp_path: Path):
    from tasks.kinds.sharded import InferenceRef, load_arrays

    rng = np.random.default_rng(0)
    shards = [rng.standard_normal((rows, 3)).astype(np.float32) for rows in (4, 1, 5)]
    folders = []
    for n, array in enumerate(shards):
        (tmp_path / str(n)).mkdir()
        np.save(tmp_path / str(n) / "e.npy", array)
        np.save(tmp_path / str(n) / "none.npy", np.zeros((len(array), 0), np.float32))
        folders.append(str(tmp_path / str(n)))
    ref = InferenceRef("f", folders, 0, "m", "c")
    whole = np.concatenate(shards)
    keep = rng.random(len(whole)) < 0.5
    keep[4] = False  # the one-row shard contributes nothing
    for mask, expected in ((None, whole), (keep, whole[keep])):
        got = load_arrays(ref, "e", mask)
        np.testing.assert_array_equal(got, expected)
        assert type(got) is np.ndarray and got.flags.owndata and got.dtype == np.float32
    assert load_arrays(ref, "none", keep).shape == (int(keep.sum()), 0)
