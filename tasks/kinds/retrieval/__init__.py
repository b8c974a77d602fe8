"""Image-text retrieval: embed images and captions with a dual encoder (or BLIP's ITC
embeddings), rank both ways."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.retrieval import infer, score

register_task_kind(TaskKindSpec(
    name="retrieval", infer=infer.infer, score=score.score, inputs=infer.count_inputs,
    headline="i2t_recall_at_1",
    review_texts=(("prediction", "top_caption"), ("references", "captions")),
    display_columns=("i2t_rank", "best_t2i_rank"), model_kinds=("dual_encoder", "itm"),
))
