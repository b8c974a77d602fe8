"""The contrastive (ITC) embeddings of image-text retrieval checkpoints, for the task kinds that
rank by the cosine of one image and one text embedding (retrieval, zero-shot classification).

**BLIP** (``BlipForImageTextRetrieval``): the features that
``forward(..., use_itm_head=False)`` compares (transformers 5), as in the BLIP paper and LAVIS:

- image: ``normalize(vision_proj(vision_model(pixel_values).last_hidden_state[:, 0]))``
- text: ``normalize(text_proj(text_encoder(input_ids, attention_mask).last_hidden_state[:, 0]))``
  (the text encoder alone, no cross-attention to the image)

and the model's ITC score ``itm_score`` is ``image_feat @ text_feat.T``: exactly the cosine of
these two vectors, so retrieval and zero-shot compute the model's own contrastive similarity.

**BLIP-2** (``Blip2ForImageTextRetrieval``, ``use_image_text_matching_head=False``): the image
side is one normalised embedding per Q-Former query token (32 in the released checkpoints) and a
pair's score is the *largest* cosine of the text embedding with any of them. A max of cosines is
not the cosine of a single image vector with the text vector (no one vector reproduces it for
every text), so BLIP-2 gives no embeddings: ``BLIP2_ITC_REASON``.
"""

from __future__ import annotations

from typing import Any

BLIP2_ITC_REASON = (
    "BLIP-2's contrastive (ITC) similarity is a max over query tokens, not a single-vector "
    "cosine: Blip2ForImageTextRetrieval scores a pair as the largest cosine of the text "
    "embedding with each of the Q-Former's query-token embeddings (32 in the released "
    "checkpoints), and retrieval and zero-shot rank by the cosine of one image and one text "
    "embedding, which cannot reproduce it")


def blip_image_features(model: Any, pixel_values: Any) -> Any:
    """BLIP's ITC image features ``(n, d)``, unit length: the projected [CLS] state."""
    from torch.nn.functional import normalize

    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    return normalize(model.vision_proj(hidden[:, 0, :]), dim=-1)


def blip_text_features(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """BLIP's ITC text features ``(n, d)``, unit length: the text encoder's projected [CLS]
    state (unimodal: no image cross-attention)."""
    from torch.nn.functional import normalize

    hidden = model.text_encoder(input_ids=input_ids,
                                attention_mask=attention_mask).last_hidden_state
    return normalize(model.text_proj(hidden[:, 0, :]), dim=-1)
