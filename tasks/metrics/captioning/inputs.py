"""Inputs of the captioning metrics: one prediction and one or more references per image."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.metrics.captioning.ptb import tokenize


@dataclass(frozen=True)
class TokenizedCaptions:
    """Captions after coco-caption's PTB tokenisation (lower-cased, punctuation removed).

    Each caption is the space-joined string pycocoevalcap hands to its scorers; the scorers
    split it themselves (BLEU and CIDEr with ``str.split()``, ROUGE-L with ``split(" ")``).
    """

    predictions: list[str]
    references: list[list[str]]


@dataclass
class CaptionInputs:
    """Predicted and reference captions of ``ids`` (same order in all three lists).

    The inputs are validated on construction; the tokenised form is computed once, on first
    use, and shared by all metrics, so treat the lists as read-only after creating the object.
    """

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    _tokenized: TokenizedCaptions | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.ids = [str(sample_id) for sample_id in self.ids]
        self.predictions = list(self.predictions)
        self.references = [list(refs) for refs in self.references]
        if not len(self.ids) == len(self.predictions) == len(self.references):
            raise ValueError(
                f"ids, predictions and references must have the same length, got "
                f"{len(self.ids)}, {len(self.predictions)} and {len(self.references)}"
            )
        seen: set[str] = set()
        for sample_id, prediction, refs in zip(
            self.ids, self.predictions, self.references, strict=True
        ):
            if sample_id in seen:
                raise ValueError(f"duplicate id {sample_id!r}: every sample needs a unique id")
            seen.add(sample_id)
            if not isinstance(prediction, str):
                raise ValueError(
                    f"prediction of id {sample_id!r} must be a string, got {type(prediction).__name__}"
                )
            if not refs:
                raise ValueError(f"id {sample_id!r} has no reference caption (at least one needed)")
            for ref in refs:
                if not isinstance(ref, str):
                    raise ValueError(
                        f"references of id {sample_id!r} must be strings, got {type(ref).__name__}"
                    )

    def __len__(self) -> int:
        return len(self.ids)

    def tokenized(self) -> TokenizedCaptions:
        """PTB-tokenised captions (computed on first call, then cached)."""
        if self._tokenized is None:
            self._tokenized = tokenize_inputs(self)
        return self._tokenized


def tokenize_inputs(inputs: CaptionInputs) -> TokenizedCaptions:
    """Tokenise like ``COCOEvalCap``: one tokenizer run over all references (image after image,
    in ``ids`` order), one over the predictions."""
    flat = tokenize([ref for refs in inputs.references for ref in refs])
    references, start = [], 0
    for refs in inputs.references:
        references.append(flat[start : start + len(refs)])
        start += len(refs)
    return TokenizedCaptions(tokenize(inputs.predictions), references)
