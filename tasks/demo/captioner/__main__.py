"""CLI: ``python -m tasks.demo.captioner [BENCHMARK_DIR]``.

Trains the demo captioner on a benchmark (default: build a full-size one in a temp dir) and
prints training time and test-split metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

from tasks.demo.captioner.evaluation import evaluate_demo_captioner
from tasks.demo.captioner.training import train_demo_captioner


def _main(argv: list[str]) -> None:
    import resource
    import tempfile

    from tasks.demo.benchmark import build_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        if argv:
            dataset_root = Path(argv[0])
        else:
            dataset_root = Path(tmp) / "benchmark"
            t0 = time.perf_counter()
            build_benchmark(dataset_root)
            print(f"built benchmark ({time.perf_counter() - t0:.1f}s)")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        result = train_demo_captioner(dataset_root, Path(tmp) / "captioner")
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(f"captioner training: wall {result.seconds:.1f}s, cpu {cpu:.1f}s, "
              f"final loss {sum(result.losses[-20:]) / len(result.losses[-20:]):.3f}")
        t0 = time.perf_counter()
        metrics = evaluate_demo_captioner(result.model_dir, dataset_root, log=print)
        print(f"evaluation ({time.perf_counter() - t0:.1f}s):")
        for key, value in metrics.items():
            print(f"  {key}: {value:.4f}")


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
