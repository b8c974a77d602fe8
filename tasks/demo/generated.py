"""A stand-in for a text-to-image generator's output, for the demo's ``text_to_image`` runs.

"Generated" images are benchmark images of the *train* split with their first caption as the
prompt (a perfect generator would draw images like these); the references are the *test*
split's images. A degraded copy of the same "generated" set (blur + JPEG, the robustness
sweep's own corruptions) is what a worse generator would produce, so FID and KID must tell the
two apart. Files are written once (atomically) and reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tasks.demo.benchmark import load_manifest
from tasks.robustness.corruptions import corrupt, png_bytes
from tasks.robustness.variants import atomic_write

DEGRADATIONS = (("gaussian_blur", 4), ("jpeg", 5))


@dataclass(frozen=True)
class GeneratedSets:
    clean: Path  # manifest of the "generated" images
    degraded: Path  # the same prompts, degraded images
    references: Path  # manifest of the real images


def _degraded(source: Path) -> bytes:
    pixels = Image.open(source).convert("RGB")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    for name, severity in DEGRADATIONS:
        pixels = Image.fromarray(corrupt(pixels, name, severity, seed=0, image_sha256=digest))
    return png_bytes(corrupt(pixels, "gaussian_noise", 1, seed=0, image_sha256=digest))


def write_generated_sets(dataset_root: Path, limit: int = 300) -> GeneratedSets:
    """The clean and degraded "generated" manifests (``limit`` train images) under
    ``dataset_root/generated``, their image paths relative to ``dataset_root`` (the dataset's
    ``root``); the test manifest is the reference set."""
    folder = dataset_root / "generated"
    clean, degraded = folder / "clean.jsonl", folder / "degraded.jsonl"
    sets = GeneratedSets(clean, degraded, dataset_root / "test.jsonl")
    if clean.exists() and degraded.exists():
        return sets
    records = load_manifest(dataset_root / "train.jsonl")[:limit]
    clean_rows, degraded_rows = [], []
    for record in records:
        prompt = record["captions"][0]
        clean_rows.append({"id": record["id"], "prompt": prompt, "image": record["image"]})
        target = folder / "degraded" / Path(record["image"]).name
        if not target.exists():
            atomic_write(target, _degraded(dataset_root / record["image"]))
        degraded_rows.append({"id": record["id"], "prompt": prompt,
                              "image": str(target.relative_to(dataset_root))})
    for path, rows in ((degraded, degraded_rows), (clean, clean_rows)):
        atomic_write(path, "".join(json.dumps(row) + "\n" for row in rows).encode())
    return sets
