"""Retrieval scoring at scale from memory-mapped embeddings: wall time and peak RSS.

Writes seeded float32 embeddings to ``.npy`` files in chunks (never the whole matrix in memory):
``--images`` image vectors and ``--captions`` noisy copies of each as captions, dimension
``--dim`` (defaults: 100,000 images x 5 = 500,000 texts at 512, i.e. 205 MB + 1 GB on disk).
Then memory-maps them (``np.load(mmap_mode="r")``) and runs the retrieval metric through the
public entry point the flow uses (``get_metric("retrieval")(RetrievalInputs(...))``): recall@k,
NDCG@k, mAP@k, MRR, ranks and the per-image columns, similarities in bounded blocks.

Prints wall time, peak RSS above the level before the call (sampled, every allocator, and the
resident pages of the memory-mapped files the metric reads), the sizes of the per-sample
outputs, and the corpus metrics. Peak memory is O((images + texts) x dim) for the normalised
copies plus ``BLOCK_BYTES``-sized similarity blocks: never O(images x texts).

Run: ``.venv/bin/python benchmarks/retrieval_scale.py [--images 100000 --captions 5 --dim 512]``
(``--work DIR`` keeps the .npy files and reuses them when the sizes and seed match).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _memory import MIB, load_average, measure, pin_mmap_threshold, rss_bytes

from tasks.metrics import get_metric
from tasks.metrics.base import MetricResult
from tasks.metrics.retrieval import RetrievalInputs

KS = (1, 5, 10)
CHUNK_ROWS = 50_000  # rows generated and written at a time


def write_embeddings(folder: Path, images: int, captions: int, dim: int, noise: float,
                     seed: int) -> tuple[Path, Path, Path]:
    """``images.npy``, ``texts.npy`` (each image's captions: its vector plus Gaussian noise, in
    image order) and ``owner.npy``, written ``CHUNK_ROWS`` image rows at a time."""
    paths = folder / "images.npy", folder / "texts.npy", folder / "owner.npy"
    stamp = folder / "setup.json"
    setup = {"images": images, "captions": captions, "dim": dim, "noise": noise, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == setup:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    image_file = np.lib.format.open_memmap(paths[0], "w+", np.float32, (images, dim))
    text_file = np.lib.format.open_memmap(paths[1], "w+", np.float32, (images * captions, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, images, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, images)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        image_file[start:stop] = block
        for caption in range(captions):  # one caption of every image in the chunk at a time
            rows = np.arange(start, stop) * captions + caption
            text_file[rows] = block + rng.standard_normal(block.shape, dtype=np.float32) * noise
    image_file.flush()
    text_file.flush()
    del image_file, text_file
    np.save(paths[2], np.repeat(np.arange(images, dtype=np.int64), captions))
    stamp.write_text(json.dumps(setup))
    return paths


def score(paths: tuple[Path, Path, Path]) -> MetricResult:
    """The metric on memory-mapped embeddings, as the flow calls it."""
    images, texts, owner = (np.load(path, mmap_mode="r") for path in paths)
    return get_metric("retrieval")(RetrievalInputs(images, texts, np.asarray(owner)),
                                   ks=list(KS))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=6.0,
                        help="caption noise scale (higher = harder retrieval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the .npy files (default: a temporary one)")
    parser.add_argument("--mmap-threshold", type=int, default=131072, metavar="BYTES",
                        help="pin glibc's mmap threshold so peak RSS follows live allocations "
                        "(0 = glibc default)")
    return parser.parse_args()


def report(args: argparse.Namespace, result: MetricResult, seconds: float, peak: int,
           baseline: int) -> None:
    texts = args.images * args.captions
    print(f"wall time: {seconds:.1f} s   peak RSS above baseline: {peak / MIB:,.0f} MiB "
          f"({peak / 1024**3:.2f} GiB; process baseline {baseline / MIB:,.0f} MiB)")
    inputs = (args.images + texts) * args.dim * 4
    print(f"inputs on disk {inputs / MIB:,.0f} MiB; an images x texts float32 matrix would be "
          f"{args.images * texts * 4 / 1024**3:,.1f} GiB")
    sizes = {key: value.nbytes for key, value in result.per_sample.items()}
    print(f"per-sample outputs: {len(sizes)} arrays, {sum(sizes.values()) / MIB:,.1f} MiB in all "
          f"(largest {max(sizes, key=sizes.__getitem__)}: {max(sizes.values()) / MIB:,.1f} MiB)")
    for key, value in result.corpus.items():
        print(f"  {key:<22} {value:.5f}")


def main() -> None:
    args = parse_args()
    if args.mmap_threshold and not pin_mmap_threshold(args.mmap_threshold):
        raise SystemExit("cannot set the mmap threshold (not glibc?)")
    with tempfile.TemporaryDirectory(prefix="retrieval-scale-") as tmp:
        folder = args.work or Path(tmp)
        paths = write_embeddings(folder, args.images, args.captions, args.dim, args.noise,
                                 args.seed)
        print(f"retrieval scale: {args.images:,} images x {args.images * args.captions:,} texts, "
              f"dim {args.dim}, float32, memory-mapped from {folder}; load {load_average()}")
        baseline = rss_bytes()
        measured = measure(lambda: score(paths))
        report(args, measured.value, measured.seconds, measured.peak_bytes, baseline)
    print(f"load at the end: {load_average()}")


if __name__ == "__main__":
    main()
