"""Image corruptions in the style of ImageNet-C, with numpy and Pillow only.

Parameters follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), code at github.com/hendrycks/robustness
(``ImageNet-C/imagenet_c/imagenet_c/corruptions.py``): each corruption has one parameter per
severity 1-5, quoted in its docstring. ``occlusion`` is not part of ImageNet-C: it is random
erasing (Zhong et al., AAAI 2020) with one square patch.

Protocol:

- The input is the 8-bit RGB image every model sees (``tasks.io.open_image``: EXIF-transposed,
  transparency on white); the output is 8-bit RGB of the same size, rounded to the nearest
  integer.
- ImageNet-C's images are 224 x 224 pixels. Parameters measured in pixels (the blur sigmas and
  the motion blur length) are scaled by the image's shorter side / 224, so a corruption does the
  same to a photo whatever its resolution; pixelation, JPEG, noise, colour and fog parameters
  do not depend on the size (the fog map is drawn on ImageNet-C's 224-pixel grid and resized).
- Random corruptions (noise, motion blur angle, fog, occlusion) draw from a generator seeded by
  (seed, corruption, severity, the image file's sha256) only: an image gets the same corruption
  whatever the order, batch or dataset it comes in, and another seed gives another draw.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # ImageNet-C's image size: pixel parameters are given for it

Apply = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``apply(image, severity, rng)`` takes and returns (H, W, 3)
    float64 RGB in [0, 1]; ``random`` says whether it draws from ``rng``."""

    name: str
    apply: Apply
    random: bool


CORRUPTIONS: Registry[Corruption] = Registry("image corruption")


def register(name: str, *, random: bool) -> Callable[[Apply], Apply]:
    def add(apply: Apply) -> Apply:
        CORRUPTIONS.add(name, Corruption(name, apply, random))
        return apply

    return add


def corruption_rng(seed: int, name: str, severity: int, image_sha256: str
                   ) -> np.random.Generator:
    """The random stream of one image under one (corruption, severity): a function of these
    four values only."""
    key = hashlib.sha256(f"{seed}\0{name}\0{severity}\0{image_sha256}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:16], "big"))


def corrupt(image: np.ndarray | Image.Image, name: str, severity: int, *, seed: int,
            image_sha256: str) -> np.ndarray:
    """``image`` (8-bit RGB, an array (H, W, 3) or a Pillow image) under corruption ``name`` at
    ``severity`` (1-5), as a uint8 array (H, W, 3); deterministic given the arguments."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected 8-bit RGB (H, W, 3), got {pixels.dtype} {pixels.shape}")
    spec = CORRUPTIONS.get(name)
    rng = corruption_rng(seed, name, severity, image_sha256)
    out = spec.apply(pixels.astype(np.float64) / 255.0, severity, rng)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A corrupted image as PNG (lossless, so the model sees exactly ``pixels``)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def spatial_scale(image: np.ndarray) -> float:
    """Shorter side / 224: pixel-sized parameters are ImageNet-C's times this."""
    return min(image.shape[0], image.shape[1]) / REFERENCE_SIZE


# -- noise ------------------------------------------------------------------------------------


@register("gaussian_noise", random=True)
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, sigma^2) per pixel and channel, clipped; sigma = [.08, .12, .18, .26, .38]."""
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return np.clip(x + rng.normal(scale=sigma, size=x.shape), 0, 1)


@register("shot_noise", random=True)
def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(x * c) / c (photon noise), clipped; c = [60, 25, 12, 5, 3]."""
    c = (60, 25, 12, 5, 3)[severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


# -- blur -------------------------------------------------------------------------------------


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian of radius int(truncate * sigma + 0.5) (scikit-image/scipy's)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else (offsets == 0) * 1.0
    return weights / weights.sum()


def convolve_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Centred 1-D convolution along ``axis`` with edge pixels repeated ("nearest" mode)."""
    radius = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="edge")
    out = np.zeros_like(x)
    size = x.shape[axis]
    window = [slice(None)] * x.ndim
    for offset, weight in enumerate(kernel):
        window[axis] = slice(offset, offset + size)
        out += weight * padded[tuple(window)]
    return out


@register("gaussian_blur", random=False)
def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, "nearest" edges, truncated at 4 sigma (scikit-image's ``gaussian``);
    sigma = [1, 2, 3, 4, 6] pixels at 224 pixels, scaled to the image."""
    sigma = (1, 2, 3, 4, 6)[severity - 1] * spatial_scale(x)
    kernel = gaussian_kernel(sigma)
    return convolve_axis(convolve_axis(x, kernel, 0), kernel, 1)


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved by (dy, dx) pixels, the uncovered border filled with the edge pixels."""
    height, width = x.shape[:2]
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    columns = np.clip(np.arange(width) - dx, 0, width - 1)
    return x[rows][:, columns]


@register("motion_blur", random=True)
def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's motion blur as the imagenet-c package re-implements it: a one-sided line
    of 2 * radius + 1 taps at an angle drawn uniformly from [-45, 45] degrees, tap i weighted
    exp(-i^2 / (2 sigma^2)); (radius, sigma) = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]
    pixels at 224 pixels, scaled to the image. Edge pixels fill what a shift uncovers; taps
    beyond the image are dropped and the remaining weights renormalised."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angle = math.radians(rng.uniform(-45, 45))
    scale = spatial_scale(x)
    width = 2 * max(0, round(radius * scale)) + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * max(sigma * scale, 1e-6) ** 2))
    weights /= weights.sum()
    out = np.zeros_like(x)
    for step, weight in enumerate(weights):
        dy = -math.ceil(step * math.sin(angle) - 0.5)
        dx = -math.ceil(step * math.cos(angle) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            out /= weights[:step].sum()  # the line left the image: keep the taps inside
            break
        out += weight * shifted(x, dy, dx)
    return out


# -- digital ----------------------------------------------------------------------------------


def to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8), "RGB")


@register("jpeg", random=False)
def jpeg(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression at quality [25, 18, 15, 10, 7] (Pillow's encoder), decoded again."""
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = io.BytesIO()
    to_image(x).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0


@register("pixelate", random=False)
def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downsampled to a fraction [.6, .5, .4, .3, .25] of each side, box-upsampled back."""
    fraction = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    image = to_image(x)
    width, height = image.size
    small = image.resize((max(1, int(width * fraction)), max(1, int(height * fraction))),
                         Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.BOX),
                      dtype=np.float64) / 255.0


# -- colour (HSV arithmetic in closed form) ---------------------------------------------------


def _hsv_value_scaled(x: np.ndarray, value: np.ndarray) -> np.ndarray:
    """RGB with the HSV value (max channel) set to ``value``, hue and saturation kept: every
    channel scales by new / old value (black becomes grey ``value``)."""
    old = x.max(axis=2, keepdims=True)
    ratio = np.divide(value, old, out=np.ones_like(old), where=old > 0)
    return np.where(old > 0, x * ratio, value)


@register("brightness", random=False)
def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV value + c, clipped to 1; c = [.1, .2, .3, .4, .5]."""
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    value = np.clip(x.max(axis=2, keepdims=True) + c, 0, 1)
    return _hsv_value_scaled(x, value)


@register("contrast", random=False)
def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """(x - m) * c + m with m the per-channel mean over the image; c = [.4, .3, .2, .1, .05]."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


@register("saturate", random=False)
def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation s -> clip(s * a + b, 0, 1), hue and value kept; (a, b) = [(.3, 0),
    (.1, 0), (2, 0), (5, .1), (20, .2)]. As in ImageNet-C, severities 1-2 wash the colours
    out and 3-5 oversaturate them, so the change is not monotone in the severity; and as
    there, grey pixels have hue 0 (red), so severities 4-5 (b > 0) tint them red."""
    a, b = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))[severity - 1]
    value = x.max(axis=2, keepdims=True)
    low = x.min(axis=2, keepdims=True)
    old = np.divide(value - low, value, out=np.zeros_like(value), where=value > 0)
    new = np.clip(old * a + b, 0, 1)
    # within a pixel, each channel is value * (1 - s * t) with t in [0, 1] fixed by the hue;
    # a grey pixel (s = 0) has hue 0: red is its largest channel (t = 0), green and blue t = 1
    grey = np.broadcast_to(np.array([0.0, 1.0, 1.0]), x.shape)
    t = np.divide(value - x, value * old, out=grey.copy(), where=(value * old) > 0)
    return value * (1 - new * t)


# -- weather / occlusion ----------------------------------------------------------------------


def plasma_fractal(rng: np.random.Generator, size: int = 256, decay: float = 3.0) -> np.ndarray:
    """ImageNet-C's diamond-square height map in [0, 1] (``plasma_fractal``), ``size`` a power
    of two; each level's random displacement is divided by ``decay``."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def displaced(values: np.ndarray) -> np.ndarray:
        return values / 4 + wibble * rng.uniform(-wibble, wibble, values.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = displaced(square)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = displaced(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = displaced(top)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


@register("fog", random=True)
def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + c * plasma fractal (decay d), rescaled by max(x) / (max(x) + c); (c, d) = [(1.5, 2),
    (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]. The fractal's 224 x 224 corner is resized to the
    image (bilinear). Severities 3 and 4 share c (4 is rougher), so they change an image about
    equally; a single draw's change is not monotone in the severity, its average is."""
    c, decay = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[severity - 1]
    fractal = plasma_fractal(rng, 256, decay)[:REFERENCE_SIZE, :REFERENCE_SIZE]
    height, width = x.shape[:2]
    layer = Image.fromarray(fractal.astype(np.float32), "F").resize(
        (width, height), Image.Resampling.BILINEAR)
    top = x.max()
    return np.clip((x + c * np.asarray(layer, np.float64)[..., None]) * top / (top + c), 0, 1)


@register("occlusion", random=True)
def occlusion(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Random erasing (Zhong et al. 2020): one square of side [.25, .35, .45, .55, .65] times
    the shorter side, at a uniformly drawn position inside the image, filled with uniform
    noise (about 6 %, 12 %, 20 %, 30 % and 42 % of a square image)."""
    fraction = (0.25, 0.35, 0.45, 0.55, 0.65)[severity - 1]
    height, width = x.shape[:2]
    side = max(1, round(fraction * min(height, width)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    out = x.copy()
    out[top:top + side, left:left + side] = rng.uniform(0, 1, (side, side, 3))
    return out
