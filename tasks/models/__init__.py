"""Model adapters: one module per adapter registers it (``ADAPTERS`` imports them on first use).
The families an adapter can implement are in ``tasks.models.contracts``."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.config import ModelConfig
from tasks.models.base import ADAPTERS, Adapter, ModelError, register_adapter


def load_adapter(config: ModelConfig, image_paths: Sequence[str] | None = None) -> Adapter:
    """The adapter for ``config``; preprocessing that depends on the evaluated images
    (``fit_normalization``, e.g. torch_module with dataset mean/std) is fitted on all of them
    once, so every inference shard sees the same statistics."""
    adapter = ADAPTERS.get(config.kind)(config)
    if image_paths is not None:
        adapter.fit_normalization(list(image_paths))
    return adapter


def fingerprint_model(config: ModelConfig, dataset_digest: str) -> str:
    """Cache key of the model's behaviour (the adapter class's ``fingerprint`` hook)."""
    return ADAPTERS.get(config.kind).fingerprint(config, dataset_digest)


__all__ = ["ADAPTERS", "Adapter", "ModelError", "fingerprint_model", "load_adapter",
           "register_adapter"]
