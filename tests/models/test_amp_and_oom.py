"""``model.amp`` as a choice (off | fp16 | bf16 | auto, old booleans accepted) and the CUDA
out-of-memory fallback of the batch loop (a fake ``run`` raises torch's own OOM error on CPU)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tasks.config import EvalConfig, ModelConfig
from tasks.kinds.sharded import model_settings
from tasks.models import load_adapter
from tasks.models.base import autocast_context, resolve_amp
from tasks.models.batching import OOM_REASON, Prepared, run_batches

# -- the setting --------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "device", "expected"), [
    ("off", "cpu", "off"), ("fp16", "cpu", "fp16"), ("bf16", "cuda", "bf16"),
    ("auto", "auto", "auto"), (False, "cuda:1", "off"), (True, "cpu", "bf16"),
    (True, "mps", "bf16"), (True, "cuda", "fp16"), (True, "cuda:0", "fp16"),
])
def test_amp_choices_and_the_old_booleans(given, device, expected):
    assert ModelConfig(path="m", device=device, amp=given).amp == expected


def test_old_true_with_device_auto_follows_cuda(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ModelConfig(path="m", amp=True).amp == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ModelConfig(path="m", amp=True).amp == "bf16"


def test_unknown_amp_is_refused_and_the_form_shows_the_choices():
    with pytest.raises(ValidationError, match="amp"):
        ModelConfig(path="m", amp="fp32")
    schema = ModelConfig.model_json_schema()["properties"]["amp"]
    assert schema["enum"] == ["off", "fp16", "bf16", "auto"] and schema["default"] == "auto"


def test_auto_is_bf16_only_on_a_cuda_gpu_that_supports_it(monkeypatch: pytest.MonkeyPatch):
    assert resolve_amp("cpu", "auto") == "off"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("cuda:0", "auto") == "bf16" and resolve_amp("cpu", "auto") == "off"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("cuda", "auto") == "off"
    assert resolve_amp("cuda", "fp16") == "fp16"


@pytest.mark.parametrize(("amp", "dtype"), [("off", torch.float32), ("auto", torch.float32),
                                            ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_context_on_cpu_equals_torch_autocast(amp, dtype):
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    with autocast_context("cpu", amp):
        got = layer(x)
    if dtype == torch.float32:
        expected = layer(x)
    else:
        with torch.autocast("cpu", dtype=dtype):
            expected = layer(x)
    assert got.dtype == dtype and torch.equal(got, expected)


def test_fp16_bf16_and_off_never_share_inference_cache_entries():
    def settings(amp):
        return model_settings(EvalConfig.model_validate(
            {"model": {"path": "m", "device": "cpu", "amp": amp}, "dataset": {"path": "d"}}))

    keys = {amp: settings(amp)["amp"] for amp in ("off", "fp16", "bf16", "auto", True, False)}
    assert keys == {"off": "off", "fp16": "fp16", "bf16": "bf16", "auto": "off", True: "bf16",
                    False: "off"}


def test_adapter_under_bf16_equals_a_plain_autocast_call(tiny_clip_dir: Path):
    """The dual encoder's text features with ``amp: bf16`` against the transformers call
    written by hand under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    from transformers import AutoModel, AutoProcessor

    texts = ["a red square", "a picture of a blue square"]
    model = AutoModel.from_pretrained(tiny_clip_dir).eval()
    tokens = AutoProcessor.from_pretrained(tiny_clip_dir).tokenizer(texts, padding=True,
                                                                    return_tensors="pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.get_text_features(**tokens).pooler_output.float().numpy()
    with torch.inference_mode():
        full = model.get_text_features(**tokens).pooler_output.numpy()
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), device="cpu", amp="bf16"))
    got = adapter.encode_texts(texts)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, full)  # bf16 really ran


# -- out of memory --------------------------------------------------------------------------------


def oom_setup(count: int, limit: int, broken: frozenset[int] = frozenset()):
    """prepare: the rows themselves (``broken`` rows fail to decode); run: doubles them, raising
    ``torch.cuda.OutOfMemoryError`` for more than ``limit`` rows. Records every run's size."""
    sizes: list[int] = []

    def prepare(rows: list[int]) -> Prepared[list[int]]:
        kept = [i for i, row in enumerate(rows) if row not in broken]
        failures = {i: "image decode failed: broken" for i, row in enumerate(rows)
                    if row in broken}
        return Prepared([rows[i] for i in kept] or None, kept, failures)

    def run(rows: list[int]) -> list[int]:
        sizes.append(len(rows))
        if len(rows) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [2 * row for row in rows]

    return prepare, run, sizes


def scattered(count: int, outputs) -> list[int | None]:
    values: list[int | None] = [None] * count
    for rows, out in outputs:
        for row, value in zip(rows, out, strict=True):
            values[row] = value
    return values


@pytest.fixture
def emptied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def test_out_of_memory_halves_the_batch_until_it_fits(emptied: list[int]):
    prepare, run, sizes = oom_setup(11, limit=3, broken=frozenset({5}))
    ticks: list[int] = []
    results = run_batches(11, 8, prepare, run, ticks.append, workers=0)
    assert scattered(11, results.outputs) == [2 * r if r != 5 else None for r in range(11)]
    assert results.failures == {5: "image decode failed: broken"}
    # batch 0-7 (7 kept) -> 4 + 3 -> 2 + 2 + 3; batch 8-10 fits as is
    assert sizes == [7, 4, 2, 2, 3, 3]
    assert len(emptied) == 2 and ticks == [8, 3]


def test_a_single_item_out_of_memory_is_a_recorded_failure(emptied: list[int]):
    prepare, run, sizes = oom_setup(3, limit=0)
    results = run_batches(3, 4, prepare, run, workers=2)
    assert results.outputs == []
    assert results.failures == {0: OOM_REASON, 1: OOM_REASON, 2: OOM_REASON}
    assert OOM_REASON == "CUDA out of memory at batch size 1"
    assert sizes == [3, 2, 1, 1, 1]


def test_other_errors_are_not_swallowed(emptied: list[int]):
    def run(rows):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches(2, 2, lambda rows: Prepared(rows, list(range(len(rows)))), run, workers=0)
    assert emptied == []


# -- texts: the same loop, through run_all ------------------------------------------------------


def text_run(limit: int, sizes: list[int]):
    def run(rows: list[int]) -> np.ndarray:
        sizes.append(len(rows))
        if len(rows) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return np.asarray(rows, dtype=np.float32)[:, None] * 2
    return run


def test_text_batches_halve_on_out_of_memory_and_keep_their_order(emptied: list[int]):
    from tasks.models.batching import run_all
    from tasks.tracking.performance import Recorder, recording

    sizes: list[int] = []
    ticks: list[int] = []
    with recording(Recorder()) as recorder:
        outputs = run_all(11, 8, lambda rows: rows, text_run(3, sizes), ticks.append)
    np.testing.assert_array_equal(np.concatenate(outputs)[:, 0], np.arange(11) * 2)
    assert sizes == [8, 4, 2, 2, 4, 2, 2, 3] and ticks == [8, 3] and len(emptied) == 3
    assert recorder.batch_s == []  # texts stay out of the items' batch latencies


def test_a_text_that_does_not_fit_alone_is_a_model_error(emptied: list[int]):
    from tasks.models.base import ModelError
    from tasks.models.batching import run_all

    with pytest.raises(ModelError, match="text 0 cannot be embedded: CUDA out of memory"):
        run_all(2, 2, lambda rows: rows, text_run(0, []))


def test_encode_texts_runs_through_the_halving_loop(tiny_clip_dir: Path, emptied: list[int],
                                                    monkeypatch: pytest.MonkeyPatch):
    adapter = load_adapter(ModelConfig(path=str(tiny_clip_dir), device="cpu", batch_size=4), [])
    texts = [f"a photo of {n} red squares" for n in range(6)]
    expected = adapter.encode_texts(texts)
    original = adapter._run
    seen: list[int] = []

    def small_memory(method: str, inputs: dict) -> np.ndarray:
        seen.append(len(inputs["input_ids"]))
        if len(inputs["input_ids"]) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return original(method, inputs)

    monkeypatch.setattr(adapter, "_run", small_memory)
    np.testing.assert_allclose(adapter.encode_texts(texts), expected, rtol=0, atol=1e-6)
    assert seen == [4, 2, 2, 2]
