"""Sharded, fingerprint-cached inference shared by every task kind.

Items are cut into shards of ``shard_size``; each shard's outputs are cached under a key made of
the model fingerprint, the shard's content (image bytes digests and texts), the inference
settings and the inference code version. A rerun with the same inputs loads every shard from the
cache and never loads the model; changing one image recomputes only its shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.tracking.cache import FolderCache
from tasks.tracking.fingerprint import inference_fingerprint, stable_hash


@dataclass
class InferenceRef:
    fingerprint: str  # of the whole dataset's inference
    shard_folders: list[str]
    shards_cached: int
    model_fingerprint: str
    failures: dict[int, str] = field(default_factory=dict)  # item row -> reason
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_hit(self) -> bool:
        return self.shards_cached == len(self.shard_folders)


ShardWriter = Callable[[pd.DataFrame, Path], dict[str, Any]]


def run_sharded(
    items: pd.DataFrame,
    *,
    task: str,
    model_fingerprint: str,
    settings: dict[str, Any],
    shard_key: Callable[[pd.DataFrame], Any],
    compute: ShardWriter,
    cache: FolderCache,
    shard_size: int,
    use_cache: bool = True,
) -> InferenceRef:
    """Compute (or load) every shard; ``compute(shard, folder)`` writes outputs and returns info
    (it may include ``failures``: {row within shard: reason})."""
    folders, cached, failures, keys = [], 0, {}, []
    info: dict[str, Any] = {}
    for start in range(0, len(items), shard_size):
        shard = items.iloc[start : start + shard_size]
        key = inference_fingerprint(
            task=task, model=model_fingerprint, data=stable_hash(shard_key(shard)),
            settings=settings,
        )
        keys.append(key)
        folder = cache.get(key) if use_cache else None
        if folder is None:
            folder = cache.put(key, lambda path, shard=shard: _write(shard, path, compute))
        else:
            cached += 1
        meta = json.loads((folder / "meta.json").read_text())
        failures |= {start + int(row): reason for row, reason in meta.get("failures", {}).items()}
        for name, value in meta.items():
            if isinstance(value, int | float) and name != "failures":
                info[name] = info.get(name, 0) + value
        folders.append(str(folder))
    return InferenceRef(
        fingerprint=stable_hash(keys), shard_folders=folders, shards_cached=cached,
        model_fingerprint=model_fingerprint, failures=failures, info=info,
    )


def _write(shard: pd.DataFrame, folder: Path, compute: ShardWriter) -> None:
    meta = compute(shard, folder)
    meta["failures"] = {str(k): v for k, v in meta.get("failures", {}).items()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
