"""Data sources: one module per source registers it (``SOURCES`` imports them on first use)."""

from __future__ import annotations

from tasks.config import DatasetConfig
from tasks.data.base import SOURCES, DataError, Dataset, normalize, register_source, resolve_inside
from tasks.data.digests import DigestCache


def load_dataset(config: DatasetConfig, digests: DigestCache | None = None) -> Dataset:
    """Read the configured source and normalise it into items plus recorded rejects (images
    already checked are looked up in ``digests`` when given: ``tasks.data.digests``)."""
    raw = SOURCES.get(config.source)(config)
    return normalize(raw, config, digests)


__all__ = ["SOURCES", "DataError", "Dataset", "load_dataset", "register_source", "resolve_inside"]
