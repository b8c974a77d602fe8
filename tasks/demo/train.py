"""Build and train the tiny CLIP-style dual encoders used by ``bifocal demo``.

The models are ordinary ``transformers`` ``CLIPModel`` checkpoints (safetensors + processor
files), so the evaluation pipeline loads them exactly like a user's checkpoint with
``AutoModel.from_pretrained(dir)`` / ``AutoProcessor.from_pretrained(dir)``.

Run ``python -m tasks.demo`` to build the full-size assets into a temp dir and print
wall time and Recall@1 of both models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.demo.benchmark import caption_words, load_manifest

if TYPE_CHECKING:
    import torch
    from transformers import CLIPModel, CLIPProcessor

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of the demo encoders (both demo models share it)."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    text_hidden: int = 64
    text_layers: int = 3
    heads: int = 4
    mlp_ratio: int = 2
    max_text_length: int = 32
    projection_dim: int = 64
    logit_scale_init: float = 2.6592  # log(1 / 0.07), CLIP's initial temperature


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``steps`` is what distinguishes the short and the long model.

    ``threads`` defaults to 1: at these tensor sizes a second thread buys ~5-10 % wall time on
    an idle 2-core machine but doubles CPU use, and on a busy machine (tests running beside
    it) two spinning OpenMP threads made steps up to 10x slower. One thread is also the most
    reproducible setting (results do not depend on how work is split between threads).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1.4e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.15
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class SplitTensors:
    """A split pre-processed once: pixels ``(N,3,H,W)``, token ids/mask ``(N,C,L)``."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    losses: list[float]
    seconds: float


def log_progress(log: Log | None, step: int, steps: int, losses: list[float]) -> None:
    """Four progress lines per training run: the mean loss of the last 20 steps."""
    if log is not None and (step + 1) % max(1, steps // 4) == 0:
        log(f"  step {step + 1}/{steps} loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")


@contextmanager
def deterministic_torch(seed: int, threads: int = 2) -> Iterator[None]:
    """Seed torch, fix the thread count and enable deterministic kernels; restore afterwards."""
    import torch

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def build_processor(spec: ModelSpec = ModelSpec()) -> CLIPProcessor:
    """CLIP processor = PIL image processor (no torchvision needed) + the demo tokenizer."""
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    from tasks.demo.tokenizer import build_clip_tokenizer

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    tokenizer = build_clip_tokenizer(caption_words(), model_max_length=spec.max_text_length)
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(spec: ModelSpec, processor: CLIPProcessor) -> CLIPModel:
    """A randomly initialised ``CLIPModel`` (uses torch's global RNG: seed it first)."""
    from transformers import CLIPConfig, CLIPModel

    tok = processor.tokenizer
    text_config = {
        "vocab_size": len(tok),
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_hidden * spec.mlp_ratio,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.heads,
        "max_position_embeddings": spec.max_text_length,
        "projection_dim": spec.projection_dim,
        # Pooling takes the first EOS position; pad == eos, so the id must be the real one.
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision_config = {
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_hidden * spec.mlp_ratio,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.heads,
        "projection_dim": spec.projection_dim,
    }
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=spec.projection_dim,
        logit_scale_init_value=spec.logit_scale_init,
    )
    return CLIPModel(config)


def encode_split(dataset_root: Path, split: str, processor: CLIPProcessor) -> SplitTensors:
    """Load and pre-process every image and caption of a split once (keeps steps cheap)."""
    from PIL import Image

    records = load_manifest(Path(dataset_root) / f"{split}.jsonl")
    n_caps = {len(r["captions"]) for r in records}
    if len(n_caps) != 1:
        raise ValueError("every image must have the same number of captions")
    images = []
    for r in records:
        with Image.open(Path(dataset_root) / r["image"]) as im:
            images.append(im.convert("RGB"))
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    captions = [c for r in records for c in r["captions"]]
    tokens = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    c = n_caps.pop()
    return SplitTensors(
        pixel_values=pixels,
        input_ids=tokens["input_ids"].view(len(records), c, -1),
        attention_mask=tokens["attention_mask"].view(len(records), c, -1),
    )


def _lr_lambda(total: int, warmup_frac: float) -> Callable[[int], float]:
    warmup = max(1, int(total * warmup_frac))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_clip(model: CLIPModel, data: SplitTensors, cfg: TrainConfig,
               log: Log | None = None) -> list[float]:
    """Contrastive (symmetric InfoNCE) training; one random caption per image per step.

    Call inside :func:`deterministic_torch` for reproducible weights.
    """
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.steps, cfg.warmup_frac))
    n, n_caps = data.input_ids.shape[:2]
    bs = min(cfg.batch_size, n)
    order = torch.randperm(n, generator=gen)
    pos = 0
    losses: list[float] = []
    model.train()
    for step in range(cfg.steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        cap = torch.randint(n_caps, (bs,), generator=gen)
        ids, mask = data.input_ids[idx, cap], data.attention_mask[idx, cap]
        width = int(mask.sum(1).max())  # trim padding shared by the whole batch
        out = model(input_ids=ids[:, :width], attention_mask=mask[:, :width],
                    pixel_values=data.pixel_values[idx], return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(out.loss.detach()))
        log_progress(log, step, cfg.steps, losses)
    model.eval()
    return losses


def train_and_save(
    out_dir: Path,
    data: SplitTensors,
    processor: CLIPProcessor,
    *,
    spec: ModelSpec = ModelSpec(),
    cfg: TrainConfig = TrainConfig(),
    log: Log | None = None,
) -> TrainResult:
    """Initialise, train and save one model + processor as a loadable checkpoint folder."""
    start = time.perf_counter()
    with deterministic_torch(cfg.seed, cfg.threads):
        model = build_model(spec, processor)
        losses = train_clip(model, data, cfg, log)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return TrainResult(out_dir, losses, time.perf_counter() - start)


def embed_split(model: CLIPModel, data: SplitTensors,
                batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image ``(N,D)`` and caption ``(N*C,D)`` embeddings.

    Captions are flattened image-major: rows ``i*C .. i*C+C-1`` belong to image ``i``.
    """
    import torch

    n, c, length = data.input_ids.shape
    ids = data.input_ids.reshape(n * c, length)
    mask = data.attention_mask.reshape(n * c, length)
    model.eval()
    with torch.no_grad():
        img = torch.cat([
            model.get_image_features(
                pixel_values=data.pixel_values[i : i + batch_size]).pooler_output
            for i in range(0, n, batch_size)
        ])
        txt = torch.cat([
            model.get_text_features(input_ids=ids[i : i + batch_size],
                                    attention_mask=mask[i : i + batch_size]).pooler_output
            for i in range(0, n * c, batch_size)
        ])
    return (torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1))


def recall_at_1(model: CLIPModel, data: SplitTensors) -> dict[str, float]:
    """Text->image and image->text Recall@1 by cosine similarity, plus chance level.

    t2i: a caption hits if its own image is top-1. i2t: an image hits if its top-1 caption is
    one of its own. Chance is ``1/N`` in both directions.
    """
    import torch

    img, txt = embed_split(model, data)
    n, c = data.input_ids.shape[:2]
    owner = torch.arange(n).repeat_interleave(c)
    sim = txt @ img.T  # (N*C, N)
    t2i = float((sim.argmax(dim=1) == owner).float().mean())
    i2t = float((owner[sim.argmax(dim=0)] == torch.arange(n)).float().mean())
    return {"t2i_r1": t2i, "i2t_r1": i2t, "chance": 1.0 / n}


# name -> training steps; same architecture, seed and data, only the training length differs.
DEFAULT_MODELS: dict[str, int] = {"clip-tiny-short": 200, "clip-tiny-long": 1000}


def build_demo_models(
    dataset_root: Path,
    models_root: Path,
    *,
    models: dict[str, int] | None = None,
    spec: ModelSpec = ModelSpec(),
    cfg: TrainConfig = TrainConfig(),
    log: Log = print,
) -> dict[str, Path]:
    """Train one model per ``name -> steps`` entry (same architecture and seed) and save them."""
    models = DEFAULT_MODELS if models is None else models
    processor = build_processor(spec)
    t0 = time.perf_counter()
    data = encode_split(dataset_root, "train", processor)
    log(f"pre-processed {data.pixel_values.shape[0]} train images "
        f"({time.perf_counter() - t0:.1f}s)")
    out: dict[str, Path] = {}
    for name, steps in models.items():
        log(f"training {name} ({steps} steps)...")
        run_cfg = TrainConfig(**{**asdict(cfg), "steps": steps})
        res = train_and_save(Path(models_root) / name, data, processor, spec=spec, cfg=run_cfg)
        log(f"trained {name}: final loss {sum(res.losses[-20:]) / len(res.losses[-20:]):.3f} "
            f"({res.seconds:.1f}s)")
        out[name] = res.model_dir
    return out
