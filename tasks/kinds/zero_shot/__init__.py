"""Zero-shot classification with a dual encoder (CLIP's prompt-ensemble recipe)."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.zero_shot import infer, score

register_task_kind(TaskKindSpec(
    name="zero_shot_classification", infer=infer.infer, score=score.score, headline="accuracy",
    review_texts=(("prediction", "prediction"), ("references", "label")),
    display_columns=("label", "prediction", "correct"), model_kinds=("dual_encoder", "itm"),
    metric_task="classification",
))
