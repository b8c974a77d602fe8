"""Matching inference: build the (image, text) pairs, then score them in cached shards.

Pairs are the dataset's own (with 0/1 labels) or built from captions: every caption is a
positive for its image, and negatives pair the image with captions of other images, drawn at
random (seeded) or hard (the most similar caption of another image under a dual encoder, run
with the evaluation's device, dtype, batch size and autocast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.arrays import flatten_cells, l2_normalize, owners
from tasks.config import EvalConfig
from tasks.io import write_parquet
from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput
from tasks.models import load_adapter
from tasks.models.contracts import ImageTextEncoder, PairScorer


def count_inputs(items: pd.DataFrame, config: EvalConfig) -> int:
    per_caption = 1 if config.matching.negatives == "dataset" else \
        1 + config.matching.negatives_per_positive
    return int(items["captions"].map(len).sum()) * per_caption


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
    texts = flatten_cells(items["captions"])
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
    texts = flatten_cells(items["captions"])
    owner = owners(items["captions"].map(len).to_numpy())
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


def hard_negatives(items: pd.DataFrame, per_positive: int, miner: ImageTextEncoder
                   ) -> np.ndarray:
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


def make_pairs(items: pd.DataFrame, config: EvalConfig,
               miner: Callable[[], ImageTextEncoder]) -> pd.DataFrame:
    """The pairs ``matching.negatives`` asks for: the dataset's, seeded random negatives, or
    hard negatives mined by ``miner()`` (called only then)."""
    settings = config.matching
    if settings.negatives == "dataset":
        return dataset_pairs(items, settings.label_column)
    if settings.negatives == "random":
        negatives = random_negatives(items, settings.negatives_per_positive, config.seed)
        return caption_pairs(items, negatives, "random")
    negatives = hard_negatives(items, settings.negatives_per_positive, miner())
    return caption_pairs(items, negatives, "hard")


def build_pairs(run: Inference) -> pd.DataFrame:
    return make_pairs(run.items, run.config, lambda: _miner(run))


def _miner(run: Inference) -> ImageTextEncoder:
    """The evaluated dual encoder, or ``hard_negative_model`` run with the evaluation's device,
    dtype, batch size and autocast."""
    if run.config.model.kind == "dual_encoder":
        return run.adapter(ImageTextEncoder)
    return hard_negative_miner(run.config)


def hard_negative_miner(config: EvalConfig) -> ImageTextEncoder:
    """``matching.hard_negative_model`` loaded as a dual encoder with the evaluation's device,
    dtype, batch size and autocast."""
    if not config.matching.hard_negative_model:
        raise ValueError("hard negatives need a dual encoder: set matching.hard_negative_model")
    miner = config.model.model_copy(update={
        "kind": "dual_encoder", "path": config.matching.hard_negative_model, "revision": None,
        "torch_module": None})
    adapter = load_adapter(miner)
    assert isinstance(adapter, ImageTextEncoder)
    return adapter


def infer(run: Inference) -> InferenceRef:
    pairs = build_pairs(run)

    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        scored = run.adapter(PairScorer).score_pairs(
            list(shard["image_path"]), list(shard["text"]), progress=run.progress,
            workers=run.workers)
        np.save(folder / "scores.npy", scored.scores)
        return ShardOutput(scored.failures)

    ref = run.shards(pairs, task="matching", compute=compute,
                     key=lambda shard: [(r.image_sha256, r.text) for r in shard.itertuples()])
    pairs_path = Path(run.dataset.items_path).with_name("pairs.parquet")
    write_parquet(pairs.drop(columns=["image_sha256"]), pairs_path)
    ref.pairs_path = str(pairs_path)
    return ref
