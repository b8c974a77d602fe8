"""Visual question answering: one question per item, generated answers scored with the official
VQA accuracy against the human answers (the item's caption column holds the answers)."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.vqa import infer, score

register_task_kind(TaskKindSpec(
    name="vqa", infer=infer.infer, score=score.score, headline="vqa_accuracy",
    review_texts=(("question", "question"), ("prediction", "prediction"),
                  ("references", "captions")),
    display_columns=("question", "prediction", "vqa_accuracy"), model_kinds=("vqa",),
))
