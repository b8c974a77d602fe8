"""Text-to-image quality: FID, KID, precision/recall of the generated distribution, and the
CLIPScore of each generated image against its prompt.

Every metric reads image *features* computed by inference (the evaluated dual encoder's image
embeddings, or Inception-v3 pool features): ``ImageGenerationInputs.generated`` (one row per
scored generated image) and ``references`` (one row per usable reference image).

- **FID** (Heusel et al. 2017): the Fréchet distance of the two Gaussians fitted to the
  features, ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))``, through torchmetrics'
  ``FrechetInceptionDistance`` with a ``feature`` module that passes the precomputed features
  through (``PrecomputedFeatures``, float64); the features are fed in ``batch_size`` rows at a
  time, and the result does not depend on that size (the metric keeps float64 sums).
- **KID** (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size``
  rows of each set (torchmetrics' ``KernelInceptionDistance``; ``kid_std`` is the standard
  deviation over the subsets). The subsets are drawn from a seeded generator (``seed``); a
  ``subset_size`` larger than either set is lowered to the smaller set's size, with a warning.
- **precision / recall** (Kynkäänniemi et al. 2019, k = 3): each feature vector gets the radius
  of its k-th nearest neighbour within its own set; a generated image is *in the reference
  manifold* when it lies within the radius of some reference image (precision is the share of
  such generated images), and recall is the share of reference images within the radius of
  some generated image. Euclidean distances, computed in blocks of bounded memory.
- **clip_score**: CLIP-S of Hessel et al. 2021, ``w · max(cos(image, prompt), 0)`` with
  ``w = 2.5``, from the run model's embeddings of the generated image and its prompt (no
  prefix: the prompt is the text the image was generated from; ``w: 100`` gives torchmetrics'
  ``CLIPScore`` scale).

Per-sample values: ``clip_score`` and ``in_reference_manifold`` (0/1) per generated image, so
CLIPScore and precision get bootstrap intervals over the generated images (references fixed).
FID and KID are distances between two sets and have no per-item value; an FID interval is the
optional ``fid_interval`` bootstrap (``fid_bootstrap_interval``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.clip_score import W, clip_scores
from tasks.stats.bootstrap import BootstrapSettings, Interval, bootstrap_indices
from tasks.stats.estimates import mean

BLOCK_BYTES = 64 * 2**20  # float64 distance blocks of the k-NN metrics


@dataclass
class ImageGenerationInputs:
    generated: np.ndarray  # (n, d) features of the scored generated images
    references: np.ndarray  # (m, d) features of the usable reference images
    image_embeddings: np.ndarray | None = None  # (n, e) dual-encoder embeddings (CLIPScore)
    prompt_embeddings: np.ndarray | None = None  # (n, e) embeddings of each image's prompt


# ---- torchmetrics with precomputed features -----------------------------------------------


def precomputed_features(width: int) -> Any:
    """The ``feature`` module handed to torchmetrics: its inputs already are the features
    (rows of ``width`` values); it returns them as float64 (torchmetrics casts FID to the
    features' dtype)."""
    import torch

    class PrecomputedFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_features = width

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features.to(torch.float64)

    return PrecomputedFeatures()


def _batches(features: np.ndarray, batch_size: int) -> Iterator[Any]:
    import torch

    for start in range(0, len(features), max(1, batch_size)):
        yield torch.from_numpy(np.ascontiguousarray(features[start:start + batch_size],
                                                    dtype=np.float64))


def fid_value(generated: np.ndarray, references: np.ndarray, batch_size: int = 64) -> float:
    """FID of two feature sets (at least two rows each) through torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=precomputed_features(generated.shape[1]))
    for batch in _batches(references, batch_size):
        metric.update(batch, real=True)
    for batch in _batches(generated, batch_size):
        metric.update(batch, real=False)
    return float(metric.compute())


def kid_values(generated: np.ndarray, references: np.ndarray, subsets: int, subset_size: int,
               degree: int = 3, gamma: float | None = None, coef: float = 1.0, seed: int = 0,
               batch_size: int = 64) -> tuple[float, float]:
    """(mean, std) of KID over the subsets, through torchmetrics; the subsets are drawn from
    torch's generator seeded with ``seed`` (the global generator's state is restored)."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # "will save all extracted features": they are small here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=precomputed_features(generated.shape[1]), subsets=subsets,
            subset_size=subset_size, degree=degree,
            gamma=None if gamma is None else float(gamma), coef=float(coef))
    for batch in _batches(references, batch_size):
        metric.update(batch, real=True)
    for batch in _batches(generated, batch_size):
        metric.update(batch, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = metric.compute()
    return float(kid_mean), float(kid_std)


# ---- FID bootstrap (numpy) -----------------------------------------------------------------


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of the rows (float64)."""
    x = np.asarray(features, np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))``, the trace of the square root
    as the sum of the square roots of the eigenvalues of ``S1 S2`` (as torchmetrics does)."""
    root = np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * root)


def fid_bootstrap_interval(generated: np.ndarray, references: np.ndarray,
                           settings: BootstrapSettings) -> Interval:
    """Bootstrap interval of FID over the generated images, the references' Gaussian held
    fixed (the reference set is the yardstick, the generated set the sample under test).
    Each resample costs one ``d x d`` eigen-decomposition."""
    x = np.asarray(generated, np.float64)
    mu_r, sigma_r = gaussian(references)
    n = len(x)

    def statistic(indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices))
        for row, chosen in enumerate(indices):
            counts = np.bincount(chosen, minlength=n).astype(np.float64)
            mu = counts @ x / n
            sigma = ((x * counts[:, None]).T @ x - n * np.outer(mu, mu)) / (n - 1)
            out[row] = frechet_distance(mu, sigma, mu_r, sigma_r)
        return out

    return bootstrap_indices(n, statistic, settings)


# ---- k-NN manifolds (Kynkäänniemi et al. 2019) ---------------------------------------------


def _distance_blocks(queries: np.ndarray, points: np.ndarray
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, Euclidean distances of a block of query rows to every point)."""
    q = np.asarray(queries, np.float64)
    p = np.asarray(points, np.float64)
    q_norms, p_norms = (q ** 2).sum(axis=1), (p ** 2).sum(axis=1)
    step = max(1, BLOCK_BYTES // (8 * max(len(p), 1)))
    for start in range(0, len(q), step):
        block = q[start:start + step]
        squared = q_norms[start:start + step, None] + p_norms[None, :] - 2 * block @ p.T
        yield start, np.sqrt(np.maximum(squared, 0.0))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Per row, the distance to its k-th nearest neighbour among the other rows (the row
    itself, at distance 0, is not counted); needs more than ``k`` rows."""
    radii = np.empty(len(features))
    for start, distances in _distance_blocks(features, features):
        rows = np.arange(start, start + len(distances))
        distances[np.arange(len(distances)), rows] = -np.inf  # self always sorts first
        radii[rows] = np.partition(distances, k, axis=1)[:, k]
    return radii


def manifold_membership(queries: np.ndarray, points: np.ndarray, radii: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: whether it lies within ``radii[i]`` of some point ``i`` (the k-NN manifold),
    the distance to its nearest point and that point's index."""
    inside = np.zeros(len(queries), dtype=bool)
    nearest = np.zeros(len(queries), dtype=np.int64)
    distance = np.zeros(len(queries))
    for start, distances in _distance_blocks(queries, points):
        rows = slice(start, start + len(distances))
        inside[rows] = (distances <= radii[None, :]).any(axis=1)
        nearest[rows] = distances.argmin(axis=1)
        distance[rows] = distances.min(axis=1)
    return inside, distance, nearest


# ---- registered metrics --------------------------------------------------------------------


def _too_few(inputs: ImageGenerationInputs, least: int, name: str) -> str | None:
    generated, references = len(inputs.generated), len(inputs.references)
    if min(generated, references) < least:
        return (f"{name} needs at least {least} generated and {least} reference images with "
                f"features (got {generated} and {references})")
    return None


@register_metric("fid", task="text_to_image", outputs={"fid": False})
def fid(inputs: ImageGenerationInputs, batch_size: int = 64) -> MetricResult:
    """Fréchet distance between the generated and reference feature distributions."""
    reason = _too_few(inputs, 2, "FID")
    if reason:
        return MetricResult.skip(reason)
    width, fewest = inputs.generated.shape[1], min(len(inputs.generated),
                                                   len(inputs.references))
    notes = [] if fewest > width else [
        f"{fewest} images for {width} feature dimensions: the covariances are singular and FID "
        "is biased upwards; compare FIDs only at equal set sizes"]
    return MetricResult(corpus={"fid": fid_value(inputs.generated, inputs.references,
                                                 batch_size)}, extra={"warnings": notes})


@register_metric("kid", task="text_to_image", outputs={"kid": False, "kid_std": False})
def kid(inputs: ImageGenerationInputs, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, gamma: float | None = None, coef: float = 1.0, seed: int = 0,
        batch_size: int = 64) -> MetricResult:
    """Kernel (Inception) distance: unbiased MMD² with a polynomial kernel over subsets."""
    reason = _too_few(inputs, 2, "KID")
    if reason:
        return MetricResult.skip(reason)
    if subsets < 1 or subset_size < 2 or degree < 1 or coef <= 0 or (gamma is not None
                                                                     and gamma <= 0):
        raise ValueError("kid needs subsets >= 1, subset_size >= 2, degree >= 1, coef > 0 and "
                         "gamma > 0 (or null)")
    size = min(subset_size, len(inputs.generated), len(inputs.references))
    notes = [] if size == subset_size else [
        f"subset_size {subset_size} lowered to {size}, the size of the smaller image set"]
    value, spread = kid_values(inputs.generated, inputs.references, subsets, size, degree,
                               gamma, coef, seed, batch_size)
    return MetricResult(corpus={"kid": value, "kid_std": spread}, extra={"warnings": notes,
                                                                         "subset_size": size})


@register_metric("precision_recall", task="text_to_image",
                 outputs={"precision": True, "recall": True})
def precision_recall(inputs: ImageGenerationInputs, k: int = 3) -> MetricResult:
    """Improved precision and recall (k-NN manifolds of Kynkäänniemi et al. 2019)."""
    if k < 1:
        raise ValueError("precision_recall needs k >= 1")
    reason = _too_few(inputs, k + 1, f"precision/recall with k={k}")
    if reason:
        return MetricResult.skip(reason)
    generated, references = inputs.generated, inputs.references
    inside, distance, nearest = manifold_membership(generated, references,
                                                    knn_radii(references, k))
    covered, _, _ = manifold_membership(references, generated, knn_radii(generated, k))
    per_sample = {"in_reference_manifold": inside.astype(np.float64),
                  "nearest_reference_distance": distance}
    return MetricResult(
        corpus={"precision": float(inside.mean()), "recall": float(covered.mean())},
        per_sample=per_sample, estimates={"precision": mean("in_reference_manifold")},
        extra={"nearest_reference": nearest, "reference_covered": covered})


@register_metric("prompt_clip_score", task="text_to_image", outputs={"clip_score": True})
def prompt_clip_score(inputs: ImageGenerationInputs, w: float = W) -> MetricResult:
    """CLIPScore of each generated image against its prompt (the run model's embeddings)."""
    if inputs.image_embeddings is None or inputs.prompt_embeddings is None \
            or inputs.prompt_embeddings.shape[1] == 0:
        return MetricResult.skip("no prompts: map dataset.columns.captions to the prompt "
                                 "column")
    if len(inputs.image_embeddings) == 0:
        return MetricResult.skip("no scored generated images")
    scores = clip_scores(inputs.image_embeddings, inputs.prompt_embeddings, w=w)["clip_score"]
    return MetricResult(corpus={"clip_score": float(scores.mean())},
                        per_sample={"clip_score": scores}, estimates={"clip_score":
                                                                     mean("clip_score")})
