"""The inference code version covers exactly the code that shapes inference outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.kinds import get_task_kind, kind_code_version
from tasks.tracking.fingerprint import INFERENCE_SOURCES, PACKAGE_ROOT, code_version


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tasks"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def version(root: Path, kind: str) -> str:
    return code_version(root, (*INFERENCE_SOURCES, f"kinds/{kind}/infer.py"))


def touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# changed\n")


@pytest.mark.parametrize("changed", ["kinds/retrieval/infer.py", "io/images.py", "arrays.py",
                                     "models/dual_encoder.py", "kinds/sharded.py"])
def test_changing_inference_code_changes_the_version(tree: Path, changed: str):
    before = version(tree, "retrieval")
    touch(tree / changed)
    assert version(tree, "retrieval") != before


@pytest.mark.parametrize("changed", ["kinds/retrieval/score.py", "kinds/captioning/infer.py",
                                     "report/html.py", "report/summary.py", "data/base.py",
                                     "metrics/retrieval.py", "steps.py", "io/s3.py",
                                     "io/tables.py", "data/cells.py"])
def test_changing_other_code_keeps_the_version(tree: Path, changed: str):
    before = version(tree, "retrieval")
    touch(tree / changed)
    assert version(tree, "retrieval") == before


def test_each_kind_is_versioned_with_its_own_infer_module():
    versions = {name: kind_code_version(get_task_kind(name)) for name in
                ("retrieval", "zero_shot_classification", "matching", "captioning", "vqa")}
    assert len(set(versions.values())) == len(versions)
    for name in versions:
        module = get_task_kind(name).infer.__module__
        assert module.endswith(".infer"), module
