"""Text-to-image scoring: FID, KID and precision/recall between the generated and the reference
image features, CLIPScore of each generated image against its prompt.

Generated images whose decoding failed, and reference images whose features failed, leave the
feature sets (with their reasons in the per-sample and reference tables). The per-sample table
has one row per generated image: its ``prompt`` (first caption), ``clip_score``,
``in_reference_manifold`` (0/1: inside the k-NN manifold of the references; its mean is the
precision), ``nearest_reference_distance`` and ``nearest_reference`` (the id of the closest
reference image in feature space: a near-copy of a reference shows here). The reference table
(``per_sample_references``) lists every reference row: usable, failed or rejected, with its
reason, and ``covered`` (inside the generated images' k-NN manifold; its mean is the recall).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.arrays import l2_normalize
from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.base import InferenceRef, Scores
from tasks.kinds.scoring import (
    bootstrap_settings,
    ok_mask,
    per_item_table,
    score_metrics,
    with_intervals,
    write_per_sample,
)
from tasks.kinds.sharded import load_arrays
from tasks.kinds.text_to_image.infer import TextToImageRef
from tasks.metrics.image_generation import ImageGenerationInputs, fid_bootstrap_interval


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    if not isinstance(inference, TextToImageRef) or inference.references is None:
        raise ValueError("text_to_image scoring needs the inference of task text_to_image")
    items = dataset.load_items()
    ok = ok_mask(len(items), inference.failures)
    references = pd.read_parquet(inference.reference_table_path)
    usable = references["status"] == "usable"
    reference_ok = ok_mask(int(usable.sum()), inference.references.failures)
    inputs = _inputs(inference, config, ok, reference_ok)
    run = score_metrics("text_to_image", inputs, config)
    extra = run.extra.get("precision_recall", {})
    table = per_item_table(items, ok, inference.failures, run.per_sample)
    table = _with_prompts(table, items)
    used_ids = references.loc[usable, "item_id"].to_numpy()[reference_ok]
    table["nearest_reference"] = None
    if "nearest_reference" in extra:
        table.loc[ok, "nearest_reference"] = used_ids[extra["nearest_reference"]]
    metrics = with_intervals(run, table, config)
    if config.text_to_image.fid_interval and "fid" in run.metrics:
        metrics |= _fid_interval(inputs, config, run.warnings)
    references = _reference_status(references, usable, reference_ok, inference.references,
                                   extra.get("reference_covered"))
    return Scores(
        metrics=metrics, higher_is_better=run.higher_is_better,
        estimates=run.estimates, per_sample_path=write_per_sample(table, out),
        extra_tables={"references": write_per_sample(references, out,
                                                     "per_sample_references")},
        review_column="clip_score" if "clip_score" in run.per_sample else "status",
        review_worst_is_high=False, skipped=run.skipped,
        warnings=run.warnings + _warnings(items, inference, references),
        counts={"images_scored": int(ok.sum()), "failed": int((~ok).sum()),
                "references_used": int(reference_ok.sum()),
                "references_unusable": int((references["status"] != "usable").sum())},
    )


def _inputs(inference: TextToImageRef, config: EvalConfig, ok: np.ndarray,
            reference_ok: np.ndarray) -> ImageGenerationInputs:
    """The scored rows' features (normalised when configured) and embeddings."""
    settings = config.text_to_image
    assert inference.references is not None
    images = load_arrays(inference, "image_embeddings", ok)
    prompts = load_arrays(inference, "prompt_embeddings", ok)
    generated = load_arrays(inference, "inception_features", ok) \
        if settings.features == "inception" else images
    reference = load_arrays(inference.references, "features", reference_ok)
    if settings.normalize_features:
        generated, reference = (l2_normalize(generated, np.float64),
                                l2_normalize(reference, np.float64))
    return ImageGenerationInputs(np.asarray(generated, np.float64),
                                 np.asarray(reference, np.float64), images,
                                 prompts if prompts.shape[1] else None)


def _with_prompts(table: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """A ``prompt`` column (each item's first caption) when the items have captions; a
    metadata column of that name becomes ``source_prompt``."""
    prompts = [c[0] if len(c) else "" for c in items["captions"]]
    if not any(prompts):
        return table
    table = table.rename(columns={"prompt": "source_prompt"})
    table.insert(3, "prompt", prompts)
    return table


def _fid_interval(inputs: ImageGenerationInputs, config: EvalConfig,
                  warnings: list[str]) -> dict[str, float]:
    interval = fid_bootstrap_interval(inputs.generated, inputs.references,
                                      bootstrap_settings(config))
    if not (np.isfinite(interval.low) and np.isfinite(interval.high)):
        warnings.append("no confidence interval for fid (fewer than 2 generated images or "
                        "statistics.bootstrap is 0)")
        return {}
    return {"fid_ci_low": interval.low, "fid_ci_high": interval.high}


def _reference_status(references: pd.DataFrame, usable: pd.Series, reference_ok: np.ndarray,
                      inference: InferenceRef, covered: np.ndarray | None) -> pd.DataFrame:
    """Usable references whose features failed become ``failed`` with the reason; ``covered``
    is 1/0 for the references used (NaN for the others)."""
    rows = np.flatnonzero(usable.to_numpy())
    for position, reason in inference.failures.items():
        references.loc[rows[position], ["status", "reason"]] = ["failed", reason]
    column = np.full(len(references), np.nan)
    if covered is not None:
        column[rows[reference_ok]] = covered.astype(np.float64)
    references["covered"] = column
    return references


def _warnings(items: pd.DataFrame, inference: TextToImageRef,
              references: pd.DataFrame) -> list[str]:
    out = []
    unusable = references[references["status"] != "usable"]
    if len(unusable):
        first = unusable["reason"].iloc[0]
        out.append(f"{len(unusable)} reference image(s) not used (see per_sample_references); "
                   f"the first: {first}")
    several = int((items["captions"].map(len) > 1).sum())
    if several:
        out.append(f"{several} item(s) have more than one caption: the first is the prompt")
    if inference.truncated_texts:
        out.append(f"{inference.truncated_texts} prompt(s) longer than the text encoder's "
                   "context were truncated")
    return out
