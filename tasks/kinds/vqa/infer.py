"""VQA inference: one generated answer per (image, question), cached per shard."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput, generation_settings
from tasks.models.contracts import VQAAnswerer


def infer(run: Inference) -> InferenceRef:
    question = run.config.vqa.question_column
    if question not in run.items.columns:
        raise ValueError(f"question column {question!r} not in the dataset (vqa.question_column)")

    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        answers = run.adapter(VQAAnswerer).answer(
            list(shard["image_path"]), [str(q) for q in shard[question]], progress=run.progress,
            workers=run.workers)
        (folder / "captions.json").write_text(json.dumps(answers.texts))
        return ShardOutput(answers.failures)

    return run.shards(run.items, task="vqa", compute=compute,
                      settings=generation_settings(run.config),
                      key=lambda shard: [(r.image_sha256, str(getattr(r, question)))
                                         for r in shard.itertuples()])
