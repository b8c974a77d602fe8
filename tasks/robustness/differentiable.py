"""Differentiable views of the model adapters, for gradient attacks on the pixel input.

An attack perturbs the image in pixel units of the [0, 1] image, *before* normalisation, so each
view splits the adapter's preprocessing in two:

* ``pixels01(paths) -> (x01, kept, failures)``: decode and resize/crop exactly as the adapter
  does, stopping before mean/std normalisation; ``x01`` is float32 ``(B, 3, H, W)`` in [0, 1] on
  the model's device, ``kept`` the positions of ``paths`` decoded and ``failures`` position ->
  reason for the others (never raised).
* the differentiable forward from ``x01``: normalisation inside it, then the model
  (``image_features`` for dual encoders, ``logits`` / ``log_probabilities`` for ``torch_module``
  models), under the adapter's device, dtype and autocast setting.

At ``x01`` from ``pixels01`` (no perturbation) the forward computes what the adapter's own
inference computes (tests check this parity), so the attacked function is the evaluated one.

The views read the adapters' public attributes only (``model``, ``processor``, ``settings``,
``normalization``, ...). The model's parameters are frozen (``requires_grad`` False) and the
model stays in eval mode: gradients flow to the image only.

Dual encoders: the checkpoint's image processor (called directly, with its saved settings, as
the adapter does) runs with ``do_normalize=False, do_rescale=False`` (the resized, cropped uint8
pixels), divided by 255; the forward multiplies by ``255 * rescale_factor`` and applies the image
processor's ``image_mean`` / ``image_std``. Models whose image input is not one ``(B, 3, H, W)``
``pixel_values`` tensor (SigLIP 2 NaFlex patch sequences with their masks and shapes) have no
view yet (``NotAttackable``). The match score of a pair is the adapter's: the cosine, or for
SigLIP families (the adapter's ``sigmoid`` = ``(logit_scale, logit_bias)``)
``sigmoid(exp(logit_scale) * cosine + logit_bias)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.io import decode_images
from tasks.models.base import Adapter, autocast_context

if TYPE_CHECKING:
    from tasks.models.dual_encoder import DualEncoderAdapter
    from tasks.models.torch_module import TorchModuleAdapter

Pixels = tuple[Any, list[int], dict[int, str]]  # (x01 tensor or None, kept, failures)


class NotAttackable(ValueError):
    """The model's inputs or outputs have no differentiable view here (a skip reason)."""


def freeze(model: Any) -> None:
    """Eval mode, and no gradient for any parameter (the attack never updates the model)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _channels(values: Sequence[float] | float, device: str) -> Any:
    import torch

    tensor = torch.as_tensor(values, dtype=torch.float32, device=device)
    return tensor.reshape(1, -1, 1, 1) if tensor.ndim else tensor


class DualEncoderView:
    """CLIP-like ``DualEncoderAdapter``: ``pixels01`` -> ``image_features`` (unnormalised
    embeddings, as ``get_image_features`` returns them) and ``text_features``."""

    def __init__(self, adapter: DualEncoderAdapter) -> None:
        self.adapter = adapter
        self.model: Any = adapter.model
        self.processor: Any = adapter.processor
        self.device: str = adapter.device
        model_type = str(getattr(self.model.config, "model_type", "") or "")
        if model_type == "siglip2":
            raise NotAttackable("SigLIP 2 NaFlex models take patch sequences with masks and "
                                "shapes, not one pixel tensor: not attacked yet")
        freeze(self.model)
        images = getattr(self.processor, "image_processor", None) or self.processor
        self.image_processor: Any = images
        # SigLIP families: the matching score is sigmoid(exp(scale) * cos + bias), as the adapter's
        self.sigmoid: tuple[float, float] | None = getattr(adapter, "sigmoid", None)
        rescale = float(getattr(images, "rescale_factor", 1 / 255)) \
            if getattr(images, "do_rescale", True) else 1.0
        self.scale = 255.0 * rescale
        normalize = getattr(images, "do_normalize", False)
        self.mean = _channels(images.image_mean if normalize else 0.0, self.device)
        self.std = _channels(images.image_std if normalize else 1.0, self.device)

    def pixels01(self, paths: Sequence[str]) -> Pixels:
        import torch

        images, kept, failures = decode_images(list(paths))
        if not images:
            return None, kept, failures
        batch = self.image_processor(images=list(images), do_normalize=False,
                                     do_rescale=False, return_tensors="pt")
        raw = batch["pixel_values"]
        extra = sorted(k for k, v in batch.items() if k != "pixel_values"
                       and isinstance(v, torch.Tensor))
        if raw.ndim != 4 or extra:
            raise NotAttackable(f"the image processor returns pixel_values of shape "
                                f"{tuple(raw.shape)} with {extra or 'no other inputs'}; the "
                                "attacks need one (B, 3, H, W) pixel tensor")
        x01 = torch.clamp(raw.to(torch.float32) / 255.0, 0.0, 1.0)
        return x01.to(self.device), kept, failures

    def normalize(self, x01: Any) -> Any:
        """The model's pixel input: ``(x01 * 255 * rescale_factor - mean) / std``."""
        return ((x01 * self.scale - self.mean) / self.std).to(self.model.dtype)

    def image_features(self, x01: Any) -> Any:
        """``get_image_features`` of the normalised pixels, float32 ``(B, d)``."""
        with autocast_context(self.device, self.adapter.config.amp):
            output = self.model.get_image_features(pixel_values=self.normalize(x01))
        return getattr(output, "pooler_output", output).float()

    def text_features(self, texts: Sequence[str]) -> Any:
        """The adapter's own text embeddings (no gradient needed), float32 on the device."""
        import torch

        vectors = np.asarray(self.adapter.encode_texts(list(texts)), np.float32)
        return torch.from_numpy(vectors).to(self.device)

    def match(self, cosine: Any) -> tuple[Any, Any]:
        """The adapter's pair score from pair cosines, and a match logit increasing with it
        (``exp(logit_scale) * cos`` for cosine scores; SigLIP's own logit for its sigmoid)."""
        import torch

        if self.sigmoid is None:
            return cosine, self.logit_scale * cosine
        scale, bias = self.sigmoid
        logits = math.exp(scale) * cosine + bias
        return torch.sigmoid(logits), logits

    def threshold_logit(self, threshold: float) -> float:
        """The match logit (``match``'s scale) at a score threshold."""
        if self.sigmoid is None:
            return self.logit_scale * threshold
        return probability_logit(threshold)

    @property
    def logit_scale(self) -> float:
        """The model's learnt temperature ``exp(logit_scale)``; 100 (CLIP's cap) without one."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().float().exp()) if scale is not None else 100.0


class TorchModuleView:
    """``TorchModuleAdapter``: ``pixels01`` -> ``logits`` / ``log_probabilities`` of the user's
    module, with the adapter's resize, mean/std, tokenizer, dtype and ``output`` setting."""

    def __init__(self, adapter: TorchModuleAdapter) -> None:
        self.adapter = adapter
        self.model: Any = adapter.model
        self.settings: Any = adapter.settings
        self.uses_text: bool = bool(adapter.uses_text)
        self.tokenizer: Any = adapter.tokenizer
        self.device: str = adapter.device
        freeze(self.model)

    def pixels01(self, paths: Sequence[str]) -> Pixels:
        import torch

        from tasks.models.torch_module import load_pixels

        if self.adapter.normalization is None:
            self.adapter.fit_normalization(list(paths))  # as the adapter's first call does
        size, resize = self.settings.image_size, self.settings.resize
        images, kept, failures = decode_images(list(paths),
                                               lambda p: load_pixels(p, size, resize))
        if not images:
            return None, kept, failures
        x01 = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())
        return torch.clamp(x01, 0.0, 1.0).to(self.device), kept, failures

    def normalize(self, x01: Any) -> Any:
        import torch

        stats = self.adapter.normalization or {}
        mean, std = _channels(stats["mean"], self.device), _channels(stats["std"], self.device)
        dtype = self.adapter.dtype or torch.float32
        return ((x01 - mean) / std).to(dtype)

    def logits(self, x01: Any, texts: Sequence[str] | None = None) -> Any:
        """The module's raw output (float32) for the normalised pixels (and texts)."""
        inputs = [self.normalize(x01)]
        if self.uses_text:
            if texts is None:
                raise ValueError("this torch_module model takes text: pass texts")
            tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                    max_length=self.settings.max_length, return_tensors="pt")
            inputs += [tokens["input_ids"].to(self.device),
                       tokens["attention_mask"].to(self.device)]
        with autocast_context(self.device, self.adapter.config.amp):
            output = self.model(*inputs)
        return output.float()

    def log_probabilities(self, x01: Any, texts: Sequence[str] | None = None) -> Any:
        """``(B, C)`` log class probabilities, read as the adapter reads the output: softmax of
        ``(B, C)`` logits, ``[1 - p, p]`` with ``p = sigmoid`` of one logit, or the module's own
        probabilities with ``output: probability``."""
        import torch

        output = self.logits(x01, texts)
        single = output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)
        if self.settings.output == "logits":
            if single:
                z = output.reshape(-1)
                return torch.stack([torch.nn.functional.logsigmoid(-z),
                                    torch.nn.functional.logsigmoid(z)], dim=1)
            return torch.log_softmax(output, dim=1)
        if single:
            p = output.reshape(-1)
            output = torch.stack([1 - p, p], dim=1)
        return torch.log(torch.clamp(output, min=1e-12))


def probability_logit(p: float) -> float:
    """``log(p / (1 - p))`` with ``p`` clipped into ``[1e-6, 1 - 1e-6]`` (a threshold outside
    (0, 1) predicts one side for every pair; the clipped logit keeps the loss finite)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p) - math.log1p(-p)


View = DualEncoderView | TorchModuleView


def view_of(adapter: Adapter) -> View | str:
    """The differentiable view of an adapter, or why it has none (generative captioners, VQA,
    ITM heads, NaFlex inputs, ...)."""
    from tasks.models.dual_encoder import DualEncoderAdapter
    from tasks.models.torch_module import TorchModuleAdapter

    try:
        if isinstance(adapter, DualEncoderAdapter):
            return DualEncoderView(adapter)
        if isinstance(adapter, TorchModuleAdapter):
            return TorchModuleView(adapter)
    except NotAttackable as error:
        return str(error)
    return f"{type(adapter).__name__} has no differentiable view"
