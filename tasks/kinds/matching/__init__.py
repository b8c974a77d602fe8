"""Image-text matching: score (image, text) pairs as match / no match."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.matching.infer import count_inputs, infer
from tasks.kinds.matching.score import score

register_task_kind(TaskKindSpec(
    name="matching", infer=infer, score=score, inputs=count_inputs,
    display_columns=("text", "label", "score", "correct"),
    model_kinds=("dual_encoder", "itm", "torch_module"),
))
