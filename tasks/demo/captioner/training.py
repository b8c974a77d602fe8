"""Joint captioning + VQA training of the demo captioner: data encoding, loss, training loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.demo.benchmark import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    load_manifest,
)
from tasks.demo.captioner.model import (
    CaptionerSpec,
    build_captioner,
    build_image_processor,
    build_tokenizer,
    tokenizer_words,
)
from tasks.demo.derived import all_questions
from tasks.demo.train import TrainResult, _lr_lambda, deterministic_torch, log_progress

if TYPE_CHECKING:
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        VisionEncoderDecoderModel,
        ViTImageProcessorPil,
    )

Log = Callable[[str], None]

IGNORE_INDEX = -100  # label of positions without loss (torch's cross-entropy default)
# Image attributes predicted by the training-only auxiliary heads (field -> values).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS), "size": SIZES,
    "position": POSITIONS,
}


@dataclass(frozen=True)
class CaptionerTrainConfig:
    """Optimisation settings of the joint captioning + VQA training."""

    steps: int = 900
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    vqa_frac: float = 0.5  # share of the batch's sequences that are questions
    aux_weight: float = 3.0  # weight of the auxiliary attribute loss (0 disables it)
    seed: int = 0
    # 2 threads are ~15% faster on idle cores but many times slower when another process
    # competes for them (OpenMP threads wait on each other), so train on one.
    threads: int = 1


@dataclass(frozen=True)
class DecoderData:
    """A split pre-processed once.

    ``inputs``/``labels`` are ``(N, S, L)``: for image ``i``, sequences ``0..n_captions-1`` are
    its captions and the rest its questions, right-padded (``[PAD]`` / ``IGNORE_INDEX``);
    ``lengths`` ``(N, S)`` holds the unpadded lengths, ``attributes`` ``(N, A)`` the index of
    each image's value of every :data:`ATTRIBUTES` field.
    """

    pixel_values: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    attributes: torch.Tensor
    n_captions: int


# --- training data ---


def decoder_example(prompt_ids: Sequence[int], target_ids: Sequence[int], bos: int,
                    eos: int) -> tuple[list[int], list[int]]:
    """Decoder inputs and labels of ``[BOS] prompt target [EOS]`` (teacher forcing).

    Input ``k`` predicts token ``k + 1``; positions predicting a prompt token get
    ``IGNORE_INDEX`` (the adapter feeds the prompt, the model only has to continue it).
    """
    sequence = [bos, *prompt_ids, *target_ids, eos]
    labels = [IGNORE_INDEX] * len(prompt_ids) + [*target_ids, eos]
    return sequence[:-1], labels


def _token_ids(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """Ids without special tokens: exactly what the adapters tokenise a prompt into."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _decoder_rows(records: list[dict], tokenizer: PreTrainedTokenizerFast,
                  ) -> list[list[tuple[list[int], list[int]]]]:
    """Per image: ``decoder_example`` of each caption, then of each of its questions."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    n_caps = len(records[0]["captions"])
    captions = _token_ids(tokenizer, [c for r in records for c in r["captions"]])
    questions = [all_questions(r) for r in records]
    texts = sorted({t for qs in questions for q in qs for t in (q.question, q.answer)})
    ids = dict(zip(texts, _token_ids(tokenizer, texts), strict=True))  # a few dozen strings
    rows = []
    for i, qs in enumerate(questions):
        pairs: list[tuple[list[int], list[int]]]
        pairs = [([], c) for c in captions[i * n_caps : (i + 1) * n_caps]]
        pairs += [(ids[q.question], ids[q.answer]) for q in qs]
        rows.append([decoder_example(prompt, target, bos, eos) for prompt, target in pairs])
    return rows


def encode_split(dataset_root: Path, split: str, tokenizer: PreTrainedTokenizerFast,
                 image_processor: ViTImageProcessorPil) -> DecoderData:
    """Pre-process every image, caption and question (all kinds) of a split once."""
    import torch
    from PIL import Image

    root = Path(dataset_root)
    records = load_manifest(root / f"{split}.jsonl")
    images = []
    for record in records:
        with Image.open(root / record["image"]) as im:
            images.append(im.convert("RGB"))
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]

    n_caps = {len(r["captions"]) for r in records}
    if len(n_caps) != 1:
        raise ValueError("every image must have the same number of captions")
    rows = _decoder_rows(records, tokenizer)
    width = max(len(inp) for row in rows for inp, _ in row)
    pad = tokenizer.pad_token_id
    inputs = torch.tensor([[inp + [pad] * (width - len(inp)) for inp, _ in row] for row in rows])
    labels = torch.tensor([[lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in row]
                           for row in rows])
    lengths = torch.tensor([[len(inp) for inp, _ in row] for row in rows])
    attributes = torch.tensor([[values.index(r[name]) for name, values in ATTRIBUTES.items()]
                               for r in records], dtype=torch.long)
    return DecoderData(pixels, inputs, labels, lengths, attributes, n_caps.pop())


# --- training ---


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of each sequence's mean token loss.

    Weighs a two-token answer like a twenty-token caption (a token mean would let captions
    dominate the VQA samples of a mixed batch).
    """
    import torch.nn.functional as F

    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                 reduction="none")
    counts = (labels != IGNORE_INDEX).sum(dim=1).clamp_min(1)
    return (token_loss.sum(dim=1) / counts).mean()


class AttributeHeads:
    """Training-only linear classifiers of the image attributes on the encoder's CLS token.

    Captions and answers name an image's shape in one token out of many, so through the
    decoder alone a tiny ViT learns colours at once but shapes only after thousands of steps.
    Predicting the attributes directly from the encoder gives it that signal at every step;
    the heads are dropped afterwards, the saved checkpoint is a plain encoder-decoder.
    """

    def __init__(self, hidden: int) -> None:
        import torch

        self.sizes = [len(values) for values in ATTRIBUTES.values()]
        self.linear = torch.nn.Linear(hidden, sum(self.sizes))

    def loss(self, encoder_states: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the attributes of the batch's images."""
        import torch.nn.functional as F

        logits = self.linear(encoder_states[:, 0]).split(self.sizes, dim=-1)
        per_attribute = [F.cross_entropy(lg, attributes[:, k]) for k, lg in enumerate(logits)]
        return sum(per_attribute) / len(per_attribute)


def train_captioner(model: VisionEncoderDecoderModel, data: DecoderData,
                    cfg: CaptionerTrainConfig, log: Log | None = None) -> list[float]:
    """Joint captioning + VQA training: each step, every image of the batch gets one random
    caption, or (with probability ``cfg.vqa_frac``) one random question. Returns the decoder
    loss per step (the auxiliary attribute loss, see :class:`AttributeHeads`, is not in it).

    Call inside :func:`deterministic_torch` for reproducible weights.
    """
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    heads = AttributeHeads(model.config.encoder.hidden_size) if cfg.aux_weight > 0 else None
    params = [*model.parameters(), *(heads.linear.parameters() if heads else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.steps, cfg.warmup_frac))
    n, s = data.lengths.shape
    n_questions = s - data.n_captions
    bs = min(cfg.batch_size, n)
    order, pos = torch.randperm(n, generator=gen), 0
    losses: list[float] = []
    model.train()
    for step in range(cfg.steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        ask = torch.rand(bs, generator=gen) < cfg.vqa_frac
        cap = torch.randint(data.n_captions, (bs,), generator=gen)
        question = data.n_captions + torch.randint(n_questions, (bs,), generator=gen)
        seq = torch.where(ask, question, cap)
        lengths = data.lengths[idx, seq]
        width = int(lengths.max())  # trim padding shared by the whole batch
        # Padding is on the right, so the mask changes no real token's logits; passing it
        # keeps transformers from warning about padded inputs.
        mask = (torch.arange(width) < lengths[:, None]).long()
        encoded = model.encoder(pixel_values=data.pixel_values[idx]).last_hidden_state
        out = model(encoder_outputs=(encoded,), decoder_input_ids=data.inputs[idx, seq, :width],
                    decoder_attention_mask=mask)
        loss = sequence_loss(out.logits, data.labels[idx, seq, :width])
        total = loss if heads is None else loss + cfg.aux_weight * heads.loss(
            encoded, data.attributes[idx])
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        log_progress(log, step, cfg.steps, losses)
    model.eval()
    return losses


def train_demo_captioner(
    dataset_root: Path,
    out_dir: Path,
    *,
    steps: int = CaptionerTrainConfig.steps,
    seed: int = 0,
    log: Log | None = print,
    spec: CaptionerSpec = CaptionerSpec(),  # noqa: B008 - frozen dataclass (from .model)
    cfg: CaptionerTrainConfig = CaptionerTrainConfig(),
) -> TrainResult:
    """Train the demo captioner on ``dataset_root``'s train split and save it to ``out_dir``.

    ``steps`` and ``seed`` override ``cfg``'s. The folder holds the model (safetensors), the
    tokenizer and the image processor; ``seconds`` covers pre-processing, training and saving.
    """
    from dataclasses import replace

    start = time.perf_counter()
    cfg = replace(cfg, steps=steps, seed=seed)
    tokenizer = build_tokenizer(tokenizer_words())
    image_processor = build_image_processor(spec)
    data = encode_split(dataset_root, "train", tokenizer, image_processor)
    if log is not None:
        log(f"pre-processed {data.pixel_values.shape[0]} train images "
            f"({time.perf_counter() - start:.1f}s); training captioner ({steps} steps)...")
    with deterministic_torch(cfg.seed, cfg.threads):
        model = build_captioner(spec, tokenizer)
        losses = train_captioner(model, data, cfg, log)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    return TrainResult(out_dir, losses, time.perf_counter() - start)
