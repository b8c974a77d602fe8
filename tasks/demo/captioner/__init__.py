"""Build and train the tiny captioning / VQA model used by ``bifocal demo``.

The model is an ordinary ``transformers`` ``VisionEncoderDecoderModel`` (ViT encoder, GPT-2
decoder with cross-attention) saved with a word-level ``PreTrainedTokenizerFast`` and a
``ViTImageProcessorPil``, so the ``captioner`` and ``vqa`` adapters load it exactly like a
user's checkpoint. One model does both tasks, trained jointly on the train split:

* captioning: decoder sequence ``[BOS] caption [EOS]``, loss on every caption token;
* VQA: ``[BOS] question answer [EOS]``, loss on the answer and ``[EOS]`` only. The question is
  the decoder prompt the adapters feed (``[BOS]`` + the question's ids without special
  tokens), so the model never learns to *produce* questions and captioning from ``[BOS]``
  cannot drift into one.

The tokenizer splits on spaces (kept as a ``▁`` prefix, like SentencePiece) and punctuation,
and its decoder restores the text exactly: a decoded answer reads ``"what color is the
shape? red"``, from which the adapter removes the prompt by its token count, leaving ``"red"``.

Layout: :mod:`.model` (spec, tokenizer, image processor, model construction), :mod:`.training`
(data encoding, loss, training loop), :mod:`.evaluation` (metrics through the adapters).

Run ``python -m tasks.demo.captioner [BENCHMARK_DIR]`` (the CLI in
:mod:`tasks.demo.captioner.__main__`) to train on a benchmark (default: build a full-size one in
a temp dir) and print training time and test-split metrics.
"""

from tasks.demo.captioner.evaluation import evaluate_demo_captioner
from tasks.demo.captioner.model import (
    SPACE,
    SPECIAL_TOKENS,
    CaptionerSpec,
    build_captioner,
    build_image_processor,
    build_tokenizer,
    tokenizer_words,
)
from tasks.demo.captioner.training import (
    ATTRIBUTES,
    IGNORE_INDEX,
    AttributeHeads,
    CaptionerTrainConfig,
    DecoderData,
    decoder_example,
    encode_split,
    sequence_loss,
    train_captioner,
    train_demo_captioner,
)

__all__ = [
    "ATTRIBUTES",
    "IGNORE_INDEX",
    "SPACE",
    "SPECIAL_TOKENS",
    "AttributeHeads",
    "CaptionerSpec",
    "CaptionerTrainConfig",
    "DecoderData",
    "build_captioner",
    "build_image_processor",
    "build_tokenizer",
    "decoder_example",
    "encode_split",
    "evaluate_demo_captioner",
    "sequence_loss",
    "tokenizer_words",
    "train_captioner",
    "train_demo_captioner",
]
