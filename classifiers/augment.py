"""Image transforms like MLLMU-Bench's Test_Set (crop, rotation, colour jitter, flip, resize, JPEG re-encoding),
with PIL only. Used to widen identity references (test-time augmentation) and to calibrate on transformed images."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance

TRANSFORMS = ("crop", "rotate", "jitter", "flip", "resize", "jpeg")


def transform(
    image: Image.Image, rng: np.random.Generator, kinds: Sequence[str] = TRANSFORMS, p: float = 0.75
) -> Image.Image:
    """A random mix of ``kinds`` (each applied with probability ``p``, at least one), RGB in and out. Real
    re-uploads compound several changes (the Test_Set applies them all), hence a high ``p``: references made with
    a lower one missed more Test_Set images of the synthetic benchmark (docs/classifier.md)."""
    unknown = set(kinds) - set(TRANSFORMS)
    if unknown:
        raise ValueError(f"unknown transforms {sorted(unknown)}; valid: {TRANSFORMS}")
    chosen = [k for k in kinds if rng.random() < p] or [kinds[int(rng.integers(len(kinds)))]]
    out = image.convert("RGB")
    for kind in chosen:
        out = APPLY[kind](out, rng)
    return out


def _crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    scale = rng.uniform(0.75, 0.95)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)


def _rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, fillcolor=img.getpixel((0, 0)))


def _jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.7, 1.3)))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-8, 9))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _flip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def _resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    scale = rng.uniform(0.5, 1.5)
    return img.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.BILINEAR)


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(30, 80)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


APPLY = {"crop": _crop, "rotate": _rotate, "jitter": _jitter, "flip": _flip, "resize": _resize, "jpeg": _jpeg}
