"""Users' own PyTorch models (``model.kind: torch_module``): a class, a state dict, transforms.

Config (``model.torch_module``, see ``tasks.config.TorchModuleSettings``): ``module`` names the
class as ``"package.module:ClassName"`` (importable from the working directory or PYTHONPATH),
``init_kwargs`` are passed to it, ``model.path`` is its weights file and ``tokenizer`` a local
Hugging Face tokenizer folder for text inputs.

Forward contract::

    logits = module(pixel_values, input_ids, attention_mask)   # image + text (e.g. fusion)
    logits = module(pixel_values)                               # image-only classification

``pixel_values`` is float ``(B, 3, image_size, image_size)``: RGB in [0, 1] after the resize,
normalised with ``(x - mean) / std``; ``input_ids`` / ``attention_mask`` are int64 ``(B, L)``
from the tokenizer (padded, truncated to ``max_length``). The module returns ``(B, C)`` logits
(softmax) or ``(B,)`` / ``(B, 1)`` logits (sigmoid, read as ``[1 - p, p]``);
``output: probability`` skips the softmax/sigmoid. Whether text is passed is read from
``forward``'s signature: one positional parameter = image-only, three = image + text.

Security: weights are read only with ``safetensors.torch.load_file`` (``.safetensors``) or
``torch.load(path, weights_only=True)`` (``.pt/.pth/.bin``); pickled modules are refused. The
module's code itself is imported and runs: name only code you trust.

Task kinds: ``score_pairs(image_paths, texts)`` -> ``PairScores`` (probability of
``positive_class``), ``classify(image_paths, texts=None)`` -> ``(n, C)`` probabilities +
failures. The inference-cache key is ``torch_module_fingerprint(config)`` (weights bytes + the
class's source file + settings + tokenizer files), not ``model_fingerprint(resolve_model_path())``
(``path`` is a file). Code that the source file imports is not covered. With ``mean``/``std:
dataset``, call ``adapter.fit_normalization(all_image_paths)`` once before sharded inference so
every shard uses the same statistics (otherwise the first call's images are used), pass its
result to the fingerprint, and log ``adapter.normalization``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.arrays import scatter_rows
from tasks.config import ModelConfig, TorchModuleSettings
from tasks.io import DECODE_ERRORS, decode_images, open_image
from tasks.models.base import (
    Adapter,
    ModelError,
    autocast_context,
    first_line,
    model_fingerprint,
    refused_pickle,
    register_adapter,
    torch_dtype,
)
from tasks.models.batching import Prepared, chunks, prefetched, run_batches
from tasks.models.contracts import PairScores, Progress

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SAFETENSORS_SUFFIXES = {".safetensors"}
TORCH_SUFFIXES = {".pt", ".pth", ".bin"}


# ---- images -------------------------------------------------------------------------------


def resize_image(image, image_size: int, resize: str):
    """Pillow only: plain bilinear resize, or shorter side to ``image_size`` + centre crop."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    if resize == "resize":
        return image.resize((image_size, image_size), bilinear)
    width, height = image.size
    long_side = int(image_size * max(width, height) / min(width, height))
    size = (image_size, long_side) if width <= height else (long_side, image_size)
    image = image.resize(size, bilinear)
    left = int(round((size[0] - image_size) / 2.0))
    top = int(round((size[1] - image_size) / 2.0))
    return image.crop((left, top, left + image_size, top + image_size))


def load_pixels(path: str, image_size: int, resize: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] after decoding and resizing."""
    image = resize_image(open_image(path), image_size, resize)
    return np.asarray(image, dtype=np.float32) / 255.0


def _moments(paths: Sequence[str], image_size: int, resize: str) -> tuple[int, np.ndarray,
                                                                           np.ndarray]:
    """Pixel count, per-channel mean and sum of squared deviations of decodable images."""
    count, mean, m2 = 0, np.zeros(3), np.zeros(3)
    for path in paths:
        try:
            pixels = load_pixels(path, image_size, resize).reshape(-1, 3).astype(np.float64)
        except DECODE_ERRORS:
            continue
        count, mean, m2 = _merge((count, mean, m2), _pixel_moments(pixels))
    return count, mean, m2


def _pixel_moments(pixels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    mean = pixels.mean(axis=0)
    return len(pixels), mean, ((pixels - mean) ** 2).sum(axis=0)


def _merge(a: tuple, b: tuple) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s parallel combination of (count, mean, M2)."""
    (na, mean_a, m2_a), (nb, mean_b, m2_b) = a, b
    if na == 0 or nb == 0:
        return b if na == 0 else a
    n = na + nb
    delta = mean_b - mean_a
    return n, mean_a + delta * nb / n, m2_a + m2_b + delta**2 * na * nb / n


def compute_dataset_stats(
    paths: Sequence[str], image_size: int, resize: str, workers: int = 2, chunk: int = 64
) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (population) of the images after resize, in [0, 1], in one
    streaming pass; undecodable images are skipped."""
    batches = chunks(list(paths), chunk)
    total: tuple = (0, np.zeros(3), np.zeros(3))
    for moments in prefetched(batches, lambda b: _moments(b, image_size, resize), workers):
        total = _merge(total, moments)
    count, mean, m2 = total
    if count == 0:
        raise ModelError("cannot compute dataset mean/std: no decodable images")
    std = np.sqrt(m2 / count)
    if (std <= 0).any():
        raise ModelError(f"dataset std is zero in a channel ({std.tolist()}); give mean/std")
    return mean.tolist(), std.tolist()


# ---- loading ------------------------------------------------------------------------------


def _ensure_cwd_importable() -> None:
    cwd = str(Path.cwd())
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


def load_class(spec: str) -> type:
    """The ``torch.nn.Module`` subclass named by ``"package.module:ClassName"``."""
    import torch

    module_name, _, attribute = spec.partition(":")
    _ensure_cwd_importable()
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # user code may raise anything on import
        raise ModelError(f"cannot import module {module_name!r} (torch_module.module): "
                         f"{type(error).__name__}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelError(f"module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        raise ModelError(f"{spec} is not a torch.nn.Module subclass")
    return target


def _unwrap(state: Any) -> dict[str, Any]:
    """A state dict, also from ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints."""
    import torch

    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                return _unwrap(state[key])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelError("the weights file does not hold a state dict of tensors")
    return state


def check_weights_file(path: Path) -> None:
    """The weights file exists and has a suffix ``load_state`` reads."""
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES | TORCH_SUFFIXES:
        raise ModelError(f"weights file {path} must be .safetensors, .pt, .pth or .bin")


def load_state(path: Path) -> dict[str, Any]:
    """Tensors only: safetensors, or torch.load with weights_only=True (never pickle)."""
    import pickle

    import torch

    check_weights_file(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # SafetensorError is not an OSError
            raise ModelError(f"cannot read safetensors file {path}: {error}") from None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise refused_pickle(path, error) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise ModelError(f"cannot read {path} with torch.load(weights_only=True): "
                         f"{first_line(error)}") from None
    return _unwrap(state)


def _short(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def apply_state(module, state: dict[str, Any]) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(f"weights do not match {type(module).__name__}: missing keys "
                         f"[{_short(missing)}], unexpected keys [{_short(unexpected)}]")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(f"weights do not match {type(module).__name__}: {error}") from None


def instantiate(cls: type, init_kwargs: dict[str, Any]):
    try:
        inspect.signature(cls).bind(**init_kwargs)
    except TypeError as error:
        raise ModelError(f"bad init_kwargs for {cls.__name__}: {error}") from None
    return cls(**init_kwargs)


def takes_text(module) -> bool:
    """forward(pixel_values) -> image-only; forward(pixel_values, input_ids, mask) -> text."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    count = sum(p.kind in kinds for p in parameters)
    if count not in (1, 3):
        raise ModelError(f"{type(module).__name__}.forward must take (pixel_values) or "
                         f"(pixel_values, input_ids, attention_mask); it takes {count} arguments")
    return count == 3


def _settings(config: ModelConfig) -> TorchModuleSettings:
    if config.torch_module is None:
        raise ModelError("model.kind torch_module needs model.torch_module (module, transforms)")
    return config.torch_module


def torch_module_fingerprint(config: ModelConfig,
                             normalization: dict[str, Any] | None = None) -> str:
    """sha256 of the weights bytes, the class's source file(s), the settings (init_kwargs,
    transforms, ...) and the tokenizer folder's files. Use it as the inference-cache model key.

    With ``mean``/``std: dataset`` the outputs also depend on the statistics: pass
    ``adapter.fit_normalization(all_image_paths)`` (or key the cache on the dataset digest)."""
    settings = _settings(config)
    digest = hashlib.sha256()
    files = [Path(config.path).expanduser()] + _source_files(settings.module)
    for file in files:
        try:
            digest.update(file.read_bytes())
        except OSError as error:
            raise ModelError(f"cannot read {file} for the fingerprint: {error}") from None
        digest.update(b"\0")
    digest.update(settings.model_dump_json().encode())
    if settings.tokenizer:
        digest.update(model_fingerprint(Path(settings.tokenizer).expanduser()).encode())
    if normalization is not None:
        digest.update(repr(sorted(normalization.items())).encode())
    return digest.hexdigest()


def _source_files(spec: str) -> list[Path]:
    cls = load_class(spec)
    names = [spec.partition(":")[0], cls.__module__]
    files = {getattr(sys.modules.get(name), "__file__", None) for name in names}
    paths = sorted(Path(f) for f in files if f)
    if not paths:
        raise ModelError(f"cannot find the source file of {spec}")
    return paths


# ---- adapter ------------------------------------------------------------------------------


@register_adapter("torch_module")
class TorchModuleAdapter(Adapter):
    """Scores (image, text) pairs and classifies images with a user's ``nn.Module``."""

    def __init__(self, config: ModelConfig) -> None:
        import torch

        super().__init__(config)
        self.settings = _settings(config)
        self._torch = torch
        self.model = instantiate(load_class(self.settings.module), self.settings.init_kwargs)
        apply_state(self.model, load_state(Path(config.path).expanduser()))
        self.dtype = torch_dtype(config.dtype)
        if self.dtype is not None:
            self.model.to(self.dtype)
        self.model.to(self.device).eval()
        self.uses_text = takes_text(self.model)
        self.tokenizer = self._load_tokenizer() if self.uses_text else None
        self.normalization: dict[str, Any] | None = None
        if "dataset" not in (self.settings.mean, self.settings.std):
            self._set_normalization(None)

    @classmethod
    def check_files(cls, config: ModelConfig) -> None:
        """``model.torch_module`` is set and ``model.path`` is a weights file it can read."""
        _settings(config)
        check_weights_file(Path(config.path).expanduser())

    @classmethod
    def fingerprint(cls, config: ModelConfig, dataset_digest: str) -> str:
        """With dataset mean/std the outputs depend on the evaluated images as a whole."""
        settings = _settings(config)
        uses_dataset = "dataset" in (settings.mean, settings.std)
        return torch_module_fingerprint(
            config, {"dataset": dataset_digest} if uses_dataset else None)

    def describe(self) -> dict[str, str]:
        """Device and dtype, plus the normalisation statistics in use (dataset ones included)."""
        facts = {"device": self.device, "dtype": str(self.dtype or "float32").split(".")[-1]}
        for key, value in (self.normalization or {}).items():
            facts[f"normalization.{key}"] = str(value)
        return facts

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if not self.settings.tokenizer:
            raise ModelError(f"{self.settings.module} takes text: set torch_module.tokenizer")
        folder = Path(self.settings.tokenizer).expanduser()
        try:
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load a tokenizer from {folder}: {error}") from None

    # -- normalisation --

    def fit_normalization(self, paths: Sequence[str], workers: int = 2) -> dict[str, Any]:
        """Compute ``dataset`` statistics over these images (unique paths) and fix them."""
        unique = list(dict.fromkeys(paths))
        if "dataset" in (self.settings.mean, self.settings.std):
            stats = compute_dataset_stats(unique, self.settings.image_size,
                                          self.settings.resize, workers)
            self._set_normalization(stats, len(unique))
        return self.normalization or {}

    def _set_normalization(self, stats: tuple[list[float], list[float]] | None,
                           images: int | None = None) -> None:
        def pick(value, imagenet: list[float], computed: list[float] | None):
            if value == "imagenet":
                return list(imagenet), "imagenet"
            if value == "dataset":
                return computed, "dataset"
            return list(value), "config"

        mean, mean_source = pick(self.settings.mean, IMAGENET_MEAN, stats and stats[0])
        std, std_source = pick(self.settings.std, IMAGENET_STD, stats and stats[1])
        self.normalization = {"mean": mean, "std": std, "mean_source": mean_source,
                              "std_source": std_source, "images": images}
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)

    def _ensure_normalization(self, paths: Sequence[str], workers: int) -> None:
        if self.normalization is None:
            self.fit_normalization(paths, workers)

    # -- inference --

    def _prepare(self, paths: Sequence[str], texts: Sequence[str] | None
                 ) -> Prepared[tuple[np.ndarray, list[str] | None]]:
        images, kept, failures = decode_images(
            paths, lambda p: load_pixels(p, self.settings.image_size, self.settings.resize))
        arrays = [((pixels - self._mean) / self._std).transpose(2, 0, 1) for pixels in images]
        if not arrays:
            return Prepared(None, kept, failures)
        kept_texts = [texts[i] for i in kept] if texts is not None else None
        return Prepared((np.stack(arrays), kept_texts), kept, failures)

    def _forward(self, pixels: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        torch = self._torch
        inputs = [torch.from_numpy(pixels).to(self.device, self.dtype or torch.float32)]
        if self.uses_text and self.tokenizer is not None and texts is not None:
            tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                    max_length=self.settings.max_length, return_tensors="pt")
            inputs += [tokens["input_ids"].to(self.device),
                       tokens["attention_mask"].to(self.device)]
        with torch.inference_mode(), autocast_context(self.device, self.config.amp):
            output = self.model(*inputs)
        return self._probabilities(output, len(pixels))

    def _probabilities(self, output, rows: int) -> np.ndarray:
        torch = self._torch
        if not isinstance(output, torch.Tensor):
            raise ModelError(f"forward must return a tensor, got {type(output).__name__}")
        values = output.detach().float().cpu().double()
        if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
            values = values.reshape(-1)
            positive = torch.sigmoid(values) if self.settings.output == "logits" else values
            values = torch.stack([1 - positive, positive], dim=1)
        elif values.ndim == 2 and self.settings.output == "logits":
            values = torch.softmax(values, dim=1)
        if values.ndim != 2 or values.shape[0] != rows:
            raise ModelError(f"forward returned shape {tuple(output.shape)}; expected "
                             f"({rows}, C), ({rows},) or ({rows}, 1)")
        return values.numpy()

    def _run(self, paths: Sequence[str], texts: Sequence[str] | None,
             progress: Progress | None, workers: int) -> tuple[np.ndarray, dict[int, str]]:
        self._ensure_normalization(paths, workers)
        results = run_batches(
            len(paths), self.config.batch_size,
            lambda rows: self._prepare([paths[i] for i in rows],
                                       [texts[i] for i in rows] if texts is not None else None),
            lambda inputs: self._forward(*inputs), progress, workers)
        try:
            return scatter_rows(len(paths), results.outputs, np.float64), results.failures
        except ValueError:
            raise ModelError("the model returned a different number of classes across "
                             "batches") from None

    def classify(self, image_paths: Sequence[str], texts: Sequence[str] | None = None,
                 progress: Progress | None = None, workers: int = 2
                 ) -> tuple[np.ndarray, dict[int, str]]:
        """Class probabilities ``(n, C)`` float64 (NaN rows for failed images) + failures."""
        if self.uses_text and texts is None:
            raise ModelError(f"{self.settings.module} takes text: pass texts to classify")
        if not self.uses_text and texts is not None:
            raise ModelError(f"{self.settings.module} is image-only: it takes no texts")
        if texts is not None and len(texts) != len(image_paths):
            raise ModelError(f"{len(image_paths)} images but {len(texts)} texts")
        return self._run(list(image_paths), texts, progress, workers)

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores:
        """Probability of ``positive_class`` per (image, text) pair; NaN where failed."""
        if not self.uses_text:
            raise ModelError(f"{self.settings.module} is image-only: it cannot score pairs")
        probabilities, failures = self.classify(image_paths, texts, progress, workers)
        positive = self.settings.positive_class
        if probabilities.shape[1] and positive >= probabilities.shape[1]:
            raise ModelError(f"positive_class {positive} but the model outputs "
                             f"{probabilities.shape[1]} classes")
        scores = probabilities[:, positive] if probabilities.shape[1] \
            else np.full(len(image_paths), np.nan)
        return PairScores(np.asarray(scores, dtype=np.float64), failures)
