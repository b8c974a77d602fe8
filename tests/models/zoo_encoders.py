"""Tiny dual encoders of each family, built offline from their configs and saved like checkpoints.

Every builder has the signature ``build_<family>(folder) -> folder`` (``tests/models/families.py``
names them) and writes a seeded, randomly initialised model (32-px images, patch 8, hidden 32,
2 layers, 2 heads) with the SAME processor classes and settings as the real checkpoints, so
``AutoModel`` / ``AutoProcessor.from_pretrained(folder, local_files_only=True)`` reload them the
way the ``dual_encoder`` adapter does and preprocessing is what users of the real ones get:

- SigLIP (``google/siglip-base-patch16-224``): ``SiglipProcessor`` with a
  ``SiglipImageProcessor`` (square resize, bicubic, mean/std 0.5) and a sentencepiece-style
  (Unigram, lowercased, punctuation stripped) tokenizer that appends ``</s>``, pads with ``</s>``,
  has ``model_max_length`` 64 and returns ``input_ids`` only, like the converted checkpoints
  (the ``sentencepiece`` package the slow ``SiglipTokenizer`` needs is not installed here, so
  its fast equivalent is saved as ``tokenizer.json``);
- SigLIP 2 (``google/siglip2-base-patch16-naflex``): ``Siglip2Processor`` with a
  ``Siglip2ImageProcessor`` (patches at native aspect ratio, ``max_num_patches`` 16 here) and a
  Gemma BPE tokenizer (``Siglip2Tokenizer``: lowercased, no BOS, EOS appended, right padding,
  ``input_ids`` only, as in the conversion script);
- SigLIP 2 at fixed resolution (``google/siglip2-base-patch16-224``): a ``SiglipModel`` with a
  ``SiglipProcessor`` and a plain ``GemmaTokenizer`` (``build_siglip2_fixed``);
- CLIP: ``tests.helpers.build_tiny_clip``.

The vocabularies cover ``tests.helpers.WORDS`` (the coloured-squares captions) word for word.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.helpers import WORDS, build_tiny_clip

SEED = 0
TEXT_LENGTH = 64  # SigLIP / SigLIP 2 text length (max_position_embeddings, padding="max_length")
TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64}
# SigLIP's paper initialisation of the sigmoid loss's temperature and bias (t' = log 10,
# b = -10); the random init would leave both at 0 and hide a missing bias in the tests.
LOGIT_SCALE, LOGIT_BIAS = math.log(10.0), -10.0


def build_clip(folder: Path) -> Path:
    """The tiny CLIP of ``tests.helpers`` (``CLIPProcessor``, BPE ``CLIPTokenizer``)."""
    return build_tiny_clip(folder)


def build_siglip(folder: Path) -> Path:
    """A tiny ``SiglipModel`` with a ``SiglipProcessor`` like ``google/siglip-base-patch16-224``."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    tokenizer = siglip_tokenizer(WORDS)
    config = SiglipConfig(text_config=_text_config(tokenizer),
                          vision_config={**TOWER, "image_size": 32, "patch_size": 8})
    image_processor = SiglipImageProcessorPil(
        size={"height": 32, "width": 32}, resample=3, do_resize=True, do_rescale=True,
        do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    _save(SiglipModel, config, SiglipProcessor(image_processor=image_processor,
                                              tokenizer=tokenizer), folder)
    return folder


def build_siglip2(folder: Path) -> Path:
    """A tiny ``Siglip2Model`` (NaFlex) with a ``Siglip2Processor`` like
    ``google/siglip2-base-patch16-naflex`` (16 patches of 8 px instead of 256 of 16 px)."""
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessorPil,
        Siglip2Model,
        Siglip2Processor,
    )

    tokenizer = gemma_tokenizer(WORDS)
    config = Siglip2Config(text_config=_text_config(tokenizer),
                           vision_config={**TOWER, "patch_size": 8, "num_patches": 16})
    image_processor = Siglip2ImageProcessorPil(
        patch_size=8, max_num_patches=16, resample=2, do_resize=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5])
    _save(Siglip2Model, config, Siglip2Processor(image_processor=image_processor,
                                                tokenizer=tokenizer), folder)
    return folder


def build_siglip2_fixed(folder: Path) -> Path:
    """A tiny fixed-resolution SigLIP 2 (``google/siglip2-base-patch16-224``): a ``SiglipModel``
    (``model_type`` ``siglip``) with a ``SiglipProcessor`` of a ``SiglipImageProcessor``
    (bilinear) and a plain ``GemmaTokenizer`` -- which, unlike the NaFlex one, does not
    lowercase (the checkpoints' ``do_lower_case`` is not applied by transformers 5)."""
    from transformers import (
        GemmaTokenizer,
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipProcessor,
    )

    vocab, merges = gemma_vocab(WORDS)
    tokenizer = GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=False, add_eos_token=True,
        padding_side="right", do_lower_case=True, model_input_names=["input_ids"])
    config = SiglipConfig(text_config=_text_config(tokenizer),
                          vision_config={**TOWER, "image_size": 32, "patch_size": 8})
    image_processor = SiglipImageProcessorPil(
        size={"height": 32, "width": 32}, resample=2, do_resize=True, do_rescale=True,
        do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    _save(SiglipModel, config, SiglipProcessor(image_processor=image_processor,
                                              tokenizer=tokenizer), folder)
    return folder


def _text_config(tokenizer: Any) -> dict[str, Any]:
    """The text tower: vocabulary and special ids of ``tokenizer``, 64 positions."""
    return {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": TEXT_LENGTH,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id}


def _save(model_class: Any, config: Any, processor: Any, folder: Path) -> None:
    import torch

    torch.manual_seed(SEED)
    model = model_class(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def siglip_tokenizer(words: Iterable[str]) -> Any:
    """SigLIP's sentencepiece tokenizer as a fast one: Unigram over ``▁word`` pieces and single
    characters, lowercase, punctuation removed, ``</s>`` appended, ``</s>`` as padding."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]  # T5-style ids 0, 1, 2
    pieces = [(token, 0.0) for token in specials]
    pieces += [("▁" + word, -1.0) for word in dict.fromkeys(words)]
    pieces += [(char, -10.0) for char in "▁" + string.ascii_lowercase + string.digits]
    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    punctuation = "[" + "".join("\\" + c for c in string.punctuation) + "]"
    backend.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(punctuation), ""), normalizers.Lowercase(),
        normalizers.Strip()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="</s>", unk_token="<unk>",
        model_max_length=TEXT_LENGTH, model_input_names=["input_ids"], padding_side="right")


def gemma_tokenizer(words: Iterable[str]) -> Any:
    """A ``Siglip2Tokenizer`` (Gemma BPE with byte fallback, lowercased) whose merges make every
    word, and the word after a space (``▁word``), one token; set up as SigLIP 2's conversion
    does: no BOS, EOS appended, right padding, ``input_ids`` only."""
    from transformers import Siglip2Tokenizer

    vocab, merges = gemma_vocab(words)
    return Siglip2Tokenizer(
        vocab=vocab, merges=merges, add_bos_token=False, add_eos_token=True,
        padding_side="right", model_input_names=["input_ids"])


def gemma_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma's layout: ``<pad> <eos> <bos> <unk> <mask>``, the 256 byte-fallback tokens, single
    characters, then one token per merge. Each token's merges are added after all earlier ones
    (joining what the known merges leave, left to right), so no later merge changes how an
    earlier token splits."""
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁" + string.ascii_lowercase + string.digits:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        for token in (word, "▁" + word):
            pieces = _segment(list(token), ranks)
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab.setdefault(pair[0] + pair[1], len(vocab))
                pieces = [pair[0] + pair[1], *pieces[2:]]
    return vocab, merges


def _segment(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply the known merges the way BPE does: lowest rank first."""
    while len(pieces) > 1:
        pairs = zip(pieces, pieces[1:], strict=False)
        ranked = [(ranks[p], i) for i, p in enumerate(pairs) if p in ranks]
        if not ranked:
            break
        _, i = min(ranked)
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces
