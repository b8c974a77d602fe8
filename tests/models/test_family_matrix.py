"""Every tested cell of the compatibility matrix (``tests/models/families.py``) end to end
through ``bifocal run`` on a tiny model of its family, and the README's matrix equal to the
table these tests run."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import main
from tests.helpers import write_dataset
from tests.models import families as matrix
from tests.models.families import KINDS, Run, render

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- compatibility-matrix:start -->", "<!-- compatibility-matrix:end -->"
HEADLINES = {"retrieval": "i2t_recall_at_1", "zero_shot_classification": "accuracy",
             "matching": "auroc", "captioning": "bleu_4", "vqa": "vqa_accuracy"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models by builder, each built once for the module."""
    return {}


def model_folder(run: Run, built: dict[str, Path], root: Path) -> Path:
    if run.builder not in built:
        built[run.builder] = run.build(root / run.builder.replace(":", "_").replace(".", "_"))
    return built[run.builder]


def vqa_manifest(root: Path) -> Path:
    write_dataset(root, n=4)
    rows = [{"id": f"q{i}", "image": f"images/{i:03d}.png",
             "question": "what color is the square", "answers": [color] * 10}
            for i, color in enumerate(["red", "green", "blue", "yellow"])]
    path = root / "vqa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def task_sections(kind: str, root: Path) -> dict[str, Any]:
    """The dataset (and task section) of a small evaluation of ``kind``."""
    if kind == "vqa":
        return {"dataset": {"path": str(vqa_manifest(root)),
                            "columns": {"captions": "answers", "label": None}}}
    manifest = str(write_dataset(root, n=6))
    if kind == "zero_shot_classification":
        return {"dataset": {"path": manifest, "columns": {"captions": None}},
                "zero_shot": {"templates": ["a {} square"]}}
    if kind == "matching":
        return {"dataset": {"path": manifest}, "matching": {"negatives": "random"}}
    return {"dataset": {"path": manifest}}


@pytest.mark.e2e
@pytest.mark.parametrize(("family", "kind", "run"), matrix.tested_cells(),
                         ids=[f"{f}-{k}".replace(" ", "") for f, k, _ in matrix.tested_cells()])
def test_family_runs_through_bifocal_run(prefect_harness, tmp_path: Path, built, family: str,
                                         kind: str, run: Run,
                                         tmp_path_factory: pytest.TempPathFactory):
    folder = model_folder(run, built, tmp_path_factory.getbasetemp() / "families")
    config = {"task": kind, "model": {"kind": run.adapter, "path": str(folder),
                                      "batch_size": 4, **run.model},
              **task_sections(kind, tmp_path / "data"),
              "statistics": {"bootstrap": 50}, "review": {"size": 0},
              "report": {"destination": str(tmp_path / "reports")},
              "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
                           "experiment": "families"},
              "work_dir": str(tmp_path / "work")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    printed = io.StringIO()  # not capsys: Prefect's console handler outlives a test's capture
    with redirect_stdout(printed):
        assert main(["run", str(path), "--json"]) == 0
    result = json.loads(printed.getvalue())
    counts = result["counts"]
    assert counts["rejected"] == 0 and not any(
        value for key, value in counts.items() if "failed" in key), counts
    assert math.isfinite(result["metrics"][HEADLINES[kind]])


def test_readme_matrix_is_the_tested_table():
    text = README.read_text()
    assert START in text and END in text, "README lacks the compatibility matrix markers"
    shown = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == render().strip(), "regenerate it: python -m tests.models.families"


def test_every_family_states_every_kind():
    for family in matrix.families():
        for kind in KINDS:
            status, why = family.status(kind)
            assert kind in family.runs or why, f"{family.name} / {kind}: no reason given"
