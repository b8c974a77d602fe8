"""Overhead of the evaluate flow over a bare transformers loop (same model, data, batch size).

Builds (seeded) a synthetic image-text dataset (PNG images of shapes, 5 captions each, JSONL
manifest) and a randomly initialised ``CLIPModel`` large enough that inference dominates, then
times:

* bare: what a user would write: load model + processor, PIL-open each batch, ``processor`` +
  ``get_image_features`` / ``get_text_features`` under ``torch.inference_mode()``, then
  recall@1/5/10 from ``sims = texts @ images.T`` and ``argsort``;
* flow: ``flows.evaluate.evaluate`` with the inference cache disabled (MLflow in a temporary
  sqlite database, report into the work folder), after a temporary Prefect server was started
  (``prefect_test_harness``) and one warm-up flow ran on a few items;
* flow, cached: the same call with the inference cache enabled (every shard hits).

Prints both wall times, the overhead ratio flow / bare excluding the one-off Prefect server
start-up (a) and including it (b), the flow's per-stage timings and the largest absolute
difference between the two runs' metrics and the per-item ranks that differ, both with the
metric's tie rule (similarities rounded to ``SCORE_DECIMALS`` decimals, ties to the lower index;
expected: 0), and, for reference, the metric difference on raw float32 similarities.

Run: ``.venv/bin/python benchmarks/flow_overhead.py [--images 1000 --batch-size 64 ...]``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _memory import load_average

from flows.settings import apply_defaults

SHAPES = ("square", "circle", "bar", "ring")
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220),
          "yellow": (235, 210, 40), "purple": (130, 50, 170), "orange": (245, 130, 20)}
BACKGROUNDS = {"white": (250, 250, 250), "gray": (128, 128, 128), "black": (15, 15, 15)}
SIZES = ("small", "medium", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
TEMPLATE_WORDS = ("a", "an", "picture", "of", "on", "the", "in", "shape", "background",
                  "number", "image", "with")
WARMUP_ITEMS = 16  # both sides run once on this many items first (imports, lazy init)


@dataclass(frozen=True)
class Setup:
    images: int
    image_size: int
    layers: int
    seed: int = 0


# --- synthetic data and model --------------------------------------------------------------


def draw_image(path: Path, size: int, rng: random.Random) -> dict[str, str]:
    """One PNG: a coloured shape on a plain background; returns its attributes."""
    from PIL import Image, ImageDraw

    attrs = {"shape": rng.choice(SHAPES), "color": rng.choice(list(COLORS)),
             "background": rng.choice(list(BACKGROUNDS)), "size": rng.choice(SIZES),
             "position": rng.choice(POSITIONS)}
    image = Image.new("RGB", (size, size), BACKGROUNDS[attrs["background"]])
    radius = size * {"small": 0.1, "medium": 0.17, "large": 0.25}[attrs["size"]]
    cx = size * ({"left": 0.3, "right": 0.7}.get(attrs["position"], 0.5) + rng.uniform(-.05, .05))
    cy = size * ({"top": 0.3, "bottom": 0.7}.get(attrs["position"], 0.5) + rng.uniform(-.05, .05))
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    draw, fill = ImageDraw.Draw(image), COLORS[attrs["color"]]
    if attrs["shape"] == "square":
        draw.rectangle(box, fill=fill)
    elif attrs["shape"] == "circle":
        draw.ellipse(box, fill=fill)
    elif attrs["shape"] == "bar":
        draw.rectangle([box[0], cy - radius / 3, box[2], cy + radius / 3], fill=fill)
    else:
        draw.ellipse(box, outline=fill, width=max(2, int(radius / 3)))
    image.save(path)
    return attrs


def captions_for(attrs: dict[str, str], index: int) -> list[str]:
    a = attrs
    return [f"a {a['color']} {a['shape']} on a {a['background']} background",
            f"a {a['size']} {a['color']} {a['shape']} in the {a['position']}",
            f"picture of a {a['shape']} with {a['background']} background",
            f"an image of a {a['color']} shape on the {a['position']}",
            f"{a['size']} {a['shape']} number {index}"]


def write_dataset(root: Path, setup: Setup) -> Path:
    """``setup.images`` PNGs and a JSONL manifest (id, image, captions, label)."""
    rng = random.Random(f"flow-overhead-{setup.seed}")
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(setup.images):
        name = f"images/{index:05d}.png"
        attrs = draw_image(root / name, setup.image_size, rng)
        lines.append({"id": f"item-{index}", "image": name,
                      "captions": captions_for(attrs, index), "label": attrs["shape"]})
    manifest = root / "data.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def caption_vocabulary() -> list[str]:
    words = [*TEMPLATE_WORDS, *SHAPES, *COLORS, *BACKGROUNDS, *SIZES, *POSITIONS]
    return [*words, *map(str, range(10))]


def write_model(folder: Path, setup: Setup) -> Path:
    """A randomly initialised CLIP (ViT-B/32-like layout, narrower) saved with its processor."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    from tasks.demo.tokenizer import build_clip_tokenizer
    from tasks.demo.train import ModelSpec, build_model

    spec = ModelSpec(image_size=setup.image_size, patch_size=32, vision_hidden=384,
                     vision_layers=setup.layers, text_hidden=256, text_layers=4, heads=8,
                     mlp_ratio=4, max_text_length=32, projection_dim=256)
    size = setup.image_size
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": size},
                                              crop_size={"height": size, "width": size}),
        tokenizer=build_clip_tokenizer(caption_vocabulary(), model_max_length=32),
    )
    torch.manual_seed(setup.seed)
    model = build_model(spec, processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def prepare(work: Path, setup: Any, data: Callable[[Path, Any], Any] | None = None,
            weights: Callable[[Path, Any], Any] | None = None) -> tuple[Path, Path]:
    """Dataset manifest and model folder under ``work``, rebuilt only if the setup (a
    dataclass) changed; ``data`` / ``weights`` build them (default: this module's builders)."""
    stamp, manifest, model = work / "setup.json", work / "data" / "data.jsonl", work / "model"
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(setup):
        return manifest, model
    work.mkdir(parents=True, exist_ok=True)
    (data or write_dataset)(manifest.parent, setup)
    (weights or write_model)(model, setup)
    stamp.write_text(json.dumps(asdict(setup)))
    return manifest, model


# --- bare transformers loop ----------------------------------------------------------------


def batches(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Ranked:
    """Metrics and 1-based ranks (i2t per image, t2i per text) of one set of embeddings."""

    metrics: dict[str, float]
    i2t: np.ndarray
    t2i: np.ndarray


def rank_metrics(images: np.ndarray, texts: np.ndarray, owner: np.ndarray,
                 rounded: bool = True) -> Ranked:
    """Recall@1/5/10, mean and median rank both ways from a stable descending sort (ties go to
    the lower index). ``rounded``: the metric's tie rule, similarities rounded to
    ``SCORE_DECIMALS`` decimals first (``tasks.metrics.ranking``); otherwise raw float32."""
    from tasks.metrics.ranking import rounded_scores

    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    sims = texts @ images.T
    if rounded:
        sims = rounded_scores(sims)
    t2i_order = np.argsort(-sims, axis=1, kind="stable")
    t2i = (t2i_order == owner[:, None]).argmax(axis=1) + 1
    i2t_order = np.argsort(-sims.T, axis=1, kind="stable")
    i2t = (owner[i2t_order] == np.arange(len(images))[:, None]).argmax(axis=1) + 1
    out: dict[str, float] = {}
    for prefix, ranks in (("i2t", i2t), ("t2i", t2i)):
        out |= {f"{prefix}_recall_at_{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10)}
        out |= {f"{prefix}_mean_rank": float(np.mean(ranks)),
                f"{prefix}_median_rank": float(np.median(ranks))}
    return Ranked(out, i2t, t2i)


@dataclass
class Bare:
    """The bare loop's output: its metrics (the metric's tie rule) and its embeddings."""

    ranked: Ranked
    images: np.ndarray
    texts: np.ndarray
    owner: np.ndarray


def bare_loop(model_dir: Path, manifest: Path, batch_size: int,
              limit: int | None = None) -> Bare:
    """The loop a user would write with transformers alone; the same metric keys."""
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    records = [json.loads(line) for line in manifest.read_text().splitlines()][:limit]
    captions = [caption for record in records for caption in record["captions"]]
    owner = np.repeat(np.arange(len(records)), [len(r["captions"]) for r in records])
    image_vectors, text_vectors = [], []
    with torch.inference_mode():
        for batch in batches(records, batch_size):
            images = []
            for record in batch:
                with Image.open(manifest.parent / record["image"]) as image:
                    images.append(image.convert("RGB"))
            pixels = processor(images=images, return_tensors="pt")
            image_vectors.append(model.get_image_features(**pixels).pooler_output)
        for batch in batches(captions, batch_size):
            tokens = processor.tokenizer(batch, padding=True, truncation=True,
                                         return_tensors="pt")
            text_vectors.append(model.get_text_features(**tokens).pooler_output)
    images, texts = torch.cat(image_vectors).numpy(), torch.cat(text_vectors).numpy()
    return Bare(rank_metrics(images, texts, owner), images, texts, owner)


# --- the flow ------------------------------------------------------------------------------


def flow_config(manifest: Path, model_dir: Path, work: Path, batch_size: int, cache: bool,
                limit: int | None = None, run_folder: str = "flow-work") -> Any:
    """Evaluate config; every run shares ``work/mlflow.db`` (created by the warm-up run)."""
    from tasks.config_io import build_config

    return build_config({
        "model": {"path": str(model_dir), "batch_size": batch_size, "device": "cpu"},
        "dataset": {"path": str(manifest), "limit": limit},
        "inference": {"cache": cache},
        "report": {"destination": str(work / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
                     "experiment": "flow-overhead"},
        "work_dir": str(work / run_folder),
    })


def stage_timings(result: dict[str, Any]) -> dict[str, float]:
    """The flow's own stage timer (report.json ``timings_s``)."""
    return json.loads((Path(result["report"]) / "report.json").read_text())["timings_s"]


def inference_performance(result: dict[str, Any]) -> dict[str, float]:
    """The flow's inference measurements (report.json ``performance``; none on a cache hit)."""
    performance = json.loads((Path(result["report"]) / "report.json").read_text())
    keys = ("perf_items_per_s", "perf_batch_latency_p50_ms", "perf_batch_latency_p95_ms",
            "perf_model_load_s", "perf_peak_rss_mb")
    metrics = (performance.get("performance") or {}).get("metrics") or {}
    return {k: round(metrics[k], 3) for k in keys if k in metrics}


def prefect_timeline(result: dict[str, Any]) -> dict[str, float]:
    """Seconds per Prefect task run of the flow run (and the flow run itself), from the API."""
    from mlflow import MlflowClient
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tags = MlflowClient(result["tracking_uri"]).get_run(result["mlflow_run_id"]).data.tags
    flow_run_id = tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out = {run.name.rsplit("-", 1)[0]: run.total_run_time.total_seconds()
           for run in sorted(runs, key=lambda r: r.start_time)}
    return out | {"flow run (server-side)": flow_run.total_run_time.total_seconds()}


@contextmanager
def prefect_server() -> Iterator[float]:
    """A temporary Prefect server (what a bare ``bifocal run`` starts); yields start-up s."""
    from prefect.testing.utilities import prefect_test_harness

    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        yield time.perf_counter() - start


def profile_flow(config: Any, out: Path, lines: int = 35) -> None:
    """One more flow run under cProfile (main thread only); prints the top cumulative entries."""
    import cProfile
    import pstats

    from flows.evaluate import evaluate

    profiler = cProfile.Profile()
    profiler.runcall(evaluate, config)
    profiler.dump_stats(out)
    print(f"cProfile of one flow run (cache disabled), saved to {out}:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(lines)


# --- driver --------------------------------------------------------------------------------


@dataclass
class Timed:
    value: Any
    wall_s: float
    cpu_s: float  # CPU time of this process (all threads); the Prefect server is not included


def timed(call: Callable[[], Any]) -> Timed:
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return Timed(value, time.perf_counter() - wall, time.process_time() - cpu)


def fastest(runs: list[Timed]) -> Timed:
    return min(runs, key=lambda run: run.wall_s)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layers", type=int, default=6, help="vision transformer layers")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternating runs of bare and flow; the fastest of each is kept")
    parser.add_argument("--profile", action="store_true",
                        help="finally run the flow once more under cProfile and print the top")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data, model, MLflow and reports (default: a temp dir; "
                        "data and model are reused when the setup matches)")
    return parser.parse_args()


def flow_ranks(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The flow's per-sample ranks (report folder): i2t per image, t2i per text."""
    import pandas as pd

    folder = Path(result["report"])
    images = pd.read_parquet(folder / "per_sample.parquet", columns=["i2t_rank"])
    texts = pd.read_parquet(folder / "per_sample_texts.parquet", columns=["t2i_rank"])
    return images["i2t_rank"].to_numpy(), texts["t2i_rank"].to_numpy()


def print_comparison(bare: Bare, flow: dict[str, Any]) -> None:
    """Flow vs bare with the same tie rule (similarities rounded to ``SCORE_DECIMALS``
    decimals, ties to the lower index): metrics and per-item ranks, expected identical; and,
    for reference, bare with raw float32 similarities, where float noise between the two
    runs' embeddings flips near-ties (a random-weight model has many)."""
    from tasks.metrics.ranking import SCORE_DECIMALS

    metrics = flow["metrics"]
    keys = [k for k in bare.ranked.metrics if k in metrics]
    width = max(len(k) for k in keys)
    print(f"  {'metric':<{width}}  {'flow':>9}  {'bare':>9}")
    for key in keys:
        print(f"  {key:<{width}}  {metrics[key]:9.4f}  {bare.ranked.metrics[key]:9.4f}")
    same = max(abs(metrics[k] - bare.ranked.metrics[k]) for k in keys)
    i2t, t2i = flow_ranks(flow)
    differ = int((i2t != bare.ranked.i2t).sum() + (t2i != bare.ranked.t2i).sum())
    print(f"max |metric difference| flow vs bare, same tie rule (similarities rounded to "
          f"{SCORE_DECIMALS} decimals, ties to the lower index): {same:.3g}; per-item ranks "
          f"that differ: {differ} of {len(i2t) + len(t2i)} (expected: 0 and 0)")
    raw = rank_metrics(bare.images, bare.texts, bare.owner, rounded=False).metrics
    print(f"max |metric difference| flow vs bare on raw float32 similarities (no rounding): "
          f"{max(abs(metrics[k] - raw[k]) for k in keys):.3g} (the old comparison: ties on "
          "the grid ordered by float noise)")


def run(work: Path, args: argparse.Namespace) -> None:
    import torch

    setup = Setup(args.images, args.image_size, args.layers)
    prepared = timed(lambda: prepare(work, setup))
    manifest, model_dir = prepared.value
    print(f"setup: {setup.images} images {setup.image_size}px x 5 captions, CLIP vision "
          f"{setup.layers} layers; batch {args.batch_size}; torch threads "
          f"{torch.get_num_threads()}; build {prepared.wall_s:.1f}s; work {work}")
    print(f"load average at the start: {load_average()}")

    from flows.evaluate import evaluate

    def bare() -> Bare:
        return bare_loop(model_dir, manifest, args.batch_size)

    def flow(cache: bool, limit: int | None = None, folder: str = "flow-work") -> Timed:
        config = flow_config(manifest, model_dir, work, args.batch_size, cache, limit, folder)
        return timed(lambda: evaluate(config))

    with prefect_server() as startup_s:
        print(f"prefect temporary server start-up:   {startup_s:7.2f} s (one-off per process)")
        new_db = "" if (work / "mlflow.db").exists() else "; creates the MLflow db"
        warm_bare = timed(lambda: bare_loop(model_dir, manifest, args.batch_size, WARMUP_ITEMS))
        warm_flow = flow(cache=False, limit=WARMUP_ITEMS, folder="warmup")
        print(f"warm-up on {WARMUP_ITEMS} items: bare {warm_bare.wall_s:.2f} s, flow "
              f"{warm_flow.wall_s:.2f} s (first flow of the process{new_db})")
        bare_runs, flow_runs = [], []
        for index in range(args.repeat):
            bare_runs.append(timed(bare))
            flow_runs.append(flow(cache=False))
            print(f"run {index + 1}: bare {bare_runs[-1].wall_s:7.2f} s "
                  f"(cpu {bare_runs[-1].cpu_s:6.1f} s)   flow, cache disabled "
                  f"{flow_runs[-1].wall_s:7.2f} s (cpu {flow_runs[-1].cpu_s:6.1f} s)")
        cached = flow(cache=True)
        best_bare, best_flow = fastest(bare_runs), fastest(flow_runs)
        timeline = prefect_timeline(best_flow.value)
        if args.profile:
            profile_flow(flow_config(manifest, model_dir, work, args.batch_size, False),
                         work / "flow.prof")

    bare_s, flow_s = best_bare.wall_s, best_flow.wall_s
    print(f"bare transformers loop:              {bare_s:7.2f} s")
    print(f"evaluate flow (cache disabled):      {flow_s:7.2f} s")
    print(f"evaluate flow (cached re-run):       {cached.wall_s:7.2f} s "
          f"(inference cache: {cached.value['inference_cache']})")
    print("flow stage timings, report.json (s):", stage_timings(best_flow.value))
    print("flow Prefect task runs (s):", {k: round(v, 3) for k, v in timeline.items()})
    print("cached re-run stage timings (s):", stage_timings(cached.value))
    print("flow inference performance (report.json):", inference_performance(best_flow.value))
    print(f"(a) overhead ratio flow/bare, excluding server start-up: {flow_s / bare_s:.3f} "
          f"(target <= 1.10; cpu-time ratio {best_flow.cpu_s / best_bare.cpu_s:.3f})")
    print(f"(b) overhead ratio flow/bare, including server start-up: "
          f"{(flow_s + startup_s) / bare_s:.3f}")
    print_comparison(best_bare.value, best_flow.value)
    print(f"load average at the end: {load_average()}")


def main() -> None:
    args = parse_args()
    apply_defaults()
    if args.work is not None:
        run(args.work.resolve(), args)
        return
    with tempfile.TemporaryDirectory(prefix="flow-overhead-") as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
