"""The model families Bifocal is proven on: family × task kind.

Every ``TESTED`` cell is run end to end through ``bifocal run`` by
``tests/models/test_family_matrix.py`` on a tiny model of that family built from its config
(random weights, processor and tokenizer built offline, saved with ``save_pretrained``). The
README's compatibility matrix is rendered from this table (``python -m tests.models.families``)
and a test keeps the two equal, so the README cannot claim a cell no test runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("retrieval", "zero_shot_classification", "matching", "captioning", "vqa")
KIND_TITLES = {"retrieval": "retrieval", "zero_shot_classification": "zero-shot",
               "matching": "matching", "captioning": "captioning", "vqa": "VQA"}
TESTED, NOT_APPLICABLE, LIMITATION = "tested", "n/a", "limitation"
SYMBOLS = {TESTED: "✓", NOT_APPLICABLE: "–", LIMITATION: "✗"}
ENCODER_ONLY = "an encoder pair has no text generator"
GENERATOR_ONLY = "a generator has no image/text embeddings or match head"


@dataclass(frozen=True)
class Run:
    """How a tested cell runs: the adapter (``model.kind``), the builder of the tiny model
    (``"module:function"``, called as ``function(folder) -> folder``) and extra ``model:`` config
    (e.g. generation settings)."""

    adapter: str
    builder: str
    model: dict[str, Any] = field(default_factory=dict)

    def build(self, folder: Path) -> Path:
        module, name = self.builder.split(":")
        function: Callable[[Path], Path] = getattr(importlib.import_module(module), name)
        return function(folder)


@dataclass(frozen=True)
class Family:
    name: str  # as users know it
    model_class: str  # the transformers class of the tiny model (and of real checkpoints)
    runs: dict[str, Run]  # task kind -> how it is run (a TESTED cell)
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)  # kind -> (status, why)

    def status(self, kind: str) -> tuple[str, str]:
        if kind in self.runs:
            return TESTED, ""
        return self.notes.get(kind, (NOT_APPLICABLE, ""))


ENCODERS = "tests.models.zoo_encoders"
GENERATORS = "tests.models.zoo_generators"


def _encoder(name: str, model_class: str, builder: str) -> Family:
    runs = {kind: Run("dual_encoder", f"{ENCODERS}:{builder}")
            for kind in ("retrieval", "zero_shot_classification", "matching")}
    notes = {kind: (NOT_APPLICABLE, ENCODER_ONLY) for kind in ("captioning", "vqa")}
    return Family(name, model_class, runs, notes)


FAMILIES: list[Family] = [
    _encoder("CLIP", "CLIPModel", "build_clip"),
    _encoder("SigLIP", "SiglipModel", "build_siglip"),
    _encoder("SigLIP 2 (NaFlex)", "Siglip2Model", "build_siglip2"),
    _encoder("SigLIP 2 (fixed resolution)", "SiglipModel", "build_siglip2_fixed"),
]


def families() -> list[Family]:
    """Every family, generator families included (their table lives with their builders)."""
    from tests.models.zoo_generators import GENERATOR_FAMILIES

    return [*FAMILIES, *GENERATOR_FAMILIES]


def tested_cells() -> list[tuple[str, str, Run]]:
    return [(family.name, kind, run) for family in families() for kind, run in family.runs.items()]


def render() -> str:
    """The README's compatibility matrix (markdown), with the reasons as footnotes."""
    header = "| family (transformers class) | " + " | ".join(KIND_TITLES[k] for k in KINDS) + " |"
    lines = [header, "|" + "---|" * (len(KINDS) + 1)]
    reasons: list[str] = []
    for family in families():
        cells = []
        for kind in KINDS:
            status, why = family.status(kind)
            mark = SYMBOLS[status]
            if status == LIMITATION:
                if why not in reasons:
                    reasons.append(why)
                mark += f" [{reasons.index(why) + 1}]"
            cells.append(mark)
        lines.append(f"| {family.name} (`{family.model_class}`) | " + " | ".join(cells) + " |")
    legend = (f"\n{SYMBOLS[TESTED]} run end to end in the test suite; {SYMBOLS[NOT_APPLICABLE]} "
              f"not applicable; {SYMBOLS[LIMITATION]} known limitation.")
    notes = "".join(f"\n[{i}] {why}" for i, why in enumerate(reasons, 1))
    return "\n".join(lines) + "\n" + legend + ("\n" + notes if notes else "") + "\n"


if __name__ == "__main__":
    print(render(), end="")
