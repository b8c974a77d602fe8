"""A data-driven corpus of bad inputs for the data stage, and a runner that accounts for each.

``write_corpus(folder)`` writes every case into ``folder`` (one sub-folder per case: a manifest,
its tiny images and the special files the case needs) and returns the cases; ``cases.json``
keeps them so ``run_corpus(folder)`` can run a folder written earlier. Each case has a class
name (``image:decompression-bomb``, ``path:null``, ``manifest:empty``, ...) and its expected
outcome: a file-level ``DataError`` containing a phrase, or one expectation per raw row —
scored (optionally with the decoded pixel at (0, 0), size or captions, computed here from the
raw values, never from the code under test), rejected / failed with a reason containing
phrases, or "unusable" (rejected at the data stage or failed at decoding, for corruptions
whose detection point depends on the format).

``run_corpus(folder)`` loads every case through ``tasks.data.load_dataset``, decodes the images
of its items through ``tasks.io.decode_images`` and returns a summary: cases, classes, recorded
(every outcome as expected), lost (raw rows without an outcome), crashes (an exception other
than an expected ``DataError``), hangs (a case over its time limit; it runs in a daemon thread
so a hang cannot block the caller) and the mismatches, one readable line each.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GOOD = {"id": "good", "image": "good.png", "captions": ["a good image"]}
GOOD_TEXT = {**GOOD, "captions": "a good image"}  # for manifests with one caption per cell
GOOD_PIXEL = (10, 200, 30)
CASE_TIMEOUT_S = 30.0
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


# -- cases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The outcome of one raw row (or group of rows) with id ``item_id``."""

    item_id: str
    outcome: str  # scored | rejected | failed | unusable (rejected or failed) | note
    phrases: tuple[str, ...] = ()  # all must occur in the reason
    pixel: tuple[int, int, int] | None = None  # decoded RGB at (0, 0)
    tolerance: int = 0
    size: tuple[int, int] | None = None
    captions: tuple[str, ...] | None = None
    rows: int | None = None  # raw rows the item / reject stands for


@dataclass(frozen=True)
class Case:
    name: str  # "<class>/<number>"
    klass: str
    manifest: str  # relative to the corpus folder
    rows: int  # raw rows written (blank lines excluded)
    expects: tuple[Expect, ...] = ()
    error: str | None = None  # phrase of the expected file-level DataError
    options: dict[str, Any] = field(default_factory=dict)  # DatasetConfig fields besides path

    @staticmethod
    def from_json(data: dict[str, Any]) -> Case:
        expects = tuple(Expect(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in e.items()}) for e in data.pop("expects"))
        return Case(expects=expects, **data)


def scored(item_id: str = "bad", **checks: Any) -> Expect:
    return Expect(item_id, "scored", **checks)


def rejected(*phrases: str, item_id: str = "bad", **checks: Any) -> Expect:
    return Expect(item_id, "rejected", phrases, **checks)


def unusable(*phrases: str, item_id: str = "bad") -> Expect:
    return Expect(item_id, "unusable", phrases)


GOOD_EXPECT = scored("good", pixel=GOOD_PIXEL, captions=("a good image",))


# -- image bytes ------------------------------------------------------------------------------


def encode(image: Any, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def from_array(array: np.ndarray, mode: str | None = None) -> Any:
    from PIL import Image

    return Image.fromarray(array, mode) if mode else Image.fromarray(array)


def good_png() -> bytes:
    return encode(from_array(np.full((4, 4, 3), GOOD_PIXEL, np.uint8)), "PNG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header(width: int, height: int, color_type: int = 0, extra: bytes = b"") -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds a few bytes of pixel data."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + extra + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset:offset + len(value)] = value
    return bytes(out)


def noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def xlsx_bytes() -> bytes:
    """A minimal Office Open XML spreadsheet (a ZIP archive)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet><sheetData/></worksheet>")
    return buffer.getvalue()


def exif_png(array: np.ndarray, orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(from_array(array), "PNG", exif=exif)


def exif_oriented(array: np.ndarray, orientation: int) -> np.ndarray:
    """How a viewer shows ``array`` under EXIF ``orientation`` (the TIFF/EXIF definition)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }[orientation](array)


def composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference compositing on white from raw values (integer arithmetic, round half up)."""
    rgb, alpha = rgb.astype(np.int64), alpha.astype(np.int64)
    return (rgb * alpha + 255 * (255 - alpha) + 127) // 255


def scale16(values: np.ndarray) -> np.ndarray:
    """Reference 16-bit -> 8-bit: round(v / 257), in integers."""
    clipped = np.clip(values.astype(np.int64), 0, 65535)
    return (clipped + 128) // 257


def scale_float(values: np.ndarray) -> np.ndarray:
    """Reference for float images: [0, 1] scaled by 255, otherwise clipped to [0, 255]."""
    data = values.astype(np.float64)
    finite = data[np.isfinite(data)]
    factor = 255.0 if finite.size and finite.min() >= 0 and finite.max() <= 1 else 1.0
    out = np.zeros(data.shape, dtype=np.int64)
    for index, value in np.ndenumerate(data):
        if math.isnan(value):
            out[index] = 0
        elif math.isinf(value):
            out[index] = 255 if value > 0 else 0
        else:
            out[index] = min(255, max(0, int(np.rint(value * factor))))
    return out


def gray3(value: int) -> tuple[int, int, int]:
    return (int(value),) * 3


# -- writing ----------------------------------------------------------------------------------


class Writer:
    """Writes cases under ``root``; each case gets its own folder with ``good.png``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[Case] = []
        self.counts: Counter[str] = Counter()
        self.good = good_png()

    def folder(self, klass: str) -> Path:
        number = self.counts[klass]
        self.counts[klass] += 1
        folder = self.root / re.sub(r"[^\w]+", "_", klass) / f"{number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "good.png").write_bytes(self.good)
        return folder

    def add(self, klass: str, folder: Path, manifest: str, rows: int,
            expects: tuple[Expect, ...] = (), error: str | None = None,
            **options: Any) -> None:
        name = f"{klass}/{folder.name}"
        relative = (folder / manifest).relative_to(self.root).as_posix()
        self.cases.append(Case(name, klass, relative, rows, expects, error, options))

    def rows_case(self, klass: str, rows: list[dict[str, Any]], expects: list[Expect],
                  files: dict[str, bytes] | None = None, fmt: str = "jsonl",
                  good: bool = True, setup: Callable[[Path], None] | None = None,
                  **options: Any) -> None:
        """A manifest of ``rows`` (+ the good anchor row) in ``fmt``."""
        folder = self.folder(klass)
        for name, data in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        if setup is not None:
            setup(folder)
        texts = fmt in ("csv", "tsv") or (rows and all(isinstance(r.get("captions"), str)
                                                       for r in rows))
        all_rows = ([GOOD_TEXT if texts else GOOD] if good else []) + rows
        manifest = f"m.{fmt}"
        write_rows(folder / manifest, all_rows, fmt)
        self.add(klass, folder, manifest, len(all_rows),
                 ((GOOD_EXPECT,) if good else ()) + tuple(expects), **options)

    def image_case(self, klass: str, data: bytes, expect: Expect, name: str = "bad.png",
                   **options: Any) -> None:
        self.rows_case(klass, [{"id": "bad", "image": name, "captions": ["x"]}], [expect],
                       files={name: data}, **options)

    def file_case(self, klass: str, name: str, data: bytes | None, error: str,
                  setup: Callable[[Path], None] | None = None) -> None:
        """A manifest file with exactly these bytes (or made by ``setup``) -> a DataError."""
        folder = self.folder(klass)
        if data is not None:
            (folder / name).write_bytes(data)
        if setup is not None:
            setup(folder / name)
        self.add(klass, folder, name, 0, error=error)

    def raw_case(self, klass: str, name: str, data: bytes, rows: int,
                 expects: list[Expect], files: dict[str, bytes] | None = None) -> None:
        """A manifest with exactly these bytes and per-row expectations."""
        folder = self.folder(klass)
        for file, content in (files or {}).items():
            (folder / file).write_bytes(content)
        (folder / name).write_bytes(data)
        self.add(klass, folder, name, rows, tuple(expects))


def write_rows(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt in ("csv", "tsv"):
        import csv

        columns = list(dict.fromkeys(key for row in rows for key in row))
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    elif fmt == "parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    else:
        raise ValueError(fmt)


# -- the classes ------------------------------------------------------------------------------


def image_cases(w: Writer) -> None:
    from tasks.io import MAX_IMAGE_BYTES

    bomb = "image too large"
    for width, height, color in [(10_000, 8_001, 0), (9_000, 9_000, 2), (12_000, 9_000, 0),
                                 (20_000, 20_000, 6), (65_535, 65_535, 0),
                                 (100_000, 100_000, 2), (2**31 - 1, 1, 0), (1, 2**31 - 1, 0),
                                 (2**31 - 1, 2**31 - 1, 6), (300_000, 300, 4),
                                 (40_000, 2_001, 0), (1_000_000, 1_000, 2)]:
        w.image_case("image:decompression-bomb", png_header(width, height, color),
                     rejected(bomb, "pixels"))
    gif = encode(from_array(np.zeros((2, 2), np.uint8), "L"), "GIF")
    jpeg = encode(from_array(np.zeros((2, 2, 3), np.uint8)), "JPEG")
    bmp = encode(from_array(np.zeros((2, 2, 3), np.uint8)), "BMP")
    sof = jpeg.find(b"\xff\xc0")
    for width, height in [(65_535, 65_535), (20_000, 20_000)]:
        w.image_case("image:decompression-bomb",
                     patched(gif, 6, struct.pack("<HH", width, height)), rejected(bomb),
                     name="bad.gif")
        w.image_case("image:decompression-bomb",
                     patched(jpeg, sof + 5, struct.pack(">HH", height, width)), rejected(bomb),
                     name="bad.jpg")
        w.image_case("image:decompression-bomb",
                     patched(bmp, 18, struct.pack("<ii", width, height)), rejected(bomb),
                     name="bad.bmp")

    def sparse(size: int) -> Callable[[Path], None]:
        def make(folder: Path) -> None:
            with (folder / "big.png").open("wb") as handle:
                handle.write(b"\x89PNG\r\n\x1a\n")
                handle.truncate(size)
        return make

    for size in (MAX_IMAGE_BYTES + 1, MAX_IMAGE_BYTES + 4096, 3 * MAX_IMAGE_BYTES):
        w.rows_case("image:too-many-bytes", [{"id": "bad", "image": "big.png",
                                              "captions": ["x"]}],
                    [rejected("image file is", "over the limit", "MAX_IMAGE_BYTES")],
                    setup=sparse(size))

    for name, link in [("bad.png", None), ("bad.jpg", None), ("link.png", "fifo")]:
        def make_fifo(folder: Path, name: str = name, link: str | None = link) -> None:
            os.mkfifo(folder / (link or name))
            if link:
                os.symlink(link, folder / name)
        w.rows_case("image:fifo", [{"id": "bad", "image": name, "captions": ["x"]}],
                    [rejected("FIFO", "not a regular file")], setup=make_fifo)

    for image in ["dir.png", "images", ".", "images/", "images/sub"]:
        w.rows_case("image:directory", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("directory", "not a regular file")],
                    setup=lambda f: (f / "dir.png").mkdir() or (f / "images/sub").mkdir(
                        parents=True))

    if _can_make_socket():
        for name in ("bad.png", "sock"):
            w.rows_case("image:socket", [{"id": "bad", "image": name, "captions": ["x"]}],
                        [rejected("socket", "not a regular file")],
                        setup=lambda f, name=name: _make_socket(f / name))

    # only devices that end (null) or cannot be opened (tty without a terminal): a regression
    # that read /dev/zero would fill the memory while the case counts as a hang
    for device in ("null", "tty"):
        if Path("/dev", device).is_char_device():
            w.rows_case("image:device", [{"id": "bad", "image": device, "captions": ["x"]}],
                        [rejected("character device", "not a regular file")], good=False,
                        root="/dev")

    for image in ["nope.png", "images/nope.png", "GOOD.PNG", "good.png ", " good.png",
                  "~/good.png", "dangling.png"]:
        w.rows_case("image:missing", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("image file not found")],
                    setup=lambda f: os.symlink("gone.png", f / "dangling.png"))

    for name in ("bad.png", "bad.jpg", "bad.gif", "bad"):
        w.image_case("image:empty-file", b"", rejected("not a readable image"), name=name)

    for seed in range(6):
        for length in (1, 9, 100, 1000, 5000):
            data = noise(seed * 100 + length, (length,)).tobytes()
            w.image_case("image:garbage", data, rejected("not a readable image"))

    magics = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a",
              "bmp": b"BM", "tif": b"II*\x00", "webp": b"RIFF\x00\x01\x00\x00WEBPVP8 "}
    for suffix, magic in magics.items():
        for seed in range(3):
            data = magic + noise(7 + seed, (200,)).tobytes()
            w.image_case("image:header-then-garbage", data, unusable("image"),
                         name=f"bad.{suffix}")

    picture = noise(3, (16, 16, 3))
    encoded = {"png": encode(from_array(picture), "PNG"),
               "jpg": encode(from_array(picture), "JPEG", quality=90),
               "gif": encode(from_array(picture).convert("P"), "GIF"),
               "bmp": encode(from_array(picture), "BMP"),
               "tif": encode(from_array(picture), "TIFF"),
               "webp": encode(from_array(picture), "WEBP", lossless=True)}
    for suffix, data in encoded.items():
        for fraction in (0.3, 0.6, 0.9):
            w.image_case("image:truncated", data[: int(len(data) * fraction)],
                         unusable("image"), name=f"bad.{suffix}")

    png = encoded["png"]
    for offset in (29, len(png) - 20):  # IHDR's CRC, IDAT's CRC
        w.image_case("image:bad-crc", patched(png, offset, bytes([png[offset] ^ 0xFF])),
                     rejected("not a readable image"))

    for width, height in [(0, 4), (4, 0), (0, 0)]:
        w.image_case("image:zero-size", png_header(width, height),
                     rejected("not a readable image"))

    lossless = {"png": encoded["png"], "gif": encode(from_array(picture[:, :, :1].repeat(3, 2)
                                                                .copy()), "GIF"),
                "bmp": encoded["bmp"], "tif": encoded["tif"]}
    for suffix, data in lossless.items():
        for name in (f"bad.{'jpg' if suffix != 'jpg' else 'png'}", "bad", "bad.txt"):
            first = picture[0, 0] if suffix != "gif" else picture[0, 0, :1].repeat(3)
            w.image_case("image:wrong-extension", data,
                         scored(pixel=tuple(int(v) for v in first), size=(16, 16)), name=name)

    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n%%EndComments\n"
           b"newpath 0 0 moveto 4 4 lineto stroke\nshowpage\n%%EOF\n")
    for name, data in [("bad.eps", eps), ("bad.png", eps),
                       ("bad.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
                       ("bad.png", b"<html><body>not an image</body></html>"),
                       ("bad.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n"),
                       ("bad.png", b'{"image": "good.png"}')]:
        w.image_case("image:not-an-image", data, rejected("not a readable image"), name=name)

    for text_kind in (b"zTXt", b"iTXt"):
        bomb_text = zlib.compress(b"\x00" * (16 * 2**20))
        body = (b"k\x00\x00" + bomb_text if text_kind == b"zTXt"
                else b"k\x00\x01\x00\x00\x00" + bomb_text)
        data = png_header(4, 4, 0, extra=_chunk(text_kind, body))
        w.image_case("image:text-chunk-bomb", data, unusable("image"))

    for size, fmt in [((1, 1), "PNG"), ((1, 1), "GIF"), ((1, 1), "BMP"), ((1, 3), "PNG"),
                      ((3, 1), "TIFF")]:
        array = np.full((size[1], size[0], 3), 77, np.uint8)
        w.image_case("image:tiny", encode(from_array(array), fmt),
                     scored(pixel=(77, 77, 77), size=size), name=f"bad.{fmt.lower()}")


def mode_cases(w: Writer) -> None:
    """Every mode Pillow reads, against references computed here from the raw values."""
    from PIL import Image

    for pattern in ([[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, 0], [0, 0]]):
        bits = Image.frombytes("1", (2, 2), np.packbits(np.array(pattern, bool), axis=1)
                               .tobytes())
        w.image_case("image:mode-1", encode(bits, "PNG"),
                     scored(pixel=gray3(255 if pattern[0][0] else 0), size=(2, 2)))
    for value in (0, 37, 200, 255):
        w.image_case("image:mode-L", encode(from_array(np.full((3, 3), value, np.uint8)),
                                            "PNG"), scored(pixel=gray3(value)))
    palette = [(255, 0, 0), (0, 128, 0), (12, 34, 56), (250, 250, 0)]
    flat = [v for color in palette for v in color]
    for index, fmt in [(0, "PNG"), (2, "PNG"), (3, "GIF"), (1, "BMP")]:
        image = Image.new("P", (3, 3), index)
        image.putpalette(flat)
        w.image_case("image:mode-P", encode(image, fmt), scored(pixel=palette[index]),
                     name=f"bad.{fmt.lower()}")
    for transparent, index, fmt in [(1, 1, "PNG"), (1, 2, "PNG"), (0, 0, "GIF"),
                                    (3, 2, "GIF")]:
        image = Image.new("P", (3, 3), index)
        image.putpalette(flat)
        expected = (255, 255, 255) if index == transparent else palette[index]
        w.image_case("image:mode-P-transparency", encode(image, fmt, transparency=transparent),
                     scored(pixel=expected), name=f"bad.{fmt.lower()}")
    for gray, alpha in [(0, 0), (0, 128), (100, 255), (200, 77), (255, 1)]:
        array = np.array([[[gray, alpha]]], np.uint8).repeat(2, 0).repeat(2, 1)
        expected = composite_white(np.array([gray]), np.array([alpha]))[0]
        w.image_case("image:mode-LA", encode(from_array(array, "LA"), "PNG"),
                     scored(pixel=gray3(expected)))
    for rgba, fmt in [((255, 0, 0, 0), "PNG"), ((255, 0, 0, 255), "PNG"),
                      ((10, 100, 200, 128), "PNG"), ((0, 0, 0, 64), "PNG"),
                      ((30, 60, 90, 200), "WEBP"), ((1, 2, 3, 250), "TIFF")]:
        array = np.array([[rgba]], np.uint8).repeat(2, 0).repeat(2, 1)
        expected = composite_white(np.array(rgba[:3]), np.array(rgba[3]))
        options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
        w.image_case("image:mode-RGBA", encode(from_array(array, "RGBA"), fmt, **options),
                     scored(pixel=tuple(int(v) for v in expected)),
                     name=f"bad.{fmt.lower()}")
    for mode, key, value in [("L", 7, 7), ("L", 7, 8), ("RGB", (1, 2, 3), (1, 2, 3)),
                             ("RGB", (1, 2, 3), (1, 2, 4))]:
        image = Image.new(mode, (2, 2), value)
        expected = (255, 255, 255) if value == key else (
            gray3(value) if mode == "L" else value)
        w.image_case("image:transparency-key", encode(image, "PNG", transparency=key),
                     scored(pixel=expected))
    for cmyk in [(0, 0, 0, 0), (10, 20, 30, 40), (255, 0, 128, 0), (0, 0, 0, 255)]:
        expected = tuple(int(round((255 - c) * (255 - cmyk[3]) / 255)) for c in cmyk[:3])
        w.image_case("image:mode-CMYK", encode(Image.new("CMYK", (2, 2), cmyk), "TIFF"),
                     scored(pixel=expected, tolerance=1), name="bad.tif")
    for ycc in [(100, 120, 140), (0, 128, 128), (255, 128, 128), (76, 85, 255)]:
        y, cb, cr = (float(v) for v in ycc)
        rgb = (y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
               y + 1.772 * (cb - 128))
        expected = tuple(int(min(255, max(0, round(v)))) for v in rgb)
        w.image_case("image:mode-YCbCr", encode(Image.new("YCbCr", (2, 2), ycc), "TIFF"),
                     scored(pixel=expected, tolerance=1), name="bad.tif")

    for value in (0, 257, 1000, 32768, 65535):
        array = np.array([[value, 0], [65535, 12345]], dtype=np.uint16)
        expected = gray3(scale16(np.array(value)))
        w.image_case("image:16-bit", encode(from_array(array), "PNG"),
                     scored(pixel=expected, size=(2, 2)))
        if value in (257, 65535):
            w.image_case("image:16-bit", encode(from_array(array), "TIFF"),
                         scored(pixel=expected), name="bad.tif")
        big = Image.frombytes("I;16B", (2, 2), array.astype(">u2").tobytes())
        w.image_case("image:16-bit-big-endian", encode(big, "TIFF"), scored(pixel=expected),
                     name="bad.tif")
    for value in (-5, 0, 300, 65535, 70000, 2**31 - 1):
        array = np.array([[value, 1], [2, 3]], dtype=np.int32)
        w.image_case("image:32-bit-int", encode(from_array(array, "I"), "TIFF"),
                     scored(pixel=gray3(scale16(np.array(value)))), name="bad.tif")
    for maxval, value in [(65535, 65535), (65535, 1000), (1023, 511), (4095, 4095)]:
        data = (f"P5\n2 1\n{maxval}\n".encode()
                + np.array([value, 0], dtype=">u2").tobytes())
        expected = scale16(np.array(value * 65535 // maxval))
        w.image_case("image:16-bit-pgm", data, scored(pixel=gray3(expected), tolerance=1),
                     name="bad.pgm")
    for values in ([0.5, 0.0], [1.0, 0.25], [0.0, 300.0], [-20.0, 100.4],
                   [float("nan"), 0.5], [float("inf"), 0.5], [float("-inf"), 2.0],
                   [127.5, 0.0]):
        array = np.array([values], dtype=np.float32)
        expected = scale_float(array)[0, 0]
        w.image_case("image:float", encode(from_array(array, "F"), "TIFF"),
                     scored(pixel=gray3(expected)), name="bad.tif")

    picture = np.zeros((2, 3, 3), np.uint8)
    picture[0, 0], picture[0, 2], picture[1, 0] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    for orientation in range(1, 9):
        shown = exif_oriented(picture, orientation)
        w.image_case("image:exif-orientation", exif_png(picture, orientation),
                     scored(pixel=tuple(int(v) for v in shown[0, 0]),
                            size=(shown.shape[1], shown.shape[0])))
    big = np.zeros((16, 32, 3), np.uint8)
    big[:8, :16] = (250, 20, 20)
    big[:8, 16:] = (20, 250, 20)
    big[8:, :16] = (20, 20, 250)
    big[8:, 16:] = (240, 240, 240)
    for orientation in range(1, 9):
        from PIL import Image as PILImage

        exif = PILImage.Exif()
        exif[0x0112] = orientation
        shown = exif_oriented(big, orientation)
        w.image_case("image:exif-orientation-jpeg",
                     encode(from_array(big), "JPEG", exif=exif, quality=95),
                     scored(pixel=tuple(int(v) for v in shown[0, 0]), tolerance=12,
                            size=(shown.shape[1], shown.shape[0])), name="bad.jpg")

    frames = [Image.new("RGB", (4, 4), color) for color in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "PNG", "WEBP"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                      **options)
        w.image_case("image:animated", data, scored(pixel=(255, 0, 0)),
                     name=f"bad.{fmt.lower()}")


def path_cases(w: Writer) -> None:
    outside = w.root / "outside.png"
    outside.write_bytes(w.good)
    for image in ["../../outside.png", "../../../outside.png", "sub/../../../outside.png",
                  "/etc/passwd", "//etc/hostname", "/"]:
        w.rows_case("path:escape", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("escapes the dataset root")],
                    setup=lambda f: (f / "sub").mkdir())

    def links(folder: Path) -> None:
        os.symlink(outside, folder / "abs-link.png")
        os.symlink("../../outside.png", folder / "rel-link.png")
        os.symlink("/etc/passwd", folder / "etc-link.png")
        os.symlink(w.root, folder / "dir-link")

    for image in ["abs-link.png", "rel-link.png", "etc-link.png", "dir-link/outside.png"]:
        w.rows_case("path:symlink-escape", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("escapes the dataset root")], setup=links)
    for w_inside in ("inside-link.png",):
        w.rows_case("path:symlink-inside", [{"id": "bad", "image": w_inside,
                                             "captions": ["x"]}],
                    [scored(pixel=GOOD_PIXEL)],
                    setup=lambda f: os.symlink("good.png", f / "inside-link.png"))

    def loops(folder: Path) -> None:
        os.symlink("self.png", folder / "self.png")
        os.symlink("b.png", folder / "a.png")
        os.symlink("a.png", folder / "b.png")

    for image in ["self.png", "a.png", "a.png/x.png"]:
        w.rows_case("path:symlink-loop", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("cannot be resolved")], setup=loops)

    def decoys(folder: Path) -> None:
        for name in ("nan", "NaN", "None", "null", "<NA>", "NaT", "True", "123", "1.5"):
            (folder / name).write_bytes(w.good)

    for fmt, row in [("jsonl", {"id": "bad", "image": None, "captions": ["x"]}),
                     ("jsonl", {"id": "bad", "image": float("nan"), "captions": ["x"]}),
                     ("jsonl", {"id": "bad", "captions": ["x"]}),
                     ("parquet", {"id": "bad", "image": None, "captions": ["x"]}),
                     ("parquet", {"id": "bad", "image": float("nan"), "captions": ["x"]})]:
        w.rows_case("path:null", [row], [rejected("image value is missing")], fmt=fmt,
                    setup=decoys)
    for value, kind in [(123, "a number"), (1.5, "a number"), (True, "a boolean"),
                        (["good.png"], "a list"), ({"path": "good.png"}, "an object")]:
        w.rows_case("path:non-string", [{"id": "bad", "image": value, "captions": ["x"]}],
                    [rejected(f"image value is {kind}", "not a path string")], setup=decoys)
    w.rows_case("path:non-string", [{"id": "bad", "image": ["good.png"], "captions": ["x"]}],
                [rejected("image value is a list")], fmt="parquet", good=False)
    for fmt, value in [("jsonl", ""), ("jsonl", "   "), ("jsonl", "\t"), ("csv", ""),
                       ("tsv", " ")]:
        w.rows_case("path:empty", [{"id": "bad", "image": value, "captions": "x"}],
                    [rejected("empty image path")], fmt=fmt)
    for value in ["good.png\x00.txt", "\x00", "sub/\x00/good.png"]:
        w.rows_case("path:nul-byte", [{"id": "bad", "image": value, "captions": ["x"]}],
                    [rejected("NUL character")])
    for value in ["a" * 300 + ".png", "a/" * 3000 + "good.png", "b" * 5000]:
        w.rows_case("path:too-long", [{"id": "bad", "image": value, "captions": ["x"]}],
                    [rejected("too long")])
    for name in ["ümlaut.png", "日本語.png", "emoji 🐕.png", "space name.png", "#hash?.png"]:
        w.rows_case("path:unicode", [{"id": "bad", "image": name, "captions": ["x"]}],
                    [scored(pixel=GOOD_PIXEL)], files={name: w.good})
    w.rows_case("path:unicode", [{"id": "bad", "image": "u\u0308mlaut.png", "captions": ["x"]}],
                [rejected("image file not found")], files={"\u00fcmlaut.png": w.good})
    for image in ["./good.png", "sub/../good.png", "sub//..//good.png", "./sub/./../good.png"]:
        w.rows_case("path:dot-segments", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [scored(pixel=GOOD_PIXEL)], setup=lambda f: (f / "sub").mkdir())
    for image in ["http://example.com/good.png", "file:///etc/passwd", "s3://bucket/good.png",
                  "sub\\good.png", "C:\\data\\good.png"]:
        w.rows_case("path:url-or-windows", [{"id": "bad", "image": image, "captions": ["x"]}],
                    [rejected("image file not found")], setup=lambda f: (f / "sub").mkdir()
                    or shutil.copy(f / "good.png", f / "sub" / "good.png"))


def caption_cases(w: Writer) -> None:
    def row(captions: Any, **extra: Any) -> list[dict[str, Any]]:
        return [{"id": "bad", "image": "good.png", "captions": captions, **extra}]

    for value in [{"text": "a dog"}, {}, {"en": "a dog", "de": "ein Hund"}]:
        w.rows_case("caption:dict", row(value), [rejected("object (dict)")])
    for value in [[{"text": "a dog"}], ["a dog", {"t": "x"}]]:
        w.rows_case("caption:dict", row(value), [rejected("caption", "object (dict)")])
    w.rows_case("caption:dict", [{"id": "bad", "image": "good.png",
                                  "captions": {"text": "a dog"}}],
                [rejected("object (dict)")], fmt="parquet", good=False)
    for value in [[["a", "b"]], ["a", ["b"]], [[]], [["a"], ["b"]]]:
        w.rows_case("caption:nested-list", row(value), [rejected("nested list")])
    w.rows_case("caption:nested-list", row([["a", "b"], ["c"]]), [rejected("nested list")],
                fmt="parquet", good=False)
    for value, expected in [(2, ("2",)), (2.5, ("2.5",)), ([1, 2], ("1", "2")),
                            (1e3, ("1000",)), (-0.0, ("0",)), (["three", 3], ("three", "3"))]:
        w.rows_case("caption:number", row(value), [scored(captions=expected)])
    for value in [True, [True, "a"], False]:
        w.rows_case("caption:bool", row(value), [rejected("boolean")])
    for value in ["", [], ["", " "], None, "   \n"]:
        w.rows_case("caption:empty", row(value), [rejected("no caption")])
    w.rows_case("caption:empty", [{"id": "bad", "image": "good.png"}],
                [rejected("no caption")])
    for value, expected in [("  a\n dog\t ", ("a dog",)), ("ñandú 🐕", ("ñandú 🐕",)),
                            ("a " * 3000, (" ".join(["a"] * 3000),)),
                            (["ok", "", None], ("ok",))]:
        w.rows_case("caption:whitespace-and-text", row(value), [scored(captions=expected)])
    w.rows_case("caption:partly-empty", row(["ok", "  "]),
                [scored(captions=("ok",)), Expect("bad", "note", ("1 empty caption",))])
    for value, expect in [(["a", float("nan")], scored(captions=("a",))),
                          (float("nan"), rejected("no caption")),
                          ([float("inf")], rejected("infinite number")),
                          (float("-inf"), rejected("infinite number"))]:
        w.rows_case("caption:non-finite", row(value), [expect])
    w.rows_case("caption:bytes", row(b"a dog"), [rejected("bytes")], fmt="parquet",
                good=False)
    for value, expect in [("a||b", scored(captions=("a", "b"))), ("|", rejected("no caption")),
                          ("a|b|c", scored(captions=("a", "b", "c")))]:
        w.rows_case("caption:separator", row(value), [expect], fmt="csv",
                    caption_separator="|")


def id_cases(w: Writer) -> None:
    files = {"a.png": w.good, "b.png": encode(from_array(np.zeros((2, 2, 3), np.uint8)), "PNG"),
             "c.png": w.good}
    conflict = ("conflicting duplicate id", "'x'", "'a.png'", "'b.png'")
    for fmt in ("csv", "tsv", "jsonl", "parquet"):
        w.rows_case("id:duplicate-conflict",
                    [{"id": "x", "image": "a.png", "captions": "first"},
                     {"id": "x", "image": "b.png", "captions": "second"}],
                    [scored("x", captions=("first",), rows=1), rejected(*conflict, item_id="x")],
                    files=files, fmt=fmt)
    w.rows_case("id:duplicate-conflict",
                [{"id": "x", "image": "a.png", "captions": "one"},
                 {"id": "x", "image": "b.png", "captions": "two"},
                 {"id": "x", "image": "a.png", "captions": "three"}],
                [scored("x", captions=("one", "three"), rows=2),
                 rejected(*conflict, item_id="x")], files=files, fmt="csv")
    w.rows_case("id:duplicate-conflict",
                [{"id": "x", "image": "a.png", "captions": "one"},
                 {"id": "x", "image": "b.png", "captions": "two"},
                 {"id": "x", "image": "c.png", "captions": "three"}],
                [scored("x", rows=1), rejected(*conflict, item_id="x"),
                 rejected("conflicting duplicate id", "'c.png'", item_id="x")],
                files=files, fmt="csv")
    for variants in (["a.png", "./a.png"], ["a.png", "a.png", "sub/../a.png"]):
        rows = [{"id": "x", "image": image, "captions": f"c{n}"}
                for n, image in enumerate(variants)]
        w.rows_case("id:duplicate-same-image", rows,
                    [scored("x", captions=tuple(f"c{n}" for n in range(len(variants))),
                            rows=len(variants))], files=files, fmt="csv",
                    setup=lambda f: (f / "sub").mkdir())
    w.rows_case("id:grouped-by-image",
                [{"image": "a.png", "text": "one"}, {"image": "b.png", "text": "two"},
                 {"image": "a.png", "text": "three"}],
                [scored("0", captions=("one", "three"), rows=2), scored("1", rows=1)],
                files=files, fmt="csv", columns={"id": None, "captions": "text"}, good=False)
    for fmt in ("jsonl", "parquet"):
        w.rows_case("id:duplicate-list-captions",
                    [{"id": "x", "image": "a.png", "captions": ["one"]},
                     {"id": "x", "image": "a.png", "captions": ["two"]}],
                    [scored("x", rows=1), rejected("duplicate item id", item_id="x")],
                    files=files, fmt=fmt)
        w.rows_case("id:duplicate-list-captions",
                    [{"id": "x", "image": "a.png", "captions": ["one"]},
                     {"id": "x", "image": "b.png", "captions": ["two"]}],
                    [scored("x", rows=1), rejected(*conflict, item_id="x")],
                    files=files, fmt=fmt)
    for fmt, value in [("jsonl", None), ("jsonl", ""), ("csv", ""), ("jsonl", float("nan"))]:
        w.rows_case("id:missing", [{"id": value, "image": "a.png", "captions": "c"}],
                    [scored("1")], files=files, fmt=fmt)
    for value, kind in [([1], "a list"), ({"a": 1}, "an object"), (True, "a boolean")]:
        w.rows_case("id:non-scalar", [{"id": value, "image": "a.png", "captions": ["c"]}],
                    [rejected(f"id value is {kind}", item_id="1")], files=files)
    w.rows_case("id:numeric", [{"id": 1, "image": "a.png", "captions": ["c"]},
                               {"id": "1", "image": "c.png", "captions": ["d"]}],
                [scored("1"), rejected("conflicting duplicate id", "'a.png'", "'c.png'",
                                       item_id="1")], files=files)
    w.rows_case("id:numeric", [{"id": 7.0, "image": "a.png", "captions": ["c"]},
                               {"id": 2.5, "image": "c.png", "captions": ["d"]}],
                [scored("7"), scored("2.5")], files=files)
    w.rows_case("id:collides-with-row-number",
                [{"id": None, "image": "a.png", "captions": ["c"]},
                 {"id": "1", "image": "c.png", "captions": ["d"]}],
                [scored("1"), rejected("conflicting duplicate id", "'a.png'", "'c.png'",
                                       item_id="1")], files=files)


def metadata_cases(w: Writer) -> None:
    def row(**extra: Any) -> list[dict[str, Any]]:
        return [{"id": "bad", "image": "good.png", "captions": ["c"], **extra}]

    for value in [{"a": {"b": [1, 2]}}, [1, "two", None], {"": None}]:
        w.rows_case("metadata:nested", row(meta=value), [scored()])
    w.rows_case("metadata:mixed-types", row(meta=5), [scored()])
    w.rows_case("metadata:mixed-types", row(meta=[1]) + [
        {"id": "bad2", "image": "good.png", "captions": ["c"], "meta": "text"}],
        [scored(), scored("bad2")])
    for value in [float("nan"), float("inf"), float("-inf")]:
        w.rows_case("metadata:non-finite", row(meta=value), [scored()])
    for value in [2**80, -(2**70)]:
        w.rows_case("metadata:huge-int", row(meta=value), [scored()])
    for extra in [{"item_id": "z"}, {"image_path": "/etc"}, {"source_rows": 9},
                  {"item_id": "z", "source_item_id": "y"}]:
        w.rows_case("metadata:reserved-name", row(**extra), [scored()])
    for value, expect in [(["a", "b"], rejected("label is a list")),
                          ({"a": 1}, rejected("label is an object")),
                          (True, scored()), (3, scored()), (None, scored())]:
        w.rows_case("metadata:label", row(label=value), [expect])
    for extra in [{"": "empty key"}, {"ключ": 1, "a.b c": 2}]:
        w.rows_case("metadata:odd-keys", row(**extra), [scored()])


def manifest_cases(w: Writer) -> None:
    from tasks.io import MAX_MANIFEST_BYTES

    good_line = (json.dumps(GOOD) + "\n").encode()
    bad_line = {"id": "bad", "image": "good.png", "captions": ["x"]}
    csv_good = b"id,image,captions\ngood,good.png,a good image\n"
    for name in ("m.jsonl", "m.csv", "m.tsv", "m.parquet", "m.json", "m.ndjson"):
        w.file_case("manifest:empty", name, b"", "is empty")
    for name, phrase in [("m.jsonl", "no JSON object lines"), ("m.csv", "blank"),
                         ("m.tsv", "blank"), ("m.jsonl", "no JSON object lines")]:
        w.file_case("manifest:blank", name, b"  \n\n\t\n" if "tsv" not in name else b"\n\n",
                    phrase)
    w.file_case("manifest:header-only", "m.csv", b"id,image,captions\n", "no data rows")
    w.file_case("manifest:header-only", "m.tsv", b"id\timage\tcaptions\r\n", "no data rows")

    def empty_parquet(path: Path) -> None:
        import pandas as pd

        pd.DataFrame({"id": [], "image": [], "captions": []}).to_parquet(path)

    w.file_case("manifest:header-only", "m.parquet", None, "has no rows", setup=empty_parquet)
    parquet = io.BytesIO()
    import pandas as pd

    pd.DataFrame([GOOD]).to_parquet(parquet)
    whole = parquet.getvalue()
    for cut in (2, 0.1, 0.5, 0.9, len(whole) - 1):
        end = int(len(whole) * cut) if isinstance(cut, float) else cut
        w.file_case("manifest:truncated-parquet", "m.parquet", whole[:end],
                    "not a parquet file" if end < 4 else "not a readable parquet file")
    for name, data in [("m.csv", b"id;image;captions\ngood;good.png;x\n"),
                       ("m.csv", b"id\timage\tcaptions\ngood\tgood.png\tx\n"),
                       ("m.tsv", b"id,image,captions\ngood,good.png,x\n"),
                       ("m.csv", b"id|image|captions\ngood|good.png|x\n")]:
        w.file_case("manifest:wrong-delimiter", name, data, "looks separated by")
    for data in [b'id,image,captions\ngood,"good.png,x\nother,good.png,y\n',
                 b'id,image,captions\ngood,good.png,"a caption\n',
                 b'id,image,captions\n"good,good.png,x\n']:
        w.file_case("manifest:unclosed-quote", "m.csv", data, "never closed")
    for name, data, phrase in [("m.csv", xlsx_bytes(), "spreadsheet"),
                               ("m.jsonl", xlsx_bytes(), "spreadsheet"),
                               ("m.tsv", xlsx_bytes(), "spreadsheet"),
                               ("m.parquet", xlsx_bytes(), "not a parquet file"),
                               ("m.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200),
                                "spreadsheet")]:
        w.file_case("manifest:spreadsheet", name, data, phrase)
    array = json.dumps([GOOD, bad_line]).encode()
    for name, data in [("m.jsonl", array), ("m.json", array), ("m.ndjson", array),
                       ("m.jsonl", json.dumps([GOOD], indent=2).encode()),
                       ("m.jsonl", b"\xef\xbb\xbf" + array)]:
        w.file_case("manifest:json-array", name, data, "one JSON array")
    w.file_case("manifest:json-array", "m.jsonl", b"[1, 2]\n[3]\n", "no JSON object lines")
    for name, data, phrase in [("m.csv", b"\x89PNG\r\n\x1a\n" + bytes(40), "PNG image"),
                               ("m.jsonl", b"\xff\xd8\xff\xe0" + bytes(40), "JPEG image"),
                               ("m.csv", zlib_gzip(csv_good), "gzip"),
                               ("m.jsonl", whole, "parquet file"),
                               ("m.jsonl", noise(5, (300,)).tobytes(), "no JSON object lines")]:
        w.file_case("manifest:binary", name, data, phrase)
    for name in ("m.txt", "m.xlsx", "m"):
        w.file_case("manifest:unsupported-type", name, csv_good, "unsupported manifest type")
    w.file_case("manifest:duplicate-column", "m.csv",
                b"id,image,image,captions\ngood,good.png,good.png,x\n", "more than once")
    for name, data in [("m.jsonl", b'{"img": "good.png", "captions": ["x"]}\n'),
                       ("m.csv", b"id,img,captions\ngood,good.png,x\n")]:
        w.file_case("manifest:missing-column", name, data, "column 'image' not found")
    w.file_case("manifest:missing-column", "m.jsonl", b'{"image": "good.png"}\n',
                "column 'captions' not found")
    for name in ("m.jsonl", "m.csv"):
        w.file_case("manifest:fifo", name, None, "FIFO", setup=os.mkfifo)
    w.file_case("manifest:directory", "m.jsonl", None, "directory",
                setup=lambda p: p.mkdir())
    w.file_case("manifest:missing", "nope.jsonl", None, "manifest not found")

    def sparse(path: Path) -> None:
        with path.open("wb") as handle:
            handle.write(good_line)
            handle.truncate(MAX_MANIFEST_BYTES + 1)

    w.file_case("manifest:too-large", "m.jsonl", None, "over the limit", setup=sparse)

    bad = json.dumps(bad_line).encode()
    for position, line in [(1, bad.replace(b"good.png", b"caf\xe9.png")),
                           (0, b'{"id": "bad", "captions": ["\xff\xfe"]}'),
                           (2, b"\xc3\x28 not utf-8"), (1, bad[:-2] + b"\x80}")]:
        lines = [good_line, good_line.replace(b'"good"', b'"good2"')]
        lines.insert(position, line + b"\n")
        w.raw_case("manifest:non-utf8-line", "m.jsonl", b"".join(lines), 3,
                   [GOOD_EXPECT, scored("good2"),
                    rejected("not valid UTF-8", f"line {position + 1}", item_id=str(position))])
    for text, position in [(b"bad,caf\xe9.png,x", 2), (b"bad,good.png,caf\xe9", 1),
                           (b"b\xffad,good.png,x", 0)]:
        rows = [b"good,good.png,a good image", b"good2,good.png,y"]
        rows.insert(position, text)
        data = b"id,image,captions\n" + b"\n".join(rows) + b"\n"
        w.raw_case("manifest:non-utf8-line", "m.csv", data, 3,
                   [GOOD_EXPECT, scored("good2"),
                    rejected("not valid UTF-8", f"line {position + 2}",
                             item_id=str(position))])
    for line in [b"{bad", b'{"id": }', b'{"id": "bad",}', b'{"id": "bad", "image": "go',
                 b"{'id': 'bad'}", b'{"id": "bad"} trailing']:
        w.raw_case("manifest:malformed-json-line", "m.jsonl", good_line + line + b"\n", 2,
                   [GOOD_EXPECT, rejected("not valid JSON", "line 2", item_id="1")])
    w.raw_case("manifest:malformed-json-line", "m.jsonl", good_line + b'{"id": "ba', 2,
               [GOOD_EXPECT, rejected("not valid JSON", "line 2", item_id="1")])
    for line, kind in [(b"[1, 2]", "array"), (b'"text"', "string"), (b"3", "number"),
                       (b"null", "null"), (b"true", "boolean")]:
        w.raw_case("manifest:non-object-line", "m.jsonl", good_line + line + b"\n", 2,
                   [GOOD_EXPECT, rejected(f"a JSON {kind}", "not a JSON object",
                                          item_id="1")])
    for name, data in [("m.csv", b"\xef\xbb\xbf" + csv_good), ("m.jsonl", b"\xef\xbb\xbf"
                                                                          + good_line),
                       ("m.tsv", b"\xef\xbb\xbfid\timage\tcaptions\ngood\tgood.png\ta good "
                                 b"image\n")]:
        w.raw_case("manifest:bom", name, data, 1, [GOOD_EXPECT])
    for name, data in [("m.csv", csv_good.replace(b"\n", b"\r\n")),
                       ("m.jsonl", good_line.replace(b"\n", b"\r\n") * 1),
                       ("m.csv", csv_good + b"\n\n")]:
        w.raw_case("manifest:line-endings", name, data, 1, [GOOD_EXPECT])
    for extra, line in [(b"bad,good.png,x,extra", 3), (b"bad,good.png", 3),
                        (b'bad,"good.png"x,y', 3)]:
        phrase = "fields at line" if b'"' not in extra else "line"
        w.raw_case("manifest:ragged-csv", "m.csv", csv_good + extra + b"\n", 2,
                   [scored("good", pixel=GOOD_PIXEL),
                    rejected("malformed CSV line", phrase, f"line {line}", item_id="1")])
    w.raw_case("manifest:quoted-multiline", "m.csv",
               csv_good + b'bad,good.png,"two\nlines, one caption"\n', 2,
               [scored("good"), scored(captions=("two lines, one caption",))])


def zlib_gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def _can_make_socket() -> bool:
    return hasattr(socket, "AF_UNIX")


def _make_socket(path: Path) -> None:
    """A unix socket file at ``path`` (bound in a short temporary folder, then moved, since
    socket paths are limited to about 100 characters)."""
    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(short / "s"))
        server.close()
        os.rename(short / "s", path)
    finally:
        shutil.rmtree(short, ignore_errors=True)


GENERATORS = (image_cases, mode_cases, path_cases, caption_cases, id_cases, metadata_cases,
              manifest_cases)


def write_corpus(folder: Path) -> list[Case]:
    """Write every case under ``folder`` (emptied first) and ``cases.json``; return them."""
    folder = Path(folder)
    if folder.exists():
        _unblock_fifos(folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    writer = Writer(folder)
    for generate in GENERATORS:
        generate(writer)
    (folder / "cases.json").write_text(json.dumps([asdict(c) for c in writer.cases], indent=1))
    return writer.cases


def load_cases(folder: Path) -> list[Case]:
    return [Case.from_json(data) for data in json.loads((Path(folder) / "cases.json")
                                                         .read_text())]


# -- running ------------------------------------------------------------------------------------


@dataclass
class Seen:
    item_id: str
    outcome: str
    reason: str = ""
    pixel: tuple[int, ...] | None = None
    size: tuple[int, int] | None = None
    captions: tuple[str, ...] | None = None
    rows: int | None = None


@dataclass
class CaseResult:
    case: Case
    status: str  # recorded | mismatch | crash | hang
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)


def observe(data: Any) -> list[Seen]:
    """What happened to each raw row: items (decoded) and item-level rejects / notes."""
    from tasks.io import decode_images

    seen = []
    for item in data.items.to_dict(orient="records"):
        images, _, failures = decode_images([item["image_path"]])
        rows = int(item["source_rows"])
        if failures:
            seen.append(Seen(item["item_id"], "failed", failures[0], rows=rows))
            continue
        image = images[0]
        seen.append(Seen(item["item_id"], "scored", "", tuple(image.getpixel((0, 0))),
                         image.size, tuple(item["captions"]), rows))
        if image.mode != "RGB":
            seen.append(Seen(item["item_id"], "failed", f"decoded mode {image.mode}, not RGB"))
    for reject in data.rejects.to_dict(orient="records"):
        outcome = "rejected" if reject["scope"] == "item" else "note"
        seen.append(Seen(reject["item_id"], outcome, reject["reason"], rows=int(reject["rows"])))
    return seen


def matches(expect: Expect, seen: Seen) -> bool:
    allowed = {"unusable": ("rejected", "failed")}.get(expect.outcome, (expect.outcome,))
    if seen.item_id != expect.item_id or seen.outcome not in allowed:
        return False
    if any(phrase not in seen.reason for phrase in expect.phrases):
        return False
    if expect.pixel is not None and (seen.pixel is None or max(
            abs(a - b) for a, b in zip(seen.pixel, expect.pixel, strict=True))
            > expect.tolerance):
        return False
    if expect.size is not None and seen.size != tuple(expect.size):
        return False
    if expect.captions is not None and seen.captions != tuple(expect.captions):
        return False
    return expect.rows is None or seen.rows == expect.rows


def check_case(case: Case, folder: Path) -> CaseResult:
    """Load one case and compare every outcome with the expectations."""
    from tasks.config import DatasetConfig
    from tasks.data import DataError, load_dataset
    from tasks.data.base import save_dataset

    config = DatasetConfig(path=str(folder / case.manifest), **case.options)
    try:
        data = load_dataset(config)
    except DataError as error:
        text = str(error)
        if case.error is not None and case.error in text and Path(case.manifest).name in text:
            return CaseResult(case, "recorded")  # the expected problem, naming the file
        return CaseResult(case, "mismatch", problems=[f"DataError: {text[:300]}"])
    except Exception as error:  # noqa: BLE001 - a crash is what the corpus counts
        where = traceback.extract_tb(error.__traceback__)[-1]
        return CaseResult(case, "crash", problems=[
            f"{type(error).__name__}: {str(error)[:200]} ({where.filename}:{where.lineno})"])
    if case.error is not None:
        return CaseResult(case, "mismatch", problems=[f"expected DataError {case.error!r}"])
    try:
        with tempfile.TemporaryDirectory() as saved:  # what the flow's data stage writes
            save_dataset(data, Path(saved))
    except Exception as error:  # noqa: BLE001
        return CaseResult(case, "crash", problems=[f"save_dataset: {type(error).__name__}: "
                                                   f"{str(error)[:200]}"])
    return _compare(case, data, folder)


def _compare(case: Case, data: Any, folder: Path) -> CaseResult:
    seen = observe(data)
    counts = data.row_counts()
    accounted = counts["item_rows"] + counts["rejected_rows"]
    problems = []
    if data.rows_in != case.rows:
        problems.append(f"rows_in {data.rows_in}, wrote {case.rows}")
    if accounted != case.rows:
        problems.append(f"{accounted} rows accounted for, wrote {case.rows}")
    unmatched = [s for s in seen if s.outcome != "note" or any(
        e.outcome == "note" for e in case.expects)]
    for expect in case.expects:
        hit = next((s for s in unmatched if matches(expect, s)), None)
        if hit is None:
            problems.append(f"expected {_describe(expect)}")
        else:
            unmatched.remove(hit)
    problems += [f"unexpected {_describe(s)}" for s in unmatched if s.outcome != "note"]
    for s in seen:
        if ADDRESS.search(s.reason) or str(folder) in s.reason or "/tmp" in s.reason:
            problems.append(f"reason not deterministic: {s.reason[:200]!r}")
    rejects = [(s.item_id, s.outcome, s.reason, s.rows) for s in seen if s.outcome != "scored"]
    return CaseResult(case, "mismatch" if problems else "recorded",
                      lost=max(0, case.rows - accounted), problems=problems, rejects=rejects)


def _describe(x: Expect | Seen) -> str:
    text = f"{x.item_id!r} {x.outcome}"
    if isinstance(x, Expect):
        return text + (f" with {list(x.phrases)}" if x.phrases else "") + "".join(
            f" {k}={v}" for k, v in (("pixel", x.pixel), ("size", x.size),
                                     ("captions", x.captions), ("rows", x.rows))
            if v is not None)
    return text + (f": {x.reason[:160]!r}" if x.reason else "") + (
        f" pixel={x.pixel} size={x.size} captions={x.captions} rows={x.rows}"
        if x.outcome == "scored" else "")


def run_with_timeout(call: Callable[[], CaseResult], case: Case, seconds: float,
                     folder: Path) -> CaseResult:
    """Run ``call`` in a daemon thread; past ``seconds`` the case counts as a hang (and FIFOs
    in its folder are opened for writing, which releases a reader blocked on them)."""
    box: list[CaseResult] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() or not box:
        _unblock_fifos((folder / case.manifest).parent)
        return CaseResult(case, "hang", problems=[f"no result after {seconds:.0f} s"])
    return box[0]


def _unblock_fifos(folder: Path) -> None:
    for path in folder.rglob("*"):
        try:
            if path.is_fifo():
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
        except OSError:
            continue


def iter_results(folder: Path, timeout_s: float = CASE_TIMEOUT_S) -> Iterator[CaseResult]:
    folder = Path(folder)
    cases = load_cases(folder) if (folder / "cases.json").exists() else write_corpus(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning for the bombs
        for case in cases:
            yield run_with_timeout(lambda case=case: check_case(case, folder), case,
                                   timeout_s, folder)


def run_corpus(folder: Path | str, timeout_s: float = CASE_TIMEOUT_S) -> dict[str, Any]:
    """Write the corpus into ``folder`` unless it holds one, run every case, and summarise:
    cases, classes, recorded (every outcome as expected), lost (raw rows without an outcome),
    crashes, hangs, mismatches (readable lines), seconds, per-class counts, and a digest of
    every row-level outcome (rejects and decode failures) to compare runs."""
    started = time.perf_counter()
    results = list(iter_results(Path(folder), timeout_s))
    by_status = Counter(r.status for r in results)
    return {
        "cases": len(results),
        "classes": len({r.case.klass for r in results}),
        "recorded": by_status["recorded"],
        "lost": sum(r.lost for r in results),
        "crashes": by_status["crash"],
        "hangs": by_status["hang"],
        "mismatches": [f"{r.case.name} [{r.status}]: {'; '.join(r.problems)}"
                       for r in results if r.status != "recorded"],
        "seconds": round(time.perf_counter() - started, 1),
        "by_class": dict(Counter(r.case.klass for r in results)),
        # equal across runs (and folders) when every row-level outcome and reason is the same
        "outcomes_digest": hashlib.sha256(json.dumps(
            {r.case.name: r.rejects for r in results}, default=str).encode()).hexdigest(),
    }
