"""``inference.compile`` (torch.compile of the model's modules) and page-locked batches on CUDA.

Compiling is checked with the ``eager`` backend, which runs TorchDynamo's graph capture but not
inductor's code generation (minutes per shape on this 2-core CPU): the captured graphs must give
the eager model's outputs exactly, through ``bifocal run`` too. Pinning needs CUDA; on the CPU
the tests check the walker that pins a prepared batch (``pin_memory`` stood in by a recorder)
and that nothing is pinned off CUDA; a CUDA test compares pinned and unpinned embeddings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import BatchFeature

from tasks.config import EvalConfig, InferenceConfig, ModelConfig
from tasks.config_io import build_config
from tasks.kinds.sharded import model_settings
from tasks.models import load_adapter
from tasks.models.base import Adapter, ModelError
from tasks.models.batching import Prepared, pinned, run_batches
from tasks.models.encoder_inputs import to_device
from tests.helpers import write_dataset

# -- compile ------------------------------------------------------------------------------------


def test_compile_settings_are_validated_and_change_the_cache_key():
    assert InferenceConfig().compile is False
    for wrong in ({"compile_mode": "fastest"}, {"compile_backend": "inductor; rm -rf /"}):
        with pytest.raises(ValidationError):
            InferenceConfig.model_validate(wrong)
    base = {"model": {"path": "m", "device": "cpu"}, "dataset": {"path": "d"}}
    plain = model_settings(EvalConfig.model_validate(base))
    compiled = model_settings(EvalConfig.model_validate(
        base | {"inference": {"compile": True, "compile_backend": "eager"}}))
    assert "compile" not in plain and compiled["compile"] == ["eager", "default"]
    assert {k: v for k, v in compiled.items() if k != "compile"} == plain


def test_compiled_adapter_gives_the_eager_outputs(tiny_clip_dir: Path, dataset_dir: Path):
    config = ModelConfig(path=str(tiny_clip_dir), device="cpu", batch_size=3)
    paths = sorted(str(p) for p in dataset_dir.glob("*.png"))[:7]  # batches of 3, 3 and 1
    texts = ["a red circle", "two blue squares on a white background", "x"]
    eager = load_adapter(config, paths)
    compiled = load_adapter(config, paths)
    compiled.compile("eager", "default")
    children = list(compiled.model.children())
    assert children and all(child._compiled_call_impl is not None for child in children)
    assert compiled.describe()["compiled"] == "eager" and "compiled" not in eager.describe()
    np.testing.assert_array_equal(compiled.encode_images(paths).vectors,
                                  eager.encode_images(paths).vectors)
    np.testing.assert_array_equal(compiled.encode_texts(texts), eager.encode_texts(texts))


def test_an_adapter_without_modules_cannot_be_compiled():
    adapter = Adapter.__new__(Adapter)
    with pytest.raises(ModelError, match="no torch modules"):
        adapter.compile("eager", "default")


@pytest.mark.e2e
def test_bifocal_run_with_compile_gives_the_same_metrics(prefect_harness, tmp_path: Path,
                                                         tiny_clip_dir: Path):
    from flows.evaluate import evaluate

    manifest = write_dataset(tmp_path / "ds", n=8)

    def run(name: str, inference: dict[str, Any]) -> dict[str, Any]:
        return evaluate(build_config({
            "model": {"path": str(tiny_clip_dir), "batch_size": 3, "device": "cpu"},
            "dataset": {"path": str(manifest)}, "inference": inference,
            "review": {"size": 0}, "report": {"destination": str(tmp_path / name)},
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "experiment": "compile"},
            "work_dir": str(tmp_path / "work")}))  # one cache for both runs

    plain = run("plain", {})
    compiled = run("compiled", {"compile": True, "compile_backend": "eager"})
    assert compiled["metrics"] == plain["metrics"]
    report = json.loads((Path(compiled["report"]) / "report.json").read_text())
    assert report["inference_cache"] == "miss"  # a compiled run never reuses eager outputs
    assert report["runtime"]["compiled"] == "eager"


# -- page-locked batches ------------------------------------------------------------------------


@pytest.fixture
def pins(monkeypatch: pytest.MonkeyPatch) -> list[torch.Size]:
    """``Tensor.pin_memory`` replaced by a copy that records the shape (no CUDA here)."""
    seen: list[torch.Size] = []

    def fake_pin(tensor: torch.Tensor) -> torch.Tensor:
        seen.append(tensor.shape)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    return seen


@dataclasses.dataclass
class Batch:
    inputs: dict[str, Any]
    positions: list[int]


def test_pinned_copies_every_tensor_and_keeps_the_structure(pins: list[torch.Size]):
    pixels, ids = torch.ones(2, 3), torch.arange(4)
    value = {"a": BatchFeature({"pixel_values": pixels}), "b": [Batch({"ids": ids}, [0, 1])],
             "c": (ids, "text", 3), "d": np.zeros(2)}
    out = pinned(value)
    assert sorted(pins) == sorted([pixels.shape, ids.shape, ids.shape])
    assert isinstance(out["a"], dict) and torch.equal(out["a"]["pixel_values"], pixels)
    assert out["a"]["pixel_values"] is not pixels
    assert isinstance(out["b"][0], Batch) and out["b"][0].positions == [0, 1]
    assert torch.equal(out["b"][0].inputs["ids"], ids)
    assert out["c"][1:] == ("text", 3) and out["d"] is value["d"]


@pytest.mark.parametrize("pin_memory", [False, True])
def test_run_batches_pins_prepared_batches_only_when_asked(pins: list[torch.Size],
                                                           pin_memory: bool):
    def prepare(rows: list[int]) -> Prepared[dict[str, torch.Tensor]]:
        return Prepared({"x": torch.tensor(rows, dtype=torch.float32)}, list(range(len(rows))))

    results = run_batches(5, 2, prepare, lambda inputs: inputs["x"].numpy() * 2,
                          pin_memory=pin_memory)
    assert len(pins) == (3 if pin_memory else 0)
    got = np.concatenate([out for _, out in results.outputs])
    np.testing.assert_array_equal(got, np.arange(5) * 2)


class Recorded:
    def __init__(self, pinned_memory: bool) -> None:
        self.pinned_memory, self.calls = pinned_memory, []

    def is_pinned(self) -> bool:
        return self.pinned_memory

    def to(self, device: str, non_blocking: bool = False) -> Recorded:
        self.calls.append((device, non_blocking))
        return self


@pytest.mark.parametrize("is_pinned", [False, True])
def test_copies_from_page_locked_memory_do_not_block(is_pinned: bool):
    tensor = Recorded(is_pinned)
    to_device(tensor, "cuda:0")
    assert tensor.calls == [("cuda:0", is_pinned)]


def test_nothing_is_pinned_off_cuda(tiny_clip_dir: Path, pins: list[torch.Size],
                                    dataset_dir: Path):
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), device="cpu"), [])
    assert adapter.pin_memory is False
    adapter.encode_images(sorted(str(p) for p in dataset_dir.glob("*.png"))[:2])
    assert pins == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_batches_on_cuda_give_the_unpinned_embeddings(tiny_clip_dir: Path,
                                                             dataset_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    paths = sorted(str(p) for p in dataset_dir.glob("*.png"))[:5]
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), device="cuda", batch_size=2),
                           paths)
    assert adapter.pin_memory is True
    with_pinning = adapter.encode_images(paths).vectors
    monkeypatch.setattr(type(adapter), "pin_memory", property(lambda self: False))
    np.testing.assert_array_equal(with_pinning, adapter.encode_images(paths).vectors)


# -- loader threads -----------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "cpus", "threads"), [
    (None, 2, 2), (None, 32, 8), (None, None, 1), (0, 32, 0), (12, 2, 12)])
def test_loader_threads_default_to_the_cpu_count_at_most_eight(
        monkeypatch: pytest.MonkeyPatch, given: int | None, cpus: int | None, threads: int):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert InferenceConfig(num_workers=given).loader_threads() == threads
