"""Caption metrics identical to coco-caption (pycocoevalcap), in fast pure Python.

Importing the package registers ``bleu``, ``rouge_l``, ``cider``, ``meteor`` and ``spice`` for
task ``captioning``. All metrics score the same PTB tokenisation as coco-caption (see
:mod:`tasks.metrics.captioning.ptb`), computed once per :class:`CaptionInputs`.
"""

from tasks.metrics.captioning.bleu import bleu_score, bleu_scores
from tasks.metrics.captioning.cider import cider_d, cider_score
from tasks.metrics.captioning.inputs import CaptionInputs, TokenizedCaptions
from tasks.metrics.captioning.meteor import meteor_score
from tasks.metrics.captioning.ptb import tokenize
from tasks.metrics.captioning.rouge import rouge_l_score, rouge_l_scores
from tasks.metrics.captioning.spice import spice_score

__all__ = [
    "CaptionInputs",
    "TokenizedCaptions",
    "bleu_score",
    "bleu_scores",
    "cider_d",
    "cider_score",
    "meteor_score",
    "rouge_l_score",
    "rouge_l_scores",
    "spice_score",
    "tokenize",
]
