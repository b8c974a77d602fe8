"""Fingerprints: what makes two evaluations comparable, and the inference cache key."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Source that shapes every kind's model outputs (image decoding, array helpers, adapters, the
# sharded-inference skeleton); each kind adds its own infer module. A change in any of them
# invalidates cached inference; a change elsewhere (row normalisation, scoring, reports) does not.
INFERENCE_SOURCES = ("io/images.py", "arrays.py", "models", "kinds/sharded.py")
TRACKED_PACKAGES = ("bifocal", "torch", "transformers", "prefect", "mlflow", "numpy", "pillow")


def stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def code_version(root: Path, sources: tuple[str, ...]) -> str:
    """Digest of the named files and folders (their ``.py`` files) under ``root``."""
    digest = hashlib.sha256()
    for name in sources:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


@cache
def inference_code_version(*kind_sources: str) -> str:
    """Code version of inference: the shared sources plus a kind's own (paths under tasks/)."""
    return code_version(PACKAGE_ROOT, INFERENCE_SOURCES + kind_sources)


@cache
def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True,
            timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@cache
def git_dirty() -> bool | None:
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_ROOT,
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(result.stdout.strip())


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def inference_fingerprint(*, task: str, model: str, data: str, settings: dict[str, Any],
                          code: str) -> str:
    return stable_hash(
        {"task": task, "model": model, "data": data, "settings": settings, "code": code}
    )
