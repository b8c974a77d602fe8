"""Shared fixtures: tiny models built from configs, small image datasets, one Prefect harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import apply_defaults
from tests.helpers import WORDS, build_tiny_clip, write_dataset

apply_defaults()

@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    write_dataset(tmp_path / "ds")
    return tmp_path / "ds"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer CLIP saved like a user's checkpoint."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it takes ~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield



@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server on loopback for the whole session."""
    from tests.s3server import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import build_tiny_captioner

    return build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"), WORDS)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    """A real Label Studio server (its own venv, scripts/setup-label-studio.sh) on loopback."""
    from tests.label_studio_server import label_studio_server

    with label_studio_server(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture
def clean_env():
    """The config validators move secrets into the process environment: undo that."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
