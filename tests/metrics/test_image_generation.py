"""FID, KID, precision/recall and the prompt CLIPScore against independent implementations:
scipy's ``linalg.sqrtm`` Fréchet distance, a direct numpy unbiased MMD² with the cubic
polynomial kernel, scikit-learn's nearest neighbours, and torch's cosine similarity."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
from sklearn.neighbors import NearestNeighbors

from tasks.metrics import get_metric
from tasks.metrics.image_generation import (
    ImageGenerationInputs,
    fid_bootstrap_interval,
    fid_value,
    kid_values,
)
from tasks.stats.bootstrap import BootstrapSettings


def features(n: int, d: int = 8, shift: float = 0.0, scale: float = 1.0, seed: int = 0
             ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # correlated dims
    return rng.normal(size=(n, d)) @ mixing * scale + shift


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance as pytorch-fid writes it, with scipy's matrix square root."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(root.real))


def numpy_kid(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD² (Gretton et al. 2012) with k(a, b) = (a·b / d + coef)^degree."""
    d = x.shape[1]

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + coef) ** degree

    m, n = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


# ---- FID -----------------------------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero():
    a = features(200)
    assert fid_value(a, a.copy()) == pytest.approx(0.0, abs=1e-8)


def test_fid_grows_with_a_shift_and_a_scale():
    a, b = features(400, seed=1), features(400, seed=2)
    same = fid_value(a, b)
    shifted = fid_value(a, b + 0.5)
    scaled = fid_value(a, b * 2.0)
    assert 0 < same < shifted and same < scaled
    # a mean shift of 0.5 in each of 8 dimensions adds |shift|² = 2 to the distance
    assert shifted - same == pytest.approx(8 * 0.25 - 2 * 0.5 * (a.mean(0) - b.mean(0)).sum(),
                                           rel=1e-6)


@pytest.mark.parametrize(("n", "m", "d"), [(300, 200, 8), (120, 500, 16)])
def test_fid_equals_scipy_frechet_distance(n, m, d):
    a = features(n, d, seed=3)
    b = features(m, d, shift=0.3, scale=1.4, seed=4)
    assert fid_value(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-8, abs=1e-9)


def test_fid_does_not_depend_on_the_batch_size():
    a = features(257, seed=5)
    b = features(131, shift=0.2, seed=6)
    values = [fid_value(a, b, batch_size=size) for size in (1, 7, 64, 1000)]
    assert max(values) - min(values) < 1e-9 * max(1.0, abs(values[0]))
    assert values[0] == pytest.approx(scipy_fid(a, b), rel=1e-8)


def test_fid_metric_skips_with_fewer_than_two_images():
    result = get_metric("fid")(ImageGenerationInputs(features(1), features(10)))
    assert result.skipped and "at least 2" in result.skipped


def test_fid_bootstrap_interval_brackets_the_fid_and_is_seeded():
    a, b = features(60, seed=7), features(80, shift=0.4, seed=8)
    settings = BootstrapSettings(resamples=200, seed=3)
    interval = fid_bootstrap_interval(a, b, settings)
    assert interval.estimate == pytest.approx(scipy_fid(a, b), rel=1e-8)
    assert interval.low < interval.estimate < interval.high
    again = fid_bootstrap_interval(a, b, settings)
    assert (again.low, again.high) == (interval.low, interval.high)


# ---- KID -----------------------------------------------------------------------------------


def test_kid_on_whole_sets_equals_numpy_unbiased_mmd():
    a = features(90, seed=9)
    b = features(90, shift=0.3, seed=10)
    # one subset of every row: the draw only permutes the rows, which MMD² ignores
    value, spread = kid_values(a, b, subsets=1, subset_size=90)
    assert value == pytest.approx(numpy_kid(a, b), rel=1e-9)
    assert spread == 0.0


def test_kid_with_other_kernel_settings_equals_numpy():
    a, b = features(50, seed=11), features(50, scale=1.5, seed=12)
    value, _ = kid_values(a, b, subsets=1, subset_size=50, degree=2, coef=0.5)
    assert value == pytest.approx(numpy_kid(a, b, degree=2, coef=0.5), rel=1e-9)


def test_kid_over_subsets_is_seeded_and_near_the_whole_set_value():
    a, b = features(200, seed=13), features(200, shift=0.5, seed=14)
    first = kid_values(a, b, subsets=50, subset_size=100, seed=1)
    assert first == kid_values(a, b, subsets=50, subset_size=100, seed=1)
    assert first != kid_values(a, b, subsets=50, subset_size=100, seed=2)
    whole = numpy_kid(a, b)
    assert abs(first[0] - whole) < 3 * first[1]  # unbiased: subsets centre on it


def test_kid_metric_lowers_a_large_subset_size_with_a_warning():
    result = get_metric("kid")(ImageGenerationInputs(features(30), features(40, seed=1)),
                               subsets=5)
    assert set(result.corpus) == {"kid", "kid_std"}
    assert result.extra["subset_size"] == 30
    assert any("lowered to 30" in w for w in result.extra["warnings"])


def test_kid_of_identical_sets_is_small_and_shifted_sets_larger():
    """The unbiased estimate of two identical sets is slightly negative (diagonal left out)."""
    a = features(100, seed=15)
    same = kid_values(a, a.copy(), subsets=1, subset_size=100)[0]
    shifted = kid_values(a, a + 1.0, subsets=1, subset_size=100)[0]
    assert -0.2 < same <= 0 and shifted > 50 * abs(same)


# ---- precision / recall (k-NN manifolds) -----------------------------------------------------


def sklearn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points: np.ndarray) -> np.ndarray:
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
        return distances[:, k]  # column 0 is the point itself

    def inside(queries: np.ndarray, points: np.ndarray, r: np.ndarray) -> np.ndarray:
        d = scipy.spatial.distance.cdist(queries, points)
        return (d <= r[None, :]).any(axis=1)

    return (float(inside(fake, real, radii(real)).mean()),
            float(inside(real, fake, radii(fake)).mean()))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_equals_sklearn_neighbours(k):
    real = features(150, seed=16)
    fake = features(120, shift=0.3, scale=0.7, seed=17)
    result = get_metric("precision_recall")(ImageGenerationInputs(fake, real), k=k)
    precision, recall = sklearn_precision_recall(real, fake, k)
    assert result.corpus == pytest.approx({"precision": precision, "recall": recall})
    assert result.per_sample["in_reference_manifold"].mean() == pytest.approx(precision)
    nearest = scipy.spatial.distance.cdist(fake, real).min(axis=1)
    assert np.allclose(result.per_sample["nearest_reference_distance"], nearest)
    assert 0 < precision < 1 and 0 < recall < 1


def test_precision_recall_of_a_collapsed_generator():
    """All generated images near one reference: high precision, low recall."""
    real = features(100, seed=18)
    fake = real[:1] + np.random.default_rng(0).normal(scale=1e-3, size=(50, 8))
    result = get_metric("precision_recall")(ImageGenerationInputs(fake, real))
    assert result.corpus["precision"] == 1.0 and result.corpus["recall"] < 0.1


# ---- CLIPScore against the prompt ------------------------------------------------------------


def test_prompt_clip_score_is_w_times_clipped_cosine():
    import torch

    rng = np.random.default_rng(19)
    images, prompts = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    inputs = ImageGenerationInputs(features(20), features(20), images, prompts)
    result = get_metric("prompt_clip_score")(inputs, w=100.0)
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(images),
                                                   torch.from_numpy(prompts)).numpy()
    expected = 100 * np.maximum(cosine, 0)
    assert np.allclose(result.per_sample["clip_score"], expected)
    assert result.corpus["clip_score"] == pytest.approx(expected.mean())
    assert result.estimates["clip_score"].statistic == "mean"


def test_prompt_clip_score_skips_without_prompts():
    inputs = ImageGenerationInputs(features(5), features(5), features(5),
                                   np.zeros((5, 0)))
    assert "no prompts" in get_metric("prompt_clip_score")(inputs).skipped
