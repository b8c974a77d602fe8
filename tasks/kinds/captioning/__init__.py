"""Captioning: generate a caption per image, score it against the reference captions."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.captioning import infer, score

register_task_kind(TaskKindSpec(
    name="captioning", infer=infer.infer, score=score.score, headline="cider",
    review_texts=(("prediction", "prediction"), ("references", "captions")),
    display_columns=("prediction", "cider", "bleu_4", "clip_score"), model_kinds=("captioner",),
))
