"""Captioning inference: one generated caption per image, cached per shard."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput, generation_settings
from tasks.models.contracts import CaptionGenerator


def infer(run: Inference) -> InferenceRef:
    import torch

    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        generator = run.adapter(CaptionGenerator)
        torch.manual_seed(run.config.seed)  # sampling decoders
        generated = generator.generate(list(shard["image_path"]), progress=run.progress,
                                       workers=run.workers)
        (folder / "captions.json").write_text(json.dumps(generated.texts))
        return ShardOutput(generated.failures)

    return run.shards(run.items, task="captioning", compute=compute,
                      settings=generation_settings(run.config),
                      key=lambda shard: list(shard["image_sha256"]))
