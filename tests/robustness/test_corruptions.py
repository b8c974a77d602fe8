"""Image corruptions: the registry equals the config's choices; every corruption is
deterministic, seeded where it is random, changes the image and (saturation excepted, see its
docstring) changes it more at each severity; the closed-form colour corruptions equal a
per-pixel colorsys computation (ImageNet-C's HSV arithmetic), the Gaussian blur scipy's filter,
contrast and the noises their formulas."""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.robustness.corruptions import CORRUPTIONS, corrupt, corruption_rng, png_bytes

SHA = hashlib.sha256(b"an image").hexdigest()


def natural_image(size: int = 224, seed: int = 0) -> np.ndarray:
    """A smooth, textured, moderately saturated test image (bicubic-upsampled noise)."""
    rng = np.random.default_rng(seed)
    coarse = (rng.uniform(0, 1, (size // 8, size // 8, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return (np.asarray(big) * 0.6 + 50).astype(np.uint8)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_registry_names_equal_the_config_choices_in_a_fresh_interpreter():
    from tasks.config import CORRUPTIONS as CHOICES

    code = ("import json; from tasks.robustness.corruptions import CORRUPTIONS; "
            "print(json.dumps(CORRUPTIONS.names()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert sorted(CHOICES) == json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(CORRUPTIONS.names()))
def test_deterministic_and_seeded(name: str):
    image = natural_image()
    first = corrupt(image, name, 3, seed=1, image_sha256=SHA)
    again = corrupt(Image.fromarray(image), name, 3, seed=1, image_sha256=SHA)
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert png_bytes(first) == png_bytes(again)
    other_seed = corrupt(image, name, 3, seed=2, image_sha256=SHA)
    other_image = corrupt(image, name, 3, seed=1, image_sha256="0" * 64)
    if CORRUPTIONS.get(name).random:
        assert not np.array_equal(first, other_seed)
        assert not np.array_equal(first, other_image)  # the stream follows the image digest
    else:
        assert np.array_equal(first, other_seed)


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS.names()) - {"saturate", "fog"}))
def test_changes_the_image_more_at_each_severity(name: str):
    image = natural_image()
    changes = [difference(corrupt(image, name, s, seed=0, image_sha256=SHA), image)
               for s in range(1, 6)]
    assert changes[0] > 0.5, changes
    assert all(b >= a for a, b in zip(changes, changes[1:], strict=False)), changes


def test_fog_grows_with_its_strength_on_average():
    """One fog draw is a random fractal, and severities 3 and 4 share the strength c = 2.5
    (4 has the rougher fractal): on average over images and seeds the change grows with c,
    1 < 2 < {3, 4} < 5."""
    changes = np.array([[difference(corrupt(natural_image(seed=k), "fog", s, seed=k,
                                            image_sha256=SHA), natural_image(seed=k))
                         for s in range(1, 6)] for k in range(6)]).mean(axis=0)
    assert 5 < changes[0] < changes[1] < min(changes[2:4]) <= max(changes[2:4]) < changes[4], \
        changes


def test_random_streams_do_not_depend_on_order():
    """The stream is a function of (seed, corruption, severity, digest) only."""
    image = natural_image(64)
    a = corrupt(image, "gaussian_noise", 2, seed=0, image_sha256=SHA)
    corrupt(image, "gaussian_noise", 2, seed=0, image_sha256="1" * 64)  # another image first
    assert np.array_equal(a, corrupt(image, "gaussian_noise", 2, seed=0, image_sha256=SHA))
    assert corruption_rng(0, "fog", 1, SHA).uniform() != corruption_rng(0, "fog", 2, SHA)\
        .uniform()


def test_gaussian_noise_and_shot_noise_follow_their_formulas():
    image = natural_image(64)
    x = image / 255.0
    rng = corruption_rng(5, "gaussian_noise", 4, SHA)
    expected = np.clip(x + rng.normal(scale=0.26, size=x.shape), 0, 1)
    got = corrupt(image, "gaussian_noise", 4, seed=5, image_sha256=SHA)
    assert np.array_equal(got, np.rint(expected * 255).astype(np.uint8))
    rng = corruption_rng(5, "shot_noise", 2, SHA)
    expected = np.clip(rng.poisson(x * 25) / 25, 0, 1)
    got = corrupt(image, "shot_noise", 2, seed=5, image_sha256=SHA)
    assert np.array_equal(got, np.rint(expected * 255).astype(np.uint8))


def test_gaussian_blur_equals_scipy_at_imagenet_size_and_scales_with_the_image():
    from scipy.ndimage import gaussian_filter

    image = natural_image(224)
    for severity, sigma in ((1, 1), (5, 6)):
        reference = gaussian_filter(image / 255.0, sigma=(sigma, sigma, 0), mode="nearest",
                                    truncate=4.0)
        got = corrupt(image, "gaussian_blur", severity, seed=0, image_sha256=SHA)
        assert np.abs(got.astype(int) - np.rint(reference * 255).astype(int)).max() <= 1
    small = natural_image(112)  # half the size: half the sigma
    reference = gaussian_filter(small / 255.0, sigma=(1.5, 1.5, 0), mode="nearest", truncate=4)
    got = corrupt(small, "gaussian_blur", 3, seed=0, image_sha256=SHA)
    assert np.abs(got.astype(int) - np.rint(reference * 255).astype(int)).max() <= 1


def test_contrast_jpeg_and_pixelate_follow_their_definitions():
    image = natural_image(64)
    x = image / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    expected = np.rint(np.clip((x - means) * 0.2 + means, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(corrupt(image, "contrast", 3, seed=0, image_sha256=SHA), expected)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=10)
    assert np.array_equal(corrupt(image, "jpeg", 4, seed=0, image_sha256=SHA),
                          np.asarray(Image.open(buffer).convert("RGB")))
    got = corrupt(image, "pixelate", 5, seed=0, image_sha256=SHA)
    assert len(np.unique(got.reshape(-1, 3), axis=0)) <= 16 * 16 + 64  # 16 x 16 blocks


def colorsys_reference(image: np.ndarray, change) -> np.ndarray:
    """Per pixel: RGB -> HSV (colorsys), ``change(h, s, v)``, back to RGB."""
    out = np.empty(image.shape, np.float64)
    for (row, column), _ in np.ndenumerate(image[:, :, 0]):
        h, s, v = colorsys.rgb_to_hsv(*(image[row, column] / 255.0))
        out[row, column] = colorsys.hsv_to_rgb(*change(h, s, v))
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_brightness_and_saturate_equal_hsv_arithmetic(severity: int):
    image = natural_image(24, seed=severity)
    image[0, :4] = [[0, 0, 0], [128, 128, 128], [255, 255, 255], [200, 10, 10]]  # greys, red
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    expected = colorsys_reference(image, lambda h, s, v: (h, s, min(v + c, 1.0)))
    got = corrupt(image, "brightness", severity, seed=0, image_sha256=SHA)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    a, b = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[severity - 1]
    expected = colorsys_reference(image, lambda h, s, v: (h, min(max(s * a + b, 0), 1), v))
    got = corrupt(image, "saturate", severity, seed=0, image_sha256=SHA)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_saturate_washes_out_then_oversaturates():
    image = natural_image(64)

    def saturation(pixels: np.ndarray) -> float:
        top, low = pixels.max(axis=2).astype(float), pixels.min(axis=2).astype(float)
        return float(np.mean(np.divide(top - low, top, out=np.zeros_like(top), where=top > 0)))

    levels = [saturation(corrupt(image, "saturate", s, seed=0, image_sha256=SHA))
              for s in range(1, 6)]
    clean = saturation(image)
    assert levels[1] < levels[0] < clean < levels[2] < levels[3] <= levels[4]


def test_occlusion_erases_one_square_of_the_stated_size():
    image = natural_image(100)
    for severity, side in ((1, 25), (5, 65)):
        got = corrupt(image, "occlusion", severity, seed=3, image_sha256=SHA)
        rows, columns = np.nonzero((got != image).any(axis=2))
        assert rows.max() - rows.min() + 1 <= side and columns.max() - columns.min() + 1 <= side
        assert len(rows) > 0.9 * side * side  # noise rarely equals the pixel it replaces


def test_small_and_odd_images_and_bad_arguments():
    tiny = natural_image(16)[:5, :9]
    for name in CORRUPTIONS.names():
        for severity in (1, 5):
            assert corrupt(tiny, name, severity, seed=0, image_sha256=SHA).shape == (5, 9, 3)
    with pytest.raises(ValueError, match="severity"):
        corrupt(tiny, "fog", 6, seed=0, image_sha256=SHA)
    with pytest.raises(ValueError, match="RGB"):
        corrupt(tiny[:, :, 0], "fog", 1, seed=0, image_sha256=SHA)
    with pytest.raises(KeyError, match="unknown image corruption"):
        corrupt(tiny, "snow", 1, seed=0, image_sha256=SHA)
