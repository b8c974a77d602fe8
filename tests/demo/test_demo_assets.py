"""Fast tests for the locally built demo assets (tiny sizes; no full-size training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.demo import DemoConfig, ensure_demo_assets
from tasks.demo.benchmark import SHAPES, build_benchmark, caption_words, load_manifest
from tasks.demo.captioner import CaptionerTrainConfig
from tasks.demo.tokenizer import BOS, EOS, build_clip_tokenizer
from tasks.demo.train import (
    ModelSpec,
    TrainConfig,
    build_processor,
    encode_split,
    recall_at_1,
    train_and_save,
)

TINY_SPEC = ModelSpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1,
                      text_hidden=32, text_layers=1, heads=2, projection_dim=16)
META_KEYS = ("shape", "color", "background", "size", "position")


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_benchmark(root, seed=0, n_train=40, n_test=12)
    return root


@pytest.fixture(scope="module")
def tiny_data(tiny_bench: Path):
    processor = build_processor(TINY_SPEC)
    return processor, encode_split(tiny_bench, "train", processor)


def test_benchmark_is_deterministic(tiny_bench: Path, tmp_path: Path) -> None:
    build_benchmark(tmp_path / "same", seed=0, n_train=40, n_test=12)
    build_benchmark(tmp_path / "other", seed=1, n_train=40, n_test=12)
    reference = _tree_bytes(tiny_bench)
    assert _tree_bytes(tmp_path / "same") == reference
    other = _tree_bytes(tmp_path / "other")
    assert other.keys() == reference.keys()
    assert other["train.jsonl"] != reference["train.jsonl"]
    assert other["images/train/000000.png"] != reference["images/train/000000.png"]


def test_manifest_schema(tiny_bench: Path) -> None:
    assert json.loads((tiny_bench / "classes.json").read_text()) == list(SHAPES)
    for split, n in (("train", 40), ("test", 12)):
        records = load_manifest(tiny_bench / f"{split}.jsonl")
        assert len(records) == n
        for i, r in enumerate(records):
            assert r["id"] == f"{split}-{i:06d}"
            assert r["image"] == f"images/{split}/{i:06d}.png"
            assert (tiny_bench / r["image"]).is_file()
            assert r["label"] == r["shape"] in SHAPES
            assert all(isinstance(r[k], str) for k in META_KEYS)
            assert 3 <= len(r["captions"]) <= 5
            assert len(set(r["captions"])) == len(r["captions"])  # differently worded
            assert r["color"] in " ".join(r["captions"])


def test_images_are_rgb_png_of_requested_size(tiny_bench: Path) -> None:
    from PIL import Image

    with Image.open(tiny_bench / "images/test/000000.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))


def test_tokenizer_round_trip_and_reload(tmp_path: Path) -> None:
    from transformers import AutoProcessor, AutoTokenizer

    tok = build_clip_tokenizer(caption_words(), model_max_length=32)
    text = "a small red circle on a white background, in the upper part of the picture"
    ids = tok(text)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == BOS and tokens[-1] == EOS
    assert "circle</w>" in tokens and "background</w>" in tokens  # whole words are single tokens
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == text.replace(",", " ,")
    # words outside the caption vocabulary still round-trip through characters
    assert tok.decode(tok("zebra 42")["input_ids"], skip_special_tokens=True) == "zebra 4 2"

    processor = build_processor(TINY_SPEC)
    processor.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path),
                   AutoProcessor.from_pretrained(tmp_path).tokenizer):
        assert type(loaded).__name__ == "CLIPTokenizer"
        assert loaded(text)["input_ids"] == ids
    image_processor = AutoProcessor.from_pretrained(tmp_path).image_processor
    assert image_processor.crop_size == {"height": 32, "width": 32}


def test_every_caption_word_is_one_token() -> None:
    tok = build_clip_tokenizer(caption_words())
    for word in caption_words():
        assert tok.tokenize(word) == [word + "</w>"], word


def test_train_save_reload_gives_same_embeddings(
    tiny_bench: Path, tiny_data, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModel, AutoProcessor

    processor, data = tiny_data
    cfg = TrainConfig(steps=30, batch_size=16, lr=3e-3)
    result = train_and_save(tmp_path / "m", data, processor, spec=TINY_SPEC, cfg=cfg)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first * 0.8, (first, last)

    model = AutoModel.from_pretrained(tmp_path / "m")
    loaded = AutoProcessor.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == "CLIPModel"
    records = load_manifest(tiny_bench / "test.jsonl")[:3]
    from PIL import Image

    images = [Image.open(tiny_bench / r["image"]).convert("RGB") for r in records]
    texts = [r["captions"][0] for r in records]
    kwargs = {"padding": True, "truncation": True, "return_tensors": "pt"}
    inputs = loaded(text=texts, images=images, **kwargs)
    reinputs = processor(text=texts, images=images, **kwargs)
    assert torch.equal(inputs["input_ids"], reinputs["input_ids"])
    assert torch.equal(inputs["pixel_values"], reinputs["pixel_values"])

    # Re-train with the same seed: identical weights; reloaded model gives identical embeddings.
    again = train_and_save(tmp_path / "m2", data, processor, spec=TINY_SPEC, cfg=cfg)
    assert again.losses == result.losses
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (
        tmp_path / "m2" / "model.safetensors").read_bytes()
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        txt = model.get_text_features(input_ids=inputs["input_ids"],
                                      attention_mask=inputs["attention_mask"]).pooler_output
        model2 = AutoModel.from_pretrained(tmp_path / "m2")
        img2 = model2.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert img.shape == (3, TINY_SPEC.projection_dim) and txt.shape == img.shape
    assert torch.equal(img, img2)

    r = recall_at_1(model, encode_split(tiny_bench, "test", loaded))
    assert 0.0 <= r["t2i_r1"] <= 1.0 and r["chance"] == pytest.approx(1 / 12)


TINY_CAPTIONER = CaptionerTrainConfig(steps=2, batch_size=8)


def test_ensure_demo_assets_caches_and_rebuilds(tmp_path: Path) -> None:
    config = DemoConfig(n_train=24, n_test=8, models={"a": 3, "b": 5}, spec=TINY_SPEC,
                        train=TrainConfig(batch_size=8), captioner_train=TINY_CAPTIONER)
    logs: list[str] = []
    root = tmp_path / "demo"
    assets = ensure_demo_assets(root, log=logs.append, config=config)
    assert logs and any("training b (5 steps)" in line for line in logs)
    assert assets.root == root
    assert assets.train_manifest.is_file() and assets.test_manifest.is_file()
    assert set(assets.models) == {"a", "b"}
    assert all((p / "config.json").is_file() for p in assets.models.values())
    assert (assets.captioner / "config.json").is_file() and assets.vqa_manifest.is_file()
    assert not list(tmp_path.glob("demo.tmp-*"))
    weights = (assets.models["b"] / "model.safetensors").read_bytes()

    logs.clear()
    assert ensure_demo_assets(root, log=logs.append, config=config) == assets
    assert logs == []  # cached: nothing rebuilt

    (root / ".complete.json").unlink()  # half-built folder -> rebuilt, same bytes
    assert ensure_demo_assets(root, log=logs.append, config=config) == assets
    assert logs
    assert (assets.models["b"] / "model.safetensors").read_bytes() == weights


def test_concurrent_calls_build_once(tmp_path: Path) -> None:
    import threading

    config = DemoConfig(n_train=16, n_test=4, models={"only": 2}, spec=TINY_SPEC,
                        train=TrainConfig(batch_size=8), captioner_train=TINY_CAPTIONER)
    logs: list[str] = []
    results = []
    stale = tmp_path / "demo.tmp-999999"  # leftover of a crashed build
    stale.mkdir()
    threads = [threading.Thread(target=lambda: results.append(
        ensure_demo_assets(tmp_path / "demo", log=logs.append, config=config)))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert sum("building demo benchmark" in line for line in logs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]


def test_default_root_uses_bifocal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.demo import default_demo_root

    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path))
    assert default_demo_root() == tmp_path / "demo"
    monkeypatch.delenv("BIFOCAL_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_demo_root() == tmp_path / ".bifocal" / "demo"


def test_import_is_light() -> None:
    code = ("import sys, tasks.demo\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
