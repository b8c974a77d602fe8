"""Every model adapter loads weights only as tensors (safetensors, or torch.load with
weights_only=True): a pickled checkpoint is refused with a clear ModelError and whatever the
pickle names never runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.config import ModelConfig
from tasks.models import ModelError, load_adapter
from tests.helpers import WORDS, build_tiny_blip_itm

MARKER = "unpickled.txt"


class WritesMarker:
    """Unpickling this runs ``exec`` and writes a marker file (what a hostile checkpoint does)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return exec, (f"open({str(self.path)!r}, 'w').write('ran')",)


def pickled_checkpoint(source: Path, folder: Path, payload: str) -> Path:
    """``source``'s config/processor files with its weights replaced by a pickle: a whole
    module (``torch.save(module)``) or a dict whose unpickling writes the marker."""
    import torch

    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    weights = folder / "pytorch_model.bin"
    if payload == "marker":
        torch.save({"weight": torch.zeros(2), "payload": WritesMarker(folder / MARKER)}, weights)
    else:  # a whole module instead of a state dict
        torch.save(torch.nn.Linear(2, 2), weights)
    return folder


@pytest.fixture(scope="module")
def tiny_itm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip_itm(tmp_path_factory.mktemp("tiny-itm"), WORDS)


@pytest.mark.parametrize("payload", ["marker", "whole_module"])
@pytest.mark.parametrize("kind", ["dual_encoder", "captioner", "itm", "vqa"])
def test_pickled_transformers_checkpoint_is_refused(kind: str, payload: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest):
    source = request.getfixturevalue({"dual_encoder": "tiny_clip_dir",
                                      "captioner": "tiny_captioner_dir", "itm": "tiny_itm_dir",
                                      "vqa": "tiny_itm_dir"}[kind])  # BLIP answers questions
    folder = pickled_checkpoint(source, tmp_path / "model", payload)
    pickled = r"pickled Python objects \(((builtins\.)?exec|torch\.nn\.)"
    with pytest.raises(ModelError, match=rf"^refused to load .*pytorch_model\.bin: it holds "
                                         rf"{pickled}"):
        load_adapter(ModelConfig(kind=kind, path=str(folder), device="cpu"))
    assert not (folder / MARKER).exists()


@pytest.mark.parametrize("payload", ["marker", "whole_module"])
def test_pickled_torch_module_weights_are_refused(payload: str, tmp_path: Path):
    import torch

    from tests.models.fusion_example import ImageClassifier

    weights = tmp_path / "weights.pt"
    if payload == "marker":
        torch.save({"weight": torch.zeros(2), "payload": WritesMarker(tmp_path / MARKER)},
                   weights)
    else:
        torch.save(ImageClassifier(num_classes=2), weights)
    config = ModelConfig(kind="torch_module", path=str(weights), device="cpu", torch_module={
        "module": "tests.models.fusion_example:ImageClassifier",
        "init_kwargs": {"num_classes": 2}, "image_size": 32})
    with pytest.raises(ModelError, match=r"^refused to load .*weights\.pt: it holds pickled "
                                         r"Python objects \(((builtins\.)?exec|tests\.models)"):
        load_adapter(config)
    assert not (tmp_path / MARKER).exists()


def test_corrupt_weights_are_named_not_raised_raw(tiny_clip_dir: Path, tmp_path: Path):
    """Garbage, truncated and empty weight files are ModelErrors naming the folder."""
    cases = {"garbage.safetensors": ("model.safetensors", b"\x08\x00\x00\x00garbage!",
                                     "corrupt .safetensors file"),
             "garbage.bin": ("pytorch_model.bin", b"garbage" * 9, "refused to load"),
             "truncated.bin": ("pytorch_model.bin", None, "cannot load dual encoder"),
             "empty.bin": ("pytorch_model.bin", b"", "unexpected end of file")}
    import torch
    from safetensors.torch import load_file

    state = tmp_path / "state.bin"
    torch.save(load_file(str(tiny_clip_dir / "model.safetensors")), state)
    for name, (file, content, phrase) in cases.items():
        folder = tmp_path / name
        shutil.copytree(tiny_clip_dir, folder,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        data = state.read_bytes()
        (folder / file).write_bytes(content if content is not None else data[: len(data) // 2])
        with pytest.raises(ModelError, match=phrase):
            load_adapter(ModelConfig(kind="dual_encoder", path=str(folder), device="cpu"))


def test_a_state_dict_in_a_bin_file_still_loads(tiny_clip_dir: Path, tmp_path: Path):
    """weights_only=True refuses pickled objects, not plain tensors."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_clip_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(tiny_clip_dir / "model.safetensors")), folder / "pytorch_model.bin")
    adapter = load_adapter(ModelConfig(kind="dual_encoder", path=str(folder), device="cpu"))
    assert adapter.encode_texts(["a red square"]).shape[0] == 1
