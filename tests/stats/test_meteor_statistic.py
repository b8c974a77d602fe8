"""``meteor_statistic`` against the METEOR 1.5 jar itself: the corpus score recomputed from the
summed per-sample statistics must be the jar's own ``EVAL`` answer, on the full sample, on
resamples (rows drawn with replacement, including the bootstrap's own resamples) and on single
rows (each sample's score). One JVM for the whole module (it takes ~5 s to load).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.metrics.captioning import CaptionInputs
from tasks.metrics.captioning import meteor as meteor_module
from tasks.metrics.captioning.meteor import (
    STAT_COLUMNS,
    MeteorProcess,
    find_meteor_jar,
    meteor_score,
    parse_stats,
)
from tasks.stats import BootstrapSettings, bootstrap_corpus
from tasks.stats.corpus import METEOR_STATS, meteor_statistic, meteor_sufficient_statistics
from tasks.stats.estimates import Estimate, interval, point_value
from tasks.stats.resampling import index_chunks, resample, resampled_sums
from tests.metrics.captioning.corpus import samples

TOLERANCE = 1e-9

# Hand-written pairs for the stem / synonym / paraphrase modules and perfect matches.
PAIRS = [
    ("a man rides a bicycle down the street", ["a man riding a bike down a street",
                                               "a person is cycling on the road"]),
    ("two dogs are playing in the grass", ["two dogs playing on the grass"]),
    ("a woman is cutting a cake", ["a lady cuts a large cake", "woman slicing a cake"]),
    ("a plate of food on a table", ["a plate of food on a table"]),  # perfect match
    ("a cat sleeping on a couch", ["a kitten sleeps on the sofa", "the cat is asleep"]),
    ("people walking on a beach", ["a group of people walk along the shore"]),
    ("a large jet flying in the sky", ["an airplane flies through the blue sky"]),
    ("a red bus parked near a building", ["a red bus parked near a building", "a bus"]),
    ("a boy holding a tennis racket", ["a young boy holds a racquet on a tennis court"]),
    ("a small kitchen with white cabinets", ["a tiny kitchen with white cupboards"]),
    ("", ["a man standing next to a horse"]),
    ("the the the the", ["a dog on the bed"]),
]
SUBJECTS = ["a man", "a woman", "two dogs", "a black cat", "a group of people", "a young boy"]
VERBS = ["is sitting on", "standing next to", "riding", "walking down", "looking at", "sits on"]
OBJECTS = ["a bench", "the street", "a wooden table", "a horse", "the beach", "a white plate"]


def corpus() -> tuple[list[str], list[list[str]]]:
    """~60 captions: hand-written pairs, COCO-like templates, tokenizer edge cases."""
    rng = random.Random(7)

    def caption() -> str:
        return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"

    predictions = [p for p, _ in PAIRS]
    references = [r for _, r in PAIRS]
    for _ in range(30):
        predictions.append(caption())
        references.append([caption() for _ in range(rng.randint(1, 5))])
    _, edge_predictions, edge_references = samples(16, seed=3, max_refs=3)
    return predictions + edge_predictions, references + edge_references


@pytest.fixture(scope="module")
def process() -> Iterator[MeteorProcess]:
    if shutil.which("java") is None:
        pytest.skip("METEOR needs Java, but no 'java' executable is on PATH")
    jar = find_meteor_jar()
    if jar is None or not jar.is_file():
        pytest.skip("METEOR needs meteor-1.5.jar, not found in the pycocoevalcap package")
    with MeteorProcess(jar) as meteor:
        yield meteor


@pytest.fixture(scope="module")
def inputs() -> CaptionInputs:
    predictions, references = corpus()
    return CaptionInputs([f"img{i}" for i in range(len(predictions))], predictions, references)


@pytest.fixture(scope="module")
def jar_run(process: MeteorProcess, inputs: CaptionInputs) -> dict[str, Any]:
    """The jar's stats lines, per-sample and corpus scores, and our (n, 24) statistics."""
    tokens = inputs.tokenized()
    lines = process.statistics(tokens.predictions, tokens.references)
    corpus_score, sample_scores = process.evaluate(lines)
    return {"lines": lines, "corpus": corpus_score, "samples": sample_scores,
            "stats": meteor_sufficient_statistics(parse_stats(lines))}


def test_corpus_exercises_every_part(jar_run: dict[str, Any]) -> None:
    """Matches in all four modules, perfect matches, empty predictions and zero scores."""
    stats = jar_run["stats"]
    assert stats.shape == (len(jar_run["lines"]), METEOR_STATS)
    for module in range(4):  # exact, stem, synonym, paraphrase: test + reference matches
        assert stats[:, [4 + 4 * module + j for j in range(4)]].sum() > 0
    assert stats[:, 23].sum() >= 2  # perfect matches, whose chunk METEOR leaves out
    assert (stats[:, 0] == 0).any()  # an empty prediction
    assert (jar_run["samples"] == 0).any() and (jar_run["samples"] > 0.5).any()


def test_corpus_score_from_sums(jar_run: dict[str, Any]) -> None:
    total = jar_run["stats"].sum(axis=0, keepdims=True)
    assert abs(meteor_statistic()(total)[0] - jar_run["corpus"]) <= TOLERANCE
    estimate = bootstrap_corpus(jar_run["stats"], meteor_statistic(),
                                BootstrapSettings(resamples=0)).estimate
    assert abs(estimate - jar_run["corpus"]) <= TOLERANCE


def test_single_rows_give_sample_scores(jar_run: dict[str, Any]) -> None:
    ours = meteor_statistic()(jar_run["stats"])  # every row "summed" alone
    assert np.max(np.abs(ours - jar_run["samples"])) <= TOLERANCE


def test_perfect_flag_matters(jar_run: dict[str, Any]) -> None:
    """Without the flag the summed chunks differ from the jar's and so does the score."""
    stats = jar_run["stats"].copy()
    stats[:, 23] = 0
    assert abs(meteor_statistic()(stats.sum(axis=0, keepdims=True))[0]
               - jar_run["corpus"]) > 1e-6


def test_resamples_match_jar_eval(process: MeteorProcess, jar_run: dict[str, Any]) -> None:
    """Resamples drawn here (one full of perfect matches) and the bootstrap's own first ones."""
    lines, stats = jar_run["lines"], jar_run["stats"]
    n, statistic = len(lines), meteor_statistic()
    rng = np.random.default_rng(1)
    perfect = np.flatnonzero(stats[:, 23])
    drawn = [rng.integers(0, n, n) for _ in range(3)]
    drawn += [np.r_[perfect, perfect, rng.integers(0, n, 3)], perfect[:1], perfect]
    for idx in drawn:
        jar_corpus, _ = process.evaluate([lines[i] for i in idx])
        ours = statistic(stats[idx].sum(axis=0, keepdims=True))[0]
        assert abs(ours - jar_corpus) <= TOLERANCE, idx

    settings = BootstrapSettings(resamples=4, seed=5)
    sums = resampled_sums(stats)
    boot = resample(n, lambda idx: statistic(sums(idx)), settings.resamples, settings.seed)
    indices = next(index_chunks(n, settings.resamples, settings.seed))[: settings.resamples]
    jar_boot = [process.evaluate([lines[i] for i in row])[0] for row in indices]
    assert np.max(np.abs(boot - np.array(jar_boot))) <= TOLERANCE


def test_meteor_score_columns_and_estimate(
    process: MeteorProcess, inputs: CaptionInputs, jar_run: dict[str, Any]
) -> None:
    """``meteor_score`` (run on the module's JVM) returns the statistics as ``meteor.stat.*``
    columns and an estimate that rebuilds its corpus score from them."""

    class Shared:  # hands meteor_score the module's process instead of starting a JVM
        def __init__(self, jar: Path, java: str = "java", memory: str = "2G") -> None:
            pass

        def __enter__(self) -> MeteorProcess:
            return process

        def __exit__(self, *exc: object) -> None:
            pass

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(meteor_module, "MeteorProcess", Shared)
        result = meteor_score(inputs)
    assert result.skipped is None
    assert result.corpus["meteor"] == jar_run["corpus"]
    np.testing.assert_array_equal(result.per_sample["meteor"], jar_run["samples"])
    assert tuple(f"meteor.stat.{j}" for j in range(METEOR_STATS)) == STAT_COLUMNS
    table = pd.DataFrame(result.per_sample)
    np.testing.assert_array_equal(table[list(STAT_COLUMNS)].to_numpy(), jar_run["stats"])
    estimate = result.estimates["meteor"]
    assert estimate == Estimate("meteor", STAT_COLUMNS)
    assert Estimate.from_json(estimate.to_json()) == estimate
    assert abs(point_value(estimate, table) - jar_run["corpus"]) <= TOLERANCE
    bounds = interval(estimate, table, BootstrapSettings(resamples=200, seed=0))
    assert bounds.low < jar_run["corpus"] < bounds.high


def test_statistic_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="24 columns"):
        meteor_statistic()(np.zeros((1, 23)))
    with pytest.raises(ValueError, match="23 columns"):
        meteor_sufficient_statistics(np.zeros((2, 24)))
    with pytest.raises(ValueError, match="module weights"):
        meteor_statistic(weights=(1.0, 0.5))
