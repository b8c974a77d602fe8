"""Generative visual question answering: BLIP VQA (``BlipForQuestionAnswering``), BLIP-2,
image-text-to-text models (LLaVA, Qwen2-VL, ...), or any captioner prompted with the question.

The question fills ``generation.question_template`` when the config sets one, else the family's
own prompt (``tasks.models.prompting``): "Question: {question} Answer:" for BLIP-2, the question
plus "Answer the question using a single word or phrase." inside the chat template for chat
models, the bare question otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.models.base import ModelError, register_adapter
from tasks.models.captioner import CaptionerAdapter, checkpoint_class
from tasks.models.contracts import Generated, Progress

# Model types whose Auto VQA class is a generator (ViLT's is a classifier over a fixed answer set).
GENERATIVE_VQA_TYPES = {"blip", "blip-2"}


@register_adapter("vqa")
class VQAAdapter(CaptionerAdapter):
    """Answers one question per image; the question fills the question template."""

    def model_class(self, options: dict[str, Any]) -> Any:
        """The checkpoint's own generating class (``architectures``), else the Auto VQA class
        for BLIP / BLIP-2 and ``AutoModelForImageTextToText`` for the rest."""
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
            MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES,
        )

        model_type = AutoConfig.from_pretrained(self.path, **options).model_type
        if model_type == "vilt":
            raise ModelError("ViLT answers by classification over a fixed answer set; "
                             "only generative VQA models are supported")
        accepted = {*MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values(),
                    *MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES.values()}
        fallback = "AutoModelForVisualQuestionAnswering" if model_type in GENERATIVE_VQA_TYPES \
            else "AutoModelForImageTextToText"
        return checkpoint_class(self.path, options, accepted, fallback)

    @property
    def question_template(self) -> str:
        """The config's template, else (null) the family's."""
        template = self.config.generation.question_template
        return template if template is not None else self.prompter.question_template

    def describe(self) -> dict[str, str]:
        return super().describe() | {"question_template": self.question_template}

    def answer(self, paths: Sequence[str], questions: Sequence[str],
               progress: Progress | None = None, workers: int = 2) -> Generated:
        template = self.question_template
        prompts = [template.format(question=q) for q in questions]
        return self.generate(paths, prompts, progress=progress, workers=workers)
