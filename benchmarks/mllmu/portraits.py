"""Procedural portraits: a distinct, deterministic figure per person, and the Test_Set's transformed views of it.

Each person gets a background hue spread by the golden ratio (neighbouring IDs look nothing alike), a background
pattern, skin, hair colour and style, eye colour, shirt colour, an emblem and an accessory, so an image encoder can
tell people apart by colour and shape alone.
"""

from __future__ import annotations

import colorsys
import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

GOLDEN = 0.6180339887498949
PATTERNS = ("plain", "stripes", "dots", "checker", "rings")
HAIR_STYLES = ("short", "long", "bun", "bald", "spiky")
ACCESSORIES = ("none", "glasses", "hat", "beard", "earrings")
EMBLEMS = ("circle", "square", "triangle", "diamond", "star")
SKIN = ((255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 86), (141, 85, 50), (96, 58, 35))
HAIR = (
    (20, 20, 20),
    (90, 56, 30),
    (160, 110, 60),
    (230, 200, 120),
    (180, 60, 30),
    (200, 200, 205),
    (60, 60, 140),
)
EYE = {
    "brown": (90, 50, 20),
    "blue": (40, 90, 200),
    "green": (40, 140, 60),
    "grey": (120, 120, 130),
    "hazel": (140, 110, 40),
}


@dataclass(frozen=True)
class Traits:
    background: tuple[int, int, int]
    pattern: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    eyes: tuple[int, int, int]
    shirt: tuple[int, int, int]
    emblem: str
    emblem_colour: tuple[int, int, int]
    accessory: str
    face_width: float


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_traits(index: int, rng: random.Random, eye_colour: str = "brown") -> Traits:
    """Traits of person ``index``: the background hue comes from the index, everything else from ``rng``."""
    hue = (index * GOLDEN) % 1.0
    return Traits(
        background=_rgb(hue, 0.45 + 0.1 * (index % 3), 0.95),
        pattern=PATTERNS[index % len(PATTERNS)],
        skin=rng.choice(SKIN),
        hair=rng.choice(HAIR),
        hair_style=rng.choice(HAIR_STYLES),
        eyes=EYE.get(eye_colour, EYE["brown"]),
        shirt=_rgb(hue + 0.5 + rng.uniform(-0.15, 0.15), 0.8, 0.75),
        emblem=EMBLEMS[(index // len(PATTERNS)) % len(EMBLEMS)],
        emblem_colour=_rgb(rng.random(), 0.9, 1.0),
        accessory=rng.choice(ACCESSORIES),
        face_width=rng.uniform(0.26, 0.36),
    )


def draw_portrait(traits: Traits, size: int = 128) -> Image.Image:
    """A head-and-shoulders figure drawn from ``traits`` on a ``size`` x ``size`` RGB canvas."""
    s = size
    img = Image.new("RGB", (s, s), traits.background)
    d = ImageDraw.Draw(img)
    darker = tuple(int(c * 0.8) for c in traits.background)
    step = max(4, s // 8)
    if traits.pattern == "stripes":
        for x in range(0, s, step):
            d.rectangle([x, 0, x + step // 2, s], fill=darker)
    elif traits.pattern == "dots":
        for x in range(step // 2, s, step):
            for y in range(step // 2, s, step):
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=darker)
    elif traits.pattern == "checker":
        for x in range(0, s, step):
            for y in range(0, s, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step, y + step], fill=darker)
    elif traits.pattern == "rings":
        for r in range(step, s, step):
            d.ellipse([s / 2 - r, s / 2 - r, s / 2 + r, s / 2 + r], outline=darker, width=2)
    # shoulders and emblem
    d.ellipse([0.12 * s, 0.72 * s, 0.88 * s, 1.3 * s], fill=traits.shirt)
    _emblem(d, traits.emblem, (0.5 * s, 0.88 * s), 0.07 * s, traits.emblem_colour)
    # neck, face
    d.rectangle([0.44 * s, 0.55 * s, 0.56 * s, 0.75 * s], fill=traits.skin)
    fw = traits.face_width * s
    face = [0.5 * s - fw, 0.2 * s, 0.5 * s + fw, 0.66 * s]
    if traits.hair_style == "long":
        d.rectangle([0.5 * s - fw - 4, 0.3 * s, 0.5 * s + fw + 4, 0.72 * s], fill=traits.hair)
    d.ellipse(face, fill=traits.skin)
    if traits.hair_style != "bald":
        d.chord([0.5 * s - fw, 0.16 * s, 0.5 * s + fw, 0.46 * s], 180, 360, fill=traits.hair)
    if traits.hair_style == "bun":
        d.ellipse([0.43 * s, 0.06 * s, 0.57 * s, 0.2 * s], fill=traits.hair)
    elif traits.hair_style == "spiky":
        for k in range(5):
            x = 0.5 * s - fw + (k + 0.5) * 2 * fw / 5
            d.polygon([(x - 5, 0.24 * s), (x, 0.1 * s), (x + 5, 0.24 * s)], fill=traits.hair)
    # eyes, mouth
    for ex in (0.5 * s - fw / 2.2, 0.5 * s + fw / 2.2):
        d.ellipse([ex - 4, 0.38 * s - 3, ex + 4, 0.38 * s + 3], fill=(255, 255, 255))
        d.ellipse([ex - 2, 0.38 * s - 2, ex + 2, 0.38 * s + 2], fill=traits.eyes)
    d.arc([0.5 * s - fw / 2, 0.46 * s, 0.5 * s + fw / 2, 0.58 * s], 20, 160, fill=(120, 40, 40), width=2)
    _accessory(d, traits, s, fw)
    return img


def _emblem(d: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], r: float, colour) -> None:
    x, y = centre
    if shape == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "square":
        d.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour)
    elif shape == "diamond":
        d.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=colour)
    else:
        d.regular_polygon((x, y, r), 5, fill=colour)


def _accessory(d: ImageDraw.ImageDraw, t: Traits, s: int, fw: float) -> None:
    if t.accessory == "glasses":
        for ex in (0.5 * s - fw / 2.2, 0.5 * s + fw / 2.2):
            d.ellipse([ex - 7, 0.38 * s - 6, ex + 7, 0.38 * s + 6], outline=(10, 10, 10), width=2)
    elif t.accessory == "hat":
        d.rectangle([0.5 * s - fw - 6, 0.18 * s, 0.5 * s + fw + 6, 0.23 * s], fill=t.emblem_colour)
        d.rectangle([0.5 * s - fw * 0.7, 0.04 * s, 0.5 * s + fw * 0.7, 0.2 * s], fill=t.emblem_colour)
    elif t.accessory == "beard":
        d.chord([0.5 * s - fw * 0.9, 0.42 * s, 0.5 * s + fw * 0.9, 0.7 * s], 0, 180, fill=t.hair)
    elif t.accessory == "earrings":
        for ex in (0.5 * s - fw, 0.5 * s + fw):
            d.ellipse([ex - 3, 0.47 * s, ex + 3, 0.53 * s], fill=(250, 210, 40))


def transformed_view(image: Image.Image, rng: random.Random) -> Image.Image:
    """A Test_Set view: random crop, rotation, colour jitter, optional flip, and a resize (JPEG is applied when
    the view is encoded, see :func:`encode_jpeg`)."""
    w, h = image.size
    scale = rng.uniform(0.78, 0.94)
    cw, ch = int(w * scale), int(h * scale)
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = image.crop((x0, y0, x0 + cw, y0 + ch))
    out = out.rotate(
        rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=image.getpixel((0, 0))
    )
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    side = int(w * rng.uniform(0.75, 1.25))
    return out.resize((side, side), Image.Resampling.BILINEAR)


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_jpeg(image: Image.Image, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=rng.randint(45, 85))
    return buf.getvalue()
