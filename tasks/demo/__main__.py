"""CLI: ``python -m tasks.demo`` builds the demo assets in a temporary folder and prints the
build time and each CLIP's test-split R@1 (a quick check of the training recipe)."""

from __future__ import annotations

import time
from pathlib import Path

from tasks.demo.train import encode_split, recall_at_1


def _main() -> None:
    import tempfile

    import torch
    from transformers import AutoModel, AutoProcessor

    from tasks.demo import ensure_demo_assets

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        assets = ensure_demo_assets(Path(tmp) / "demo")
        wall = time.perf_counter() - t0
        print(f"full build wall time: {wall:.1f}s")
        torch.set_num_threads(1)
        for name, path in assets.models.items():
            model = AutoModel.from_pretrained(path)
            processor = AutoProcessor.from_pretrained(path)
            data = encode_split(assets.dataset_root, "test", processor)
            r = recall_at_1(model, data)
            print(f"{name}: {type(model).__name__} + {type(processor.image_processor).__name__}"
                  f" + {type(processor.tokenizer).__name__}, {len(processor.tokenizer)} tokens")
            print(f"{name}: t2i R@1 {r['t2i_r1']:.3f}  i2t R@1 {r['i2t_r1']:.3f}  "
                  f"(chance {r['chance']:.4f})")


if __name__ == "__main__":
    _main()
