"""Model adapters. Every module in this package registers its adapter on import."""

from __future__ import annotations

from tasks.config import ModelConfig
from tasks.models.base import (
    ADAPTERS,
    ModelError,
    model_fingerprint,
    register_adapter,
    resolve_model_path,
)
from tasks.registry_loader import import_submodules

import_submodules("tasks.models", skip=("base", "batching"))


def load_adapter(config: ModelConfig, image_paths: list[str] | None = None):
    """The adapter for ``config``; adapters whose preprocessing depends on the evaluated images
    (``fit_normalization``, e.g. torch_module with dataset mean/std) are fitted on all of them
    once, so every inference shard sees the same statistics."""
    adapter = ADAPTERS.get(config.kind)(config)
    fit = getattr(adapter, "fit_normalization", None)
    if fit is not None and image_paths is not None:
        fit(image_paths)
    return adapter


def fingerprint_model(config: ModelConfig, dataset_digest: str) -> str:
    """Cache key of the model's behaviour. Adapters may define ``fingerprint(config,
    dataset_digest)`` (torch_module: weights + class source + settings); the default hashes the
    checkpoint folder."""
    custom = getattr(ADAPTERS.get(config.kind), "fingerprint", None)
    if custom is not None:
        return custom(config, dataset_digest)
    return model_fingerprint(resolve_model_path(config))


__all__ = ["ADAPTERS", "ModelError", "fingerprint_model", "load_adapter", "model_fingerprint",
           "register_adapter"]
