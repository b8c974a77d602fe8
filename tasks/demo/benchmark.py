"""Synthetic image-text retrieval benchmark: coloured shapes on plain backgrounds.

Every image is drawn with Pillow from a handful of discrete attributes (shape, colour,
background, size, position). Each image gets several differently worded captions, some
naming only a subset of the attributes, so retrieval is learnable but not trivial.

Everything is driven by string-seeded ``random.Random`` instances (stable across Python
versions and platforms), so the same seed yields byte-identical PNG and JSONL files.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 30),
    "orange": (245, 130, 20),
    "purple": (130, 50, 170),
    "pink": (245, 120, 180),
    "brown": (120, 70, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
    "beige": (215, 195, 150),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")

# Geometry on a unit canvas: shape centre per position and radius per size (fractions of side).
_CENTERS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
}
_RADII: dict[str, float] = {"small": 0.11, "large": 0.2}
_JITTER = 0.05  # max centre offset, fraction of the side
_SUPERSAMPLE = 2  # draw at 2x and downsample for anti-aliased edges

# Wording pools used by the caption templates.
_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "square block", "four-sided box"),
    "triangle": ("triangle", "triangular shape", "three-cornered shape"),
    "cross": ("cross", "plus sign", "plus-shaped cross"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "star": ("star", "star shape", "five-pointed star"),
}
_SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
_POSITION_AT: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "in the middle of the picture", "at the center of the image"),
    "left": ("on the left", "in the left part of the picture", "at the left side"),
    "right": ("on the right", "in the right part of the picture", "at the right side"),
    "top": ("at the top", "in the upper part of the picture", "near the top edge"),
    "bottom": ("at the bottom", "in the lower part of the picture", "near the bottom edge"),
}
_POSITION_SHORT: dict[str, str] = {
    "center": "centered",
    "left": "left side",
    "right": "right side",
    "top": "top",
    "bottom": "bottom",
}

Attrs = dict[str, str]
_Template = Callable[[Attrs, random.Random], str]


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _t_full_background(a: Attrs, r: random.Random) -> str:
    size, shape = _pick(r, _SIZE_WORDS[a["size"]]), _pick(r, _SHAPE_WORDS[a["shape"]])
    where = _pick(r, _POSITION_AT[a["position"]])
    return (f"{_article(size)} {size} {a['color']} {shape} on a {a['background']} background, "
            f"{where}")


def _t_full_image_with(a: Attrs, r: random.Random) -> str:
    size, shape = _pick(r, _SIZE_WORDS[a["size"]]), _pick(r, _SHAPE_WORDS[a["shape"]])
    where = _pick(r, _POSITION_AT[a["position"]])
    return (f"{_article(a['background'])} {a['background']} image with {_article(size)} {size} "
            f"{a['color']} {shape} {where}")


def _t_full_terse(a: Attrs, r: random.Random) -> str:
    shape = _pick(r, _SHAPE_WORDS[a["shape"]])
    size = _pick(r, _SIZE_WORDS[a["size"]])
    where = _POSITION_SHORT[a["position"]]
    return f"{a['color']} {shape}, {size}, {a['background']} backdrop, {where}"


def _t_full_there_is(a: Attrs, r: random.Random) -> str:
    size, shape = _pick(r, _SIZE_WORDS[a["size"]]), _pick(r, _SHAPE_WORDS[a["shape"]])
    where = _pick(r, _POSITION_AT[a["position"]])
    return (f"there is {_article(size)} {size} {shape} {where}; it is {a['color']} "
            f"and the backdrop is {a['background']}")


def _t_no_position(a: Attrs, r: random.Random) -> str:
    shape = _pick(r, _SHAPE_WORDS[a["shape"]])
    return f"{_article(a['color'])} {a['color']} {shape} on a {a['background']} background"


def _t_no_background(a: Attrs, r: random.Random) -> str:
    size, shape = _pick(r, _SIZE_WORDS[a["size"]]), _pick(r, _SHAPE_WORDS[a["shape"]])
    where = _pick(r, _POSITION_AT[a["position"]])
    return f"{_article(size)} {size} {a['color']} {shape} {where}"


def _t_color_shape_backdrop(a: Attrs, r: random.Random) -> str:
    shape = _pick(r, _SHAPE_WORDS[a["shape"]])
    return f"{a['color']} {shape}, {a['background']} backdrop"


def _t_photo_of(a: Attrs, r: random.Random) -> str:
    shape = _pick(r, _SHAPE_WORDS[a["shape"]])
    where = _pick(r, _POSITION_AT[a["position"]])
    return f"a drawing of {_article(a['color'])} {a['color']} {shape} {where}"


# Templates naming every attribute, and templates naming only some of them.
FULL_TEMPLATES: tuple[_Template, ...] = (
    _t_full_background,
    _t_full_image_with,
    _t_full_terse,
    _t_full_there_is,
)
PARTIAL_TEMPLATES: tuple[_Template, ...] = (
    _t_no_position,
    _t_no_background,
    _t_color_shape_backdrop,
    _t_photo_of,
)

_WORD_RE = re.compile(r"[a-z]+|[^\sa-z]+")


@dataclass(frozen=True)
class BenchmarkInfo:
    """Where a built benchmark lives and how it was made."""

    root: Path
    train_manifest: Path
    test_manifest: Path
    classes: Path
    n_train: int
    n_test: int


def caption_words() -> list[str]:
    """Every word/punctuation token any caption template can emit (sorted, deterministic).

    The demo tokenizer is built from this list so that it covers the captions of every split
    and seed, independently of which templates a particular seed happened to draw.
    """
    pieces: list[str] = ["a", "an", "on", "background", "image", "with", "backdrop", "there",
                         "is", "it", "and", "the", "drawing", "of", ",", ";"]
    pieces += list(SHAPES) + list(COLORS) + list(BACKGROUNDS) + list(SIZES)
    for pool in (_SHAPE_WORDS, _SIZE_WORDS, _POSITION_AT):
        for options in pool.values():
            pieces += list(options)
    pieces += list(_POSITION_SHORT.values())
    words = {w for piece in pieces for w in _WORD_RE.findall(piece.lower())}
    return sorted(words)


def sample_attributes(rng: random.Random) -> Attrs:
    """Draw one image's attributes uniformly and independently."""
    return {
        "shape": _pick(rng, SHAPES),
        "color": _pick(rng, tuple(COLORS)),
        "background": _pick(rng, tuple(BACKGROUNDS)),
        "size": _pick(rng, SIZES),
        "position": _pick(rng, POSITIONS),
    }


def make_captions(attrs: Attrs, rng: random.Random, n: int) -> list[str]:
    """``n`` captions from distinct templates: at most ``n - 1`` full ones, the rest partial."""
    if not 1 <= n <= len(FULL_TEMPLATES) + len(PARTIAL_TEMPLATES):
        raise ValueError(f"captions per image must be in 1..8, got {n}")
    n_full = min(max(n - 1, 1), len(FULL_TEMPLATES))
    templates = rng.sample(FULL_TEMPLATES, n_full) + rng.sample(PARTIAL_TEMPLATES, n - n_full)
    rng.shuffle(templates)
    return [t(attrs, rng) for t in templates]


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def draw_image(attrs: Attrs, rng: random.Random, size: int = 64) -> Image.Image:
    """Render one RGB image for ``attrs``; ``rng`` only supplies the position jitter."""
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[attrs["background"]])
    draw = ImageDraw.Draw(img)
    fx, fy = _CENTERS[attrs["position"]]
    cx = (fx + rng.uniform(-_JITTER, _JITTER)) * big
    cy = (fy + rng.uniform(-_JITTER, _JITTER)) * big
    r = _RADII[attrs["size"]] * big
    fill = COLORS[attrs["color"]]
    shape = attrs["shape"]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)],
                     fill=fill)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, r * 1.1), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _records(split: str, n: int, seed: int, captions_per_image: int,
             image_size: int) -> Iterator[tuple[dict, Image.Image]]:
    rng = random.Random(f"bifocal-demo/{seed}/{split}")
    for i in range(n):
        attrs = sample_attributes(rng)
        captions = make_captions(attrs, rng, captions_per_image)
        image = draw_image(attrs, rng, image_size)
        record = {
            "id": f"{split}-{i:06d}",
            "image": f"images/{split}/{i:06d}.png",
            "captions": captions,
            "label": attrs["shape"],
            **attrs,
        }
        yield record, image


def build_benchmark(
    root: Path,
    *,
    seed: int = 0,
    n_train: int = 3000,
    n_test: int = 500,
    captions_per_image: int = 4,
    image_size: int = 64,
) -> BenchmarkInfo:
    """Write images, ``train.jsonl``, ``test.jsonl`` and ``classes.json`` under ``root``.

    Same arguments give byte-identical files. ``root`` may already exist; files are overwritten.
    """
    root = Path(root)
    manifests: dict[str, Path] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        manifest = root / f"{split}.jsonl"
        with manifest.open("w", encoding="utf-8", newline="\n") as fh:
            for record, image in _records(split, n, seed, captions_per_image, image_size):
                image.save(root / record["image"], format="PNG")
                fh.write(json.dumps(record) + "\n")
        manifests[split] = manifest
    classes = root / "classes.json"
    classes.write_text(json.dumps(list(SHAPES)) + "\n", encoding="utf-8")
    return BenchmarkInfo(root, manifests["train"], manifests["test"], classes, n_train, n_test)


def load_manifest(path: Path) -> list[dict]:
    """Read a JSONL manifest into a list of records."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
