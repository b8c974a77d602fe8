"""Image-text matching: score (image, text) pairs as match / no match."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.matching import infer, score

register_task_kind(TaskKindSpec(
    name="matching", infer=infer.infer, score=score.score, inputs=infer.count_inputs,
    headline="accuracy",
    review_texts=(("prediction", "text"), ("references", "captions")),
    display_columns=("text", "label", "score", "correct"),
    model_kinds=("dual_encoder", "itm", "torch_module"),
))
