"""Shared benchmark helpers: wall time and peak RSS of one call.

Peak memory is sampled from ``/proc/self/statm`` by a background thread (every ~2 ms), because
torch and BLAS allocations are invisible to ``tracemalloc``. The figure is the peak resident set
above the level just before the call, so it includes every allocator (numpy, torch, glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so
    memory kept by the allocator from an earlier call does not hide the next call's peak."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


class PeakSampler:
    """Context manager recording the highest RSS seen while it is active."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self.baseline = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def above_baseline(self) -> int:
        return self.peak - self.baseline


@dataclass
class Measured(Generic[T]):
    value: T
    seconds: float
    peak_bytes: int  # peak RSS above the pre-call level


def measure(call: Callable[[], T]) -> Measured[T]:
    """Run ``call`` once; wall time and peak RSS above the level before it."""
    release_free_memory()
    with PeakSampler() as sampler:
        start = time.perf_counter()
        value = call()
        seconds = time.perf_counter() - start
    return Measured(value, seconds, sampler.above_baseline)
