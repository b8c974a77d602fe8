"""Test data builders shared across test modules."""

from __future__ import annotations

import json
import os
from pathlib import Path

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220),
          "yellow": (230, 210, 40)}
WORDS = ["a", "red", "green", "blue", "yellow", "square", "on", "white", "black", "picture",
         "of", "small", "big"]


def draw(path: Path, color: tuple[int, int, int], size: int = 24, offset: int = 4) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle([offset, offset, offset + size, offset + size], fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_dataset(root: Path, n: int = 8, manifest: str = "data.jsonl") -> Path:
    """``n`` images of coloured squares with two captions each; returns the manifest path."""
    names = list(COLORS)
    lines = []
    for index in range(n):
        color = names[index % len(names)]
        size = 10 + 2 * (index // len(names))
        draw(root / "images" / f"{index:03d}.png", COLORS[color], size=size)
        lines.append({"id": f"item-{index}", "image": f"images/{index:03d}.png",
                      "captions": [f"a {color} square", f"a picture of a {color} square"],
                      "label": color, "size": "small" if size < 14 else "big"})
    path = root / manifest
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
