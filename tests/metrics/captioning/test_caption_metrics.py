"""Captioning metrics without Java: hand-checked values, input validation, skips, registry, API."""

from __future__ import annotations

import math
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tasks.metrics import runner
from tasks.metrics.base import MetricResult, MetricSpec, get_metric, metrics_for_task
from tasks.metrics.captioning import (
    CaptionInputs,
    bleu_scores,
    cider_d,
    meteor,
    meteor_score,
    rouge_l_scores,
    spice,
    spice_score,
)
from tasks.metrics.captioning import inputs as inputs_module
from tasks.metrics.runner import run_metrics

SENTENCE = "a man in a red shirt is riding a brown horse on the beach"


def make(predictions: list[str], references: list[list[str]]) -> CaptionInputs:
    return CaptionInputs([f"id{i}" for i in range(len(predictions))], predictions, references)


# --- hand-checked values ------------------------------------------------------------------


def test_identical_caption_scores_one() -> None:
    inputs = make([SENTENCE, "two dogs"], [[SENTENCE], ["a cat sleeps on a sofa"]])
    corpus, per_sample = bleu_scores(inputs)
    assert per_sample[0] == pytest.approx([1.0] * 4, abs=1e-8)
    assert rouge_l_scores(inputs)[1][0] == 1.0
    assert get_metric("bleu")(inputs).per_sample["bleu_4"][0] == pytest.approx(1.0, abs=1e-8)


def test_bleu_by_hand() -> None:
    # the/cat/on/the/mat match (5 of 6 unigrams), "the cat", "on the", "the mat" (3 of 5 bigrams),
    # "on the mat" (1 of 4 trigrams), no 4-gram; same length, so no brevity penalty.
    inputs = make(["The cat sat on the mat."], [["The cat is on the mat."]])
    _, per_sample = bleu_scores(inputs)
    expected = [5 / 6, (5 / 6 * 3 / 5) ** (1 / 2), (5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3)]
    assert per_sample[0, :3] == pytest.approx(expected, rel=1e-6)
    assert per_sample[0, 3] < 1e-3  # only the 1e-15 smoothing term is left


def test_bleu_brevity_penalty_uses_the_closest_reference() -> None:
    inputs = make(["a dog runs"], [["a dog runs fast today", "a dog runs in the big park"]])
    _, per_sample = bleu_scores(inputs)
    assert per_sample[0, 0] == pytest.approx(math.exp(1 - 5 / 3), rel=1e-6)


def test_cider_by_hand() -> None:
    # Disjoint vocabularies: every n-gram has df = 1, so an exact match is a cosine of 1 for each
    # order (x10) and a caption sharing nothing scores 0.
    inputs = make(["a brown dog runs fast", "green apples"],
                  [["a brown dog runs fast"], ["blue cars parked outside today"]])
    corpus, per_sample = cider_d(inputs)
    assert per_sample == pytest.approx([10.0, 0.0])
    assert corpus == pytest.approx(5.0)


def test_cider_needs_two_images() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        get_metric("cider")(make(["a dog"], [["a dog"]]))
    # BLEU and ROUGE-L work on one image, but no metric scores zero samples.
    assert get_metric("bleu")(make(["a dog"], [["a dog"]])).per_sample["bleu_1"].shape == (1,)
    for name in ("bleu", "rouge_l", "cider", "meteor"):
        with pytest.raises(ValueError, match="at least"):
            get_metric(name)(make([], []))


def test_rouge_l_by_hand() -> None:
    # LCS("a dog runs in the park", "the dog runs") = 2 ("dog runs"): P = 2/3, R = 2/6.
    inputs = make(["the dog runs"], [["a dog runs in the park"]])
    p, r, beta = 2 / 3, 2 / 6, 1.2
    assert rouge_l_scores(inputs)[1][0] == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p))


def test_empty_and_punctuation_only_captions() -> None:
    inputs = make(["", "...", "a dog"], [["a dog"], [""], ["a dog", "..."]])
    for name in ("bleu", "rouge_l", "cider"):
        result = get_metric(name)(inputs)
        for values in result.per_sample.values():
            assert values.shape == (3,) and np.isfinite(values).all()
    assert get_metric("bleu")(inputs).per_sample["bleu_1"][0] == 0.0


# --- inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": ["a"], "predictions": ["x", "y"], "references": [["x"]]}, "same length"),
        ({"ids": ["a", "a"], "predictions": ["x", "y"], "references": [["x"], ["y"]]},
         "duplicate id 'a'"),
        ({"ids": ["a", "b"], "predictions": ["x", "y"], "references": [["x"], []]},
         "id 'b' has no reference"),
        ({"ids": ["a"], "predictions": [None], "references": [["x"]]}, "prediction of id 'a'"),
        ({"ids": ["a"], "predictions": ["x"], "references": [["x", 3]]}, "references of id 'a'"),
    ],
)
def test_input_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CaptionInputs(**kwargs)


def test_tokenisation_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = inputs_module.tokenize

    def counting(captions: list[str]) -> list[str]:
        calls.append(len(captions))
        return original(captions)

    monkeypatch.setattr(inputs_module, "tokenize", counting)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # METEOR/SPICE skip quickly
    inputs = make(["a dog", "a cat"], [["a dog", "the dog"], ["a cat"]])
    run = run_metrics("captioning", ["bleu", "rouge_l", "cider", "meteor"], inputs, {})
    assert calls == [3, 2]  # references once, predictions once
    assert set(run.metrics) >= {"bleu_4", "rouge_l", "cider"}
    assert "meteor" in run.skipped


# --- skips --------------------------------------------------------------------------------


def test_spice_skips_without_corenlp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("SPICE must never download anything")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    monkeypatch.delenv(spice.CORENLP_ENV, raising=False)
    inputs = make(["a dog"], [["a dog"]])
    result = spice_score(inputs)
    assert result.skipped and "CoreNLP" in result.skipped and spice.CORENLP_ENV in result.skipped
    assert not result.corpus

    monkeypatch.setenv(spice.CORENLP_ENV, str(tmp_path))  # a folder without the jars
    result = get_metric("spice")(inputs)
    assert result.skipped and "stanford-corenlp-3.6.0.jar" in result.skipped


def test_meteor_skips_without_java_or_jar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    inputs = make(["a dog"], [["a dog"]])
    result = meteor_score(inputs, jar=tmp_path / "missing.jar")
    if shutil.which("java") is not None:
        assert result.skipped and "meteor-1.5.jar" in result.skipped
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = get_metric("meteor")(inputs)
    assert result.skipped and "Java" in result.skipped


def test_meteor_sends_tokenised_captions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = {}

    class FakeProcess:
        def __init__(self, jar: Path, java: str, memory: str) -> None:
            seen["jar"] = jar

        def __enter__(self) -> FakeProcess:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def score(self, predictions: list[str], references: list[list[str]]) -> tuple:
            seen["captions"] = (predictions, references)
            return 0.5, np.array([0.25, 0.75])

    jar = tmp_path / "meteor-1.5.jar"
    jar.touch()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(meteor, "MeteorProcess", FakeProcess)
    result = meteor_score(make(["A Dog.", "cats!"], [["A dog"], ["Cats", "a cat"]]), jar=jar)
    assert seen["captions"] == (["a dog", "cats"], [["a dog"], ["cats", "a cat"]])
    assert result.corpus == {"meteor": 0.5}
    assert list(result.per_sample["meteor"]) == [0.25, 0.75]


def test_meteor_request_lines_are_pycocoevalcaps() -> None:
    line = meteor.score_line("a  dog ||| x", ["a dog", "the  dog"])
    assert line == "SCORE ||| a dog ||| the  dog ||| a dog x"


# --- registry and API ---------------------------------------------------------------------


def test_registry() -> None:
    for name, outputs in {
        "bleu": {"bleu_1", "bleu_2", "bleu_3", "bleu_4"},
        "rouge_l": {"rouge_l"},
        "cider": {"cider"},
        "meteor": {"meteor"},
        "spice": {"spice"},
    }.items():
        spec = get_metric(name)
        assert spec.task == "captioning"
        assert set(spec.outputs) == outputs and all(spec.outputs.values())
        assert spec in metrics_for_task("captioning")


def test_run_metrics_defaults_to_all_captioning_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = ["bleu", "cider", "meteor", "rouge_l", "spice"]
    monkeypatch.setattr(runner, "metrics_for_task", lambda task: [get_metric(n) for n in ours])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(spice.CORENLP_ENV, raising=False)
    inputs = make(["a dog runs", "a cat"], [["a dog runs"], ["a cat sleeps"]])
    run = run_metrics("captioning", [], inputs, {})
    assert set(run.skipped) == {"meteor", "spice"}
    assert run.per_sample["rouge_l"].shape == (2,)
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        run_metrics("captioning", ["bleu", "nope"], inputs, {})
    one_image = run_metrics("captioning", ["bleu", "cider"], make(["a dog"], [["a dog"]]), {})
    assert "bleu_4" in one_image.metrics
    assert "at least 2 images" in one_image.skipped["cider"]


def test_run_settings_reach_metrics_that_take_them_unless_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict] = []

    def probe(inputs, device: str = "cpu", batch_size: int = 1) -> MetricResult:
        seen.append({"device": device, "batch_size": batch_size})
        return MetricResult(corpus={"probe": 1.0})

    spec = MetricSpec("probe", "captioning", {"probe": True}, probe)
    monkeypatch.setattr(runner, "get_metric", lambda name: spec)
    run_metrics("captioning", ["probe"], None, {}, {"device": "cuda", "batch_size": 7, "seed": 1})
    run_metrics("captioning", ["probe"], None, {"probe": {"batch_size": 3}},
                {"device": "cuda", "batch_size": 7})
    assert seen == [{"device": "cuda", "batch_size": 7}, {"device": "cuda", "batch_size": 3}]



def test_spice_runs_the_jar_with_local_corenlp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the CoreNLP jars present, SPICE runs one JVM with them on the class path (the JVM
    is faked here: the real one needs the 400 MB CoreNLP download we never do)."""
    import json
    import subprocess

    for name in spice.CORENLP_JARS:
        (tmp_path / name).touch()
    calls = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(command)
        in_file = Path(command[command.index("edu.anu.spice.SpiceScorer") + 1])
        out = [{"image_id": r["image_id"],
                "scores": {"All": {"f": 0.5 if r["test"] == "a dog" else None}}}
               for r in json.loads(in_file.read_text())]
        Path(command[command.index("-out") + 1]).write_text(json.dumps(out))
        return subprocess.CompletedProcess(command, 0, b"", b"")

    if spice.find_spice_jar() is None:
        pytest.skip("pycocoevalcap's spice-1.0.jar is not installed")
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(subprocess, "run", fake_run)
    result = spice_score(make(["A dog.", "a cat"], [["a dog"], ["a cat"]]), corenlp_dir=tmp_path)
    assert result.skipped is None
    assert result.per_sample["spice"][0] == 0.5 and np.isnan(result.per_sample["spice"][1])
    classpath = calls[0][calls[0].index("-cp") + 1]
    assert all(str(tmp_path / name) in classpath for name in spice.CORENLP_JARS)
