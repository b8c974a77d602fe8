"""Text-to-image quality: generated images (the dataset, prompts in its captions column) against
reference images: FID, KID, precision/recall on image features, CLIPScore against the prompt."""

from tasks.kinds.base import TaskKindSpec, register_task_kind
from tasks.kinds.text_to_image import infer, score

register_task_kind(TaskKindSpec(
    name="text_to_image", infer=infer.infer, score=score.score, inputs=infer.count_inputs,
    headline="clip_score", review_texts=(("references", "captions"),),
    display_columns=("prompt", "clip_score", "in_reference_manifold", "nearest_reference"),
    model_kinds=("dual_encoder",),
))
