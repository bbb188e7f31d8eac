"""Procedurally drawn portraits: one look per identity, for image-identity tests."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def portrait(seed: int, size: int = 128) -> Image.Image:
    """A face whose skin, hair, eyes, clothes, background and shape all follow from ``seed``."""
    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    s = size / 128
    img = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # background stripes
        stripe = colour()
        for x in range(0, size, int(rng.integers(8, 24) * s) or 1):
            draw.rectangle([x, 0, x + 4 * s, size], fill=stripe)
    draw.rectangle([20 * s, 100 * s, 108 * s, 128 * s], fill=colour())  # shoulders
    skin = tuple(int(c) for c in rng.integers([90, 60, 40], [255, 210, 180]))
    w, h = rng.integers(30, 44) * s, rng.integers(38, 52) * s
    cx, cy = 64 * s, 60 * s
    hair = colour()
    hair_h = rng.integers(10, 30) * s
    draw.ellipse([cx - w - 4 * s, cy - h - 6 * s, cx + w + 4 * s, cy - h + hair_h + 10 * s], fill=hair)
    draw.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    eye = colour()
    gap, ey = rng.integers(10, 20) * s, cy - rng.integers(4, 14) * s
    for ex in (cx - gap, cx + gap):
        draw.ellipse([ex - 5 * s, ey - 3 * s, ex + 5 * s, ey + 3 * s], fill=(255, 255, 255))
        draw.ellipse([ex - 2 * s, ey - 2 * s, ex + 2 * s, ey + 2 * s], fill=eye)
    if rng.random() < 0.3:  # glasses
        frame = colour()
        for ex in (cx - gap, cx + gap):
            draw.ellipse([ex - 8 * s, ey - 6 * s, ex + 8 * s, ey + 6 * s], outline=frame, width=max(1, int(2 * s)))
    my = cy + rng.integers(14, 26) * s
    draw.arc([cx - 12 * s, my - 6 * s, cx + 12 * s, my + 6 * s], 0, 180, fill=colour(), width=max(1, int(2 * s)))
    return img
