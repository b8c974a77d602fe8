"""Model adapter registry and what every adapter shares: device, dtype, weights fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import ModelConfig
from tasks.registry import Registry

ADAPTERS: Registry[type] = Registry("model adapter")
register_adapter = ADAPTERS.register

# Files whose bytes define a checkpoint's behaviour (weights, configs, tokenizer, processor).
FINGERPRINT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model", ".py"}


class ModelError(ValueError):
    """The model cannot be found or loaded."""


@dataclass
class PairScores:
    """Match scores of (image, text) pairs: higher = more likely a match; NaN where failed.

    Adapters that can score pairs (dual encoders: cosine; ITM heads and custom fusion models:
    match probability) implement ``score_pairs(image_paths, texts, progress=None, workers=2)``.
    """

    scores: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)  # pair row -> reason


DECODE_ERRORS = (OSError, ValueError, SyntaxError)


def decode_images(paths, load=None) -> tuple[list[Any], list[int], dict[int, str]]:
    """Decode each image (default: EXIF-transposed RGB); a failure is recorded with its reason
    by position, never raised. Returns (images, positions decoded, failures)."""
    if load is None:
        from tasks.data.base import open_image as load
    images, kept, failures = [], [], {}
    for index, path in enumerate(paths):
        try:
            images.append(load(path))
        except DECODE_ERRORS as error:
            failures[index] = f"image decode failed: {error}"
            continue
        kept.append(index)
    return images, kept, failures


def resolve_model_path(config: ModelConfig) -> Path:
    """A local folder, or a Hugging Face id resolved from the local cache only."""
    local = Path(config.path).expanduser()
    if local.is_dir():
        return local.resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(config.path, revision=config.revision, local_files_only=True)
        )
    except (LocalEntryNotFoundError, ValueError, OSError) as error:
        raise ModelError(
            f"model {config.path!r} is neither a local folder nor in the Hugging Face cache "
            f"(downloads are not attempted): {error}"
        ) from None


def model_fingerprint(path: Path) -> str:
    """sha256 over the names and bytes of the checkpoint's files."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ModelError(f"no model files found in {path}")
    for file in files:
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} requested but CUDA is not available")
    return name


def torch_dtype(name: str) -> Any:
    import torch

    return None if name == "auto" else getattr(torch, name)


def autocast_context(device: str, enabled: bool):
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    kind = device.split(":")[0]
    return torch.autocast(kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16)
