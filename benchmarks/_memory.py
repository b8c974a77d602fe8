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


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def pin_mmap_threshold(threshold: int) -> bool:
    """Serve every allocation of ``threshold`` bytes or more by ``mmap`` (glibc ``mallopt``).

    glibc raises its mmap threshold dynamically (up to 32 MiB) and then keeps freed blocks in
    its heaps, so peak RSS depends on allocation order and thread timing. A fixed threshold
    turns that off: freed blocks go back to the OS and peak RSS follows the live allocations.
    """
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt")
                and libc.mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so
    memory kept by the allocator from an earlier call does not hide the next call's peak."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
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


def load_average() -> str:
    """1/5/15-minute load averages: other processes on the machine skew wall times."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" ({os.cpu_count()} cpus)"


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
