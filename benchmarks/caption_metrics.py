"""Caption metrics: ours (pure Python) vs pycocoevalcap (Java PTBTokenizer + its scorers).

Times BLEU-1..4 + ROUGE-L + CIDEr-D *including* the PTB tokenisation of predictions and
references, both in this process, on seeded synthetic COCO-like captions (1 prediction and
``--refs`` references per image). Our side starts cold (empty tokenizer caches, lexer not yet
compiled). Prints both times, the speed ratio (pycocoevalcap / ours, goal >= 10x), how many
tokenised captions differ (expected: 0) and the largest absolute difference over the corpus and
per-sample values of every metric (expected: <= 1e-9).

Run: ``.venv/bin/python benchmarks/caption_metrics.py [--images 5000 --refs 5 --seed 0]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, if not installed

from tasks.metrics.captioning import CaptionInputs, bleu_scores, cider_d, rouge_l_scores  # noqa: E402

SUBJECTS = [
    "a man", "a woman", "a young boy", "a little girl", "two men", "a group of people",
    "a dog", "two dogs", "a black cat", "a brown horse", "an elephant", "a giraffe",
    "a red double-decker bus", "a train", "a large airplane", "a person", "a skier",
    "a surfer", "a baseball player", "a tennis player", "three zebras", "a herd of sheep",
    "a plate of food", "a pizza", "a kitchen", "a bathroom", "a living room", "a bird",
    "a teddy bear", "a motorcycle", "a man's bicycle", "the chef", "a woman's purse",
]
VERBS = [
    "is sitting on", "is standing next to", "is riding", "holding", "sitting at",
    "walking down", "standing in", "playing with", "is eating", "looking at", "parked near",
    "flying over", "laying on", "covered with", "filled with", "on top of", "in front of",
    "is throwing", "catching", "swinging", "waiting at", "crossing",
]
OBJECTS = [
    "a bench", "the street", "a table", "a frisbee", "a kite", "the beach", "a field",
    "a wooden table", "a snowy hill", "a surfboard", "a wave", "a tennis ball", "a bat",
    "a sidewalk", "a building", "a traffic light", "a red stop sign", "the water",
    "a white plate", "some vegetables", "a laptop", "a cell phone", "an umbrella",
    "a black-and-white photo", "a t-shirt", "two slices of pizza", "3 donuts", "the grass",
    "a busy city street", "a café", "the ocean", "a clock tower", "a fire hydrant",
]
TAILS = [
    "", "", "", "", " in a park", " on a sunny day", " at night", " next to a building",
    " near the water", " with trees in the background", ", while people watch",
    " in the snow", " on the side of the road", " outside", " in a kitchen",
]


def synthetic_caption(rng: random.Random) -> str:
    """A COCO-like caption with the usual variations (case, final period, spacing, commas)."""
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.03:
        text = text.upper()
    if rng.random() < 0.7:
        text += "."
    if rng.random() < 0.05:
        text = text.replace(" ", "  ", 1)
    if rng.random() < 0.05:
        text += " "
    if rng.random() < 0.02:
        text = f'"{text}"'
    return text


def make_corpus(images: int, refs: int, seed: int) -> tuple[list[str], list[str], list[list[str]]]:
    rng = random.Random(seed)
    ids = [f"img{i:06d}" for i in range(images)]
    references = [[synthetic_caption(rng) for _ in range(refs)] for _ in ids]
    predictions = [synthetic_caption(rng) for _ in ids]
    return ids, predictions, references


def run_ours(ids: list[str], predictions: list[str], references: list[list[str]]) -> dict:
    inputs = CaptionInputs(ids, predictions, references)
    bleu_corpus, bleu_samples = bleu_scores(inputs)
    rouge_corpus, rouge_samples = rouge_l_scores(inputs)
    cider_corpus, cider_samples = cider_d(inputs)
    tokens = inputs.tokenized()
    return {
        "tokens": (tokens.predictions, tokens.references),
        "bleu": (list(bleu_corpus), bleu_samples.T),
        "rouge_l": ([rouge_corpus], rouge_samples[None]),
        "cider": ([cider_corpus], cider_samples[None]),
    }


def run_pycocoevalcap(ids: list[str], predictions: list[str], references: list[list[str]]) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": c} for c in refs] for i, refs in zip(ids, references, strict=True)}
    res = {i: [{"caption": p}] for i, p in zip(ids, predictions, strict=True)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    bleu_corpus, bleu_samples = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_corpus, rouge_samples = Rouge().compute_score(gts, res)
    cider_corpus, cider_samples = Cider().compute_score(gts, res)
    return {
        "tokens": ([res[i][0] for i in ids], [gts[i] for i in ids]),
        "bleu": (list(bleu_corpus), np.array(bleu_samples)),
        "rouge_l": ([rouge_corpus], np.asarray(rouge_samples)[None]),
        "cider": ([cider_corpus], np.asarray(cider_samples)[None]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5, help="reference captions per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = make_corpus(args.images, args.refs, args.seed)
    print(f"{args.images} images x {args.refs} references (+1 prediction each), seed {args.seed}")

    start = time.perf_counter()
    ours = run_ours(*corpus)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = run_pycocoevalcap(*corpus)
    theirs_s = time.perf_counter() - start

    pred_diff = sum(a != b for a, b in zip(ours["tokens"][0], theirs["tokens"][0], strict=True))
    ref_diff = sum(a != b for a, b in zip(ours["tokens"][1], theirs["tokens"][1], strict=True))
    print(f"pycocoevalcap (Java PTBTokenizer + BLEU + ROUGE-L + CIDEr-D): {theirs_s:8.2f} s")
    print(f"ours          (PTB tokenisation  + BLEU + ROUGE-L + CIDEr-D): {ours_s:8.2f} s")
    print(f"speed ratio: {theirs_s / ours_s:.1f}x")
    print(f"tokenised captions that differ: predictions {pred_diff}, reference sets {ref_diff}")
    worst = 0.0
    for name in ("bleu", "rouge_l", "cider"):
        corpus_diff = float(np.max(np.abs(np.subtract(ours[name][0], theirs[name][0]))))
        sample_diff = float(np.max(np.abs(ours[name][1] - theirs[name][1])))
        worst = max(worst, corpus_diff, sample_diff)
        print(f"  {name:8s} corpus {np.round(theirs[name][0], 6)}  max |diff| corpus "
              f"{corpus_diff:.2e}, per sample {sample_diff:.2e}")
    print(f"largest absolute difference: {worst:.2e}")


if __name__ == "__main__":
    main()
