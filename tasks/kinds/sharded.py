"""The one inference skeleton every task kind uses: the lazily loaded adapter, the fingerprint
cache, shards of ``inference.shard_size`` and ``inference.cache``.

Rows are cut into shards; each shard's outputs are cached under a key made of the model
fingerprint, the shard's content (image digests and texts, as the kind's ``key`` says), the
inference settings and the code version (the shared inference code plus the kind's own infer
module). A rerun with the same inputs loads every shard from the cache and never loads the
model; changing one image recomputes only its shard. A kind's ``compute(shard, folder)`` writes
the shard's outputs into ``folder`` and returns a ``ShardOutput``.

Performance (``tasks.tracking.performance``): the model load and every computed entry are timed
and the batch loop reports its batches to this inference's recorder; each computed shard keeps
its measurements in meta.json (``performance``), and cached entries' measurements are carried,
labelled, not counted as this run's (``Inference.performance``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.cache import FolderCache
from tasks.models import fingerprint_model, load_adapter
from tasks.models.base import ADAPTERS, Adapter, ModelError, resolve_amp, resolve_device
from tasks.models.contracts import FAMILY_METHODS, Progress
from tasks.tracking.fingerprint import inference_fingerprint, stable_hash
from tasks.tracking.performance import Recorder

F = TypeVar("F")


@dataclass
class ShardOutput:
    failures: dict[int, str] = field(default_factory=dict)  # row within the shard -> reason
    truncated_texts: int = 0


ShardCompute = Callable[[pd.DataFrame, Path], ShardOutput]


def model_settings(config: EvalConfig) -> dict[str, Any]:
    """Settings that change an encoder's outputs (the device type: CPU and CUDA kernels differ;
    the autocast dtype as it runs there, so fp16, bf16 and off never share entries; the
    torch.compile backend and mode when compiling)."""
    model, inference = config.model, config.inference
    device = resolve_device(model.device)
    settings: dict[str, Any] = {"kind": model.kind, "dtype": model.dtype,
                                "amp": resolve_amp(device, model.amp),
                                "device": device.split(":")[0]}
    if inference.compile:  # compiled kernels may round differently from eager ones
        settings["compile"] = [inference.compile_backend, inference.compile_mode]
    return settings


def generation_settings(config: EvalConfig) -> dict[str, Any]:
    """Encoder settings plus decoding settings (null: the checkpoint's, whose files are in the
    model fingerprint) and the seed (sampling decoders)."""
    return model_settings(config) | {"generation": config.model.generation.model_dump(),
                                     "seed": config.seed}


@dataclass
class InferenceRef:
    """What inference hands on: cached shard folders and facts about the outputs."""

    fingerprint: str  # of the whole dataset's inference
    shard_folders: list[str]
    shards_cached: int
    model_fingerprint: str
    code_version: str  # of the code that shaped the outputs (part of every shard key)
    failures: dict[int, str] = field(default_factory=dict)  # input row -> reason
    truncated_texts: int = 0  # texts longer than the text encoder's context
    runtime: dict[str, str] = field(default_factory=dict)  # resolved device, dtype, ...
    pairs_path: str | None = None  # matching: the scored (image, text) pairs
    class_names: list[str] = field(default_factory=list)  # zero-shot classification
    class_embeddings_path: str | None = None
    # throughput, latency, load time, memory (tasks.tracking.performance); set by the step
    performance: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_hit(self) -> bool:
        return self.shards_cached == len(self.shard_folders)

    @property
    def cache_state(self) -> str:
        return "hit" if self.cache_hit else ("partial" if self.shards_cached else "miss")



class Inference:
    """One kind's inference over one dataset: adapter, cache and shards."""

    def __init__(self, dataset: DatasetRef, config: EvalConfig, cache_root: Path,
                 code_version: str, progress: Progress | None = None) -> None:
        self.dataset = dataset
        self.config = config
        self.items = dataset.load_items()
        self.progress = progress
        self.workers = config.inference.loader_threads()
        self.cache = FolderCache(cache_root)
        self.code_version = code_version
        self._adapter: Adapter | None = None
        self._model_fingerprint: str | None = None
        self.recorder = Recorder()  # the stage starts: the RSS peak is reset here
        self._on_worker = False  # True in a copy unpickled on a Dask worker (tasks.kinds.execution)

    def __getstate__(self) -> dict[str, Any]:
        """What a Dask worker gets (tasks.kinds.execution): no loaded model, progress bar or
        recorder; the model fingerprint is computed here first."""
        self.model_fingerprint  # noqa: B018 - computed once, in the flow's process
        return self.__dict__ | {"_adapter": None, "progress": None, "recorder": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, recorder=Recorder(), _on_worker=True)

    @property
    def model_fingerprint(self) -> str:
        if self._model_fingerprint is None:
            self._model_fingerprint = fingerprint_model(self.config.model, self.dataset.digest)
        return self._model_fingerprint

    def adapter(self, family: type[F]) -> F:
        """The run's adapter as ``family`` (loaded once, on first use); refused with the
        missing method named when the adapter does not implement the family."""
        kind = self.config.model.kind
        if not issubclass(ADAPTERS.get(kind), family):
            raise ModelError(f"model.kind {kind!r} cannot run task {self.config.task.value!r}: "
                             f"it has no {FAMILY_METHODS.get(family, family.__name__)}")
        if self._adapter is None and self._on_worker:  # the model this worker keeps
            from tasks.kinds.execution import worker_adapter

            self._adapter = worker_adapter(
                stable_hash([self.model_fingerprint, self.config.model.model_dump(mode="json"),
                             model_settings(self.config)]),
                self._load_adapter)
        if self._adapter is None:
            self._adapter = self._load_adapter()
        if not isinstance(self._adapter, family):  # e.g. torch_module image-only models
            raise ModelError(f"this {kind} model cannot run task {self.config.task.value!r}")
        return self._adapter

    def _load_adapter(self) -> Adapter:
        settings = self.config.inference
        with self.recorder.loading(resolve_device(self.config.model.device)):
            adapter = load_adapter(self.config.model, list(self.items["image_path"]))
            if settings.compile:
                adapter.compile(settings.compile_backend, settings.compile_mode)
            return adapter

    def shards(self, rows: pd.DataFrame, *, task: str, key: Callable[[pd.DataFrame], Any],
               compute: ShardCompute, settings: dict[str, Any] | None = None) -> InferenceRef:
        """Compute (or load) the outputs of every shard of ``rows``."""
        settings = model_settings(self.config) if settings is None else settings
        size = self.config.inference.shard_size
        folders, keys, cached = [], [], 0
        pending: list[Any] | None = [] if self.config.execution.engine != "local" else None
        for start in range(0, len(rows), size):
            shard = rows.iloc[start : start + size]
            keys.append(self._key(task, stable_hash(key(shard)), settings))
            folder, hit = self._entry(keys[-1], partial(self._write, shard, compute), pending)
            if hit:
                self.recorder.carry(json.loads((folder / "meta.json").read_text()))
            folders.append(folder)
            cached += hit
        if pending:
            self._run_remote(pending)
        return self._reference(folders, keys, cached, size)

    def _run_remote(self, jobs: list[Any]) -> None:
        """Compute the shards that missed on Dask or Ray workers (tasks.kinds.execution); their
        measurements come back through their meta.json and count as this run's."""
        from tasks.kinds.execution import run_jobs
        from tasks.tracking.performance import EntryMeasure

        for folder in run_jobs(jobs, self.config.execution):
            measured = json.loads((folder / "meta.json").read_text()).get("performance", {})
            self.recorder.entries.append(EntryMeasure(**measured))
            if measured.get("model_load_s"):
                self.recorder.model_load_s = ((self.recorder.model_load_s or 0.0)
                                              + measured["model_load_s"])
                self.recorder.device = measured.get("device")

    def entry(self, task: str, data: Any, write: Callable[[Path], None],
              settings: dict[str, Any] | None = None) -> Path:
        """One cache entry outside the shards (e.g. zero-shot class embeddings)."""
        settings = model_settings(self.config) if settings is None else settings
        folder, hit = self._entry(self._key(task, stable_hash(data), settings),
                                  partial(self._write_side, write))
        if hit:
            meta = folder / "meta.json"  # absent in entries of older code versions
            self.recorder.carry(json.loads(meta.read_text()) if meta.is_file() else {})
        return folder

    def performance(self) -> dict[str, Any]:
        """report.json's ``performance`` for what this inference did so far (measured entries,
        model load, memory; cached entries' measurements carried and labelled)."""
        return self.recorder.summary()

    def _key(self, task: str, data: str, settings: dict[str, Any]) -> str:
        return inference_fingerprint(task=task, model=self.model_fingerprint, data=data,
                                     settings=settings, code=self.code_version)

    def _entry(self, key: str, write: Callable[[Path], None],
               pending: list[Any] | None = None) -> tuple[Path, bool]:
        """The entry's folder and whether it was cached; a miss is written now, or, with
        ``pending`` (engine dask), queued there and written later into the same folder."""
        folder = self.cache.get(key) if self.config.inference.cache else None
        if folder is not None:
            return folder, True
        if pending is not None:
            from tasks.kinds.execution import ShardJob

            pending.append(ShardJob(self.cache, key, write))
            return self.cache.path(key), False
        return self.cache.put(key, write), False

    def _write(self, shard: pd.DataFrame, compute: ShardCompute, folder: Path) -> None:
        with self.recorder.entry(len(shard)) as measured:
            output = compute(shard, folder)
        meta = asdict(output) | {"failures": {str(k): v for k, v in output.failures.items()},
                                 "runtime": self._adapter.describe() if self._adapter else {},
                                 "performance": measured.to_json()}
        if self._on_worker:  # which worker process computed the shard, and its GPUs
            meta["worker"] = {"pid": os.getpid(),
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    def _write_side(self, write: Callable[[Path], None], folder: Path) -> None:
        """A side entry's ``write``, timed; its measurements go into its meta.json."""
        with self.recorder.entry(0) as measured:
            write(folder)
        path = folder / "meta.json"  # kept when ``write`` wrote one itself
        meta = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps(meta | {"performance": measured.to_json()}, indent=1))

    def _reference(self, folders: list[Path], keys: list[str], cached: int,
                   size: int) -> InferenceRef:
        failures: dict[int, str] = {}
        truncated, runtime = 0, dict[str, str]()
        for index, folder in enumerate(folders):
            meta = json.loads((folder / "meta.json").read_text())
            failures |= {index * size + int(row): reason
                         for row, reason in meta.get("failures", {}).items()}
            truncated += int(meta.get("truncated_texts", 0))
            runtime = runtime or meta.get("runtime", {})
        return InferenceRef(
            fingerprint=stable_hash(keys), shard_folders=[str(f) for f in folders],
            shards_cached=cached, model_fingerprint=self.model_fingerprint,
            code_version=self.code_version, failures=failures, truncated_texts=truncated,
            runtime=runtime)


def load_arrays(inference: InferenceRef, name: str, keep: np.ndarray | None = None
                ) -> np.ndarray:
    """One array per shard (``name``.npy), in row order; with ``keep`` (a boolean mask over
    all rows) only those rows. The shards are memory-mapped and the rows copied once into the
    result, so memory holds the result and never a second full copy."""
    parts = [_mapped(Path(folder) / f"{name}.npy") for folder in inference.shard_folders]
    masks = np.split(np.ones(sum(map(len, parts)), bool) if keep is None else np.asarray(keep),
                     np.cumsum([len(part) for part in parts])[:-1])
    out = np.empty((sum(int(m.sum()) for m in masks), *parts[0].shape[1:]), parts[0].dtype)
    start = 0
    for part, mask in zip(parts, masks, strict=True):
        rows = int(mask.sum())
        out[start:start + rows] = part[mask] if rows < len(part) else part
        start += rows
    return out


def _mapped(path: Path) -> np.ndarray:
    """``path`` memory-mapped read-only (an array without elements cannot be mapped: read)."""
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:
        return np.load(path)


def load_texts(inference: InferenceRef, name: str = "texts") -> list[str | None]:
    """One JSON list of texts per shard (``name``.json), concatenated in row order."""
    out: list[str | None] = []
    for folder in inference.shard_folders:
        out += json.loads((Path(folder) / f"{name}.json").read_text())
    return out
