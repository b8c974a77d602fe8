"""Build and train the tiny captioning / VQA model used by ``bifocal demo``.

The model is an ordinary ``transformers`` ``VisionEncoderDecoderModel`` (ViT encoder, GPT-2
decoder with cross-attention) saved with a word-level ``PreTrainedTokenizerFast`` and a
``ViTImageProcessorPil``, so the ``captioner`` and ``vqa`` adapters load it exactly like a
user's checkpoint. One model does both tasks, trained jointly on the train split:

* captioning: decoder sequence ``[BOS] caption [EOS]``, loss on every caption token;
* VQA: ``[BOS] question answer [EOS]``, loss on the answer and ``[EOS]`` only. The question is
  the decoder prompt the adapters feed (``[BOS]`` + the question's ids without special
  tokens), so the model never learns to *produce* questions and captioning from ``[BOS]``
  cannot drift into one.

The tokenizer splits on spaces (kept as a ``▁`` prefix, like SentencePiece) and punctuation,
and its decoder restores the text exactly: a decoded answer reads ``"what color is the
shape? red"``, which ``strip_prompt`` turns into ``"red"``.

Run ``python -m tasks.demo.captioner [BENCHMARK_DIR]`` to train on a benchmark (default: build
a full-size one in a temp dir) and print training time and test-split metrics.
"""

from __future__ import annotations

import random
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
    caption_words,
    load_manifest,
)
from tasks.demo.derived import all_questions, question_words, vqa_records
from tasks.demo.train import TrainResult, _lr_lambda, deterministic_torch

if TYPE_CHECKING:
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        VisionEncoderDecoderModel,
        ViTImageProcessorPil,
    )

Log = Callable[[str], None]

IGNORE_INDEX = -100  # label of positions without loss (torch's cross-entropy default)
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
SPACE = "\u2581"  # "▁": marks a token that follows a space
# Image attributes predicted by the training-only auxiliary heads (field -> values).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS), "size": SIZES,
    "position": POSITIONS,
}


@dataclass(frozen=True)
class CaptionerSpec:
    """Architecture of the demo captioner (image size matches the demo CLIP models)."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    max_positions: int = 48  # longest caption is ~28 tokens with [BOS]/[EOS]
    # Init scales: the library defaults (0.02) leave attention nearly uniform for hundreds of
    # steps (the model sees only the colour histogram); larger ones learn "where" and "large"
    # within the short demo training.
    init_range: float = 0.05  # std of the linear/conv weight init (ViT and GPT-2)
    patch_position_std: float = 0.1  # std of the ViT position-embedding init


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


# --- tokenizer, image processor, model ---


def tokenizer_words() -> list[str]:
    """Words/punctuation of every caption template, question and exact answer (sorted)."""
    return sorted(set(caption_words()) | set(question_words()))


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer over ``words`` with exact detokenisation.

    Every word gets two entries, ``▁word`` (after a space) and ``word`` (glued, e.g. after a
    hyphen), so decoding reproduces the original spacing and punctuation.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = sorted({form for w in words for form in (w, SPACE + w)} | {SPACE})
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *pieces])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(),
    ])
    backend.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    bos, eos = vocab["[BOS]"], vocab["[EOS]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", bos), ("[EOS]", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
        eos_token="[EOS]", clean_up_tokenization_spaces=False,
    )


def build_image_processor(spec: CaptionerSpec = CaptionerSpec()) -> ViTImageProcessorPil:
    """PIL-based ViT processor (no torchvision needed): resize to the model's input size."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})


def build_captioner(spec: CaptionerSpec,
                    tokenizer: PreTrainedTokenizerFast) -> VisionEncoderDecoderModel:
    """Randomly initialised ViT + GPT-2 encoder-decoder (uses torch's global RNG: seed it).

    ``generate()`` starts from ``[BOS]``, pads with ``[PAD]`` and stops at ``[EOS]``.
    """
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTModel,
    )

    encoder = ViTModel(ViTConfig(
        image_size=spec.image_size, patch_size=spec.patch_size, hidden_size=spec.vision_hidden,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.heads,
        intermediate_size=spec.vision_hidden * spec.mlp_ratio, initializer_range=spec.init_range,
    ))
    with torch.no_grad():
        encoder.embeddings.position_embeddings.normal_(std=spec.patch_position_std)
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=spec.text_hidden, n_layer=spec.text_layers,
        n_head=spec.heads, n_inner=spec.text_hidden * spec.mlp_ratio,
        n_positions=spec.max_positions, add_cross_attention=True,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=spec.init_range,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.bos_token_id
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    return model


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
        if log is not None and (step + 1) % max(1, cfg.steps // 4) == 0:
            log(f"  step {step + 1}/{cfg.steps} loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses


def train_demo_captioner(
    dataset_root: Path,
    out_dir: Path,
    *,
    steps: int = CaptionerTrainConfig.steps,
    seed: int = 0,
    log: Log | None = print,
    spec: CaptionerSpec = CaptionerSpec(),
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


# --- evaluation through the real adapters ---


def evaluate_demo_captioner(model_dir: Path, dataset_root: Path, *, split: str = "test",
                            seed: int = 0, batch_size: int = 128,
                            log: Log | None = None) -> dict[str, float]:
    """Caption and VQA metrics of a saved captioner, evaluated like ``bifocal`` does.

    Loads ``model_dir`` through the ``captioner`` and ``vqa`` adapters. Baselines:
    ``*_shuffled`` scores each image with another image's generated caption, and
    ``vqa_accuracy_prior`` answers every question with its most frequent answer in the split
    (a blind guess that knows the answer distribution). ``log`` gets a few examples.
    """
    from collections import Counter

    from tasks.config import ModelConfig
    from tasks.metrics import get_metric
    from tasks.metrics.captioning import CaptionInputs
    from tasks.metrics.vqa import VQAInputs
    from tasks.models import load_adapter

    root = Path(dataset_root)
    records = load_manifest(root / f"{split}.jsonl")

    def adapter(kind: str):
        return load_adapter(ModelConfig(kind=kind, path=str(model_dir), device="cpu",
                                        batch_size=batch_size))

    paths = [str(root / r["image"]) for r in records]
    captions = adapter("captioner").generate(paths).texts
    ids, refs = [r["id"] for r in records], [r["captions"] for r in records]
    shuffled = captions[1:] + captions[:1]
    results: dict[str, float] = {}
    for name, predictions in (("", captions), ("_shuffled", shuffled)):
        inputs = CaptionInputs(ids, [p or "" for p in predictions], refs)
        results[f"bleu_4{name}"] = get_metric("bleu")(inputs).corpus["bleu_4"]
        results[f"cider{name}"] = get_metric("cider")(inputs).corpus["cider"]

    lines = vqa_records(records, split, seed)
    answers = adapter("vqa").answer([str(root / q["image"]) for q in lines],
                                    [q["question"] for q in lines]).texts
    metric = get_metric("vqa_accuracy")
    vqa = metric(VQAInputs([q["id"] for q in lines], [a or "" for a in answers],
                           [q["answers"] for q in lines], [q["question_type"] for q in lines],
                           [q["answer_type"] for q in lines]))
    results.update(vqa.corpus)
    per_question = vqa.per_sample["vqa_accuracy"]
    for question in sorted({q["question"] for q in lines}):
        rows = [i for i, q in enumerate(lines) if q["question"] == question]
        results[f"vqa_accuracy.question.{question}"] = float(per_question[rows].mean())
    counts: dict[str, Counter] = {}
    for q in lines:
        truth = Counter(q["answers"]).most_common(1)[0][0]  # the exact answer (>= 7 of 10)
        counts.setdefault(q["question"], Counter())[truth] += 1
    prior = {question: c.most_common(1)[0][0] for question, c in counts.items()}
    blind = metric(VQAInputs([q["id"] for q in lines], [prior[q["question"]] for q in lines],
                             [q["answers"] for q in lines]))
    results["vqa_accuracy_prior"] = blind.corpus["vqa_accuracy"]
    results["n_images"], results["n_questions"] = float(len(records)), float(len(lines))
    if log is not None:
        _log_examples(log, captions, refs, lines, answers)
    return results


def _log_examples(log: Log, captions: list, refs: list, lines: list, answers: list,
                  k: int = 4) -> None:
    rng = random.Random(0)
    for i in rng.sample(range(len(captions)), min(k, len(captions))):
        log(f"  caption: {captions[i]!r}  (a reference: {refs[i][0]!r})")
    for i in rng.sample(range(len(lines)), min(k, len(lines))):
        log(f"  {lines[i]['question']} -> {answers[i]!r}  (answer: {lines[i]['answers'][0]!r})")


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
