"""The one batch loop of every adapter: chunk the rows, prepare (decode + preprocess) batches
ahead in a small thread pool, run the model on each, capture failures by row, report progress.

While a performance recorder is active (``tasks.tracking.performance.recording``; Inference
activates one around every entry it computes) each model call is timed as one batch: two clock
reads per batch (and one CUDA synchronise per batch on a CUDA device), nothing per item.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tasks.tracking.performance import active_recorder

T = TypeVar("T")
R = TypeVar("R")
In = TypeVar("In")  # model inputs of one batch
Out = TypeVar("Out")  # model outputs of one batch


def chunks(values: Sequence[T], size: int) -> list[Sequence[T]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def prefetched(
    batches: Sequence[T], prepare: Callable[[T], R], workers: int
) -> Iterator[R]:
    """Yield ``prepare(batch)`` in order, preparing up to ``workers`` batches ahead."""
    if workers <= 0:
        yield from (prepare(batch) for batch in batches)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        for batch in batches:
            pending.append(pool.submit(prepare, batch))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class Prepared(Generic[In]):
    """One prepared batch: model inputs for the rows that decoded (None when none did), their
    positions within the batch, and a reason for every other position."""

    inputs: In | None
    kept: list[int]
    failures: dict[int, str] = field(default_factory=dict)


@dataclass
class BatchResults(Generic[Out]):
    outputs: list[tuple[list[int], Out]]  # (rows computed, the model's output for them)
    failures: dict[int, str]  # row -> reason


def run_batches(
    count: int,
    batch_size: int,
    prepare: Callable[[list[int]], Prepared[In]],
    run: Callable[[In], Out],
    progress: Callable[[int], Any] | None = None,
    workers: int = 2,
) -> BatchResults[Out]:
    """Rows ``0..count-1`` in batches: ``prepare(rows)`` in threads ahead of ``run(inputs)``;
    each ``run`` is timed by the active performance recorder, if any."""
    batches = [list(rows) for rows in chunks(range(count), batch_size)]
    outputs: list[tuple[list[int], Out]] = []
    failures: dict[int, str] = {}
    recorder = active_recorder()
    for rows, prepared in zip(batches, prefetched(batches, prepare, workers), strict=True):
        failures |= {rows[i]: reason for i, reason in prepared.failures.items()}
        if prepared.inputs is not None:
            kept = [rows[i] for i in prepared.kept]
            output = run(prepared.inputs) if recorder is None else \
                recorder.call(run, prepared.inputs, len(kept))
            outputs.append((kept, output))
        if progress is not None:
            progress(len(rows))
    return BatchResults(outputs, failures)
