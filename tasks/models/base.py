"""Model adapter registry and what every adapter shares: device, dtype, weights fingerprint.

An adapter is a subclass of ``Adapter`` registered under a model kind; it implements one or more
families of ``tasks.models.contracts`` (encoder, pair scorer, generator, ...). The class-level
hooks have defaults here, so nothing asks ``getattr`` whether an adapter has them.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from tasks.config import ModelConfig
from tasks.registry import Registry

# Files whose bytes define a checkpoint's behaviour (weights, configs, tokenizer, processor).
FINGERPRINT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model", ".py"}
# Weights that only torch.load reads (a pickle): loaded with weights_only=True, tensors only.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth"}


class ModelError(ValueError):
    """The model cannot be found or loaded."""


class Adapter:
    """Base of every adapter: the config, the resolved device and the class-level hooks."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)

    @classmethod
    def check_files(cls, config: ModelConfig) -> None:
        """Cheap checks before a run starts (the checkpoint exists); ``ModelError`` otherwise.
        Loading, and refusing pickled weights, happens in ``__init__``."""
        resolve_model_path(config)

    @classmethod
    def fingerprint(cls, config: ModelConfig, dataset_digest: str) -> str:
        """Cache key of the model's behaviour; default: the checkpoint folder's files."""
        return model_fingerprint(resolve_model_path(config))

    def fit_normalization(self, paths: Sequence[str]) -> dict[str, Any]:
        """Fix preprocessing that depends on all evaluated images (default: none)."""
        return {}

    def describe(self) -> dict[str, str]:
        """Resolved runtime facts worth logging (device, dtype, ...)."""
        facts = {"device": self.device, "dtype": _dtype_name(getattr(self, "model", None))}
        compiled = getattr(self, "compiled", None)
        return facts | ({"compiled": compiled} if compiled else {})

    @property
    def pin_memory(self) -> bool:
        """Whether prepared batches go to page-locked memory: on a CUDA device."""
        return self.device.split(":")[0] == "cuda"

    def compile(self, backend: str, mode: str) -> None:
        """``torch.compile`` each direct submodule of the model (``nn.Module.compile``: the
        module's calls go through the compiled graph from then on). Every adapter method reaches
        the network through those submodules (``get_image_features`` calls the vision tower and
        its projection, ``generate`` the decoder), so the adapter's own code, the batch loop and
        the outputs' shapes stay as they are. ``mode`` is passed to inductor only."""
        model = getattr(self, "model", None)
        children = list(model.children()) if model is not None else []
        if not children:
            raise ModelError(f"{type(self).__name__} has no torch modules to compile")
        options: dict[str, Any] = {"backend": backend}
        if backend == "inductor" and mode != "default":
            options["mode"] = mode
        for child in children:
            child.compile(**options)
        self.compiled = backend + (f" ({mode})" if "mode" in options else "")


ADAPTERS: Registry[type[Adapter]] = Registry(
    "model adapter", package="tasks.models", skip=("base", "batching", "contracts"))
register_adapter = ADAPTERS.register


def _dtype_name(model: Any) -> str:
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "unknown"


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
            while block := handle.read(1 << 20):
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
    """The torch dtype named in the config; None for auto (the checkpoint's own)."""
    import torch

    return None if name == "auto" else getattr(torch, name)


AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def resolve_amp(device: str, amp: str) -> str:
    """The autocast setting that runs on ``device``: ``off``, ``fp16`` or ``bf16``. ``auto`` is
    bf16 on a CUDA device that supports it (``torch.cuda.is_bf16_supported``), else off."""
    if amp != "auto":
        return amp
    import torch

    cuda = device.split(":")[0] == "cuda" and torch.cuda.is_available()
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "off"


def autocast_context(device: str, amp: str) -> AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type with the dtype of ``amp`` (``off``, ``fp16``,
    ``bf16`` or ``auto``: ``resolve_amp``); a no-op context when it is off."""
    import contextlib

    import torch

    setting = resolve_amp(device, amp)
    if setting == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=getattr(torch, AMP_DTYPES[setting]))


@contextmanager
def loading(what: str, path: Path) -> Iterator[None]:
    """Turn what loading a checkpoint raises into one clear ``ModelError``: weights that
    ``torch.load(weights_only=True)`` refuses (pickled objects) are never loaded, and corrupt or
    incomplete files are named with the reader's first line of complaint."""
    try:
        yield
    except ModelError:
        raise
    except pickle.UnpicklingError as error:
        raise refused_pickle(pickled_weights(path), error) from None
    except (OSError, ValueError, RuntimeError, EOFError) as error:
        raise ModelError(f"cannot load {what} from {path}: {first_line(error)}") from None
    except Exception as error:
        if type(error).__name__ != "SafetensorError":  # safetensors' own, not an OSError
            raise
        raise ModelError(f"cannot load {what} from {path}: corrupt .safetensors file: "
                         f"{first_line(error)}") from None


def pickled_weights(path: Path) -> Path:
    """The torch.load-only weights file of a checkpoint folder (the folder when not one)."""
    if not path.is_dir():
        return path
    files = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES
                   and p.name != "training_args.bin")
    return files[0] if len(files) == 1 else path


def refused_pickle(path: Path, error: BaseException) -> ModelError:
    """``torch.load(weights_only=True)`` refused ``path``: say what it found, never retry it
    with a full unpickler (that would run whatever the pickle names)."""
    text = str(error)
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if found:
        detail = f"it holds pickled Python objects ({found.group(1)}), not only tensors"
    else:
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = ("torch.load(weights_only=True) cannot read it as tensors only "
                  f"({reason.group(1).strip() if reason else first_line(error)}): a corrupt file "
                  "or pickled Python objects")
    return ModelError(
        f"refused to load {path}: {detail}; pickled checkpoints are never loaded -- save the "
        "weights as .safetensors (save_pretrained) or a state dict "
        "(torch.save(model.state_dict(), ...)), not the whole model")


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error message, or its type for an empty one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    if isinstance(error, EOFError):
        return "unexpected end of file (an empty or truncated weights file)"
    return type(error).__name__
