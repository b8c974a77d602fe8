"""Batches prepared ahead of the model in a small thread pool (decode + preprocess overlap)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


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
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(prepare, batch))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
