"""Fixtures for the captioning metric tests: access to the real pycocoevalcap (Java) pipeline."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def java() -> None:
    """Skip unless Java and pycocoevalcap are available (CI has both)."""
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: the reference pycocoevalcap pipeline cannot run")
    pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer",
                        reason="pycocoevalcap (dev extra) is not installed")

