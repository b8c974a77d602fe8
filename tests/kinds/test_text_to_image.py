"""The text_to_image kind through its plain functions (no Prefect): reference sets read safely,
features and prompts from the run model, metrics against a hand-written transformers call plus
scipy / torchmetrics, the cache, config errors and the Inception path's wiring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.config_io import ConfigError, build_config
from tasks.data import load_dataset
from tasks.data.base import DataError, save_dataset
from tasks.kinds import get_task_kind, kind_code_version
from tasks.kinds.sharded import Inference
from tasks.kinds.text_to_image.references import load_references
from tasks.plan import check_config
from tests.helpers import COLORS, draw
from tests.metrics.test_image_generation import numpy_kid, scipy_fid

NAMES = list(COLORS)


def draw_set(folder: Path, n: int, offset: int) -> list[str]:
    """``n`` coloured squares (colour and size by index) at ``offset``; relative paths."""
    paths = []
    for index in range(n):
        name = f"images/{index:03d}.png"
        draw(folder / name, COLORS[NAMES[index % 4]], size=10 + 2 * (index // 4), offset=offset)
        paths.append(name)
    return paths


def degrade(folder: Path, seed: int = 0) -> None:
    """Wash out the contrast and add noise to every image of ``folder/images``."""
    rng = np.random.default_rng(seed)
    for path in sorted((folder / "images").glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        pixels = 128 + 0.3 * (pixels - 128) + rng.normal(0, 40, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def write_generated(folder: Path, n: int = 16, offset: int = 5) -> Path:
    """A generator's output: images plus a manifest of id, prompt and image."""
    paths = draw_set(folder, n, offset)
    rows = [{"id": f"gen-{i}", "prompt": f"a {NAMES[i % 4]} square", "image": path}
            for i, path in enumerate(paths)]
    manifest = folder / "generated.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def t2i_config(manifest: Path, references: Path, model: Path, work: Path, **section):
    return build_config({
        "task": "text_to_image", "model": {"path": str(model)},
        "dataset": {"path": str(manifest), "columns": {"captions": "prompt", "label": None}},
        "text_to_image": {"references": str(references), **section},
        "metric_options": {"kid": {"subsets": 20}},
        "statistics": {"bootstrap": 200}, "work_dir": str(work)})


def evaluate_plain(config, run_dir: Path):
    """data -> inference -> score without Prefect; (dataset, inference, scores)."""
    kind = get_task_kind("text_to_image")
    dataset = save_dataset(load_dataset(config.dataset), run_dir / "data")
    run = Inference(dataset, config, Path(config.work_dir) / "cache", kind_code_version(kind))
    inference = kind.infer(run)
    return dataset, inference, kind.score(dataset, inference, config, run_dir / "scores")


@pytest.fixture
def sets(tmp_path: Path) -> dict[str, Path]:
    references = tmp_path / "references"
    draw_set(references, 16, offset=4)
    clean = write_generated(tmp_path / "clean")
    degraded_folder = tmp_path / "degraded"
    shutil.copytree(tmp_path / "clean", degraded_folder)
    degrade(degraded_folder)
    return {"references": references / "images", "clean": clean,
            "degraded": degraded_folder / "generated.jsonl"}


# ---- reference sets --------------------------------------------------------------------------


def test_reference_folder_keeps_images_and_rejects_bad_files_with_reasons(tmp_path: Path):
    folder = tmp_path / "refs"
    draw(folder / "a.png", COLORS["red"])
    draw(folder / "nested" / "b.PNG", COLORS["blue"])
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not listed
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    draw(tmp_path / "outside.png", COLORS["green"])
    (folder / "escape.png").symlink_to(tmp_path / "outside.png")
    references = load_references(build_config({
        "model": {"path": "m"}, "dataset": {"path": "d.jsonl"},
        "text_to_image": {"references": str(folder)}}).text_to_image)
    assert list(references.items["item_id"]) == ["a.png", "nested/b.PNG"]
    reasons = dict(zip(references.rejects["item_id"], references.rejects["reason"],
                       strict=True))
    assert set(reasons) == {"broken.png", "escape.png"}
    assert "escapes the dataset root" in reasons["escape.png"]
    assert reasons["broken.png"]  # Pillow's complaint, never an exception


def test_reference_manifest_resolves_under_its_root(tmp_path: Path):
    root = tmp_path / "data"
    draw(root / "ok.png", COLORS["red"])
    draw(tmp_path / "secret.png", COLORS["red"])
    manifest = tmp_path / "refs.csv"
    manifest.write_text("path\nok.png\n../secret.png\nmissing.png\n")
    config = build_config({"model": {"path": "m"}, "dataset": {"path": "d.jsonl"},
                           "text_to_image": {"references": str(manifest),
                                             "reference_root": str(root),
                                             "reference_column": "path"}})
    references = load_references(config.text_to_image)
    assert list(references.items["image"]) == ["ok.png"]
    reasons = sorted(references.rejects["reason"])
    assert any("escapes the dataset root" in r for r in reasons)
    assert "image file not found" in reasons


def test_missing_or_empty_references_are_data_errors(tmp_path: Path):
    def section(path: Path):
        return build_config({"model": {"path": "m"}, "dataset": {"path": "d.jsonl"},
                             "text_to_image": {"references": str(path)}}).text_to_image

    with pytest.raises(DataError, match="no such folder or manifest"):
        load_references(section(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        load_references(section(tmp_path / "empty"))


def test_a_reference_set_without_usable_images_stops_the_run(tmp_path: Path, sets,
                                                             tiny_clip_dir: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    config = t2i_config(sets["clean"], bad, tiny_clip_dir, tmp_path / "work")
    with pytest.raises(DataError, match="no usable reference images.*all 1 rejected"):
        evaluate_plain(config, tmp_path / "run")


# ---- metrics of a run ----------------------------------------------------------------------


def clip_embeddings(model_dir: Path, paths: list[str], texts: list[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Image and text embeddings by a hand-written transformers call (not the adapter)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixels).pooler_output
        tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
    return image.double().numpy(), text.double().numpy()


def test_run_metrics_equal_references_on_the_models_features(tmp_path: Path, sets,
                                                              tiny_clip_dir: Path):
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work",
                        fid_interval=True)
    dataset, inference, scores = evaluate_plain(config, tmp_path / "run")
    items = dataset.load_items()
    references = sorted(str(p) for p in sets["references"].glob("*.png"))
    prompts = [c[0] for c in items["captions"]]
    generated, text = clip_embeddings(tiny_clip_dir, list(items["image_path"]), prompts)
    real, _ = clip_embeddings(tiny_clip_dir, references, ["a"])
    metrics = scores.metrics
    assert metrics["fid"] == pytest.approx(scipy_fid(generated, real), rel=1e-4, abs=1e-6)
    assert metrics["kid"] != pytest.approx(0.0)
    cosine = (generated * text).sum(1) / np.linalg.norm(generated, axis=1) \
        / np.linalg.norm(text, axis=1)
    per_sample = pd.read_parquet(scores.per_sample_path)
    assert np.allclose(per_sample["clip_score"], 2.5 * np.maximum(cosine, 0), atol=1e-5)
    assert metrics["clip_score"] == pytest.approx(per_sample["clip_score"].mean())
    assert metrics["clip_score_ci_low"] <= metrics["clip_score"] <= metrics["clip_score_ci_high"]
    assert metrics["fid_ci_low"] < metrics["fid"] < metrics["fid_ci_high"]
    assert metrics["precision"] == pytest.approx(per_sample["in_reference_manifold"].mean())
    assert set(per_sample["nearest_reference"]) <= {Path(p).name for p in references}
    assert list(per_sample["prompt"]) == prompts
    table = pd.read_parquet(scores.extra_tables["references"])
    assert (table["status"] == "usable").all() and len(table) == 16
    assert metrics["recall"] == pytest.approx(table["covered"].mean())
    assert scores.higher_is_better["fid"] is False and scores.higher_is_better["clip_score"]
    assert scores.counts == {"images_scored": 16, "failed": 0, "references_used": 16,
                             "references_unusable": 0}


def test_kid_of_a_run_equals_numpy_on_whole_sets(tmp_path: Path, sets, tiny_clip_dir: Path):
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work")
    config.metric_options = {"kid": {"subsets": 1, "subset_size": 16}}
    config.metrics = ["kid"]
    dataset, _, scores = evaluate_plain(config, tmp_path / "run")
    generated, _ = clip_embeddings(tiny_clip_dir, list(dataset.load_items()["image_path"]),
                                   ["a"])
    real, _ = clip_embeddings(tiny_clip_dir, sorted(str(p) for p in
                                                    sets["references"].glob("*.png")), ["a"])
    assert scores.metrics["kid"] == pytest.approx(numpy_kid(generated, real), rel=1e-4,
                                                  abs=1e-7)


def test_degraded_images_score_worse_than_clean_ones(tmp_path: Path, sets,
                                                     tiny_clip_dir: Path):
    work = tmp_path / "work"
    clean = evaluate_plain(t2i_config(sets["clean"], sets["references"], tiny_clip_dir, work),
                           tmp_path / "clean")[2].metrics
    degraded = evaluate_plain(t2i_config(sets["degraded"], sets["references"], tiny_clip_dir,
                                         work), tmp_path / "degraded")[2].metrics
    assert degraded["fid"] > 2 * clean["fid"] > 0
    assert degraded["kid"] > clean["kid"]


def test_rerun_is_a_cache_hit_with_the_same_numbers(tmp_path: Path, sets, tiny_clip_dir: Path):
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work")
    _, first, scores = evaluate_plain(config, tmp_path / "a")
    assert first.cache_state == "miss"
    _, again, rescored = evaluate_plain(config, tmp_path / "b")
    assert again.cache_state == "hit" and rescored.metrics == scores.metrics
    draw(sets["references"] / "extra.png", COLORS["red"], offset=2)  # references change
    _, changed, _ = evaluate_plain(config, tmp_path / "c")
    assert changed.cache_state == "partial"


def test_a_rerun_reads_no_reference_image_again(tmp_path: Path, sets, tiny_clip_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """The references go through the work folder's digest cache, like the dataset's images:
    unchanged files are not read (checked and hashed) again; a new one is."""
    import tasks.data.base as base

    reads: list[str] = []
    real = base.read_image_file
    monkeypatch.setattr(base, "read_image_file", lambda path: reads.append(str(path)) or
                        real(path))
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work")
    evaluate_plain(config, tmp_path / "a")
    references = str(sets["references"])
    first = [path for path in reads if path.startswith(references)]
    assert len(first) == 16
    reads.clear()
    _, again, _ = evaluate_plain(config, tmp_path / "b")
    assert again.cache_state == "hit" and not any(p.startswith(references) for p in reads)
    draw(sets["references"] / "extra.png", COLORS["red"], offset=2)
    evaluate_plain(config, tmp_path / "c")
    assert [p for p in reads if p.startswith(references)] == [str(sets["references"] /
                                                               "extra.png")]


def test_bad_generated_images_are_rejected_not_fatal(tmp_path: Path, sets,
                                                     tiny_clip_dir: Path):
    folder = sets["clean"].parent
    (folder / "images" / "003.png").write_bytes(b"truncated")
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work")
    dataset, _, scores = evaluate_plain(config, tmp_path / "run")
    assert dataset.items == 15 and dataset.rejected == 1
    assert scores.counts["images_scored"] == 15 and np.isfinite(scores.metrics["fid"])


def test_without_prompts_clip_score_is_skipped_with_the_reason(tmp_path: Path, sets,
                                                               tiny_clip_dir: Path):
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work")
    config.dataset.columns.captions = None
    _, _, scores = evaluate_plain(config, tmp_path / "run")
    assert "no prompts" in scores.skipped["prompt_clip_score"]
    assert {"fid", "kid", "precision", "recall"} <= set(scores.metrics)
    assert scores.review_column == "status"


# ---- configuration ---------------------------------------------------------------------------


def test_config_errors_name_the_field(tmp_path: Path):
    base = {"task": "text_to_image", "model": {"path": "m"}, "dataset": {"path": "d.jsonl"}}
    with pytest.raises(ConfigError, match="text_to_image.references: task 'text_to_image' "
                                          "needs the reference images"):
        check_config(build_config(base))
    with pytest.raises(ConfigError, match="needs text_to_image.inception_weights"):
        check_config(build_config(base | {"text_to_image": {
            "references": str(tmp_path), "features": "inception"}}))
    with pytest.raises(ConfigError, match="is not a file .*never\\s+downloaded"):
        check_config(build_config(base | {"text_to_image": {
            "references": str(tmp_path), "features": "inception",
            "inception_weights": str(tmp_path / "missing.pth")}}))
    with pytest.raises(ConfigError, match="model.kind: task 'text_to_image' needs"):
        check_config(build_config(base | {"model": {"path": "m", "kind": "captioner"},
                                          "text_to_image": {"references": str(tmp_path)}}))


def test_inception_without_torch_fidelity_is_a_config_error(tmp_path: Path):
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity is installed here")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"weights")
    with pytest.raises(ConfigError, match="needs the torch-fidelity package"):
        check_config(build_config({
            "task": "text_to_image", "model": {"path": "m"}, "dataset": {"path": "d.jsonl"},
            "text_to_image": {"references": str(tmp_path), "features": "inception",
                              "inception_weights": str(weights)}}))


def test_inception_features_feed_fid_when_configured(tmp_path: Path, sets, tiny_clip_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    """The Inception path's wiring, with a stand-in network (the real one needs
    torch-fidelity and its weights): uint8 images of their own size in, 2048 features out,
    one forward pass per image size, features cached apart from the model's."""
    import importlib.util

    import torch

    from tasks.kinds.text_to_image import inception

    calls: list[tuple[int, ...]] = []

    class StandIn(torch.nn.Module):
        """Features: the image's channel means in [0, 1], then zeros up to 2048."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.dtype == torch.uint8
            calls.append(tuple(x.shape))
            out = torch.zeros(len(x), 2048)
            out[:, :3] = x.double().mean(dim=(2, 3)).float() / 255
            return out

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(inception.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch_fidelity"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(inception, "build_network", lambda weights: StandIn())
    Image.new("RGB", (40, 24), "blue").save(sets["references"] / "other_size.png")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"stand-in weights")
    config = t2i_config(sets["clean"], sets["references"], tiny_clip_dir, tmp_path / "work",
                        features="inception", inception_weights=str(weights))
    config.metrics = ["fid"]
    dataset, _, scores = evaluate_plain(config, tmp_path / "run")
    assert (1, 3, 24, 40) in calls and (17, 3, 24, 40) not in calls  # its own forward pass
    assert all(shape[1] == 3 for shape in calls)

    def channel_means(paths: list[str]) -> np.ndarray:
        return np.array([np.asarray(Image.open(p).convert("RGB"), np.float64).mean(axis=(0, 1))
                         / 255 for p in paths])

    generated = channel_means(list(dataset.load_items()["image_path"]))
    real = channel_means(sorted(str(p) for p in sets["references"].glob("*.png")))
    assert scores.metrics["fid"] == pytest.approx(scipy_fid(generated, real), rel=1e-4)
