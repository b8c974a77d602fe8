"""GPU throughput of the project's inference against a bare loop and a DataLoader loop.

Setup (seeded, built once in ``--work`` and reused while the settings match): ``--images``
synthetic 224-px PNGs of shapes with 5 captions each (``flow_overhead.py``'s drawing code, in a
process pool), and a randomly initialised ``CLIPModel`` built from its config, ViT-B/32 layout
(vision 768 wide x 12 layers x 12 heads, patch 32; text 512 x 12 x 8; projection 512) or a
``tiny`` one for CPU smoke runs, saved with ``CLIPImageProcessorPil`` and the offline tokenizer
(``tasks.demo.tokenizer``): nothing is downloaded.

Contenders, all in one process, same model weights, same batch size, same precision (``--amp``:
bf16 autocast over float32 weights on CUDA by default, off on CPU); models are loaded once,
outside every timed region:

1. loader alone: decode (PIL open + ``convert("RGB")``), decode + preprocess (the checkpoint's
   image processor on each batch), and the project's batch preparation (``decode_images`` +
   ``image_inputs``, what ``DualEncoder.encode_images`` prepares), each single-threaded and
   with the project's thread pool (``prefetched``, ``--workers`` threads);
2. bare: the single-threaded loop a user writes (PIL + processor + ``.to(device)`` +
   ``get_image_features`` under ``inference_mode`` and autocast); on CUDA one more pass with a
   synchronise after each stage gives the split decode / preprocess / H2D copy / model (on CPU
   the timed pass gives it: nothing is asynchronous there);
3. dataloader: CLIP_benchmark style, ``DataLoader(num_workers=--workers, pin_memory=cuda)``
   over a dataset that decodes, with a ``collate_fn`` that runs the image processor on the batch
   in the worker (workers are forked anew each pass, as in a user's loop; their
   ``worker_init_fn`` drops Prefect's inherited exit hooks, see ``forget_parent_exit_hooks``);
4. adapter: the project's ``DualEncoder.encode_images(paths, workers=N)`` (the code the flow's
   inference runs), at ``--workers`` and at the default ``num_workers`` (the CPU count, at
   most 8), with the project's performance recorder splitting its time into model calls
   (H2D copy + model + copy back) and the rest (waiting for prepared batches); texts: the bare
   tokenizer + ``get_text_features`` loop vs ``encode_texts``;
5. flow (unless ``--no-flow``): ``flows.evaluate.evaluate`` with the inference cache off and
   ``inference.num_workers=--workers``, under a temporary Prefect server (MLflow in a sqlite file
   in the work folder); it embeds images and captions, so it is compared in items (an image
   and its captions) per second with the bare image + text loops: its inference compute
   (report.json ``perf_items_per_s``, model load excluded), its inference stage (report.json
   ``timings_s``, model load included) and its wall time.

Protocol: CUDA is synchronised at the end of every timed region (and after each stage in the
staged pass). Every contender first runs once on one batch (the flow once on 16 items:
imports, cuBLAS initialisation, the MLflow database). Then the contenders alternate
``--repeat`` times and the fastest run of each is kept (``--keep median``: the median run).
Finally an fp32 parity check (autocast off on both sides) compares the bare loop's and the
adapter's image and text embeddings on the first ``--parity-items`` items (min cosine, expected
~1). The script prints the tables, then one JSON line with every figure and the machine facts
(``--json PATH`` writes it to a file too). Ratios: the adapter's images/s over the bare
loop's and the DataLoader loop's, texts/s over the bare text loop's, the flow's items/s over
the bare loops'.

Run from the repository root. On a GPU machine (the project root on ``PYTHONPATH`` unless it is
installed): ``python benchmarks/gpu_throughput.py [--images 8000 --batch-size 256 --workers 16
--repeat 2 --json PATH]``. A CPU smoke run of the script itself: ``.venv/bin/python
benchmarks/gpu_throughput.py --device cpu --model tiny --images 64 --batch-size 16
[--threads 1 --no-flow]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _memory import load_average
from flow_overhead import (
    caption_vocabulary,
    captions_for,
    draw_image,
    inference_performance,
    prefect_server,
    stage_timings,
)
from flow_overhead import prepare as prepare_setup

from flows.settings import apply_defaults
from tasks.config import InferenceConfig

IMAGE_SIZE = 224
MAX_TEXT_LENGTH = 77
FLOW_WARMUP_ITEMS = 16
BARE_IMAGES = "bare images (1 decode thread)"
BARE_STAGED = "bare images, staged (sync per stage)"
DEFAULT_NUM_WORKERS = InferenceConfig().loader_threads()  # num_workers' default here
LAYOUTS = {  # CLIP layouts: vision/text width, layers, heads; shared projection width
    "b32": dict(v_hidden=768, v_layers=12, v_heads=12, t_hidden=512, t_layers=12, t_heads=8,
                projection=512),
    "tiny": dict(v_hidden=64, v_layers=2, v_heads=4, t_hidden=64, t_layers=2, t_heads=4,
                 projection=64),
}


@dataclass(frozen=True)
class Setup:
    images: int
    model: str
    seed: int = 0


# --- synthetic data and model ------------------------------------------------------------------


def _draw_one(job: tuple[Path, int, int]) -> dict[str, Any]:
    """One seeded PNG (its own generator, so the pool's order does not matter) + its record."""
    root, index, seed = job
    rng = random.Random(f"gpu-throughput-{seed}-{index}")
    name = f"images/{index:05d}.png"
    attrs = draw_image(root / name, IMAGE_SIZE, rng)
    return {"id": f"item-{index}", "image": name, "captions": captions_for(attrs, index),
            "label": attrs["shape"]}


def write_dataset(root: Path, setup: Setup) -> Path:
    """``setup.images`` PNGs drawn in a process pool and a JSONL manifest."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 2
    jobs = [(root, index, setup.seed) for index in range(setup.images)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        records = pool.map(_draw_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    manifest = root / "data.jsonl"
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    return manifest


def write_model(folder: Path, setup: Setup) -> int:
    """A seeded random ``CLIPModel`` of the chosen layout, saved with an offline-built
    processor; returns its parameter count."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from tasks.demo.tokenizer import build_clip_tokenizer

    layout = LAYOUTS[setup.model]
    tokenizer = build_clip_tokenizer(caption_vocabulary(), model_max_length=MAX_TEXT_LENGTH)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": layout["t_hidden"],
            "intermediate_size": 4 * layout["t_hidden"], "num_hidden_layers": layout["t_layers"],
            "num_attention_heads": layout["t_heads"], "max_position_embeddings": MAX_TEXT_LENGTH,
            "projection_dim": layout["projection"],
            # pooling takes the first EOS position; pad == eos, so these must be the real ids
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id},
        vision_config={
            "image_size": IMAGE_SIZE, "patch_size": 32, "hidden_size": layout["v_hidden"],
            "intermediate_size": 4 * layout["v_hidden"], "num_hidden_layers": layout["v_layers"],
            "num_attention_heads": layout["v_heads"], "projection_dim": layout["projection"]},
        projection_dim=layout["projection"])
    torch.manual_seed(setup.seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def prepare(work: Path, setup: Setup) -> tuple[Path, Path]:
    """Manifest and model folder under ``work``, rebuilt only when the setup changed."""
    return prepare_setup(work, setup, write_dataset, write_model)


# --- timing --------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels (CUDA); nothing to wait for elsewhere."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclass
class Run:
    """One timed pass: seconds, items done, optional split into stages (seconds)."""

    seconds: float
    items: int
    stages: dict[str, float] = field(default_factory=dict)
    result: Any = None  # the flow's return value

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")


class Stages:
    """Accumulates seconds per named stage; ``mark`` closes the current stage (after a device
    synchronise when ``sync`` is set)."""

    def __init__(self, device: str, sync: bool) -> None:
        self.device, self.sync = device, sync
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.sync:
            synchronize(self.device)
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now


def pick(runs: list[Run], keep: str) -> Run:
    """The fastest run, or the median one (by seconds)."""
    ordered = sorted(runs, key=lambda run: run.seconds)
    return ordered[0] if keep == "best" else ordered[(len(ordered) - 1) // 2]


def batches(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


# --- contenders ------------------------------------------------------------------------------


def decode_pil(path: str) -> Any:
    """What a user writes: PIL open + convert to RGB (the pixels are decoded here)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


@dataclass
class Bench:
    """Everything the contenders share: the files, the models, the settings."""

    paths: list[str]
    captions: list[str]
    model_dir: Path
    device: str
    amp: str  # resolved: off | fp16 | bf16
    batch_size: int
    workers: int
    model: Any = None  # the bare loop's CLIPModel (float32 weights)
    processor: Any = None
    adapter: Any = None  # the project's DualEncoderAdapter

    def autocast(self) -> Any:
        """What a user writes: ``torch.autocast`` with the chosen dtype, or nothing."""
        import contextlib

        import torch

        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)


def loader_pass(bench: Bench, paths: Sequence[str], prepare: Callable[[Sequence[str]], Any],
                workers: int) -> Run:
    """``prepare`` over every batch of ``paths`` through the project's ``prefetched`` (0
    workers: in the calling thread)."""
    from tasks.models.batching import prefetched

    started = time.perf_counter()
    for _ in prefetched(batches(paths, bench.batch_size), prepare, workers):
        pass
    return Run(time.perf_counter() - started, len(paths))


def loader_steps(bench: Bench) -> dict[str, Callable[[Sequence[str]], Any]]:
    """Batch preparations of the loader section, by name."""
    from tasks.io.images import decode_images
    from tasks.models.encoder_inputs import image_inputs

    image_processor = bench.processor.image_processor

    def decode(paths: Sequence[str]) -> Any:
        return [decode_pil(path) for path in paths]

    def decode_preprocess(paths: Sequence[str]) -> Any:
        return image_processor(images=decode(paths), return_tensors="pt")

    def project_prepare(paths: Sequence[str]) -> Any:
        images, _, _ = decode_images(list(paths))
        return image_inputs(bench.processor, images)

    return {"decode (PIL open+convert)": decode,
            "decode+preprocess (PIL + image processor)": decode_preprocess,
            "project prepare (decode_images + image_inputs)": project_prepare}


def bare_images(bench: Bench, paths: Sequence[str], sync_stages: bool = False) -> Run:
    """The single-threaded loop a user writes; stages decode / preprocess / h2d / model (the
    model stage holds its kernels only when ``sync_stages`` or off CUDA)."""
    import torch

    stages = Stages(bench.device, sync_stages)
    vectors = []
    started = time.perf_counter()
    with torch.inference_mode(), bench.autocast():
        for batch in batches(paths, bench.batch_size):
            images = [decode_pil(path) for path in batch]
            stages.mark("decode")
            pixels = bench.processor(images=images, return_tensors="pt")["pixel_values"]
            stages.mark("preprocess")
            pixels = pixels.to(bench.device)
            stages.mark("h2d")
            vectors.append(bench.model.get_image_features(pixel_values=pixels).pooler_output)
            stages.mark("model")
        synchronize(bench.device)
    stages.mark("model")  # the queued kernels of the last batches
    return Run(time.perf_counter() - started, len(paths), stages.seconds)


class FileImages:
    """A map-style dataset of image files: item ``i`` is the decoded PIL image."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        return decode_pil(self.paths[index])


class ProcessBatch:
    """``collate_fn``: the image processor on the batch's images (runs in the worker)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, images: list[Any]) -> Any:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


def forget_parent_exit_hooks(worker_id: int) -> None:
    """``worker_init_fn``: drop the thread-exit hooks a forked worker inherits. Once a flow ran
    in this process, Prefect's queue services (3.8) have registered ``threading`` exit hooks
    that, in a forked child, fail an assertion at exit (its after-fork reset leaves them), so
    the worker exits with code 1 after its last batch and the ``DataLoader`` raises."""
    import threading

    hooks = getattr(threading, "_threading_atexits", None)
    if isinstance(hooks, list):
        hooks.clear()


def dataloader_images(bench: Bench, paths: Sequence[str]) -> Run:
    """CLIP_benchmark-style: a torch ``DataLoader`` with worker processes feeding the model
    (worker start-up included, as a user's loop pays it)."""
    import torch
    from torch.utils.data import DataLoader

    cuda = bench.device.startswith("cuda")
    started = time.perf_counter()
    loader = DataLoader(FileImages(paths), batch_size=bench.batch_size, shuffle=False,
                        num_workers=bench.workers, pin_memory=cuda,
                        collate_fn=ProcessBatch(bench.processor.image_processor),
                        worker_init_fn=forget_parent_exit_hooks)
    vectors = []
    with torch.inference_mode(), bench.autocast():
        for pixels in loader:
            pixels = pixels.to(bench.device)
            vectors.append(bench.model.get_image_features(pixel_values=pixels).pooler_output)
        synchronize(bench.device)
    return Run(time.perf_counter() - started, len(paths))


def adapter_images(bench: Bench, paths: Sequence[str], workers: int) -> Run:
    """The project's inference: ``DualEncoder.encode_images`` (threads prepare batches ahead;
    each batch's embeddings come back to the host, which synchronises). The project's own
    performance recorder times each model call (H2D copy + model + copy back); the rest is
    the main thread waiting for prepared batches, and bookkeeping."""
    from tasks.tracking.performance import Recorder, recording

    recorder = Recorder()
    started = time.perf_counter()
    with recording(recorder):
        result = bench.adapter.encode_images(list(paths), workers=workers)
    seconds = time.perf_counter() - started
    assert not result.failures, result.failures
    calls = sum(recorder.batch_s)
    return Run(seconds, len(paths), {"model calls (h2d+model+d2h)": calls,
                                     "waiting for prepared batches, rest": seconds - calls})


def bare_texts(bench: Bench, captions: Sequence[str]) -> Run:
    """Tokenizer (``padding=True, truncation=True``) + ``get_text_features`` per batch."""
    import torch

    tokenizer = bench.processor.tokenizer
    started = time.perf_counter()
    with torch.inference_mode(), bench.autocast():
        for batch in batches(captions, bench.batch_size):
            tokens = tokenizer(list(batch), padding=True, truncation=True,
                               return_tensors="pt").to(bench.device)
            bench.model.get_text_features(**tokens)
        synchronize(bench.device)
    return Run(time.perf_counter() - started, len(captions))


def adapter_texts(bench: Bench, captions: Sequence[str]) -> Run:
    started = time.perf_counter()
    bench.adapter.encode_texts(list(captions))
    return Run(time.perf_counter() - started, len(captions))


# --- the flow --------------------------------------------------------------------------------


@dataclass
class FlowSide:
    """The flow's settings; each call is one ``Run`` (wall seconds, images, report.json's
    stage timings, the flow's result)."""

    manifest: Path
    work: Path
    args: argparse.Namespace
    amp: str
    device: str

    def config(self, limit: int | None, folder: str) -> Any:
        from tasks.config_io import build_config

        return build_config({
            "model": {"path": str(self.work / "model"), "batch_size": self.args.batch_size,
                      "device": self.device, "amp": self.amp},
            "dataset": {"path": str(self.manifest), "limit": limit},
            "inference": {"cache": False, "num_workers": self.args.workers},
            "report": {"destination": str(self.work / "reports")},
            "tracking": {"tracking_uri": f"sqlite:///{self.work / 'mlflow.db'}",
                         "experiment": "gpu-throughput"},
            "work_dir": str(self.work / folder),
        })

    def run(self, limit: int | None = None, folder: str = "flow-work") -> Run:
        from flows.evaluate import evaluate

        config = self.config(limit, folder)
        started = time.perf_counter()
        result = evaluate(config)
        seconds = time.perf_counter() - started
        timings = stage_timings(result)
        return Run(seconds, int(result["counts"].get("images_scored", 0)),
                   {key: float(value) for key, value in timings.items()}, result)


# --- parity ----------------------------------------------------------------------------------


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def parity_fp32(bench: Bench, items: int) -> dict[str, Any]:
    """Autocast off on both sides, first ``items`` images and their captions: min cosine
    between the bare loop's and the adapter's (amp off) embeddings (expected ~1)."""
    import torch

    from tasks.models import load_adapter

    paths = bench.paths[:items]
    captions = bench.captions[: items * 5]
    image_vectors, text_vectors = [], []
    with torch.inference_mode():
        for batch in batches(paths, bench.batch_size):
            pixels = bench.processor(images=[decode_pil(p) for p in batch],
                                     return_tensors="pt")["pixel_values"].to(bench.device)
            image_vectors.append(bench.model.get_image_features(pixel_values=pixels)
                                 .pooler_output.float().cpu().numpy())
        for batch in batches(captions, bench.batch_size):
            tokens = bench.processor.tokenizer(list(batch), padding=True, truncation=True,
                                               return_tensors="pt").to(bench.device)
            text_vectors.append(bench.model.get_text_features(**tokens)
                                .pooler_output.float().cpu().numpy())
    adapter: Any = load_adapter(bench.adapter.config.model_copy(update={"amp": "off"}))
    images = adapter.encode_images(paths, workers=bench.workers).vectors
    texts = adapter.encode_texts(captions)
    del adapter
    return {"items": len(paths), "texts": len(captions),
            "image_min_cosine": min_cosine(np.concatenate(image_vectors), images),
            "text_min_cosine": min_cosine(np.concatenate(text_vectors), texts)}


# --- driver ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    parser.add_argument("--model", choices=sorted(LAYOUTS), default="b32")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="decode threads of the project / DataLoader worker processes")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                        help="autocast dtype; auto: bf16 on a CUDA GPU that supports it, else off")
    parser.add_argument("--repeat", type=int, default=1, help="alternating timed runs")
    parser.add_argument("--keep", choices=["best", "median"], default="best",
                        help="which of the --repeat runs of each contender is reported")
    parser.add_argument("--parity-items", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 steadies CPU runs "
                        "on a shared machine")
    parser.add_argument("--no-flow", action="store_true",
                        help="skip the full evaluate flow (and its Prefect server)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data, model, MLflow and reports (default: a temp dir; "
                        "data and model are reused when the setup matches)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def machine_facts(device: str) -> dict[str, Any]:
    import torch
    import transformers

    facts: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": load_average(), "device": device}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["cuda"] = torch.version.cuda
    return facts


def load_bench(manifest: Path, model_dir: Path, args: argparse.Namespace) -> Bench:
    """Files, captions, the bare model and processor, and the project's adapter."""
    from transformers import AutoModel, AutoProcessor

    from tasks.config import ModelConfig
    from tasks.models import load_adapter
    from tasks.models.base import resolve_amp, resolve_device

    device = resolve_device(args.device)
    amp = resolve_amp(device, args.amp)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    bench = Bench(paths=[str(manifest.parent / r["image"]) for r in records],
                  captions=[c for r in records for c in r["captions"]], model_dir=model_dir,
                  device=device, amp=amp, batch_size=args.batch_size, workers=args.workers)
    bench.model = AutoModel.from_pretrained(model_dir).to(device).eval()
    bench.processor = AutoProcessor.from_pretrained(model_dir)
    bench.adapter = load_adapter(ModelConfig(path=str(model_dir), device=device, amp=amp,
                                             batch_size=args.batch_size))
    return bench


def contenders(bench: Bench, flow: FlowSide | None) -> dict[str, Callable[[bool], Run]]:
    """Every timed contender by name; the argument says warm-up (one batch / a few items)."""
    steps = loader_steps(bench)
    n = bench.batch_size

    def paths(warm: bool) -> list[str]:
        return bench.paths[:n] if warm else bench.paths

    def captions(warm: bool) -> list[str]:
        return bench.captions[:n] if warm else bench.captions

    def loader(step: Callable[[Sequence[str]], Any], workers: int) -> Callable[[bool], Run]:
        return lambda warm: loader_pass(bench, paths(warm), step, workers)

    def adapter(workers: int) -> Callable[[bool], Run]:
        return lambda warm: adapter_images(bench, paths(warm), workers)

    out: dict[str, Callable[[bool], Run]] = {}
    for name, step in steps.items():
        for workers in (0, bench.workers):
            label = f"loader: {name}, " + ("main thread" if workers == 0
                                            else f"{workers} threads (prefetched)")
            out[label] = loader(step, workers)
    out[BARE_IMAGES] = lambda warm: bare_images(bench, paths(warm))
    out[f"dataloader images ({bench.workers} workers)"] = \
        lambda warm: dataloader_images(bench, paths(warm))
    for workers in dict.fromkeys((bench.workers, DEFAULT_NUM_WORKERS)):
        out[f"adapter images (workers={workers})"] = adapter(workers)
    out["bare texts"] = lambda warm: bare_texts(bench, captions(warm))
    out["adapter texts"] = lambda warm: adapter_texts(bench, captions(warm))
    if flow is not None:
        out["flow (cache off)"] = lambda warm: (flow.run(FLOW_WARMUP_ITEMS, "warmup") if warm
                                                else flow.run())
    return out


def measure_all(bench: Bench, flow: FlowSide | None, args: argparse.Namespace
                ) -> tuple[dict[str, Run], dict[str, float]]:
    """Warm-up of each contender, then ``--repeat`` alternating rounds; the kept run of each,
    and the warm-up seconds."""
    table = contenders(bench, flow)
    warmup = {name: call(True).seconds for name, call in table.items()}
    runs: dict[str, list[Run]] = {name: [] for name in table}
    for round_index in range(args.repeat):
        for name, call in table.items():
            runs[name].append(call(False))
        print(f"round {round_index + 1}/{args.repeat} done; load average {load_average()}",
              flush=True)
    kept = {name: pick(values, args.keep) for name, values in runs.items()}
    if bench.device.startswith("cuda"):  # the stage split needs a synchronise per stage
        kept[BARE_STAGED] = bare_images(bench, bench.paths, True)
    return kept, warmup


def print_rates(kept: dict[str, Run], unit: str) -> None:
    width = max(len(name) for name in kept)
    for name, run in kept.items():
        print(f"  {name:<{width}}  {run.seconds:8.3f} s  {run.rate:10.1f} {unit}/s")


def print_split(split: dict[str, Any]) -> None:
    width = max(len(name) for name in split)
    for name, row in split.items():
        print(f"     {name:<{width}} {row['s']:8.3f} s  {100 * row['share']:5.1f} %  "
              f"{row['ms_per_image']:7.3f} ms/image")


def stage_table(run: Run) -> dict[str, Any]:
    total = sum(run.stages.values())
    return {name: {"s": round(s, 4), "share": round(s / total, 3) if total else None,
                   "ms_per_image": round(1000 * s / run.items, 4)}
            for name, s in run.stages.items()}


def report(kept: dict[str, Run], bench: Bench, flow: FlowSide | None, parity: dict[str, Any],
           args: argparse.Namespace) -> dict[str, Any]:
    """Prints the sections; returns every figure for the JSON line."""
    print(f"\n1. loader throughput ({len(bench.paths)} images, batch {bench.batch_size}; "
          f"kept: {args.keep} of {args.repeat})")
    print_rates({k: v for k, v in kept.items() if k.startswith("loader")}, "images")
    splits = image_section(kept, bench)
    flow_figures = {} if flow is None else flow_section(kept["flow (cache off)"], kept, flow)
    print("\n5. texts (tokenize + text encoder)")
    print_rates({k: v for k, v in kept.items() if k.endswith("texts")}, "texts")
    ratios = ratio_section(kept, bench, flow_figures)
    print(f"   fp32 parity on {parity['items']} images / {parity['texts']} texts (autocast "
          f"off): min cosine images {parity['image_min_cosine']:.7f}, texts "
          f"{parity['text_min_cosine']:.7f} (expected ~1)")
    return {"setup": {"images": len(bench.paths), "texts": len(bench.captions),
                      "batch_size": bench.batch_size, "model": args.model, "amp": bench.amp,
                      "workers": bench.workers, "repeat": args.repeat, "keep": args.keep},
            "rates": {name: {"s": run.seconds, "items": run.items, "per_s": run.rate}
                      for name, run in kept.items()},
            **splits, "ratios": ratios, "flow": flow_figures, "parity_fp32": parity}


def image_section(kept: dict[str, Run], bench: Bench) -> dict[str, Any]:
    """Image contenders' rates and where the bare loop's and the adapter's time goes."""
    print("\n2-4. image inference throughput (end to end: decode, preprocess, copy, model)")
    print_rates({k: v for k, v in kept.items() if "images" in k and not k.startswith("loader")},
                "images")
    staged = kept.get(BARE_STAGED, kept[BARE_IMAGES])
    bare_split = stage_table(staged)
    print("   where the bare loop's time goes" + (
        " (staged pass, synchronised per stage):" if BARE_STAGED in kept
        else " (the timed pass; CPU: nothing is asynchronous):"))
    print_split(bare_split)
    adapter_split = stage_table(kept[f"adapter images (workers={bench.workers})"])
    print(f"   where the adapter's time goes (workers={bench.workers}; its model calls are "
          "synchronised by the copy back):")
    print_split(adapter_split)
    return {"bare_stages": bare_split, "adapter_stages": adapter_split}


def ratio_section(kept: dict[str, Run], bench: Bench, flow: dict[str, Any]) -> dict[str, float]:
    """The project's rates over the baselines' (images/s, texts/s; the flow in items/s)."""
    project = kept[f"adapter images (workers={bench.workers})"].rate
    ratios = {
        "adapter_over_bare_images": project / kept[BARE_IMAGES].rate,
        "adapter_over_dataloader_images":
            project / kept[f"dataloader images ({bench.workers} workers)"].rate,
        "adapter_over_bare_texts": kept["adapter texts"].rate / kept["bare texts"].rate}
    if flow:
        bare_items = flow["bare_items_per_s"]
        ratios |= {"flow_inference_compute_over_bare_items":
                   flow["inference_compute_items_per_s"] / bare_items,
                   "flow_inference_stage_over_bare_items":
                   flow["inference_stage_items_per_s"] / bare_items,
                   "flow_wall_over_bare_items": flow["wall_items_per_s"] / bare_items}
    print("\n6. ratios (goals on a 16-core GPU box, bf16: flow >= bare; the project with "
          "parallel decoding >= 4x the bare loop)")
    for name, value in ratios.items():
        print(f"  {name:<40} {value:7.3f}")
    return ratios


def flow_section(run: Run, kept: dict[str, Run], flow: FlowSide) -> dict[str, Any]:
    """The flow against the bare loop's images + texts time (the flow's inference embeds
    both), in items (an image and its captions) per second: the flow's inference compute
    (report.json ``perf_items_per_s``: model load excluded, like every contender here), its
    inference stage (model load included) and its wall time (every stage, MLflow, report)."""
    bare_s = kept[BARE_IMAGES].seconds + kept["bare texts"].seconds
    inference_s = run.stages.get("inference", float("nan"))
    performance = inference_performance(run.result)
    figures = {"wall_s": run.seconds, "stages_s": run.stages,
               "inference_compute_items_per_s": performance.get("perf_items_per_s",
                                                                float("nan")),
               "inference_stage_items_per_s": run.items / inference_s,
               "wall_items_per_s": run.items / run.seconds, "bare_items_per_s": run.items / bare_s,
               "performance": performance}
    print(f"\n4b. evaluate flow (cache off, num_workers={flow.args.workers}): wall "
          f"{run.seconds:.2f} s; stages {run.stages}")
    print(f"   items (image + its captions)/s: flow inference compute "
          f"{figures['inference_compute_items_per_s']:.1f}, inference stage (with the model "
          f"load) {figures['inference_stage_items_per_s']:.1f}, flow wall "
          f"{figures['wall_items_per_s']:.1f}; bare images+texts loop "
          f"{figures['bare_items_per_s']:.1f}")
    print(f"   report.json performance: {figures['performance']}")
    return figures


def run(work: Path, args: argparse.Namespace) -> None:
    setup = Setup(args.images, args.model)
    started = time.perf_counter()
    manifest, model_dir = prepare(work, setup)
    bench = load_bench(manifest, model_dir, args)
    facts = machine_facts(bench.device)
    print(f"setup: {args.images} images {IMAGE_SIZE}px x 5 captions, CLIP {args.model} "
          f"{sum(p.numel() for p in bench.model.parameters()) / 1e6:.1f}M parameters; batch "
          f"{args.batch_size}; device {bench.device} ({facts.get('gpu', 'no GPU')}); amp "
          f"{bench.amp}; workers {args.workers}; build+load {time.perf_counter() - started:.1f}s; "
          f"work {work}")
    print(f"machine: {facts}", flush=True)
    flow = None if args.no_flow else FlowSide(manifest, work, args, bench.amp, bench.device)
    if flow is None:
        kept, warmup = measure_all(bench, None, args)
        startup_s = None
    else:
        with prefect_server() as startup_s:
            print(f"prefect temporary server start-up: {startup_s:.2f} s", flush=True)
            kept, warmup = measure_all(bench, flow, args)
    flow_note = "" if flow is None else f"; the flow {FLOW_WARMUP_ITEMS} items"
    print(f"warm-up (one batch each{flow_note}), s: "
          f"{ {k: round(v, 2) for k, v in warmup.items()} }")
    parity = parity_fp32(bench, min(args.parity_items, len(bench.paths)))
    figures = report(kept, bench, flow, parity, args)
    figures |= {"machine": facts, "warmup_s": warmup, "prefect_server_start_s": startup_s}
    if bench.device.startswith("cuda"):
        import torch

        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    figures["load_average_end"] = load_average()
    line = json.dumps(figures, default=str)
    if args.json is not None:
        args.json.write_text(line + "\n")
    print(line)


def main() -> None:
    args = parse_args()
    if args.workers < 1 or args.images < 1 or args.batch_size < 1:
        raise SystemExit("--workers, --images and --batch-size must be at least 1")
    apply_defaults()
    import torch
    from transformers.utils import logging

    logging.disable_progress_bar()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.work is not None:
        run(args.work.resolve(), args)
        return
    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
