"""The batch loop's timing: two clock reads and at most one CUDA synchronise per batch, nothing
per item; latencies and the summary numbers against hand-computed references."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from tasks.models.batching import Prepared, run_batches
from tasks.tracking.performance import Recorder, entry_metrics, latency_metrics, recording


class FakeClock:
    """A clock that only moves when the fake model runs; counts its reads."""

    def __init__(self) -> None:
        self.now = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def prepare_failing_row_5(rows: list[int]) -> Prepared[list[int]]:
    """Every row decodes except row 5; a batch of row 5 alone has no inputs."""
    kept = [i for i, row in enumerate(rows) if row != 5]
    return Prepared([rows[i] for i in kept] or None, kept, {i: "broken" for i, row
                                                            in enumerate(rows) if row == 5})


def model(clock: FakeClock):
    """A model whose batch takes (10 + rows) ms of fake time; returns the rows doubled."""
    def run(rows: list[int]) -> list[int]:
        clock.now += (10 + len(rows)) / 1000
        return [2 * r for r in rows]

    return run


@pytest.mark.parametrize("count,batch_size", [(11, 4), (200, 4), (200, 50)])
def test_the_clock_is_read_twice_per_batch_never_per_item(count: int, batch_size: int):
    clock = FakeClock()
    recorder = Recorder(clock=clock)
    with recording(recorder):
        results = run_batches(count, batch_size, prepare_failing_row_5, model(clock), workers=0)
    batches = -(-count // batch_size)
    assert clock.reads == 2 * batches  # independent of the number of items
    kept = [[r for r in range(s, min(s + batch_size, count)) if r != 5]
            for s in range(0, count, batch_size)]
    assert recorder.batch_items == [len(k) for k in kept]
    assert recorder.batch_s == pytest.approx([(10 + len(k)) / 1000 for k in kept])
    assert results.outputs == [(k, [2 * r for r in k]) for k in kept]
    assert results.failures == {5: "broken"}


def test_a_batch_without_inputs_is_not_timed():
    clock = FakeClock()
    recorder = Recorder(clock=clock)
    with recording(recorder):
        results = run_batches(7, 1, prepare_failing_row_5, model(clock), workers=2)
    assert len(recorder.batch_s) == 6 and clock.reads == 12 and 5 not in recorder.batch_items
    assert results.failures == {5: "broken"}


def test_without_an_active_recorder_nothing_is_timed():
    clock = FakeClock()
    recorder = Recorder(clock=clock)
    with recording(recorder):
        pass
    timed = run_batches(9, 4, prepare_failing_row_5, model(clock), workers=0)
    assert clock.reads == 0 and recorder.batch_s == []
    assert [rows for rows, _ in timed.outputs] == [[0, 1, 2, 3], [4, 6, 7], [8]]


def test_on_cuda_the_loop_synchronises_once_per_batch(monkeypatch):
    import torch

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: calls.append(f"sync {d}"))
    clock = FakeClock()
    recorder = Recorder(clock=clock)
    with recorder.loading("cuda:1"):
        clock.now += 2.5  # the model loads
    assert calls == ["reset"] and recorder.model_load_s == pytest.approx(2.5)
    with recording(recorder):
        run_batches(40, 8, prepare_failing_row_5, model(clock), workers=0)
    assert calls == ["reset"] + ["sync cuda:1"] * 5  # 40 items, 5 batches


def test_latencies_match_a_hand_computation():
    batch_s = np.array([0.030, 0.010, 0.020, 0.100, 0.012])
    sizes = np.array([4, 4, 2, 4, 1])
    out = latency_metrics(batch_s, sizes)
    per_item = [s / n for s, n in zip(batch_s, sizes, strict=True) for _ in range(n)]
    assert out["perf_batches"] == 5 and out["perf_batch_items"] == 15
    assert out["perf_batch_latency_mean_ms"] == pytest.approx(1000 * statistics.mean(batch_s))
    assert out["perf_batch_latency_p50_ms"] == pytest.approx(1000 * statistics.median(batch_s))
    assert out["perf_batch_latency_p95_ms"] == pytest.approx(
        1000 * statistics.quantiles(batch_s, n=20, method="inclusive")[18])
    assert out["perf_item_latency_mean_ms"] == pytest.approx(1000 * statistics.mean(per_item))
    assert out["perf_item_latency_p50_ms"] == pytest.approx(1000 * statistics.median(per_item))
    assert out["perf_item_latency_p95_ms"] == pytest.approx(
        1000 * statistics.quantiles(per_item, n=20, method="inclusive")[18])
    assert out["perf_batch_latency_p50_ms"] <= out["perf_batch_latency_p95_ms"]


def test_throughput_is_items_over_compute_time_of_all_entries():
    entries = [{"items": 6, "compute_s": 0.5, "batch_s": [0.1, 0.2], "batch_items": [4, 2]},
               {"items": 0, "compute_s": 0.25, "batch_s": [], "batch_items": []},
               {"items": 3, "compute_s": 0.75, "batch_s": [0.3], "batch_items": [3]}]
    out = entry_metrics(entries)
    assert out["perf_items"] == 9 and out["perf_compute_s"] == pytest.approx(1.5)
    assert out["perf_items_per_s"] == pytest.approx(9 / 1.5)
    assert out["perf_batches"] == 3 and out["perf_item_latency_mean_ms"] == pytest.approx(
        1000 * 0.6 / 9)
    assert entry_metrics([]) == {}
