"""Retrieval scoring: ``get_metric("retrieval")`` vs the CLIP_benchmark protocol (baseline).

The baseline is an independent implementation of the algorithm LAION's CLIP_benchmark uses
for zero-shot retrieval: the full ``texts x images`` score matrix and a boolean positive-pairs
matrix are materialised, then for every batch of queries ``torch.topk`` -> ``one_hot`` over all
candidates -> AND with the positives -> sum -> ``> 0``. ``image_retrieval_recall@k`` (queries
are texts) is our ``t2i_recall_at_k``; ``text_retrieval_recall@k`` (queries are images) is our
``i2t_recall_at_k``.

The metric also computes NDCG@k, mAP@k and MRR both ways from the same similarity blocks. A third
timing, "ranks only", runs just the rank computations the recalls need (the metric's code path
before the ranking metrics existed), so ``ours / ranks only`` is their cost. Their values are
checked against torchmetrics' functional NDCG / AP / RR on a sample of queries (AP rescaled
from torchmetrics' "relevant items found" normaliser to our ``min(R, k)``).

Run: ``.venv/bin/python benchmarks/retrieval_scoring.py [--images 5000 --captions 5 ...]``.
Prints wall time, peak RSS above the pre-call level, the speed ratio (baseline / ours), the
ranking-metric overhead (ours / ranks only), the largest absolute difference between the recall
values of the two (expected: 0) and between our per-query ranking values and torchmetrics'
(expected: float32 rounding, < 1e-5).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from _memory import MIB, Measured, load_average, measure, pin_mmap_threshold

from tasks.arrays import l2_normalize
from tasks.metrics import get_metric
from tasks.metrics import retrieval as retrieval_module
from tasks.metrics.base import MetricResult
from tasks.metrics.retrieval import RetrievalInputs

KS = (1, 5, 10)
T = TypeVar("T")


def make_embeddings(
    images: int, captions: int, dim: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random image vectors; each caption is its image's vector plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    image_vectors = rng.standard_normal((images, dim), dtype=np.float32)
    owner = np.repeat(np.arange(images), captions)
    noise_part = rng.standard_normal((len(owner), dim), dtype=np.float32) * np.float32(noise)
    return image_vectors, image_vectors[owner] + noise_part, owner


# --- baseline: the CLIP_benchmark protocol -------------------------------------------------


def recall_at_k(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> torch.Tensor:
    """Per query: share of its positives among the top-k candidates (one-hot formulation)."""
    queries, candidates = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    positives = positive_pairs.sum(dim=1)
    topk_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=candidates)
    reshaped = positive_pairs.view(queries, 1, candidates)
    true_positives = torch.logical_and(topk_onehot, reshaped).sum(dim=(1, 2))
    return true_positives / positives


def batchify(
    func: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int,
    device: str, **kwargs: int,
) -> torch.Tensor:
    """Apply ``func`` to row batches of ``x`` and ``y`` and concatenate the results."""
    results = []
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        results.append(func(x[start:stop].to(device), y[start:stop].to(device), **kwargs).cpu())
    return torch.cat(results)


def baseline_recalls(
    images: np.ndarray, texts: np.ndarray, owner: np.ndarray, batch_size: int,
    device: str = "cpu",
) -> dict[str, float]:
    """CLIP_benchmark-style recall@k; keys use our names (t2i = image retrieval)."""
    image_emb = torch.nn.functional.normalize(torch.from_numpy(images), dim=-1)
    text_emb = torch.nn.functional.normalize(torch.from_numpy(texts), dim=-1)
    scores = text_emb @ image_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(owner)] = True
    out: dict[str, float] = {}
    for k in KS:
        t2i = batchify(recall_at_k, scores, positive_pairs, batch_size, device, k=k) > 0
        i2t = batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, device, k=k) > 0
        # CLIP_benchmark takes a float32 mean; float64 keeps the comparison exact (hits / n).
        out[f"t2i_recall_at_{k}"] = t2i.double().mean().item()
        out[f"i2t_recall_at_{k}"] = i2t.double().mean().item()
    return out


# --- ours ----------------------------------------------------------------------------------


def our_metrics(images: np.ndarray, texts: np.ndarray, owner: np.ndarray) -> MetricResult:
    """The whole retrieval metric: recalls, ranks, NDCG / mAP / MRR, per-image columns."""
    return get_metric("retrieval")(RetrievalInputs(images, texts, owner), ks=list(KS))


def ranks_only(images: np.ndarray, texts: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Recalls and ranks without the ranking metrics (the metric before they were added)."""
    inputs = RetrievalInputs(images, texts, owner)
    image_rows, text_rows = l2_normalize(inputs.image_embeddings), l2_normalize(texts)
    t2i = retrieval_module.text_to_image_ranks(image_rows, text_rows, inputs.text_to_image)
    i2t = retrieval_module.image_to_text_ranks(image_rows, text_rows, inputs.text_to_image)
    retrieval_module.image_statistics(i2t, t2i, inputs.text_to_image, KS)
    return (retrieval_module.summarize_ranks("i2t", i2t[i2t > 0], KS)
            | retrieval_module.summarize_ranks("t2i", t2i, KS))


def ranking_parity(images: np.ndarray, texts: np.ndarray, owner: np.ndarray,
                   result: MetricResult, queries: int, seed: int) -> float:
    """Largest |ours - torchmetrics| over the per-image NDCG@k, AP@k and RR of ``queries``
    sampled images (i2t) and the sums of their captions' t2i values."""
    picked = np.random.default_rng(seed).choice(len(images), queries, replace=False)
    image_rows, text_rows = l2_normalize(images), l2_normalize(texts)
    columns = np.arange(len(images))
    worst = 0.0
    for i in picked:
        own = owner == i
        checks = [("i2t_{}_at_{}", "i2t_rr", image_rows[[i]] @ text_rows.T, own[None, :]),
                  ("t2i_{}_sum_at_{}", "t2i_rr_sum", text_rows[own] @ image_rows.T,
                   np.broadcast_to(columns == i, (int(own.sum()), len(images))))]
        for name, rr_name, scores, relevant in checks:
            for key, value in torchmetrics_sums(scores, relevant).items():
                ours = result.per_sample[rr_name if key == "rr" else name.format(*key.split("@"))]
                worst = max(worst, abs(value - ours[i]))
    return worst


def torchmetrics_sums(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """Sums over the rows (queries) of torchmetrics' NDCG@k, AP@k rescaled from "relevant
    items found in the top k" to ``min(R, k)``, and RR; keys ``ndcg@k``, ``ap@k``, ``rr``.
    Scores are shifted by +2: torchmetrics' AP and RR drop candidates scored <= 0."""
    from torchmetrics.functional.retrieval import (
        retrieval_average_precision,
        retrieval_normalized_dcg,
        retrieval_reciprocal_rank,
    )

    preds = torch.from_numpy(scores.astype(np.float64) + 2.0)
    target = torch.from_numpy(np.ascontiguousarray(relevant))
    sums = dict.fromkeys([f"{m}@{k}" for m in ("ndcg", "ap") for k in KS] + ["rr"], 0.0)
    for p, t in zip(preds, target, strict=True):
        sums["rr"] += retrieval_reciprocal_rank(p, t).item()
        for k in KS:
            found = t[torch.topk(p, k).indices].sum().item()
            sums[f"ndcg@{k}"] += retrieval_normalized_dcg(p, t, top_k=k).item()
            sums[f"ap@{k}"] += (retrieval_average_precision(p, t, top_k=k).item() * found
                                / min(int(t.sum().item()), k))
    return sums


# --- driver --------------------------------------------------------------------------------


def fastest(runs: list[Measured[T]]) -> Measured[T]:
    """Fastest run; peak memory is the largest seen over all runs."""
    best = min(runs, key=lambda run: run.seconds)
    return Measured(best.value, best.seconds, max(run.peak_bytes for run in runs))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="baseline query batch (CLIP_benchmark's default loader batch)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternating runs of each; the fastest is kept")
    parser.add_argument("--noise", type=float, default=6.0,
                        help="caption noise scale (higher = harder retrieval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parity-queries", type=int, default=50,
                        help="sampled images whose ranking values are checked with torchmetrics")
    parser.add_argument("--mmap-threshold", type=int, default=0, metavar="BYTES",
                        help="pin glibc's mmap threshold (e.g. 131072) so peak RSS follows live "
                        "allocations instead of allocator retention; 0 = glibc default")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.mmap_threshold and not pin_mmap_threshold(args.mmap_threshold):
        raise SystemExit("cannot set the mmap threshold (not glibc?)")
    images, texts, owner = make_embeddings(args.images, args.captions, args.dim, args.noise,
                                           args.seed)
    print(f"retrieval scoring: {args.images} images x {len(texts)} texts, dim {args.dim}, "
          f"float32, torch threads {torch.get_num_threads()}, repeat {args.repeat}, "
          f"mmap threshold {args.mmap_threshold or 'glibc default'}; load {load_average()}")
    base_runs, rank_runs, our_runs = [], [], []
    for _ in range(args.repeat):  # alternate, so a change in machine load hits all three
        base_runs.append(measure(lambda: baseline_recalls(images, texts, owner, args.batch_size)))
        rank_runs.append(measure(lambda: ranks_only(images, texts, owner)))
        our_runs.append(measure(lambda: our_metrics(images, texts, owner)))
    base, ranks, ours = fastest(base_runs), fastest(rank_runs), fastest(our_runs)
    report(ours.value, base, ranks, ours, args.batch_size)
    worst = ranking_parity(images, texts, owner, ours.value, args.parity_queries, args.seed)
    print(f"max |ranking value - torchmetrics| over {args.parity_queries} sampled images and "
          f"their captions: {worst:.3g}   (load at the end: {load_average()})")


def report(result: MetricResult, base: Measured[dict[str, float]],
           ranks: Measured[dict[str, float]], ours: Measured[MetricResult],
           batch_size: int) -> None:
    corpus = result.corpus
    recalls = [f"{d}_recall_at_{k}" for d in ("i2t", "t2i") for k in KS]
    width = max(len(k) for k in corpus)
    print(f"  {'metric':<{width}}  {'ours':>8}  {'baseline':>8}")
    for key in recalls:
        print(f"  {key:<{width}}  {corpus[key]:8.5f}  {base.value[key]:8.5f}")
    for key in [f"{d}_{m}_at_{k}" for d in ("i2t", "t2i") for m in ("ndcg", "map") for k in KS]:
        print(f"  {key:<{width}}  {corpus[key]:8.5f}")
    for key in ("i2t_mrr", "t2i_mrr"):
        print(f"  {key:<{width}}  {corpus[key]:8.5f}")
    diff = max(abs(corpus[k] - base.value[k]) for k in recalls)
    print(f"baseline (CLIP_benchmark protocol, batch {batch_size}): "
          f"{base.seconds:8.2f} s  peak +{base.peak_bytes / MIB:8.1f} MiB")
    print(f"ranks only (recalls, no NDCG/mAP/MRR):          "
          f"{ranks.seconds:8.2f} s  peak +{ranks.peak_bytes / MIB:8.1f} MiB")
    print(f"ours (tasks.metrics retrieval):                 "
          f"{ours.seconds:8.2f} s  peak +{ours.peak_bytes / MIB:8.1f} MiB")
    print(f"speed ratio baseline/ours: {base.seconds / ours.seconds:.1f}x   "
          f"peak memory ratio baseline/ours: {base.peak_bytes / max(ours.peak_bytes, MIB):.1f}x")
    print(f"ranking-metric overhead ours/ranks only: time {ours.seconds / ranks.seconds:.2f}x  "
          f"peak memory {ours.peak_bytes / max(ranks.peak_bytes, MIB):.2f}x")
    print(f"max |recall difference|: {diff:.3g}")


if __name__ == "__main__":
    main()
