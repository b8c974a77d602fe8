"""Demo assets for ``bifocal demo``: a synthetic benchmark and two tiny CLIP models, built locally.

Nothing is downloaded: :func:`ensure_demo_assets` draws the benchmark with Pillow and trains
both models on CPU (deterministically), then caches the result. Importing this package is
cheap (no torch / transformers); they are imported only when something must be built.

Cache layout (``ROOT`` = ``$BIFOCAL_HOME/demo`` or ``<cwd>/.bifocal/demo``)::

    ROOT/benchmark/{train,test}.jsonl, classes.json, images/...
    ROOT/models/clip-tiny-short/   ROOT/models/clip-tiny-long/   (HF checkpoint folders)
    ROOT/.complete.json            (stamp, written last)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.demo.captioner import CaptionerSpec, CaptionerTrainConfig
from tasks.demo.train import DEFAULT_MODELS, ModelSpec, TrainConfig

# Bump whenever the benchmark generator, tokenizer or trainer changes what gets built.
DEMO_VERSION = 3
CAPTIONER_NAME = "captioner-tiny"
STAMP_NAME = ".complete.json"

__all__ = ["DEMO_VERSION", "DemoAssets", "DemoConfig", "default_demo_root", "ensure_demo_assets"]


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the built assets (all of it goes into the cache key)."""

    seed: int = 0
    n_train: int = 3000
    n_test: int = 500
    captions_per_image: int = 4
    image_size: int = 64
    models: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    spec: ModelSpec = ModelSpec()
    train: TrainConfig = TrainConfig()
    captioner_spec: CaptionerSpec = CaptionerSpec()
    captioner_train: CaptionerTrainConfig = CaptionerTrainConfig()

    def cache_key(self) -> dict:
        return {"version": DEMO_VERSION, **asdict(self)}


@dataclass(frozen=True)
class DemoAssets:
    root: Path
    dataset_root: Path
    train_manifest: Path
    test_manifest: Path
    models: dict[str, Path]  # the CLIP-style dual encoders, name -> folder
    captioner: Path  # image-to-text model, also answers the VQA questions
    vqa_manifest: Path  # questions derived from the test split's metadata


def default_demo_root() -> Path:
    """``$BIFOCAL_HOME/demo`` if set, else ``<cwd>/.bifocal/demo``."""
    home = os.environ.get("BIFOCAL_HOME")
    base = Path(home).expanduser() if home else Path.cwd() / ".bifocal"
    return base / "demo"


def _assets(root: Path, config: DemoConfig) -> DemoAssets:
    dataset = root / "benchmark"
    return DemoAssets(
        root=root,
        dataset_root=dataset,
        train_manifest=dataset / "train.jsonl",
        test_manifest=dataset / "test.jsonl",
        models={name: root / "models" / name for name in config.models},
        captioner=root / "models" / CAPTIONER_NAME,
        vqa_manifest=dataset / "vqa_test.jsonl",
    )


def _is_complete(root: Path, config: DemoConfig) -> bool:
    try:
        stamp = json.loads((root / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # Round-trip the key through JSON so tuples/ints compare like the stored form.
    return stamp == json.loads(json.dumps(config.cache_key()))


def _write_stamp(root: Path, config: DemoConfig) -> None:
    tmp = root / f"{STAMP_NAME}.tmp"
    tmp.write_text(json.dumps(config.cache_key(), indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / STAMP_NAME)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX ``flock``); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(target: Path, config: DemoConfig, log: Callable[[str], None]) -> None:
    from tasks.demo.benchmark import build_benchmark
    from tasks.demo.train import build_demo_models

    t0 = time.perf_counter()
    log(f"building demo benchmark ({config.n_train} train / {config.n_test} test images)...")
    build_benchmark(
        target / "benchmark",
        seed=config.seed,
        n_train=config.n_train,
        n_test=config.n_test,
        captions_per_image=config.captions_per_image,
        image_size=config.image_size,
    )
    log(f"built demo benchmark ({time.perf_counter() - t0:.1f}s)")
    build_demo_models(
        target / "benchmark",
        target / "models",
        models=config.models,
        spec=config.spec,
        cfg=TrainConfig(**{**asdict(config.train), "seed": config.seed}),
        log=log,
    )
    from tasks.demo.captioner import train_demo_captioner
    from tasks.demo.derived import write_vqa_manifest

    write_vqa_manifest(target / "benchmark", "test", target / "benchmark" / "vqa_test.jsonl",
                       seed=config.seed)
    result = train_demo_captioner(
        target / "benchmark", target / "models" / CAPTIONER_NAME,
        steps=config.captioner_train.steps, seed=config.seed, log=log,
        spec=config.captioner_spec, cfg=config.captioner_train,
    )
    log(f"trained {CAPTIONER_NAME} ({result.seconds:.1f}s)")
    _write_stamp(target, config)  # last: marks the folder complete
    log(f"demo assets ready ({time.perf_counter() - t0:.1f}s)")


def ensure_demo_assets(
    root: Path | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    config: DemoConfig | None = None,
) -> DemoAssets:
    """Return the demo benchmark and models, building them first if needed.

    A folder whose stamp matches ``config`` is reused as is; anything else (missing, half
    built, older version, other settings, ``force``) is rebuilt in ``<root>.tmp-<pid>-<tid>``
    and swapped in with renames, under a lock file, so concurrent callers never see a
    partial folder and build it only once.
    """
    config = config or DemoConfig()
    root = Path(root) if root is not None else default_demo_root()
    root = root.expanduser().absolute()
    if not force and _is_complete(root, config):
        return _assets(root, config)
    with _lock(root.parent / f".{root.name}.lock"):
        if not force and _is_complete(root, config):  # built by someone else while we waited
            return _assets(root, config)
        # Holding the lock, leftovers of crashed builds can go.
        for kind in ("tmp", "old"):
            for stale in root.parent.glob(f"{root.name}.{kind}-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tag = f"{os.getpid()}-{threading.get_ident()}"
        tmp = root.parent / f"{root.name}.tmp-{tag}"
        tmp.mkdir(parents=True)
        try:
            _build(tmp, config, log)
            old = root.parent / f"{root.name}.old-{tag}"
            if root.exists():
                os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _assets(root, config)
