"""BLEU, ROUGE-L, CIDEr-D and METEOR vs the real pycocoevalcap on generated corpora.

The corpus has several hundred images with 1-6 references each, predictions and references
full of tokenizer edge cases, empty captions, captions that tokenise to nothing, captions longer
than 64 tokens and exact matches. Values must agree to 1e-9, corpus and per sample.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tasks.metrics.base import get_metric
from tasks.metrics.captioning import CaptionInputs
from tasks.metrics.captioning.meteor import MeteorProcess, find_meteor_jar
from tests.metrics.captioning.corpus import coco_tokenize, samples

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str], list[list[str]]]:
    return samples(400, seed=11, max_refs=5)


@pytest.fixture(scope="module")
def coco_tokens(java: None, corpus: tuple) -> tuple[dict, dict]:
    """pycocoevalcap's tokenisation (gts and res separately, as ``COCOEvalCap`` does)."""
    ids, predictions, references = corpus
    gts = coco_tokenize(dict(zip(ids, references, strict=True)))
    res = coco_tokenize({i: [p] for i, p in zip(ids, predictions, strict=True)})
    return gts, res


@pytest.fixture(scope="module")
def inputs(corpus: tuple) -> CaptionInputs:
    return CaptionInputs(*corpus)


def assert_close(ours: Any, theirs: Any) -> None:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs), initial=0.0) <= TOLERANCE


def test_tokens_match(inputs: CaptionInputs, coco_tokens: tuple, corpus: tuple) -> None:
    gts, res = coco_tokens
    ids = corpus[0]
    tokens = inputs.tokenized()
    assert tokens.predictions == [res[i][0] for i in ids]
    assert tokens.references == [gts[i] for i in ids]


def test_bleu(inputs: CaptionInputs, coco_tokens: tuple, corpus: tuple) -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = coco_tokens
    corpus_scores, sample_scores = Bleu(4).compute_score(gts, res, verbose=0)
    result = get_metric("bleu")(inputs)
    for k in range(4):
        assert_close(result.corpus[f"bleu_{k + 1}"], corpus_scores[k])
        assert_close(result.per_sample[f"bleu_{k + 1}"], sample_scores[k])


def test_rouge_l(inputs: CaptionInputs, coco_tokens: tuple) -> None:
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = coco_tokens
    corpus_score, sample_scores = Rouge().compute_score(gts, res)
    result = get_metric("rouge_l")(inputs)
    assert_close(result.corpus["rouge_l"], corpus_score)
    assert_close(result.per_sample["rouge_l"], sample_scores)


def test_cider_d(inputs: CaptionInputs, coco_tokens: tuple) -> None:
    from pycocoevalcap.cider.cider import Cider

    gts, res = coco_tokens
    corpus_score, sample_scores = Cider().compute_score(gts, res)
    result = get_metric("cider")(inputs)
    assert_close(result.corpus["cider"], corpus_score)
    assert_close(result.per_sample["cider"], sample_scores)


def test_meteor(java: None, corpus: tuple) -> None:
    """Same numbers as pycocoevalcap's ``Meteor``, which is pointed at our METEOR process.

    Both send their requests to one JVM started exactly as pycocoevalcap starts it (starting a
    second one would double the ~10 s METEOR needs to load its paraphrase table).
    """
    from pycocoevalcap.meteor.meteor import Meteor

    class SharedMeteor(Meteor):
        def __init__(self, process: Any) -> None:  # no JVM of its own
            self.meteor_p, self.lock = process, threading.Lock()

        def __del__(self) -> None:  # the process belongs to MeteorProcess
            pass

    jar = find_meteor_jar()
    assert jar is not None, "pycocoevalcap's meteor-1.5.jar not found"
    ids, predictions, references = (part[:80] for part in corpus)
    tokens = CaptionInputs(ids, predictions, references).tokenized()
    with MeteorProcess(jar) as process:
        corpus_ours, samples_ours = process.score(tokens.predictions, tokens.references)
        corpus_theirs, samples_theirs = SharedMeteor(process._process).compute_score(
            dict(zip(ids, tokens.references, strict=True)),
            {i: [p] for i, p in zip(ids, tokens.predictions, strict=True)},
        )
    assert_close(corpus_ours, corpus_theirs)
    assert_close(samples_ours, samples_theirs)
