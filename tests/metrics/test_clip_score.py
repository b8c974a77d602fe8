"""CLIPScore against torchmetrics' CLIPScore on the same model (it reports 100·cos, per call the
mean clipped at 0), and RefCLIPScore against the formula of Hessel et al. 2021."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tasks.metrics import get_metric
from tasks.metrics.clip_score import clip_scores
from tests.helpers import write_dataset


class TensorFeatures:
    """transformers 5 returns model outputs from get_*_features; torchmetrics wants tensors."""

    def __init__(self, model):
        self.model = model

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output

    def to(self, device):  # torchmetrics re-binds model = model.to(device)
        self.model.to(device)
        return self

    def __getattr__(self, name):
        return getattr(self.model, name)


def torchmetrics_per_sample(model_dir: Path, paths: list[str], captions: list[str]) -> np.ndarray:
    import torch
    from PIL import Image
    from torchmetrics.multimodal import CLIPScore
    from transformers import AutoModel, AutoProcessor

    model = TensorFeatures(AutoModel.from_pretrained(model_dir).eval())
    processor = AutoProcessor.from_pretrained(model_dir)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    scores = []
    for path, caption in zip(paths, captions, strict=True):
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        metric.reset()
        scores.append(float(metric(image, caption)))
    return np.array(scores)


def test_clip_score_equals_torchmetrics_scaled(tiny_clip_dir: Path, tmp_path: Path):
    write_dataset(tmp_path, n=6)
    paths = [str(tmp_path / "images" / f"{i:03d}.png") for i in range(6)]
    captions = ["a red square", "a green square", "a blue square", "a yellow square",
                "a picture of a red square", "a small square"]
    inputs = SimpleNamespace(image_paths=paths, predictions=captions,
                             references=[["a red square", "a big square"]] * 6)
    result = get_metric("clip_score")(inputs, model=str(tiny_clip_dir), prefix="")
    expected = torchmetrics_per_sample(tiny_clip_dir, paths, captions)  # max(100 cos, 0)
    np.testing.assert_allclose(result.per_sample["clip_score"], 2.5 * expected / 100,
                               rtol=1e-4, atol=1e-5)
    assert result.corpus["clip_score"] == pytest.approx(result.per_sample["clip_score"].mean())


def test_ref_clip_score_is_harmonic_mean_with_best_reference():
    images = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    candidates = np.array([[1.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    refs = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    owner = np.array([0, 0, 1, 2])
    out = clip_scores(images, candidates, refs, owner)
    clip_s = 2.5 * np.array([np.sqrt(0.5), 0.0, 0.0])
    np.testing.assert_allclose(out["clip_score"], clip_s)
    # sample 0: best ref cos = 1 -> H(2.5*0.7071, 1); samples 1, 2: CLIP-S 0 -> 0
    expected0 = 2 * clip_s[0] * 1.0 / (clip_s[0] + 1.0)
    np.testing.assert_allclose(out["ref_clip_score"], [expected0, 0.0, 0.0])


def test_skips_with_reasons_without_model_or_images():
    inputs = SimpleNamespace(image_paths=None, predictions=["a"], references=[["a"]])
    assert "metric_options.clip_score.model" in get_metric("clip_score")(inputs).skipped
    assert "needs the images" in get_metric("clip_score")(inputs, model="m").skipped
