"""Adversarial evaluation end to end on tiny models: the attacked forward is the evaluated one
(parity with the adapters' own inference at epsilon 0), attacks lower a trained classifier's
accuracy with PGD at least as strong as FGSM, and models without gradients are skipped."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from tasks.arrays import flatten_cells, l2_normalize, owners
from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import save_dataset
from tasks.kinds.zero_shot.infer import class_embeddings
from tasks.metrics.matching import best_threshold
from tasks.metrics.retrieval import image_to_text_ranks
from tasks.models import load_adapter
from tasks.robustness.adversarial import adversarial_metrics, epsilon_labels
from tasks.robustness.attacks import fgsm, pgd
from tasks.robustness.differentiable import view_of
from tests.helpers import COLORS, WORDS, word_tokenizer, write_dataset
from tests.models.fusion_example import FusionClassifier, ImageClassifier

CLASSES = ["red", "green", "blue", "yellow"]
IMAGE_ONLY = "tests.models.fusion_example:ImageClassifier"
FUSION = "tests.models.fusion_example:FusionClassifier"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 16  # the classifier's input size (the 32-px dataset images are resized)


def coloured_squares(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised 16-px training images: a jittered coloured square on white, label = colour."""
    rng = np.random.default_rng(seed)
    pixels = np.ones((count, SIZE, SIZE, 3), np.float32)
    labels = rng.integers(0, len(CLASSES), count)
    for image, label in zip(pixels, labels, strict=True):
        side = rng.integers(SIZE // 4, 3 * SIZE // 4 + 1)
        top, left = rng.integers(0, SIZE - side + 1, 2)
        colour = np.clip(np.array(COLORS[CLASSES[label]]) + rng.integers(-20, 21, 3), 0, 255)
        image[top:top + side, left:left + side] = colour / 255
    normalised = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageClassifier trained for a few seconds to tell the four colours apart."""
    torch.manual_seed(0)
    images, labels = coloured_squares(96, seed=0)
    model = ImageClassifier(num_classes=4, dim=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    held_out, truth = coloured_squares(64, seed=1)
    assert (model(held_out).argmax(dim=1) == truth).float().mean() == 1.0
    path = tmp_path_factory.mktemp("classifier") / "classifier.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("squares")
    return write_dataset(root, n=12)


def classifier_model(weights: Path) -> dict:
    return {"kind": "torch_module", "path": str(weights), "device": "cpu", "batch_size": 5,
            "torch_module": {"module": IMAGE_ONLY, "init_kwargs": {"num_classes": 4, "dim": 8},
                             "image_size": SIZE, "resize": "resize"}}


def evaluate(tmp_path: Path, manifest: Path, task: str, model: dict, **extra):
    adversarial = extra.pop("adversarial", {})
    config = build_config({
        "task": task, "model": model, "dataset": {"path": str(manifest)},
        "statistics": {"bootstrap": 200}, **extra,
        "robustness": {"adversarial": {"epsilons": [8 / 255], "steps": 3, **adversarial}}})
    dataset = save_dataset(load_dataset(config.dataset), tmp_path / "run")
    return config, dataset, adversarial_metrics(dataset, config, tmp_path / "run")


def dual_encoder(path: Path) -> dict:
    return {"kind": "dual_encoder", "path": str(path), "device": "cpu", "batch_size": 5}


def attacked(result, attack: str) -> pd.DataFrame:
    table = result.per_sample
    return table[table["attack"] == attack].reset_index(drop=True)


# ---- a trained classifier -----------------------------------------------------------------


def test_attacks_lower_a_trained_classifiers_accuracy_and_pgd_is_at_least_as_strong(
        tmp_path, trained_classifier, squares):
    eps = 16 / 255
    config, dataset, result = evaluate(
        tmp_path, squares, "zero_shot_classification", classifier_model(trained_classifier),
        zero_shot={"class_names": CLASSES}, adversarial={"epsilons": [eps], "steps": 10})
    assert result.skipped is None
    metrics = result.metrics
    # clean accuracy through the adapter's own inference (softmax of the module's logits)
    adapter = load_adapter(config.model)
    items = dataset.load_items()
    probabilities, _ = adapter.classify(list(items["image_path"]))
    reference = np.mean(np.array(CLASSES)[probabilities.argmax(axis=1)] == items["label"])
    assert reference == 1.0 and metrics["adv.clean.accuracy"] == reference
    key = "eps_0.0627"
    fgsm_accuracy = metrics[f"adv.fgsm.{key}.accuracy"]
    pgd_accuracy = metrics[f"adv.pgd.{key}.accuracy"]
    assert fgsm_accuracy < 1.0
    assert pgd_accuracy <= fgsm_accuracy
    # with every clean prediction right, robust error is the adversarial error
    assert metrics[f"adv.pgd.{key}.robust_error"] == pytest.approx(1 - pgd_accuracy)
    prefix = f"adv.pgd.{key}.accuracy"
    assert metrics[f"{prefix}_ci_low"] <= pgd_accuracy <= metrics[f"{prefix}_ci_high"]
    table = result.per_sample
    assert len(table) == 3 * len(items)
    assert set(table["attack"]) == {"clean", "fgsm", "pgd"}
    pgd_rows = attacked(result, "pgd")
    assert pgd_rows["correct"].mean() == pytest.approx(pgd_accuracy)
    curve = {(p["attack"], p["epsilon"], p["metric"]): p["value"] for p in result.curve}
    assert curve[("pgd", 0.0, "accuracy")] == 1.0
    assert curve[("pgd", eps, "accuracy")] == pgd_accuracy
    assert all(re.fullmatch(r"[/\w.\- ]+", k) for k in metrics)


def test_torch_module_view_matches_the_adapter_and_leaves_the_weights_alone(
        trained_classifier, squares):
    config = build_config({"model": classifier_model(trained_classifier),
                           "dataset": {"path": str(squares)}})
    adapter = load_adapter(config.model)
    view = view_of(adapter)
    paths = [str(squares.parent / "images" / f"{i:03d}.png") for i in range(4)]
    paths.insert(2, str(squares.parent / "missing.png"))
    x01, kept, failures = view.pixels01(paths)
    assert kept == [0, 1, 3, 4] and list(failures) == [2]
    assert x01.min() >= 0 and x01.max() <= 1 and x01.shape == (4, 3, SIZE, SIZE)
    expected, _ = adapter.classify(paths)
    got = view.log_probabilities(x01).exp().detach().double().numpy()
    np.testing.assert_allclose(got, expected[kept], rtol=1e-5, atol=1e-6)

    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    targets = torch.tensor([0, 1, 3, 0])

    def loss(x):
        return torch.nn.functional.nll_loss(view.log_probabilities(x), targets, reduction="none")

    fgsm(loss, x01, 0.1)
    pgd(loss, x01, 0.1, steps=2)
    for name, value in adapter.model.named_parameters():
        assert value.grad is None and not value.requires_grad
        assert torch.equal(value, before[name])
    assert not adapter.model.training


# ---- dual encoders ------------------------------------------------------------------------


def test_dual_encoder_view_features_match_the_adapter(tiny_clip_dir, squares):
    adapter = load_adapter(build_config({"model": dual_encoder(tiny_clip_dir),
                                         "dataset": {"path": str(squares)}}).model)
    view = view_of(adapter)
    paths = [str(p) for p in sorted((squares.parent / "images").glob("*.png"))[:5]]
    x01, kept, failures = view.pixels01(paths)
    assert kept == list(range(5)) and not failures
    assert x01.min() >= 0 and x01.max() <= 1
    expected = adapter.encode_images(paths).vectors
    np.testing.assert_allclose(view.image_features(x01).detach().numpy(), expected,
                               rtol=1e-4, atol=1e-5)


def test_zero_shot_clean_predictions_are_the_kinds_and_attacks_do_not_help(
        tmp_path, tiny_clip_dir, squares):
    config, dataset, result = evaluate(tmp_path, squares, "zero_shot_classification",
                                       dual_encoder(tiny_clip_dir))
    adapter = load_adapter(config.model)
    items = dataset.load_items()
    names = sorted(set(items["label"]))
    classes = class_embeddings(adapter, names, config.zero_shot.templates)
    sims = l2_normalize(adapter.encode_images(list(items["image_path"])).vectors) @ classes.T
    predicted = np.array(names)[sims.argmax(axis=1)]
    clean = attacked(result, "clean")
    assert clean["prediction"].tolist() == predicted.tolist()
    assert result.metrics["adv.clean.accuracy"] == np.mean(predicted == items["label"])
    assert result.metrics["adv.pgd.eps_0.0314.accuracy"] <= result.metrics["adv.clean.accuracy"]


def test_retrieval_clean_ranks_are_the_metrics_and_pgd_pushes_captions_down(
        tmp_path, tiny_clip_dir, squares):
    config, dataset, result = evaluate(tmp_path, squares, "retrieval", dual_encoder(tiny_clip_dir),
                                       adversarial={"attacks": ["pgd"]})
    adapter = load_adapter(config.model)
    items = dataset.load_items()
    images = l2_normalize(adapter.encode_images(list(items["image_path"])).vectors)
    texts = l2_normalize(adapter.encode_texts(flatten_cells(items["captions"])))
    ranks = image_to_text_ranks(images, texts, owners(items["captions"].map(len).to_numpy()))
    clean = attacked(result, "clean")
    assert clean["rank"].tolist() == ranks.tolist()
    for k in (1, 5, 10):
        assert result.metrics[f"adv.clean.i2t_recall_at_{k}"] == np.mean(ranks <= k)
    assert attacked(result, "pgd")["rank"].mean() > clean["rank"].mean()


def test_matching_scores_and_threshold_are_the_kinds_and_pgd_flips_pairs(
        tmp_path, tiny_clip_dir, squares):
    config, dataset, result = evaluate(tmp_path, squares, "matching", dual_encoder(tiny_clip_dir),
                                       adversarial={"attacks": ["pgd"], "limit": 5})
    from tasks.kinds.matching.infer import caption_pairs, random_negatives
    from tasks.kinds.matching.score import calibration_split

    items = dataset.load_items()
    pairs = caption_pairs(items, random_negatives(items, 1, config.seed), "random")
    held = calibration_split(pairs["item_id"], config.matching.calibration_fraction, config.seed)
    adapter = load_adapter(config.model)
    scores = adapter.score_pairs(list(pairs["image_path"]), list(pairs["text"])).scores
    threshold = best_threshold(pairs["label"].to_numpy()[held], scores[held])
    # the attacked pairs: those of the first 5 items outside the calibration share
    first = pairs["item_id"][~held].unique()[:5]
    chosen = ~held & pairs["item_id"].isin(first).to_numpy()
    clean = attacked(result, "clean")
    assert clean["pair_id"].tolist() == pairs["pair_id"][chosen].tolist()
    np.testing.assert_allclose(clean["score"], scores[chosen], rtol=1e-4, atol=1e-5)
    expected = (scores[chosen] >= threshold) == (pairs["label"].to_numpy()[chosen] == 1)
    assert clean["correct"].tolist() == expected.tolist()
    assert result.counts["excluded.calibration pair"] == int(held.sum())
    assert result.metrics["adv.pgd.eps_0.0314.accuracy"] < result.metrics["adv.clean.accuracy"]


def test_fusion_module_matching_scores_are_the_adapters(tmp_path, squares):
    tokenizer = word_tokenizer(WORDS)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    torch.manual_seed(0)
    model = FusionClassifier(vocab_size=len(tokenizer))
    weights = tmp_path / "f.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    spec = {"kind": "torch_module", "path": str(weights), "device": "cpu",
            "batch_size": 8, "torch_module": {"module": FUSION, "image_size": 32,
                                              "tokenizer": str(tmp_path / "tokenizer")}}
    config, dataset, result = evaluate(tmp_path, squares, "matching", spec,
                                       matching={"threshold": 0.5},
                                       adversarial={"attacks": ["fgsm"], "limit": 3})
    clean = attacked(result, "clean")
    assert clean["item_id"].nunique() == 3
    adapter = load_adapter(config.model)
    items = dataset.load_items().set_index("item_id")
    expected = adapter.score_pairs(list(items.loc[clean["item_id"], "image_path"]),
                                   list(clean["text"])).scores
    np.testing.assert_allclose(clean["score"], expected, rtol=1e-5, atol=1e-6)
    assert clean["correct"].tolist() == ((expected >= 0.5) == (clean["label"] == 1)).tolist()
    assert "adv.fgsm.eps_0.0314.accuracy" in result.metrics


# ---- skips and names ----------------------------------------------------------------------


def test_a_captioner_is_skipped_with_a_reason_without_loading_it(tmp_path, squares):
    _, _, result = evaluate(tmp_path, squares, "captioning",
                            {"kind": "captioner", "path": str(tmp_path / "absent")})
    assert "generative captioner" in result.skipped
    assert result.metrics == {} and result.per_sample.empty and result.curve == []


def test_tasks_without_a_differentiable_loss_are_skipped(tmp_path, trained_classifier, squares):
    # known from the config alone: the (absent) checkpoint is never loaded
    _, _, result = evaluate(tmp_path / "a", squares, "captioning",
                            dual_encoder(tmp_path / "absent"))
    assert "no differentiable task loss for a dual encoder" in result.skipped
    _, _, result = evaluate(tmp_path / "b", squares, "matching",
                            classifier_model(trained_classifier))
    assert "image-only torch_module model" in result.skipped
    config = build_config({"model": dual_encoder(tmp_path), "dataset": {"path": "x"}})
    result = adversarial_metrics(None, config, tmp_path)  # nothing configured: nothing read
    assert result.skipped == "robustness.adversarial is not configured"


def test_epsilon_labels_have_four_decimals_unless_that_merges_budgets():
    assert epsilon_labels([1 / 255, 4 / 255]) == {1 / 255: "eps_0.0039", 4 / 255: "eps_0.0157"}
    labels = epsilon_labels([1e-5, 2e-5])
    assert len(set(labels.values())) == 2
    assert all(re.fullmatch(r"[/\w.\- ]+", label) for label in labels.values())


def test_siglip_matching_attacks_the_adapters_sigmoid_score(tmp_path, squares):
    from tests.models.zoo_encoders import build_siglip

    folder = build_siglip(tmp_path / "siglip")
    config, dataset, result = evaluate(tmp_path, squares, "matching", dual_encoder(folder),
                                       adversarial={"attacks": ["pgd"], "limit": 4})
    assert result.skipped is None
    clean = attacked(result, "clean")
    items = dataset.load_items().set_index("item_id")
    adapter = load_adapter(config.model)
    expected = adapter.score_pairs(list(items.loc[clean["item_id"], "image_path"]),
                                   list(clean["text"])).scores
    np.testing.assert_allclose(clean["score"], expected, rtol=1e-4, atol=1e-6)
    assert "adv.pgd.eps_0.0314.robust_error" in result.metrics


def test_siglip2_naflex_inputs_are_skipped_with_a_reason(tmp_path, squares):
    from tests.models.zoo_encoders import build_siglip2

    folder = build_siglip2(tmp_path / "siglip2")
    _, _, result = evaluate(tmp_path, squares, "retrieval", dual_encoder(folder))
    assert "NaFlex" in result.skipped
