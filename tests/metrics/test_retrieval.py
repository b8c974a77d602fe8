"""Retrieval metrics against an independent implementation of CLIP_benchmark's protocol
(clip_benchmark/metrics/zeroshot_retrieval.py: top-k indices, one-hot over images, a hit when
any positive is among the top k) and small hand-checked cases."""

import numpy as np
import pytest
import torch

from tasks.metrics import get_metric
from tasks.metrics import retrieval as module
from tasks.metrics.retrieval import RetrievalInputs


def clip_benchmark_recall(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """Per-query hit@k as CLIP_benchmark computes it: scores (queries x candidates)."""
    top = torch.topk(scores, k, dim=1).indices
    onehot = torch.nn.functional.one_hot(top, num_classes=scores.shape[1])
    true_positives = (onehot * positives.view(len(scores), 1, -1)).sum(dim=(1, 2))
    return (true_positives / positives.sum(dim=1)) > 0


def reference(images, texts, owner, ks):
    images = torch.nn.functional.normalize(torch.from_numpy(images), dim=-1)
    texts = torch.nn.functional.normalize(torch.from_numpy(texts), dim=-1)
    scores = texts @ images.T
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(texts)), torch.from_numpy(owner)] = True
    out = {}
    for k in ks:
        t2i = clip_benchmark_recall(scores, positives, k)
        i2t = clip_benchmark_recall(scores.T, positives.T, k)
        out[f"t2i_recall_at_{k}"] = t2i.double().mean().item()
        out[f"i2t_recall_at_{k}"] = i2t.double().mean().item()
    return out


def random_case(seed, n_images, captions, dim=16, noise=1.0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, dim)).astype(np.float32)
    owner = np.repeat(np.arange(n_images), captions)
    texts = (images[owner] + noise * rng.normal(size=(len(owner), dim))).astype(np.float32)
    return images, texts, owner


@pytest.mark.parametrize(("seed", "n_images", "captions"), [(0, 50, 5), (1, 200, 1), (2, 120, 3)])
def test_recall_matches_clip_benchmark_protocol(seed, n_images, captions):
    images, texts, owner = random_case(seed, n_images, captions)
    ks = (1, 5, 10)
    ours = get_metric("retrieval")(RetrievalInputs(images, texts, owner), ks=ks).corpus
    expected = reference(images, texts, owner, ks)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < ours["t2i_recall_at_1"] < ours["t2i_recall_at_10"] < 1


def test_variable_captions_per_image_and_shuffled_text_order():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(60, 8)).astype(np.float32)
    owner = rng.integers(0, 60, size=240)
    owner[:60] = np.arange(60)  # every image has at least one caption
    rng.shuffle(owner)
    texts = (images[owner] + rng.normal(size=(240, 8))).astype(np.float32)
    ours = get_metric("retrieval")(RetrievalInputs(images, texts, owner), ks=(1, 3)).corpus
    expected = reference(images, texts, owner, (1, 3))
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_chunking_does_not_change_ranks(monkeypatch):
    images, texts, owner = random_case(4, 97, 3)
    full = get_metric("retrieval")(RetrievalInputs(images, texts, owner))
    monkeypatch.setattr(module, "BLOCK_BYTES", 4 * 97 * 7)  # 7 rows per block
    chunked = get_metric("retrieval")(RetrievalInputs(images, texts, owner))
    for key in ("i2t_rank", "t2i_rank"):
        np.testing.assert_array_equal(full.per_sample[key], chunked.per_sample[key])


def test_hand_checked_ranks_ties_and_mean_median():
    # 2-D unit vectors: image 0 = (1,0), image 1 = (0,1)
    images = np.array([[1, 0], [0, 1]], dtype=np.float32)
    texts = np.array([
        [1, 0.1],   # text 0 -> image 0: rank 1
        [1, 0],     # text 1 -> image 1: image 0 is more similar -> rank 2
        [1, 1],     # text 2 -> image 1: tie with image 0 (index 0 < 1) -> rank 2
    ], dtype=np.float32)
    owner = np.array([0, 1, 1])
    result = get_metric("retrieval")(RetrievalInputs(images, texts, owner), ks=(1,))
    assert result.per_sample["t2i_rank"].tolist() == [1, 2, 2]
    # image 0: most similar text is text 1 (cos 1) > text 0 -> its own text 0 ranks 2
    # image 1: sims 0.0995, 0, 0.707 -> its texts 1, 2: text 2 is best, rank 1
    assert result.per_sample["i2t_rank"].tolist() == [2, 1]
    assert result.corpus["t2i_recall_at_1"] == pytest.approx(1 / 3)
    assert result.corpus["i2t_recall_at_1"] == 0.5
    assert result.corpus["t2i_mean_rank"] == pytest.approx(5 / 3)
    assert result.corpus["t2i_median_rank"] == 2.0


def test_image_without_caption_is_left_out_with_warning():
    images, texts, owner = random_case(5, 10, 2)
    images = np.vstack([images, np.ones((1, images.shape[1]), np.float32)])
    result = get_metric("retrieval")(RetrievalInputs(images, texts, owner))
    assert result.per_sample["i2t_rank"][-1] == 0
    assert "1 image(s) have no caption" in result.extra["warnings"][0]


@pytest.mark.parametrize(
    ("images", "texts", "owner", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), [0, 1], "differ in width"),
        (np.zeros((2, 3)), np.zeros((2, 3)), [0], "one entry per text"),
        (np.zeros((2, 3)), np.zeros((2, 3)), [0, 2], "outside 0..1"),
        (np.full((2, 3), np.nan), np.zeros((2, 3)), [0, 1], "NaN"),
        (np.zeros(3), np.zeros((2, 3)), [0, 1], "2-D"),
    ],
)
def test_invalid_inputs_are_rejected(images, texts, owner, message):
    with pytest.raises(ValueError, match=message):
        RetrievalInputs(images, texts, owner)
