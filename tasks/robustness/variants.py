"""Variants of a run's dataset: the same items with corrupted images, or with perturbed texts.

A variant is an ordinary ``DatasetRef`` (its own items.parquet; the clean run's rejects), so the
task kind's own inference and scoring run on it unchanged:

- Corruption variant: ``image_path`` points at the corrupted image, written once as PNG into
  ``<work_dir>/cache/robustness/<code>/<corruption>/<severity>/seed-<seed>/`` under the clean
  file's sha256 (atomically: written aside, then renamed; reused when present), and
  ``image_sha256`` is the corrupted file's own digest. The inference cache, keyed by image
  digests, then keys variants by their content, and a rerun finds both the images and the model
  outputs again. ``<code>`` is the digest of the corruption and image decoding code: a change
  there writes new images. An image that cannot be decoded keeps its original path and digest,
  so inference fails on it again with the same reason.
- Text variant: the kind's text side is perturbed (``TEXT_SIDES``): the captions (retrieval,
  matching), the question column (VQA), or the class templates (zero-shot classification, a
  variant config). Captioning models read no text: their captions are the references.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import EvalConfig, RobustnessConfig, TextPerturbation
from tasks.data.base import DatasetRef, dataset_digest
from tasks.io import DECODE_ERRORS, open_image, write_parquet
from tasks.robustness.corruptions import corrupt, png_bytes
from tasks.robustness.perturbations import perturb_text
from tasks.tracking.fingerprint import PACKAGE_ROOT, code_version

# what shapes a corrupted image: the corruptions and the decoding of the clean image
CORRUPTION_SOURCES = ("robustness/corruptions.py", "io/images.py")
TEMPLATE_PLACEHOLDER = "{}"  # never edited in zero-shot templates


@dataclass(frozen=True)
class Variant:
    """One evaluation of the sweep: a (corruption, severity) or a text perturbation."""

    label: str  # folder name and MLflow key part: "gaussian_noise.3", "text.char_swap"
    corruption: str | None = None
    severity: int | None = None
    text: TextPerturbation | None = None
    text_label: str | None = None  # the perturbation's key part (name, or name-rate-window)


def plan_variants(settings: RobustnessConfig) -> list[Variant]:
    """Every corruption at every severity, then every distinct text perturbation."""
    variants = [Variant(f"{name}.{severity}", corruption=name, severity=severity)
                for name in dict.fromkeys(settings.corruptions)
                for severity in settings.severities]
    distinct = list({(p.name, p.rate, p.window): p for p in settings.text}.values())
    for perturbation in distinct:
        label = text_label(perturbation, distinct)
        variants.append(Variant(f"text.{label}", text=perturbation, text_label=label))
    return variants


def text_label(perturbation: TextPerturbation, all_text: list[TextPerturbation]) -> str:
    """The perturbation's name; name-<rate> when the name is configured at several rates, plus
    -w<window> for word_shuffle at several windows (MLflow-safe: ``[\\w.-]``)."""
    same = [p for p in all_text if p.name == perturbation.name]
    if len(same) == 1:
        return perturbation.name
    label = f"{perturbation.name}-{perturbation.rate:g}"
    if len({p.window for p in same if p.rate == perturbation.rate}) > 1:
        label += f"-w{perturbation.window}"
    return re.sub(r"[^\w.\-]", "_", label)


# -- corrupted images -------------------------------------------------------------------------


@dataclass
class ImageCounts:
    written: int = 0
    reused: int = 0
    undecodable: int = 0  # kept as they were: inference fails on them with the same reason


def image_store(cache_root: Path, corruption: str, severity: int, seed: int) -> Path:
    """Where the corrupted images of one (corruption, severity, seed) live."""
    return (cache_root / "robustness" / code_version(PACKAGE_ROOT, CORRUPTION_SOURCES)
            / corruption / str(severity) / f"seed-{seed}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def corrupted_file(path: str, sha256: str, corruption: str, severity: int, seed: int,
                   store: Path) -> tuple[str, str, str]:
    """(path, sha256, outcome) of the corrupted image of ``path`` (outcome written / reused /
    undecodable; an undecodable image keeps its path and digest)."""
    target = store / sha256[:2] / f"{sha256}.png"
    if target.is_file():
        return str(target), hashlib.sha256(target.read_bytes()).hexdigest(), "reused"
    try:
        image = open_image(path)
    except DECODE_ERRORS:
        return path, sha256, "undecodable"
    data = png_bytes(corrupt(image, corruption, severity, seed=seed, image_sha256=sha256))
    atomic_write(target, data)
    return str(target), hashlib.sha256(data).hexdigest(), "written"


def corrupted_items(items: pd.DataFrame, corruption: str, severity: int, seed: int,
                    store: Path, workers: int) -> tuple[pd.DataFrame, ImageCounts]:
    """The items with every image replaced by its corrupted version (each distinct image
    corrupted once)."""
    images = list(dict.fromkeys(zip(items["image_path"], items["image_sha256"], strict=True)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda image: corrupted_file(image[0], image[1], corruption,
                                                          severity, seed, store), images))
    counts = ImageCounts()
    for _, _, outcome in done:
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    moved = dict(zip(images, done, strict=True))
    out = items.copy()
    keys = list(zip(items["image_path"], items["image_sha256"], strict=True))
    out["image_path"] = [moved[key][0] for key in keys]
    out["image_sha256"] = [moved[key][1] for key in keys]
    return out, counts


# -- text sides -------------------------------------------------------------------------------

Perturb = Callable[[str], str]
TextSide = Callable[[pd.DataFrame, EvalConfig, Perturb], tuple[pd.DataFrame, EvalConfig]]


def _captions(items: pd.DataFrame, config: EvalConfig, perturb: Perturb
              ) -> tuple[pd.DataFrame, EvalConfig]:
    out = items.copy()
    out["captions"] = [[perturb(str(c)) for c in captions] for captions in items["captions"]]
    return out, config


def _question(items: pd.DataFrame, config: EvalConfig, perturb: Perturb
              ) -> tuple[pd.DataFrame, EvalConfig]:
    column = config.vqa.question_column
    if column not in items.columns:
        return items, config  # inference names the missing column
    out = items.copy()
    out[column] = [perturb(str(q)) if isinstance(q, str) else q for q in items[column]]
    return out, config


def _templates(items: pd.DataFrame, config: EvalConfig, perturb: Perturb
               ) -> tuple[pd.DataFrame, EvalConfig]:
    templates = [perturb(t) for t in config.zero_shot.templates]
    zero_shot = config.zero_shot.model_copy(update={"templates": templates})
    return items, config.model_copy(update={"zero_shot": zero_shot})


# task kind -> how its text side is perturbed; kinds without an entry are skipped with a reason
TEXT_SIDES: dict[str, TextSide] = {
    "retrieval": _captions,
    "matching": _captions,
    "vqa": _question,
    "zero_shot_classification": _templates,
}
NO_TEXT_SIDE = {
    "captioning": "captioning models read no text (the captions are the references, which a "
                  "perturbation would only make worse as references)",
}


def text_skip_reason(task: str) -> str | None:
    """Why text perturbations do not apply to ``task`` (None when they do)."""
    if task in TEXT_SIDES:
        return None
    return NO_TEXT_SIDE.get(task, f"no text side is known for task {task!r}")


def text_perturber(perturbation: TextPerturbation, seed: int, protect: str = "") -> Perturb:
    return lambda text: perturb_text(text, perturbation.name, perturbation.rate, seed=seed,
                                     window=perturbation.window, protect=protect)


def perturbed_inputs(items: pd.DataFrame, config: EvalConfig, perturbation: TextPerturbation
                     ) -> tuple[pd.DataFrame, EvalConfig]:
    """The items and config of a text variant (``TEXT_SIDES``)."""
    seed = config.robustness.seed
    protect = TEMPLATE_PLACEHOLDER if config.task.value == "zero_shot_classification" else ""
    side = TEXT_SIDES[config.task.value]
    return side(items, config, text_perturber(perturbation, seed, protect))


# -- the variant dataset ----------------------------------------------------------------------


@dataclass
class VariantData:
    dataset: DatasetRef
    config: EvalConfig
    images: ImageCounts | None = None


def variant_data(variant: Variant, dataset: DatasetRef, config: EvalConfig, folder: Path,
                 cache_root: Path) -> VariantData:
    """The variant's dataset (items in ``folder``/items.parquet) and config."""
    items = dataset.load_items()
    counts = None
    settings = config.robustness
    if variant.corruption is not None and variant.severity is not None:
        store = image_store(cache_root, variant.corruption, variant.severity, settings.seed)
        items, counts = corrupted_items(items, variant.corruption, variant.severity,
                                        settings.seed, store, config.inference.loader_threads())
    elif variant.text is not None:
        items, config = perturbed_inputs(items, config, variant.text)
    return VariantData(save_items(dataset, items, folder), config, counts)


def save_items(dataset: DatasetRef, items: pd.DataFrame, folder: Path) -> DatasetRef:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "items.parquet"
    write_parquet(items, path)
    return dataclasses.replace(dataset, items_path=str(path), digest=dataset_digest(items))


def describe(variant: Variant) -> dict[str, Any]:
    """The variant as report.json lists it."""
    if variant.text is not None:
        return {"variant": variant.label, "type": "text",
                "perturbation": variant.text.model_dump(mode="json")}
    return {"variant": variant.label, "type": "corruption", "corruption": variant.corruption,
            "severity": variant.severity}
