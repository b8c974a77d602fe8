"""Image-text matching: score (image, text) pairs as match / no match.

Pairs are the dataset's own (with 0/1 labels) or built from captions: every caption is a
positive for its image, and negatives pair the image with captions of other images, drawn at
random (seeded) or hard (the most similar caption of another image under a dual encoder). The
threshold is given, or chosen on a seeded held-out share of the images and applied to the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvalConfig, ModelConfig
from tasks.data.base import DatasetRef, write_parquet
from tasks.inference import InferenceRef, run_sharded
from tasks.kinds.base import Scores, TaskKindSpec, register_task_kind, run_metrics
from tasks.kinds.retrieval import inference_settings
from tasks.metrics.matching import MatchingInputs, best_threshold
from tasks.metrics.retrieval import l2_normalize
from tasks.models import fingerprint_model, load_adapter
from tasks.tracking.cache import FolderCache

PAIR_COLUMNS = ["pair_id", "item_id", "image_path", "image_sha256", "text", "label", "pair_kind"]


def dataset_pairs(items: pd.DataFrame, label_column: str) -> pd.DataFrame:
    if label_column not in items.columns:
        raise ValueError(f"negatives=dataset needs a 0/1 column {label_column!r} "
                         "(matching.label_column)")
    rows = []
    for item in items.itertuples():
        label = int(float(getattr(item, label_column)))
        rows += [(item.item_id, item.image_path, item.image_sha256, text, label, "dataset")
                 for text in item.captions]
    return _frame(rows)


def caption_pairs(items: pd.DataFrame, negatives: np.ndarray, kind: str) -> pd.DataFrame:
    """Positives from each item's captions; ``negatives[i]`` = caption ids for item i."""
    texts = [c for captions in items["captions"] for c in captions]
    rows = []
    for index, item in enumerate(items.itertuples()):
        rows += [(item.item_id, item.image_path, item.image_sha256, c, 1, "positive")
                 for c in item.captions]
        rows += [(item.item_id, item.image_path, item.image_sha256, texts[t], 0, kind)
                 for t in negatives[index]]
    return _frame(rows)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=PAIR_COLUMNS[1:])
    frame.insert(0, "pair_id", [f"{r[0]}#{n}" for n, r in enumerate(rows)])
    return frame


def _foreign(items: pd.DataFrame) -> tuple[list[str], np.ndarray, list[set[str]]]:
    texts = [c for captions in items["captions"] for c in captions]
    owner = np.repeat(np.arange(len(items)), items["captions"].map(len).to_numpy())
    own_texts = [set(captions) for captions in items["captions"]]
    return texts, owner, own_texts


def random_negatives(items: pd.DataFrame, per_positive: int, seed: int) -> np.ndarray:
    """Caption ids of other images (never a caption identical to one of the image's own)."""
    texts, owner, own = _foreign(items)
    rng = np.random.default_rng(seed)
    out = []
    for index, captions in enumerate(items["captions"]):
        allowed = np.flatnonzero((owner != index) & ~np.isin(texts, list(own[index])))
        count = min(per_positive * len(captions), len(allowed))
        out.append(rng.choice(allowed, size=count, replace=False) if count else np.array([], int))
    return np.array(out, dtype=object)


def hard_negatives(items: pd.DataFrame, per_positive: int, miner: Any) -> np.ndarray:
    """Most similar captions of other images under the ``miner`` dual encoder."""
    texts, owner, own = _foreign(items)
    images = l2_normalize(miner.encode_images(list(items["image_path"])).vectors)
    captions = l2_normalize(miner.encode_texts(texts))
    out = []
    for index in range(len(items)):
        sims = captions @ images[index]
        sims[(owner == index) | np.isin(texts, list(own[index]))] = -np.inf
        count = min(per_positive * len(items["captions"].iloc[index]), int(np.isfinite(sims).sum()))
        out.append(np.argsort(-sims, kind="stable")[:count])
    return np.array(out, dtype=object)


def build_pairs(items: pd.DataFrame, config: EvalConfig, adapter_factory) -> pd.DataFrame:
    settings = config.matching
    if settings.negatives == "dataset":
        return dataset_pairs(items, settings.label_column)
    if settings.negatives == "random":
        negatives = random_negatives(items, settings.negatives_per_positive, config.seed)
        return caption_pairs(items, negatives, "random")
    if config.model.kind == "dual_encoder":
        miner = adapter_factory()
    elif settings.hard_negative_model:
        miner = load_adapter(ModelConfig(path=settings.hard_negative_model,
                                         device=config.model.device))
    else:
        raise ValueError("hard negatives need a dual encoder: set matching.hard_negative_model")
    return caption_pairs(items, hard_negatives(items, settings.negatives_per_positive, miner),
                         "hard")


def infer(dataset: DatasetRef, config: EvalConfig, cache_root: Path, progress=None) -> InferenceRef:
    items = dataset.load_items()
    adapter = None

    def model():
        nonlocal adapter
        adapter = adapter or load_adapter(config.model, list(items["image_path"]))
        return adapter

    pairs = build_pairs(items, config, model)

    def compute(shard: pd.DataFrame, folder: Path) -> dict[str, Any]:
        scored = model().score_pairs(list(shard["image_path"]), list(shard["text"]),
                                     progress=progress, workers=config.inference.num_workers)
        np.save(folder / "scores.npy", scored.scores)
        return {"failures": scored.failures}

    ref = run_sharded(
        pairs, task="matching", model_fingerprint=fingerprint_model(config.model, dataset.digest),
        settings=inference_settings(config),
        shard_key=lambda shard: [(r.image_sha256, r.text) for r in shard.itertuples()],
        compute=compute, cache=FolderCache(cache_root), shard_size=config.inference.shard_size,
        use_cache=config.inference.cache,
    )
    pairs_path = Path(dataset.items_path).with_name("pairs.parquet")
    write_parquet(pairs.drop(columns=["image_sha256"]), pairs_path)
    ref.info["pairs_path"] = str(pairs_path)
    return ref


def calibration_split(item_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over pairs: True where the pair's image is in the calibration share."""
    unique = item_ids.unique()
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * len(unique)))
    held = set(rng.choice(unique, size=count, replace=False))
    return item_ids.isin(held).to_numpy()


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    pairs = pd.read_parquet(inference.info["pairs_path"])
    scores = np.concatenate([np.load(Path(f) / "scores.npy") for f in inference.shard_folders])
    ok = np.array([i not in inference.failures for i in range(len(pairs))])
    settings = config.matching
    calibration = np.zeros(len(pairs), dtype=bool)
    threshold = settings.threshold
    if threshold is None:
        calibration = calibration_split(pairs["item_id"], settings.calibration_fraction,
                                        config.seed) & ok
        threshold = best_threshold(pairs["label"].to_numpy()[calibration], scores[calibration])
    evaluated = ok & ~calibration
    inputs = MatchingInputs(list(pairs["pair_id"][evaluated]),
                            pairs["label"].to_numpy()[evaluated], scores[evaluated], threshold)
    run = run_metrics("matching", config.metrics, inputs, config.metric_options)

    table = pairs.copy()
    table["score"] = scores
    table["status"] = np.where(evaluated, "scored", np.where(ok, "calibration", "failed"))
    table["reason"] = [inference.failures.get(i, "") for i in range(len(pairs))]
    for name, values in run.per_sample.items():
        column = np.full(len(pairs), np.nan)
        column[evaluated] = values
        table[name] = column
    # reports show the image's captions next to the pair's text
    captions = dataset.load_items().set_index("item_id")["captions"]
    table["captions"] = table["item_id"].map(captions)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out / "per_sample.parquet")
    counts = {"pairs": len(pairs), "pairs_scored": int(evaluated.sum()),
              "calibration_pairs": int((calibration & ok).sum()), "failed": int((~ok).sum()),
              "positives": int(pairs["label"].sum())}
    return Scores(
        metrics=run.metrics, higher_is_better=run.higher_is_better | {"threshold": True},
        per_sample_path=str(out / "per_sample.parquet"), review_column="correct",
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings, counts=counts,
        details={"threshold": threshold, "pairs": json.loads(pairs["pair_kind"].value_counts()
                                                             .to_json())},
    )


register_task_kind(TaskKindSpec(
    name="matching", infer=infer, score=score,
    display_columns=("text", "label", "score", "correct"),
    model_kinds=("dual_encoder", "itm", "torch_module"),
    count_inputs=lambda items, config: int(items["captions"].map(len).sum()) * (
        1 if config.matching.negatives == "dataset" else
        1 + config.matching.negatives_per_positive),
))
