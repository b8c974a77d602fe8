"""How each dual-encoder family was trained to be called, so the adapter calls it the same way.

- **Text padding.** CLIP pools the EOS token under a causal mask, so padding to the longest text
  of the batch changes nothing. SigLIP and SigLIP 2 were trained on texts padded to a fixed
  length (``padding="max_length"``, 64 tokens for most checkpoints) and pool the *last* position,
  whatever token sits there: padded to the batch's longest, a text's embedding would depend on
  its batch neighbours. Their texts are padded to the model's text length (the smaller of
  ``max_position_embeddings`` and the tokenizer's ``model_max_length``), truncated to it, with
  the tokenizer's own padding side and outputs (the converted checkpoints return ``input_ids``
  only: the original models use no text attention mask).
- **Lowercase.** SigLIP and SigLIP 2 were trained on lowercased text. SigLIP's and the NaFlex
  SigLIP 2's tokenizers (``SiglipTokenizer``, ``Siglip2Tokenizer``) lowercase by themselves, but
  the fixed-resolution SigLIP 2 checkpoints (``model_type`` ``siglip``) ship a plain
  ``GemmaTokenizer``, which does not: the adapter lowercases SigLIP-family texts itself (the
  same for the first two, what the model card asks of users for the third).
- **Image inputs.** Every tensor the checkpoint's image processor returns goes to
  ``get_image_features`` (SigLIP 2 needs ``pixel_attention_mask`` and ``spatial_shapes`` next to
  its patch sequence); only floating-point tensors are cast to the model's dtype. The image
  processor is called directly, with its saved settings: a processor's class-level defaults
  (``Siglip2Processor``: ``max_num_patches=256``, ``patch_size=16``) would override those of a
  checkpoint that differs from them.
- **Pair score.** Retrieval and zero-shot rank by cosine for every family (the sigmoid is
  monotonic in the cosine, so the ranking is the same). The matching score is the family's own
  match measure: cosine for CLIP-style models (contrastive softmax training gives no absolute
  probability), and for the SigLIP families the probability the model was trained to output,
  ``sigmoid(logit_scale.exp() * cosine + logit_bias)`` -- what ``model(...).logits_per_image``
  gives through a sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class EncoderFamily:
    """A family's calling conventions (see the module docstring)."""

    name: str
    text_padding: Literal["longest", "max_length"]
    pair_score: Literal["cosine", "sigmoid"]
    lowercase: bool = False


CLIP_STYLE = EncoderFamily("clip", "longest", "cosine")
SIGLIP_STYLE = EncoderFamily("siglip", "max_length", "sigmoid", lowercase=True)


def encoder_family(model: Any) -> EncoderFamily:
    """SigLIP conventions for every ``siglip*`` model type (``siglip``: SigLIP and the fixed-
    resolution SigLIP 2 checkpoints, ``siglip2``: NaFlex SigLIP 2), as transformers' own
    zero-shot pipeline decides; CLIP conventions otherwise."""
    model_type = str(getattr(model.config, "model_type", "") or "")
    return SIGLIP_STYLE if "siglip" in model_type else CLIP_STYLE


def family_texts(texts: Sequence[str], family: EncoderFamily) -> list[str]:
    """The texts as the family was trained on them (lowercased for SigLIP families)."""
    return [text.lower() for text in texts] if family.lowercase else list(texts)


def text_inputs(tokenizer: Any, texts: Sequence[str], family: EncoderFamily, max_length: int
                ) -> dict[str, Any]:
    """Token tensors for ``get_text_features``: the family's texts, padded as it was trained,
    truncated to ``max_length``."""
    padding: bool | str = "max_length" if family.text_padding == "max_length" else True
    tokens = tokenizer(family_texts(texts, family), padding=padding, truncation=True,
                       max_length=max_length, return_tensors="pt")
    return dict(tokens)


def image_inputs(processor: Any, images: Sequence[Any]) -> dict[str, Any]:
    """Every tensor the image processor returns for ``images`` (pixels, masks, shapes)."""
    import torch

    image_processor = getattr(processor, "image_processor", None) or processor
    batch = image_processor(images=list(images), return_tensors="pt")
    return {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}


def to_device(tensor: Any, device: str) -> Any:
    """``tensor`` on ``device``; a copy from page-locked memory does not wait for the GPU
    (later work on the same stream is ordered after it)."""
    return tensor.to(device, non_blocking=tensor.is_pinned())


def to_model(inputs: dict[str, Any], device: str, dtype: Any) -> dict[str, Any]:
    """Tensors moved to ``device`` (asynchronously from page-locked memory); floating-point
    ones cast to ``dtype`` (ids, masks and shapes keep their integer types)."""
    moved = {}
    for key, value in inputs.items():
        value = to_device(value, device)
        moved[key] = value.to(dtype) if value.is_floating_point() else value
    return moved


def match_probability(cosine: np.ndarray, logit_scale: float, logit_bias: float) -> np.ndarray:
    """SigLIP's match probability ``sigmoid(exp(logit_scale) * cosine + logit_bias)`` (float64;
    NaN stays NaN)."""
    from scipy.special import expit

    logits = np.exp(logit_scale) * np.asarray(cosine, dtype=np.float64) + logit_bias
    return np.asarray(expit(logits), dtype=np.float64)


def sigmoid_parameters(model: Any) -> tuple[float, float]:
    """``(logit_scale, logit_bias)`` of a SigLIP-style model (scalars, as trained)."""
    scale, bias = getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)
    if scale is None or bias is None:
        from tasks.models.base import ModelError

        raise ModelError(f"{type(model).__name__} has no logit_scale/logit_bias: cannot give "
                         "SigLIP match probabilities")
    return float(scale.detach().float().reshape(-1)[0]), float(bias.detach().float().reshape(-1)[0])
