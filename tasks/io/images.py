"""Safe file reads and image decoding with its failure capture.

Image decoding shapes model inputs, so this module is part of the inference fingerprint's code
version (``tasks/tracking/fingerprint.py``); keep everything else out of it.

Limits (module constants):

- ``MAX_IMAGE_BYTES``: an image file larger than this is refused before it is read.
- ``MAX_IMAGE_PIXELS``: an image whose header declares more pixels (width x height) is refused
  before it is decoded (a "decompression bomb" is a tiny file declaring a huge size). It is below
  Pillow's own warning threshold (89,478,485), so an accepted image never triggers Pillow's
  ``DecompressionBombWarning``; above twice that, Pillow refuses on its own and the refusal is
  reported with the same reason.
- ``MAX_MANIFEST_BYTES``: the same bound for manifest and split files.

Every read goes through ``open_regular_file``: a FIFO, device, socket or directory is refused
before anything is read (reading a FIFO would block forever).
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

MAX_IMAGE_BYTES = 64 * 2**20  # 64 MiB
MAX_IMAGE_PIXELS = 80_000_000  # e.g. 10,000 x 8,000
MAX_MANIFEST_BYTES = 4 * 2**30  # 4 GiB
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
# formats whose Pillow plugin runs an external program (EPS: Ghostscript) are never opened
BLOCKED_FORMATS = frozenset({"EPS"})

DECODE_ERRORS = (OSError, ValueError, SyntaxError)
# what Pillow's decoders raise on malformed input besides OSError / ValueError / SyntaxError
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, LookupError,
                  ArithmeticError, TypeError)
_ADDRESS = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>|\bat 0x[0-9a-fA-F]+\b|0x[0-9a-fA-F]{8,}")
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


class FileRefused(ValueError):
    """A file that is not read: not a regular file, or over its size limit. The message is a
    deterministic reason without the path (callers say which file)."""


class ImageError(ValueError):
    """An image that cannot be used; the message is the reason, free of memory addresses and
    temporary paths, so two runs on the same data give the same text."""


# -- safe file reads --------------------------------------------------------------------------


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for anything that is not a regular file."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _check_stat(info: os.stat_result, limit: int, limit_name: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"is {file_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise FileRefused(f"is {info.st_size:,} bytes, over the limit of {limit:,} bytes "
                          f"({limit_name})")


def open_regular_file(path: str | Path, limit: int, limit_name: str) -> IO[bytes]:
    """Open ``path`` for binary reading only if it is a regular file of at most ``limit`` bytes.

    The file is opened non-blocking and checked on the open descriptor (``fstat``), so a FIFO
    swapped in after a first check cannot block the read. Raises ``FileNotFoundError`` /
    ``OSError`` as ``open`` does, and ``FileRefused`` for anything else."""
    _check_stat(os.stat(path), limit, limit_name)  # sockets cannot be opened: say what it is
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_stat(os.fstat(fd), limit, limit_name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | Path, limit: int, limit_name: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see ``open_regular_file``); a
    file that grows past the limit while it is read is refused too."""
    with open_regular_file(path, limit, limit_name) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"is over the limit of {limit:,} bytes ({limit_name})")
    return data


def read_image_file(path: str | Path) -> bytes:
    """An image file's bytes, bounded by ``MAX_IMAGE_BYTES``; ``FileRefused`` says why not."""
    try:
        return read_regular_file(path, MAX_IMAGE_BYTES, "MAX_IMAGE_BYTES")
    except FileRefused as error:
        raise FileRefused(f"image file {error}") from None


# -- image decoding -----------------------------------------------------------------------------


def error_text(error: BaseException) -> str:
    """A deterministic one-line text for an exception: no object reprs or memory addresses, no
    file names (an ``OSError`` gives its ``strerror`` only)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "unknown or unsupported image format"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = _ADDRESS.sub("", str(error)).strip() or type(error).__name__
    return " ".join(text.split())


def _pixel_limit_reason(pixels: int, size: tuple[int, int] | None = None) -> str:
    shape = f"{size[0]:,} x {size[1]:,} = " if size else ""
    return (f"image too large: {shape}{pixels:,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS; possible decompression bomb)")


def _allowed_formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [name for name in Image.OPEN if name not in BLOCKED_FORMATS]


def open_checked(data: bytes) -> Image:
    """Open (not decode) image bytes, refusing any size over ``MAX_IMAGE_PIXELS``.

    Raises ``ImageError`` with the reason for every failure: unknown format, a blocked format,
    a declared size over the limit, or whatever the format's header parser raised."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError as error:  # Pillow's own limit, 2 x 89,478,485
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageError(_pixel_limit_reason(int(found.group(1)) if found else
                                             MAX_IMAGE_PIXELS + 1)) from None
    except _PILLOW_ERRORS as error:
        raise ImageError(f"not a readable image: {error_text(error)}") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageError(_pixel_limit_reason(width * height, (width, height)))
    if width < 1 or height < 1:
        image.close()
        raise ImageError(f"not a readable image: empty size {width} x {height}")
    return image


def verify_image(data: bytes) -> None:
    """Cheap check of image bytes without decoding pixels (header, size limit, and what Pillow's
    ``verify`` checks, e.g. PNG chunk CRCs); ``ImageError`` says what is wrong."""
    image = open_checked(data)
    try:
        image.verify()
    except _PILLOW_ERRORS as error:
        raise ImageError(f"not a readable image: {error_text(error)}") from None
    finally:
        image.close()


def to_rgb(image: Image) -> Image:
    """The 8-bit RGB image every model sees, whatever the decoded mode.

    - ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's
      ``convert("RGB")`` (CMYK uses Pillow's naive conversion, no ICC profile).
    - Transparency (``LA``, ``PA``, ``RGBA``, ``RGBa``, ``La``, or a ``transparency`` key on
      ``L`` / ``RGB`` / ``P``): composited on ``BACKGROUND`` (white):
      ``round((c * a + 255 * (255 - a)) / 255)`` per channel.
    - ``I;16`` / ``I;16B`` / ``I;16L`` / ``I;16N`` (16-bit): ``round(v / 257)``, so 65535 -> 255.
    - ``I`` (32-bit signed; Pillow also uses it for 16-bit PGM/PPM samples): values are read on
      the 16-bit scale: clipped to [0, 65535], then ``round(v / 257)``.
    - ``F`` (32-bit float): if every finite value lies in [0, 1], ``round(v * 255)``; otherwise
      ``round(v)`` clipped to [0, 255]. NaN -> 0, +inf -> 255, -inf -> 0.

    Gray results are repeated over the three channels."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _gray_to_rgb(_scale_to_8bit(image))
    if mode in ("LA", "PA", "RGBA", "RGBa", "La") or "transparency" in image.info:
        return _composite(image.convert("RGBA"))
    return image if mode == "RGB" else image.convert("RGB")


def _scale_to_8bit(image: Image) -> np.ndarray:
    """(H, W) uint8 from an ``I*`` or ``F`` image by the rules of ``to_rgb``."""
    import numpy as np

    values = np.asarray(image)
    if image.mode == "F":
        data = values.astype(np.float64)
        finite = data[np.isfinite(data)]
        unit = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
        data = np.nan_to_num(data * (255.0 if unit else 1.0), nan=0.0, posinf=255.0,
                             neginf=0.0)
        return np.clip(np.rint(data), 0, 255).astype(np.uint8)
    data = np.clip(values.astype(np.int64), 0, 65535)
    return np.rint(data / 257.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image:
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def _composite(rgba: Image) -> Image:
    import numpy as np
    from PIL import Image

    data = np.asarray(rgba, dtype=np.uint32)
    alpha = data[:, :, 3:4]
    background = np.asarray(BACKGROUND, dtype=np.uint32)
    mixed = (data[:, :, :3] * alpha + background * (255 - alpha)) / 255.0
    return Image.fromarray(np.rint(mixed).astype(np.uint8), "RGB")


def decode_image_bytes(data: bytes) -> Image:
    """Decode image bytes to EXIF-transposed 8-bit RGB (``to_rgb``); ``ImageError`` says why
    not."""
    from PIL import ImageOps

    image = open_checked(data)
    try:
        with image:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except _PILLOW_ERRORS as error:
        raise ImageError(f"not a readable image: {error_text(error)}") from None


def open_image(path: str | Path) -> Image:
    """Decode an image the way every stage sees it: EXIF-transposed 8-bit RGB (see ``to_rgb``).

    The file must be a regular file within ``MAX_IMAGE_BYTES`` and declare at most
    ``MAX_IMAGE_PIXELS``; every failure is an ``ImageError`` (a ``ValueError``) with a
    deterministic reason, a missing or unreadable file an ``OSError``."""
    try:
        data = read_image_file(path)
    except FileRefused as error:
        raise ImageError(str(error)) from None
    return decode_image_bytes(data)


def decode_images(
    paths: Sequence[str], load: Callable[[str], Any] | None = None
) -> tuple[list[Any], list[int], dict[int, str]]:
    """Decode each image (default: ``open_image``); a failure is recorded with its reason by
    position, never raised. Returns (images, positions decoded, failures)."""
    load = load or open_image
    images, kept, failures = [], [], {}
    for index, path in enumerate(paths):
        try:
            images.append(load(path))
        except DECODE_ERRORS as error:
            failures[index] = f"image decode failed: {error_text(error)}"
            continue
        kept.append(index)
    return images, kept, failures
