"""Inception-v3 pool features (2048) for FID / KID, only from a local weights file.

The network is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's FID Inception, the one
the FID literature uses) built with ``feature_extractor_weights_path``, so nothing is ever
downloaded; torch-fidelity loads the file with ``torch.load``, whose default in this torch is
``weights_only=True``. Images go in as uint8 RGB at their own size (the network resizes to
299 x 299 itself); a batch is split by image size, since one forward pass needs one size.
``tasks.plan`` refuses a config asking for these features when torch-fidelity or the weights
file is missing, before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.arrays import scatter_rows
from tasks.io import decode_images
from tasks.models.base import ModelError, loading
from tasks.models.batching import Prepared, run_batches
from tasks.models.contracts import ImageEmbeddings, Progress

FEATURES = "2048"


def inception_problem(weights: str | None) -> str | None:
    """Why Inception features cannot be computed here (None when they can)."""
    if not weights:
        return "features: inception needs text_to_image.inception_weights (a local file)"
    if not Path(weights).expanduser().is_file():
        return (f"inception_weights {weights!r} is not a file (the weights are never "
                "downloaded: give torch-fidelity's pt_inception-2015-12-05-6726825d.pth)")
    if importlib.util.find_spec("torch_fidelity") is None:
        return ("features: inception needs the torch-fidelity package (pip install "
                "torch-fidelity), which is not installed")
    return None


def weights_digest(weights: str) -> str:
    """sha256 of the weights file (part of the inference cache key)."""
    digest = hashlib.sha256()
    with Path(weights).expanduser().open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def build_network(weights: Path) -> Any:
    """torchmetrics' FID Inception-v3 with the given weights (the one place it is built)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=[FEATURES],
                              feature_extractor_weights_path=str(weights))


class InceptionFeatures:
    """Encodes images into Inception-v3 pool features, failures recorded by row."""

    def __init__(self, weights: str, device: str, batch_size: int) -> None:
        import torch

        path = Path(weights).expanduser()
        problem = inception_problem(weights)
        if problem:
            raise ModelError(problem)
        with loading("Inception-v3 weights", path):
            self.network = build_network(path).to(device).eval()
        self.device, self.batch_size, self._torch = device, batch_size, torch

    def _prepare(self, paths: Sequence[str]) -> Prepared[list[Any]]:
        images, kept, failures = decode_images(paths)
        tensors = [self._torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
                   .permute(2, 0, 1) for image in images]
        return Prepared(tensors if tensors else None, kept, failures)

    def _run(self, tensors: list[Any]) -> np.ndarray:
        """Features of one batch; images of one size go through the network together."""
        torch = self._torch
        out = np.zeros((len(tensors), int(FEATURES)), dtype=np.float32)
        sizes: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(tensors):
            sizes.setdefault(tuple(tensor.shape), []).append(index)
        with torch.inference_mode():
            for rows in sizes.values():
                batch = torch.stack([tensors[i] for i in rows]).to(self.device)
                out[rows] = self.network(batch).float().cpu().numpy()
        return out

    def encode_images(self, paths: Sequence[str], progress: Progress | None = None,
                      workers: int = 2) -> ImageEmbeddings:
        paths = list(paths)
        results = run_batches(len(paths), self.batch_size,
                              lambda rows: self._prepare([paths[i] for i in rows]),
                              self._run, progress, workers)
        return ImageEmbeddings(scatter_rows(len(paths), results.outputs), results.failures)
