"""Image-to-text models with generate(): VisionEncoderDecoder, BLIP, BLIP-2, GIT and
image-text-to-text models (LLaVA, Qwen2-VL, ...).

Prompts are built and taken off the output per family (``tasks.models.prompting``); decoding
uses the checkpoint's ``generation_config``, overridden only by the settings the config sets.
"""

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
    autocast_context,
    loading,
    register_adapter,
    resolve_model_path,
    torch_dtype,
)
from tasks.models.batching import Prepared, run_batches
from tasks.models.contracts import Generated, Progress
from tasks.models.encoder_inputs import to_device
from tasks.models.processors import load_processor
from tasks.models.prompting import SubBatch, prompter_for, strip_echo

__all__ = ["CaptionerAdapter", "generation_kwargs", "load_processor"]

SAMPLING_SETTINGS = ("temperature", "top_p")


DEFAULT_MAX_NEW_TOKENS = 32
DECODING_SETTINGS = ("max_new_tokens", "num_beams", "do_sample", *SAMPLING_SETTINGS)


def generation_kwargs(settings: GenerationSettings, generation_config: Any,
                      tokenizer: Any) -> dict[str, Any]:
    """generate()'s keyword arguments: the settings the config gives (not null); the rest comes
    from the checkpoint's ``generation_config``, except ``max_new_tokens``, which is 32 where
    the checkpoint has none (its ``max_length`` would count the prompt, image tokens included).
    Sampling settings apply only when sampling."""
    kwargs: dict[str, Any] = {name: getattr(settings, name) for name in DECODING_SETTINGS
                              if getattr(settings, name) is not None}
    if "max_new_tokens" not in kwargs and generation_config.max_new_tokens is None:
        kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
    if not kwargs.get("do_sample", generation_config.do_sample):
        for name in SAMPLING_SETTINGS:
            kwargs.pop(name, None)
    if generation_config.pad_token_id is None and tokenizer.pad_token_id is None \
            and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return kwargs


@register_adapter("captioner")
class CaptionerAdapter(Adapter):
    """Generates a caption (or an answer, with a prompt) per image with batched ``generate()``."""

    what = "an image-to-text model"

    def __init__(self, config: ModelConfig) -> None:
        import torch

        super().__init__(config)
        self.path = resolve_model_path(config)
        options = dict(trust_remote_code=config.trust_remote_code, local_files_only=True)
        self.image_processor, self.tokenizer, self.processor = load_processor(self.path, options)
        with loading(self.what, self.path):
            model_class = self.model_class(options)
            self.model = model_class.from_pretrained(self.path, dtype=torch_dtype(config.dtype),
                                                     weights_only=True, **options)
            self.prompter = prompter_for(self.model, self.processor, self.image_processor,
                                         self.tokenizer)
        self.model.to(self.device).eval()
        self._torch = torch

    def model_class(self, options: dict[str, Any]) -> Any:
        """The checkpoint's own class (``architectures``) when it generates text, else
        ``AutoModelForImageTextToText``."""
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        return checkpoint_class(self.path, options,
                                set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values()),
                                "AutoModelForImageTextToText")

    @property
    def default_prompt(self) -> str | None:
        """The config's prompt, else (null) the family's."""
        prompt = self.config.generation.prompt
        return prompt if prompt is not None else self.prompter.caption_prompt

    def describe(self) -> dict[str, str]:
        """Also the decoding settings in effect (the config's, else the checkpoint's), as
        ``resolved.generation.*`` params: a null in the config is never ambiguous on the run."""
        kwargs = generation_kwargs(self.config.generation, self.model.generation_config,
                                   self.tokenizer)
        used = {f"generation.{name}": str(kwargs.get(
            name, getattr(self.model.generation_config, name, None)))
            for name in DECODING_SETTINGS}
        return super().describe() | {"prompt_format": self.prompter.describe()} | used

    def _prepare(self, paths: Sequence[str], prompts: Sequence[str | None]
                 ) -> Prepared[list[SubBatch]]:
        """Decoded, preprocessed sub-batches; ``kept`` lists their rows in order."""
        images, kept, failures = decode_images(paths)
        if not images:
            return Prepared(None, [], failures)
        batches = self.prompter.batches(images, [prompts[i] for i in kept])
        return Prepared(batches, [kept[p] for batch in batches for p in batch.positions],
                        failures)

    def generate(self, paths: Sequence[str], prompts: Sequence[str | None] | None = None,
                 progress: Progress | None = None, workers: int = 2) -> Generated:
        prompts = list(prompts) if prompts is not None else [self.default_prompt] * len(paths)
        results = run_batches(
            len(paths), self.config.batch_size,
            lambda rows: self._prepare([paths[i] for i in rows], [prompts[i] for i in rows]),
            lambda batches: [text for batch in batches for text in self._generate(batch)],
            progress, workers, self.pin_memory)
        texts: list[str | None] = [None] * len(paths)
        for rows, outputs in results.outputs:
            for row, text in zip(rows, outputs, strict=True):
                texts[row] = text
        return Generated(texts, results.failures)

    def _generate(self, batch: SubBatch) -> list[str]:
        """Greedy/beam/sampled continuations of one sub-batch, its prompt removed by token
        count, decoded without special tokens."""
        torch = self._torch
        inputs = {k: to_device(v, self.device) for k, v in batch.inputs.items()}
        for key, value in inputs.items():  # pixel values follow the weights' dtype
            if value.is_floating_point() and value.dtype != self.model.dtype:
                inputs[key] = value.to(self.model.dtype)
        kwargs = generation_kwargs(self.config.generation, self.model.generation_config,
                                   self.tokenizer)
        with torch.inference_mode(), autocast_context(self.device, self.config.amp), \
                quiet_padding_warning():
            ids = self.model.generate(**inputs, **kwargs)
        new = strip_echo(ids, batch.echo)
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def checkpoint_class(path: Path, options: dict[str, Any], accepted: set[str],
                     fallback: str) -> Any:
    """The transformers class named first in the checkpoint's ``architectures`` that is one of
    ``accepted`` (a BLIP captioning checkpoint stays ``BlipForConditionalGeneration`` under the
    VQA adapter, not a VQA head with random weights), else the ``fallback`` Auto class."""
    import transformers

    try:
        architectures = transformers.AutoConfig.from_pretrained(path, **options).architectures
    except (OSError, ValueError):
        architectures = None
    for name in architectures or []:
        if name in accepted and hasattr(transformers, name):
            return getattr(transformers, name)
    return getattr(transformers, fallback)


class _PaddingWarning(logging.Filter):
    MESSAGES = ("recommend passing in an `attention_mask`",
                "The attention mask is not set with a batched input")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in self.MESSAGES)


@contextmanager
def quiet_padding_warning() -> Iterator[None]:
    """transformers warns about a missing attention mask when a decoder step sees the pad
    token, or when a batch has no mask and the pad token is the EOS (GPT-2 decoders); here
    prompts without a mask are grouped by length and never padded, and pads only follow
    sequences already finished, which the output drops: not a problem."""
    loggers = [logging.getLogger(f"transformers.{name}")
               for name in ("modeling_utils", "generation.utils")]
    quiet = _PaddingWarning()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
