"""Every bad input is accounted for: scored correctly, rejected / failed with a deterministic
reason, or a clear file-level DataError; no crash, no hang, no lost row.

Decoding is checked against references computed here with numpy from the raw pixel values
(``tests/reliability/input_corpus.py`` holds the reference formulas), never against the
function's own output.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tasks.config import DatasetConfig
from tasks.data import load_dataset
from tasks.data.base import check_image
from tasks.io import (
    MAX_IMAGE_PIXELS,
    ImageError,
    decode_images,
    open_image,
)
from tests.reliability.input_corpus import (
    ADDRESS,
    composite_white,
    encode,
    exif_oriented,
    good_png,
    png_header,
    run_corpus,
    scale16,
    scale_float,
)

RNG = np.random.default_rng(20261128)


# -- the corpus ---------------------------------------------------------------------------------


def test_corpus_of_bad_inputs_is_fully_accounted_for(tmp_path: Path):
    summary = run_corpus(tmp_path / "corpus")
    report = "\n".join(summary["mismatches"])
    assert summary["cases"] >= 400 and summary["classes"] >= 30, summary["by_class"]
    assert summary["crashes"] == 0, report
    assert summary["hangs"] == 0, report
    assert summary["lost"] == 0, report
    assert summary["recorded"] == summary["cases"], (
        f"{summary['cases'] - summary['recorded']} case(s) not as expected:\n{report}")
    # the same corpus written elsewhere: every reject / failure reason is the same text
    assert run_corpus(tmp_path / "again")["outcomes_digest"] == summary["outcomes_digest"]


# -- decoding against references from the raw values ------------------------------------------


def decoded(tmp_path: Path, image: Image.Image, fmt: str, **options) -> np.ndarray:
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(encode(image, fmt, **options))
    result = open_image(path)
    assert result.mode == "RGB"
    return np.asarray(result).astype(np.int64)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.int64)[..., None], 3, axis=2)


def test_bilevel_gray_and_palette(tmp_path: Path):
    bits = RNG.integers(0, 2, (5, 8)).astype(bool)
    packed = Image.frombytes("1", (8, 5), np.packbits(bits, axis=1).tobytes())
    assert np.array_equal(decoded(tmp_path, packed, "PNG"), rgb(bits * 255))

    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    assert np.array_equal(decoded(tmp_path, Image.fromarray(gray), "PNG"), rgb(gray))

    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    image = Image.frombytes("P", (5, 6), index.tobytes())
    image.putpalette(palette.tobytes())
    assert np.array_equal(decoded(tmp_path, image, "PNG"), palette[index].astype(np.int64))
    transparent = int(index[0, 0])
    expected = palette[index].astype(np.int64)
    expected[index == transparent] = 255
    assert np.array_equal(decoded(tmp_path, image, "PNG", transparency=transparent), expected)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_alpha_is_composited_on_white(tmp_path: Path, fmt: str):
    pixels = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    pixels[0, 0, 3], pixels[0, 1, 3] = 0, 255  # fully transparent, fully opaque
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    result = decoded(tmp_path, Image.fromarray(pixels, "RGBA"), fmt, **options)
    assert np.array_equal(result, composite_white(pixels[..., :3], pixels[..., 3:]))
    assert tuple(result[0, 0]) == (255, 255, 255)
    if fmt == "PNG":
        la = pixels[..., [0, 3]]
        result = decoded(tmp_path, Image.fromarray(np.ascontiguousarray(la), "LA"), fmt)
        assert np.array_equal(result, rgb(composite_white(la[..., 0], la[..., 1])))


def test_transparency_key_is_composited_on_white(tmp_path: Path):
    gray = RNG.integers(0, 4, (5, 5), dtype=np.uint8)
    expected = rgb(np.where(gray == 2, 255, gray))
    assert np.array_equal(decoded(tmp_path, Image.fromarray(gray), "PNG", transparency=2),
                          expected)
    colors = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)[RNG.integers(0, 2, (4, 4))]
    expected = np.where((colors == [1, 2, 3]).all(-1, keepdims=True), 255, colors)
    assert np.array_equal(decoded(tmp_path, Image.fromarray(colors), "PNG",
                                  transparency=(1, 2, 3)), expected)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path: Path):
    values = RNG.integers(0, 65536, (6, 7)).astype(np.uint16)
    values[0, :3] = (0, 32768, 65535)
    expected = rgb(scale16(values))
    assert np.array_equal(decoded(tmp_path, Image.fromarray(values), "PNG"), expected)
    assert np.array_equal(decoded(tmp_path, Image.fromarray(values), "TIFF"), expected)
    big_endian = Image.frombytes("I;16B", (7, 6), values.astype(">u2").tobytes())
    assert np.array_equal(decoded(tmp_path, big_endian, "TIFF"), expected)
    # the regression: mid-gray 16-bit used to come out almost white
    assert tuple(decoded(tmp_path, Image.fromarray(values), "PNG")[0, 1]) == (128, 128, 128)


def test_thirty_two_bit_int_and_16_bit_pgm(tmp_path: Path):
    values = RNG.integers(-100_000, 140_000, (5, 6)).astype(np.int32)
    values[0, :4] = (-(2**31), 0, 65535, 2**31 - 1)
    assert np.array_equal(decoded(tmp_path, Image.fromarray(values, "I"), "TIFF"),
                          rgb(scale16(values)))
    samples = RNG.integers(0, 65536, (3, 4)).astype(">u2")
    path = tmp_path / "g.pgm"
    path.write_bytes(b"P5\n4 3\n65535\n" + samples.tobytes())
    assert np.array_equal(np.asarray(open_image(path)).astype(np.int64), rgb(scale16(samples)))


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-50.0, 400.0), (0.0, 255.0)])
def test_float_images(tmp_path: Path, low: float, high: float):
    values = RNG.uniform(low, high, (5, 6)).astype(np.float32)
    values[0, 0] = np.nan
    if high > 1:
        values[0, 1], values[0, 2] = np.inf, -np.inf
    result = decoded(tmp_path, Image.fromarray(values, "F"), "TIFF")
    assert np.array_equal(result, rgb(scale_float(values)))


def test_cmyk_and_ycbcr(tmp_path: Path):
    cmyk = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    result = decoded(tmp_path, Image.frombytes("CMYK", (6, 5), cmyk.tobytes()), "TIFF")
    ink, black = cmyk[..., :3].astype(np.int64), cmyk[..., 3:].astype(np.int64)
    assert np.abs(result - ((255 - ink) * (255 - black) + 127) // 255).max() <= 1
    ycc = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    result = decoded(tmp_path, Image.frombytes("YCbCr", (6, 5), ycc.tobytes()), "TIFF")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    reference = np.stack([y + 1.402 * (cr - 128),
                          y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                          y + 1.772 * (cb - 128)], axis=-1)
    assert np.abs(result - np.clip(np.round(reference), 0, 255)).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path: Path, orientation: int):
    pixels = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = decoded(tmp_path, Image.fromarray(pixels), "PNG", exif=exif)
    assert np.array_equal(result, exif_oriented(pixels, orientation))


# -- limits and special files -----------------------------------------------------------------


def call_with_timeout(call, seconds: float = 20.0):
    """``call()`` in a daemon thread: a regression that blocks fails the test, never hangs it."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"blocked for more than {seconds} s"
    return box[0]


def test_bombs_fifos_directories_are_refused_at_both_stages(tmp_path: Path):
    assert MAX_IMAGE_PIXELS <= Image.MAX_IMAGE_PIXELS  # accepted sizes never warn in Pillow
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))
    (tmp_path / "edge.png").write_bytes(png_header(MAX_IMAGE_PIXELS // 1000 + 1, 1000))
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "good.png").write_bytes(good_png())
    names = ["bomb.png", "edge.png", "fifo.png", "dir.png", "missing.png", "good.png"]
    paths = [str(tmp_path / name) for name in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, kept, failures = call_with_timeout(lambda: decode_images(paths))
        checks = call_with_timeout(lambda: [check_image(Path(p)) for p in paths])
    assert kept == [5] and images[0].size == (4, 4)
    assert "image too large" in failures[0] and "image too large" in failures[1]
    assert "FIFO" in failures[2] and "directory" in failures[3]
    assert "No such file" in failures[4]
    reasons = [reason for _, reason in checks]
    assert reasons[0] is not None and reasons[0].startswith(
        "image too large: 10,000,000,000 pixels, over the limit of 80,000,000 pixels")
    assert reasons[1] is not None and reasons[1].startswith(
        "image too large: 80,001 x 1,000 = 80,001,000 pixels")
    assert reasons[2:] == ["image file is a FIFO, not a regular file",
                           "image file is a directory, not a regular file",
                           "image file not found", None]
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
        open_image(tmp_path / "bomb.png")


# -- determinism ------------------------------------------------------------------------------


def bad_folder(root: Path) -> Path:
    """The same bad inputs every time it is called."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    (root / "good.png").write_bytes(good_png())
    png = encode(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), "PNG")
    jpeg = encode(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), "JPEG")
    (root / "garbage.png").write_bytes(b"\x00\x01garbage")
    (root / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "bomb.png").write_bytes(png_header(30_000, 30_000))
    os.mkfifo(root / "fifo.png")
    rows = [{"id": "good", "image": "good.png", "captions": ["fine"]},
            {"id": "g", "image": "garbage.png", "captions": ["x"]},
            {"id": "c", "image": "cut.png", "captions": ["x"]},
            {"id": "j", "image": "cut.jpg", "captions": ["x"]},
            {"id": "b", "image": "bomb.png", "captions": ["x"]},
            {"id": "f", "image": "fifo.png", "captions": ["x"]},
            {"id": "n", "image": None, "captions": ["x"]},
            {"id": "d", "image": "good.png", "captions": {"a": 1}},
            {"id": "e", "image": "../good.png", "captions": ["x"]}]
    (root / "m.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                                   + b'{"id": "u", "image": "caf\xe9"}\n{broken\n')
    return root / "m.jsonl"


def outcomes(manifest: Path):
    data = load_dataset(DatasetConfig(path=str(manifest)))
    _, _, failures = decode_images(list(data.items["image_path"]))
    return data.rejects, failures


def test_rejects_are_deterministic_across_runs_and_folders(tmp_path: Path):
    manifest = bad_folder(tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, first_failures = call_with_timeout(lambda: outcomes(manifest))
        again, again_failures = call_with_timeout(lambda: outcomes(manifest))
        elsewhere = bad_folder(tmp_path / "elsewhere" / "b")  # same content, another path
        moved, moved_failures = call_with_timeout(lambda: outcomes(elsewhere))
    assert first.equals(again) and first.equals(moved)
    assert first_failures == again_failures == moved_failures
    texts = list(first["reason"]) + list(first_failures.values())
    assert len(first) >= 9 and not any(ADDRESS.search(t) or str(tmp_path) in t for t in texts), \
        texts


# -- property: every raw row has an outcome ----------------------------------------------------

IMAGES = ["good.png", "other.png", "./good.png", "missing.png", "../x.png", "broken.png", "",
          None, 5, ["good.png"]]
CAPTIONS = st.one_of(
    st.text(alphabet="ab |", max_size=6), st.lists(st.text(alphabet="ab ", max_size=4),
                                                   max_size=3),
    st.sampled_from([None, {"a": "b"}, [["a"]], 3, True, [None, "a"]]))
ROWS = st.lists(st.fixed_dictionaries({
    "id": st.sampled_from(["a", "b", "c", "1", None, 1, ""]),
    "image": st.sampled_from(IMAGES),
    "captions": CAPTIONS,
    "label": st.sampled_from([None, "x", 2, ["l"]]),
}), max_size=12)
BAD_LINES = st.lists(st.sampled_from([b"{broken", b"\xff\xfe{}", b"[1]", b"null"]), max_size=2)


def write_manifest(folder: Path, rows: list[dict], bad: list[bytes], fmt: str) -> Path:
    (folder / "good.png").write_bytes(good_png())
    (folder / "other.png").write_bytes(encode(Image.new("RGB", (3, 3), "red"), "PNG"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    if fmt == "csv":
        import csv

        path = folder / "m.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "image", "captions", "label"])
            for row in rows:
                writer.writerow(["" if row[k] is None else str(row[k]) for k in row])
        return path
    path = folder / "m.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) +
                     b"".join(line + b"\n" for line in bad))
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, bad=BAD_LINES, fmt=st.sampled_from(["jsonl", "csv"]),
       separator=st.sampled_from([None, "|"]), limit=st.sampled_from([None, None, 3]))
def test_every_raw_row_has_exactly_one_outcome(rows, bad, fmt, separator, limit):
    if fmt == "csv":
        bad = []
    raw = len(rows) + len(bad)
    if raw == 0:
        return
    with tempfile.TemporaryDirectory() as folder:
        manifest = write_manifest(Path(folder), rows, bad, fmt)
        config = DatasetConfig(path=str(manifest), caption_separator=separator, limit=limit)
        try:
            data = load_dataset(config)
        except Exception as error:  # only a file with no usable line at all may be refused
            from tasks.data import DataError

            assert isinstance(error, DataError) and not rows, error
            return
        _, _, failures = decode_images(list(data.items["image_path"]))
    counts = data.row_counts()
    if limit is None:
        assert data.rows_in == raw
    item_rejects = data.rejects[data.rejects["scope"] == "item"]
    failed = sum(int(data.items["source_rows"].iloc[i]) for i in failures)
    scored = counts["item_rows"] - failed
    assert scored + failed + counts["rejected_rows"] == data.rows_in
    assert data.items["item_id"].is_unique
    assert (data.items["source_rows"] >= 1).all() and (item_rejects["rows"] >= 1).all()
    assert all(isinstance(r, str) and r for r in data.rejects["reason"])
