"""Image-to-text models (VisionEncoderDecoder, BLIP, GIT, image-text-to-text) with generate()."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.config import GenerationSettings, ModelConfig
from tasks.io import decode_images
from tasks.models.base import (
    Adapter,
    ModelError,
    autocast_context,
    loading,
    register_adapter,
    resolve_model_path,
    torch_dtype,
)
from tasks.models.batching import Prepared, run_batches
from tasks.models.contracts import Generated, Progress

SubBatches = list[tuple[dict[str, Any], list[int]]]  # (model inputs, positions they cover)


def load_processor(path: Path, options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """AutoProcessor, or an image processor + tokenizer pair (VisionEncoderDecoder folders)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(path, **options)
        if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
            return processor.image_processor, processor.tokenizer, processor
    except (OSError, ValueError, TypeError):
        pass
    try:
        return (AutoImageProcessor.from_pretrained(path, **options),
                AutoTokenizer.from_pretrained(path, **options), None)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load an image processor and tokenizer from {path}: {error}") \
            from None


def generation_kwargs(settings: GenerationSettings, tokenizer: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens,
                              "num_beams": settings.num_beams, "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs |= {"temperature": settings.temperature, "top_p": settings.top_p}
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return kwargs


@register_adapter("captioner")
class CaptionerAdapter(Adapter):
    """Generates a caption (or an answer, with a prompt) per image with batched ``generate()``."""

    auto_class = "AutoModelForImageTextToText"

    def __init__(self, config: ModelConfig) -> None:
        import torch
        import transformers

        super().__init__(config)
        self.path = resolve_model_path(config)
        options = dict(trust_remote_code=config.trust_remote_code, local_files_only=True)
        self.image_processor, self.tokenizer, self.processor = load_processor(self.path, options)
        with loading("an image-to-text model", self.path):
            auto = getattr(transformers, self.model_class_name())
            self.model = auto.from_pretrained(self.path, dtype=torch_dtype(config.dtype),
                                              weights_only=True, **options)
        self.model.to(self.device).eval()
        self._torch = torch

    def model_class_name(self) -> str:
        return self.auto_class

    def _prepare(self, paths: Sequence[str], prompts: Sequence[str | None]
                 ) -> Prepared[SubBatches]:
        """Decoded, preprocessed sub-batches; ``kept`` lists their positions in order."""
        images, kept, failures = decode_images(paths)
        if not images:
            return Prepared(None, [], failures)
        texts = [prompts[i] or "" for i in kept]
        if not any(texts):
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
            batches = [({"pixel_values": pixels}, kept)]
        elif self.processor is not None:  # BLIP, GIT, ...: the processor pads the prompts
            inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
            batches = [(dict(inputs), kept)]
        else:
            batches = self._decoder_prompt_batches(images, kept, texts)
        return Prepared(batches, [row for _, rows in batches for row in rows], failures)

    def _decoder_prompt_batches(self, images: list[Any], kept: list[int], texts: list[str]
                                ) -> SubBatches:
        """Encoder-decoder models continue a decoder prompt that starts with the start token;
        prompts of equal token length go together, so no padding sits before the answer."""
        torch = self._torch
        start = self.model.config.decoder_start_token_id or self.tokenizer.bos_token_id
        groups: dict[int, list[int]] = {}
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        for position, ids in enumerate(encoded):
            groups.setdefault(len(ids), []).append(position)
        batches = []
        for positions in groups.values():
            pixels = self.image_processor(images=[images[p] for p in positions],
                                          return_tensors="pt")["pixel_values"]
            ids = torch.tensor([[start, *encoded[p]] for p in positions])
            batches.append(({"pixel_values": pixels, "decoder_input_ids": ids},
                            [kept[p] for p in positions]))
        return batches

    def generate(self, paths: Sequence[str], prompts: Sequence[str | None] | None = None,
                 progress: Progress | None = None, workers: int = 2) -> Generated:
        prompt = self.config.generation.prompt
        prompts = list(prompts) if prompts is not None else [prompt] * len(paths)
        results = run_batches(
            len(paths), self.config.batch_size,
            lambda rows: self._prepare([paths[i] for i in rows], [prompts[i] for i in rows]),
            lambda batches: [text for inputs, _ in batches for text in self._generate(inputs)],
            progress, workers)
        texts: list[str | None] = [None] * len(paths)
        for rows, outputs in results.outputs:
            for row, text in zip(rows, outputs, strict=True):
                texts[row] = strip_prompt(text, prompts[row])
        return Generated(texts, results.failures)

    def _generate(self, inputs: dict[str, Any]) -> list[str]:
        torch = self._torch
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.model.dtype != torch.float32:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        kwargs = generation_kwargs(self.config.generation, self.tokenizer)
        with torch.inference_mode(), autocast_context(self.device, self.config.amp), \
                quiet_padding_warning():
            ids = self.model.generate(**inputs, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class _PaddingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "recommend passing in an `attention_mask`" not in record.getMessage()


@contextmanager
def quiet_padding_warning() -> Iterator[None]:
    """transformers warns about a missing attention mask when a decoder step sees the pad
    token; here that only happens to sequences already finished (padded after their EOS,
    prompts are grouped by length and never padded), which the output drops: not a problem."""
    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _PaddingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def strip_prompt(text: str, prompt: str | None) -> str:
    """Models such as BLIP echo the prompt; the caption is what follows it."""
    if prompt and text.lower().startswith(prompt.strip().lower()):
        return text[len(prompt.strip()):].strip()
    return text
