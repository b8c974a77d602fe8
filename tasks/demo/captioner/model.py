"""The demo captioner's model: architecture spec, tokenizer, image processor, construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.demo.benchmark import caption_words
from tasks.demo.derived import question_words

if TYPE_CHECKING:
    from transformers import (
        PreTrainedTokenizerFast,
        VisionEncoderDecoderModel,
        ViTImageProcessorPil,
    )

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
SPACE = "\u2581"  # "▁": marks a token that follows a space


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
