"""Test data builders shared across test modules."""

from __future__ import annotations

import json
import os
from pathlib import Path

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220),
          "yellow": (230, 210, 40)}
WORDS = ["a", "red", "green", "blue", "yellow", "square", "on", "white", "black", "picture",
         "of", "small", "big"]


def draw(path: Path, color: tuple[int, int, int], size: int = 24, offset: int = 4) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle([offset, offset, offset + size, offset + size], fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_dataset(root: Path, n: int = 8, manifest: str = "data.jsonl") -> Path:
    """``n`` images of coloured squares with two captions each; returns the manifest path."""
    names = list(COLORS)
    lines = []
    for index in range(n):
        color = names[index % len(names)]
        size = 10 + 2 * (index // len(names))
        draw(root / "images" / f"{index:03d}.png", COLORS[color], size=size)
        lines.append({"id": f"item-{index}", "image": f"images/{index:03d}.png",
                      "captions": [f"a {color} square", f"a picture of a {color} square"],
                      "label": color, "size": "small" if size < 14 else "big"})
    path = root / manifest
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def word_tokenizer(words: list[str]):
    """A word-level fast tokenizer with BOS/EOS/PAD/UNK, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                   unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")


def build_tiny_captioner(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A randomly initialised ViT + GPT-2 VisionEncoderDecoder saved like a checkpoint."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
        ViTModel,
    )

    tokenizer = word_tokenizer(words)
    torch.manual_seed(seed)
    encoder = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64))
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
        add_cross_attention=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_tiny_blip_itm(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A randomly initialised BLIP image-text retrieval model (ITM head) with its processor."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=32)
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32,
                     "max_position_embeddings": 64},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 64},
        projection_dim=16, image_text_hidden_size=16,
    )
    torch.manual_seed(seed)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_clip(folder: Path) -> Path:
    """A randomly initialised 2-layer CLIP (32 px) saved like a user's checkpoint (seeded)."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    from tasks.demo.tokenizer import build_clip_tokenizer
    from tasks.demo.train import ModelSpec, build_model

    spec = ModelSpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2,
                     text_hidden=32, text_layers=2, heads=2, max_text_length=16,
                     projection_dim=16)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                              crop_size={"height": 32, "width": 32}),
        tokenizer=build_clip_tokenizer(WORDS, model_max_length=16))
    torch.manual_seed(0)
    model = build_model(spec, processor)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
