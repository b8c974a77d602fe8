import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import save_file

from tasks.config import ModelConfig
from tasks.models import ModelError, load_adapter
from tasks.models.torch_module import compute_dataset_stats, torch_module_fingerprint
from tests.helpers import WORDS, word_tokenizer
from tests.models.fusion_example import FusionClassifier, ImageClassifier

FUSION = "tests.models.fusion_example:FusionClassifier"
IMAGE_ONLY = "tests.models.fusion_example:ImageClassifier"
IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
SIZES = [(48, 36), (30, 50), (32, 32), (64, 40)]


@dataclass
class Setup:
    root: Path
    model: FusionClassifier
    safetensors: Path
    pt: Path
    tokenizer: Path
    images: list[str]


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("torch-module")
    rng = np.random.default_rng(0)
    images = []
    for index, (width, height) in enumerate(SIZES):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[: height // 2, : width // 3] = (220, 30, 30)
        images.append(str(root / f"{index}.png"))
        Image.fromarray(pixels).save(images[-1])
    tokenizer = word_tokenizer(WORDS)
    tokenizer.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    model = FusionClassifier(vocab_size=len(tokenizer)).eval()
    save_file(state_of(model), root / "fusion.safetensors")
    torch.save(model.state_dict(), root / "fusion.pt")
    return Setup(root, model, root / "fusion.safetensors", root / "fusion.pt",
                 root / "tokenizer", images)


def make_config(weights: Path, batch_size: int = 3, **settings) -> ModelConfig:
    return ModelConfig(kind="torch_module", path=str(weights), batch_size=batch_size,
                       device="cpu", torch_module={"image_size": 32, **settings})


def reference_pixels(path: str, size: int, mean, std, resize: str = "center_crop") -> np.ndarray:
    """Written independently of the adapter: PIL bilinear resize, numpy crop/normalise."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    if resize == "resize":
        array = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float64)
    else:
        short, long = sorted((width, height))
        target = (size, size * long // short) if width <= height else (size * long // short, size)
        array = np.asarray(image.resize(target, Image.Resampling.BILINEAR), np.float64)
        top, left = round((array.shape[0] - size) / 2), round((array.shape[1] - size) / 2)
        array = array[top : top + size, left : left + size]
    array = (array / 255.0 - np.asarray(mean)) / np.asarray(std)
    return array.transpose(2, 0, 1).astype(np.float32)


def direct_logits(model, paths, texts, tokenizer_dir, mean=IMAGENET[0], std=IMAGENET[1],
                  resize: str = "center_crop") -> torch.Tensor:
    from transformers import AutoTokenizer

    pixels = torch.from_numpy(np.stack([reference_pixels(p, 32, mean, std, resize)
                                        for p in paths]))
    with torch.no_grad():
        if texts is None:
            return model(pixels).double()
        tokens = AutoTokenizer.from_pretrained(tokenizer_dir)(list(texts), padding=True,
                                                              return_tensors="pt")
        return model(pixels, tokens["input_ids"], tokens["attention_mask"]).double()


PAIRS_IMAGES = [0, 1, 2, 3, 0]
PAIRS_TEXTS = ["a red square", "a picture of a big blue square on white", "green",
               "small yellow", "a red square on black"]


@pytest.mark.parametrize("weights", ["safetensors", "pt"])
def test_pair_scores_equal_a_direct_forward_pass(setup: Setup, weights: str):
    paths = [setup.images[i] for i in PAIRS_IMAGES]
    expected = torch.softmax(direct_logits(setup.model, paths, PAIRS_TEXTS, setup.tokenizer),
                             dim=1)[:, 1].numpy()
    for batch_size in (1, 3):
        adapter = load_adapter(make_config(getattr(setup, weights), batch_size, module=FUSION,
                                           tokenizer=str(setup.tokenizer)))
        progress: list[int] = []
        got = adapter.score_pairs(paths, PAIRS_TEXTS, progress=progress.append)
        assert got.failures == {} and got.scores.dtype == np.float64 and sum(progress) == 5
        np.testing.assert_allclose(got.scores, expected, rtol=1e-5, atol=1e-6)
        assert adapter.normalization["mean_source"] == "imagenet"


def test_single_logit_plain_resize_and_configured_statistics(setup: Setup, tmp_path: Path):
    torch.manual_seed(1)
    model = FusionClassifier(vocab_size=17, num_classes=1).eval()
    save_file(state_of(model), tmp_path / "one.safetensors")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    adapter = load_adapter(make_config(
        tmp_path / "one.safetensors", module=FUSION, tokenizer=str(setup.tokenizer),
        init_kwargs={"vocab_size": 17, "num_classes": 1}, resize="resize", mean=mean, std=std,
    ))
    paths = [setup.images[i] for i in PAIRS_IMAGES]
    logits = direct_logits(model, paths, PAIRS_TEXTS, setup.tokenizer, mean, std, "resize")
    got = adapter.score_pairs(paths, PAIRS_TEXTS)
    np.testing.assert_allclose(got.scores, torch.sigmoid(logits[:, 0]).numpy(), rtol=1e-5,
                               atol=1e-6)
    probabilities, _ = adapter.classify(paths, PAIRS_TEXTS)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert adapter.normalization == {"mean": mean, "std": std, "mean_source": "config",
                                     "std_source": "config", "images": None}


def test_pickled_module_is_refused(setup: Setup, tmp_path: Path):
    torch.save(setup.model, tmp_path / "whole.pt")
    with pytest.raises(ModelError, match=r"refused.*pickled"):
        load_adapter(make_config(tmp_path / "whole.pt", module=FUSION,
                                 tokenizer=str(setup.tokenizer)))


def test_loading_errors_are_model_errors(setup: Setup, tmp_path: Path):
    options = {"tokenizer": str(setup.tokenizer)}
    with pytest.raises(ValidationError, match="package.module:ClassName"):
        make_config(setup.safetensors, module="tests/models/fusion_example.py")
    with pytest.raises(ModelError, match="cannot import module 'tests.models.no_such_module'"):
        load_adapter(make_config(setup.safetensors, module="tests.models.no_such_module:X",
                                 **options))
    with pytest.raises(ModelError, match="has no 'Missing'"):
        load_adapter(make_config(setup.safetensors, module="tests.models.fusion_example:Missing"))
    with pytest.raises(ModelError, match="bad init_kwargs"):
        load_adapter(make_config(setup.safetensors, module=FUSION, init_kwargs={"depth": 3}))
    state = state_of(setup.model)
    state["extra.weight"] = state.pop("head.weight")
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match=r"missing keys \[head.weight\], unexpected keys "
                                         r"\[extra.weight\]"):
        load_adapter(make_config(tmp_path / "bad.safetensors", module=FUSION, **options))
    with pytest.raises(ModelError, match="weights do not match"):
        load_adapter(make_config(setup.safetensors, module=FUSION, init_kwargs={"dim": 16}))
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"must be \.safetensors"):
        load_adapter(make_config(tmp_path / "weights.npz", module=FUSION, **options))
    with pytest.raises(ModelError, match="does not exist"):
        load_adapter(make_config(tmp_path / "none.pt", module=FUSION, **options))
    with pytest.raises(ModelError, match="set torch_module.tokenizer"):
        load_adapter(make_config(setup.safetensors, module=FUSION))
    with pytest.raises(ModelError, match="needs model.torch_module"):
        load_adapter(ModelConfig(kind="torch_module", path=str(setup.safetensors)))


def test_dataset_normalisation_equals_numpy(setup: Setup, tmp_path: Path):
    stacked = np.stack([reference_pixels(p, 32, 0.0, 1.0) for p in setup.images])
    expected_mean = stacked.astype(np.float64).mean(axis=(0, 2, 3))
    expected_std = stacked.astype(np.float64).std(axis=(0, 2, 3))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    mean, std = compute_dataset_stats([*setup.images, str(broken)], 32, "center_crop",
                                      workers=2, chunk=3)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)

    adapter = load_adapter(make_config(setup.safetensors, module=FUSION, mean="dataset",
                                       std="dataset", tokenizer=str(setup.tokenizer)))
    assert adapter.normalization is None  # computed over the evaluated images on first use
    paths = [setup.images[i] for i in PAIRS_IMAGES]
    got = adapter.score_pairs(paths, PAIRS_TEXTS)
    assert adapter.normalization["images"] == 4 and adapter.normalization["std_source"] == \
        "dataset"
    np.testing.assert_allclose(adapter.normalization["mean"], expected_mean, rtol=1e-6)
    logits = direct_logits(setup.model, paths, PAIRS_TEXTS, setup.tokenizer, expected_mean,
                           expected_std)
    np.testing.assert_allclose(got.scores, torch.softmax(logits, 1)[:, 1].numpy(), rtol=1e-5,
                               atol=1e-6)


def test_undecodable_image_is_nan_with_a_reason(setup: Setup, tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    adapter = load_adapter(make_config(setup.safetensors, 2, module=FUSION,
                                       tokenizer=str(setup.tokenizer)))
    progress: list[int] = []
    paths = [setup.images[0], str(broken), setup.images[1], str(broken)]
    got = adapter.score_pairs(paths, PAIRS_TEXTS[:4], progress=progress.append)
    assert sorted(got.failures) == [1, 3] and "image decode failed" in got.failures[1]
    assert np.isnan(got.scores[[1, 3]]).all() and np.isfinite(got.scores[[0, 2]]).all()
    assert sum(progress) == 4
    only_broken = adapter.score_pairs([str(broken)], ["red"])
    assert np.isnan(only_broken.scores).all() and list(only_broken.failures) == [0]


def test_image_only_module_classifies(setup: Setup, tmp_path: Path):
    torch.manual_seed(2)
    model = ImageClassifier(num_classes=4).eval()
    torch.save(model.state_dict(), tmp_path / "image.pth")
    adapter = load_adapter(make_config(tmp_path / "image.pth", 2, module=IMAGE_ONLY,
                                       init_kwargs={"num_classes": 4}))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    paths = [*setup.images, str(broken)]
    probabilities, failures = adapter.classify(paths)
    assert probabilities.shape == (5, 4) and probabilities.dtype == np.float64
    assert list(failures) == [4] and np.isnan(probabilities[4]).all()
    expected = torch.softmax(direct_logits(model, setup.images, None, None), dim=1).numpy()
    np.testing.assert_allclose(probabilities[:4], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="image-only"):
        adapter.score_pairs(setup.images, ["red"] * 4)


def test_fingerprint_covers_weights_source_settings_and_tokenizer(setup: Setup, tmp_path: Path,
                                                                  monkeypatch):
    name = "bifocal_test_user_model"
    source = tmp_path / "code" / f"{name}.py"
    source.parent.mkdir()
    source.write_text("from tests.models.fusion_example import FusionClassifier\n\n\n"
                      "class Mine(FusionClassifier):\n    pass\n")
    monkeypatch.syspath_prepend(str(source.parent))
    sys.modules.pop(name, None)
    try:
        check_fingerprints(name, source, setup, tmp_path)
    finally:
        sys.modules.pop(name, None)


def check_fingerprints(name: str, source: Path, setup: Setup, tmp_path: Path) -> None:
    import shutil

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(setup.tokenizer, tokenizer)
    weights = tmp_path / "w.safetensors"
    shutil.copy(setup.safetensors, weights)

    def fingerprint(**settings) -> str:
        return torch_module_fingerprint(make_config(
            weights, module=f"{name}:Mine", tokenizer=str(tokenizer), **settings))

    base = fingerprint()
    assert fingerprint() == base
    assert fingerprint(init_kwargs={"dim": 32}) != base
    assert torch_module_fingerprint(make_config(weights, module=f"{name}:Mine",
                                                tokenizer=str(tokenizer)),
                                    normalization={"mean": [0.5] * 3}) != base
    source.write_text(source.read_text() + "# changed\n")
    changed_source = fingerprint()
    assert changed_source != base
    save_file({k: v + 1 for k, v in state_of(setup.model).items()}, weights)
    changed_weights = fingerprint()
    assert changed_weights != changed_source
    config = tokenizer / "tokenizer_config.json"
    config.write_text(config.read_text() + " ")
    assert fingerprint() != changed_weights
