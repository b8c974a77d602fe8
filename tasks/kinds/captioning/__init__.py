"""Captioning: generate a caption per image, score it against the reference captions."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.captioning.infer import infer
from tasks.kinds.captioning.score import score

register_task_kind(TaskKindSpec(
    name="captioning", infer=infer, score=score,
    display_columns=("prediction", "cider", "bleu_4", "clip_score"), model_kinds=("captioner",),
))
