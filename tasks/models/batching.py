"""The one batch loop of every adapter: chunk the rows, prepare (decode + preprocess) batches
ahead in a small thread pool, run the model on each, capture failures by row, report progress.

While a performance recorder is active (``tasks.tracking.performance.recording``; Inference
activates one around every entry it computes) each model call is timed as one batch: two clock
reads per batch (and one CUDA synchronise per batch on a CUDA device), nothing per item.

On a CUDA device (``pin_memory=True``) the prepare threads also copy every tensor of a prepared
batch into page-locked memory (``pinned``), so that the model thread's copy to the GPU can be
asynchronous (``non_blocking``, ``encoder_inputs.to_model``) and the next batch's decoding, its
host-to-device copy and the model overlap, as ``DataLoader(pin_memory=True)`` does.

CUDA out of memory: a ``run`` that raises ``torch.cuda.OutOfMemoryError`` is retried on the two
halves of its rows (each prepared again), after ``torch.cuda.empty_cache()``, halving down to one
row; a single row that still runs out of memory is recorded as failed (``OOM_REASON``) and the
loop goes on. Only the batch that ran out is split; the next batch is tried at the full size.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tasks.tracking.performance import active_recorder, unrecorded

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


def pinned(value: Any) -> Any:
    """``value`` with every torch tensor inside it (mappings, lists, tuples, dataclasses) copied
    to page-locked memory; other values as they are. Mappings come back as plain dicts."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, Mapping):
        return {key: pinned(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(pinned(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: pinned(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def _pinning(prepare: Callable[[list[int]], Prepared[In]]
             ) -> Callable[[list[int]], Prepared[In]]:
    def prepare_pinned(rows: list[int]) -> Prepared[In]:
        batch = prepare(rows)
        return dataclasses.replace(batch, inputs=pinned(batch.inputs))
    return prepare_pinned


def run_batches(
    count: int,
    batch_size: int,
    prepare: Callable[[list[int]], Prepared[In]],
    run: Callable[[In], Out],
    progress: Callable[[int], Any] | None = None,
    workers: int = 2,
    pin_memory: bool = False,
) -> BatchResults[Out]:
    """Rows ``0..count-1`` in batches: ``prepare(rows)`` in threads ahead of ``run(inputs)``
    (its tensors pinned with ``pin_memory``); each ``run`` is timed by the active performance
    recorder, if any; a batch that runs out of CUDA memory is split (module docstring)."""
    batches = [list(rows) for rows in chunks(range(count), batch_size)]
    results: BatchResults[Out] = BatchResults([], {})
    prepare = _pinning(prepare) if pin_memory else prepare
    for rows, prepared in zip(batches, prefetched(batches, prepare, workers), strict=True):
        _run_prepared(rows, prepared, prepare, run, results)
        if progress is not None:
            progress(len(rows))
    return results


OOM_REASON = "CUDA out of memory at batch size 1"


def run_all(count: int, batch_size: int, inputs: Callable[[list[int]], In],
            run: Callable[[In], Any], progress: Callable[[int], Any] | None = None,
            pin_memory: bool = False) -> list[Any]:
    """``run_batches`` for rows that cannot fail to prepare (texts: ``inputs(rows)`` tokenizes
    them, one batch ahead), each batch halved on CUDA out of memory like images;
    the outputs in row order; not recorded as batches of the performance recorder. A row
    that runs out of memory alone is a ``ModelError`` (a text has no failure column; a model
    that cannot embed one text cannot score the dataset)."""
    with unrecorded():  # batch latencies are those of the kind's items
        results = run_batches(count, batch_size,
                              lambda rows: Prepared(inputs(rows), list(range(len(rows)))),
                              run, progress, workers=1, pin_memory=pin_memory)
    if results.failures:
        from tasks.models.base import ModelError

        row, reason = next(iter(results.failures.items()))
        raise ModelError(f"text {row} cannot be embedded: {reason}")
    return [output for _, output in sorted(results.outputs, key=lambda part: part[0][0])]


def _run_prepared(rows: list[int], prepared: Prepared[In],
                  prepare: Callable[[list[int]], Prepared[In]], run: Callable[[In], Out],
                  results: BatchResults[Out]) -> None:
    """Run one prepared batch into ``results``; on CUDA out of memory, the halves of ``rows``
    again (prepared anew), down to one row, which then fails with ``OOM_REASON``."""
    results.failures.update({rows[i]: reason for i, reason in prepared.failures.items()})
    if prepared.inputs is None:
        return
    kept = [rows[i] for i in prepared.kept]
    recorder = active_recorder()
    try:
        output = run(prepared.inputs) if recorder is None else \
            recorder.call(run, prepared.inputs, len(kept))
    except _out_of_memory():
        pass  # handled below, once the error's traceback (holding the batch) is released
    else:
        results.outputs.append((kept, output))
        return
    _empty_cuda_cache()
    if len(kept) == 1:
        results.failures[kept[0]] = OOM_REASON
        return
    half = (len(kept) + 1) // 2
    for part in (kept[:half], kept[half:]):
        _run_prepared(part, prepare(part), prepare, run, results)


def _out_of_memory() -> type[BaseException] | tuple[()]:
    """``torch.cuda.OutOfMemoryError`` when torch is loaded (it is, wherever a model runs)."""
    torch = sys.modules.get("torch")
    return torch.cuda.OutOfMemoryError if torch is not None else ()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
