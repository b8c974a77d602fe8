"""Generative visual question answering: BLIP VQA (``BlipForQuestionAnswering``), BLIP-2 and
image-text-to-text models, or any captioner prompted with the question."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.models.base import ModelError, register_adapter
from tasks.models.captioner import CaptionerAdapter
from tasks.models.contracts import Generated, Progress

# Model types whose VQA head is a generator (ViLT's is a classifier over a fixed answer set).
GENERATIVE_VQA_TYPES = {"blip", "blip-2"}


@register_adapter("vqa")
class VQAAdapter(CaptionerAdapter):
    """Answers one question per image; the question fills ``generation.question_template``."""

    def model_class_name(self) -> str:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(self.path, local_files_only=True).model_type
        if model_type == "vilt":
            raise ModelError("ViLT answers by classification over a fixed answer set; "
                             "only generative VQA models are supported")
        if model_type in GENERATIVE_VQA_TYPES:
            return "AutoModelForVisualQuestionAnswering"
        return "AutoModelForImageTextToText"

    def answer(self, paths: Sequence[str], questions: Sequence[str],
               progress: Progress | None = None, workers: int = 2) -> Generated:
        template = self.config.generation.question_template
        prompts = [template.format(question=q) for q in questions]
        return self.generate(paths, prompts, progress=progress, workers=workers)
