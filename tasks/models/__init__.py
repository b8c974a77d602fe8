"""Model adapters. Every module in this package registers its adapter on import."""

from __future__ import annotations

from tasks.config import ModelConfig
from tasks.models.base import ADAPTERS, ModelError, model_fingerprint, register_adapter
from tasks.registry_loader import import_submodules

import_submodules("tasks.models", skip=("base", "batching"))


def load_adapter(config: ModelConfig):
    return ADAPTERS.get(config.kind)(config)


__all__ = ["ADAPTERS", "ModelError", "load_adapter", "model_fingerprint", "register_adapter"]
