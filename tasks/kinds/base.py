"""Task kinds: how one kind of evaluation runs inference and scores (retrieval, captioning, ...).

The flow is the same for every kind; a kind supplies ``infer`` and ``score``. Adding a kind is
one subpackage of ``tasks.kinds`` holding ``infer.py`` (model outputs, through the shared
``Inference`` skeleton; part of the cache key), ``score.py`` (metrics and the per-sample
table) and an ``__init__.py`` that registers a ``TaskKindSpec``. The config's ``task`` choices
(``tasks.config.TaskKind``) list the kinds the UI form offers: add the name there too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from tasks.kinds.sharded import Inference, InferenceRef
from tasks.registry import Registry
from tasks.stats.estimates import Estimate
from tasks.tracking.fingerprint import PACKAGE_ROOT, inference_code_version

if TYPE_CHECKING:
    from tasks.config import EvalConfig
    from tasks.data.base import DatasetRef


@dataclass
class Scores:
    """What scoring hands on: corpus metrics and the per-sample table on disk."""

    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    per_sample_path: str  # parquet, one row per item (status scored / failed)
    review_column: str  # per-sample column ranking items from worst to best
    review_worst_is_high: bool
    extra_tables: dict[str, str] = field(default_factory=dict)  # name -> parquet path
    files: dict[str, str] = field(default_factory=dict)  # other report files: name -> path
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # metric key -> how it is recomputed from per_sample_path's columns (slices, comparisons)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    row_key: str = "item_id"  # the per-sample table's row id (pair_id for pair-scoring kinds)


class InferFn(Protocol):
    def __call__(self, run: Inference) -> InferenceRef: ...


class ScoreFn(Protocol):
    def __call__(self, dataset: DatasetRef, inference: InferenceRef, config: EvalConfig,
                 out: Path) -> Scores: ...


class TaskKindContract(Protocol):
    """What the flow needs from a task kind."""

    @property
    def name(self) -> str: ...
    @property
    def model_kinds(self) -> tuple[str, ...]: ...  # adapters that can run it (empty: any)
    @property
    def metric_task(self) -> str: ...  # task name of its metrics in the registry
    @property
    def display_columns(self) -> tuple[str, ...]: ...  # per-sample columns worth showing
    @property
    def headline(self) -> str: ...  # the metric slices and default gates look at first
    @property
    def infer(self) -> InferFn: ...
    @property
    def score(self) -> ScoreFn: ...

    @property
    def review_texts(self) -> tuple[tuple[str, str], ...]: ...

    def count_inputs(self, items: pd.DataFrame, config: EvalConfig) -> int: ...


def _one_input_per_item(items: pd.DataFrame, config: EvalConfig) -> int:
    return len(items)


@dataclass(frozen=True)
class TaskKindSpec:
    name: str
    infer: InferFn
    score: ScoreFn
    display_columns: tuple[str, ...] = ()
    headline: str = ""
    model_kinds: tuple[str, ...] = ()
    metric_task: str = ""  # default: the kind's name
    # how many model inputs an item table holds, given the config (for the progress bar)
    inputs: Callable[[pd.DataFrame, EvalConfig], int] = _one_input_per_item
    # what a human reviewer is shown besides the image: role (question / prediction /
    # references) -> per-sample column
    review_texts: tuple[tuple[str, str], ...] = (("references", "captions"),)

    def count_inputs(self, items: pd.DataFrame, config: EvalConfig) -> int:
        return self.inputs(items, config)


TASK_KINDS: Registry[TaskKindContract] = Registry(
    "task kind", package="tasks.kinds", skip=("base", "cache", "scoring", "sharded"))


def register_task_kind(spec: TaskKindSpec) -> TaskKindSpec:
    if not spec.metric_task:
        object.__setattr__(spec, "metric_task", spec.name)
    TASK_KINDS.add(spec.name, spec)
    return spec


def kind_code_version(kind: TaskKindContract) -> str:
    """Inference code version of a task kind: shared inference code + its infer module."""
    module = sys.modules[kind.infer.__module__]
    source = Path(str(module.__file__)).resolve().relative_to(PACKAGE_ROOT)
    return inference_code_version(source.as_posix())
