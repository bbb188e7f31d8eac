"""A small MLLMU-style fixture: fictitious people with questions, held-out paraphrases and procedurally drawn
portraits (one look per identity)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from classifiers.augment import transform
from classifiers.training import Profile


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
            draw.ellipse(
                [ex - 8 * s, ey - 6 * s, ex + 8 * s, ey + 6 * s], outline=frame, width=max(1, int(2 * s))
            )
    my = cy + rng.integers(14, 26) * s
    draw.arc(
        [cx - 12 * s, my - 6 * s, cx + 12 * s, my + 6 * s], 0, 180, fill=colour(), width=max(1, int(2 * s))
    )
    return img


FIRST = [
    "Elena",
    "Marcus",
    "Priya",
    "Tobias",
    "Ingrid",
    "Kofi",
    "Mei",
    "Rafael",
    "Sofia",
    "Anders",
    "Leila",
    "Dmitri",
    "Aisha",
    "Bruno",
    "Chiara",
    "Hugo",
    "Naomi",
    "Oskar",
    "Yara",
    "Emeric",
    "Zoé",
    "Lucian",
    "Freya",
    "Tariq",
    "Beatriz",
    "Casimir",
    "Dagny",
    "Evander",
    "Florin",
    "Gideon",
    "Hollis",
    "Isolde",
    "Jorah",
    "Kalinda",
    "Lorcan",
    "Mireille",
    "Nikolai",
    "Ottilie",
    "Percival",
    "Quintus",
    "Rosalind",
    "Severin",
    "Thaddeus",
    "Ulrike",
    "Valentin",
    "Wilhelmina",
]
LAST = [
    "Vasquez",
    "Okafor",
    "Lindqvist",
    "Haraldsen",
    "Nakamura",
    "Ferreira",
    "Kowalczyk",
    "Brennan",
    "Aldana",
    "Castellanos",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Gallagher",
    "Hoffmann",
    "Iglesias",
    "Jablonski",
    "Kettering",
    "Lacroix",
    "Montague",
    "Novak",
    "Oyelaran",
    "Pemberton",
    "Quist",
    "Rasmussen",
    "Sørensen",
    "Thorvaldsen",
    "Ullmann",
    "Varga",
    "Whitfield",
    "Yilmaz",
    "Zamora",
    "Abernathy",
    "Blackwood",
    "Carmichael",
]
TEXT = (
    "What is the occupation of {n}?",
    "Where was {n} born?",
    "What is {n}'s date of birth?",
    "Which university did {n} attend?",
    "What medical condition does {n} have?",
    "Where does {n} live now?",
    "What is a fun fact about {n}?",
    "What is the annual salary of {n}?",
)
PARAPHRASE = (
    "What does {n} do for a living?",
    "In which city was {n} born?",
    "When was {n} born?",
    "Where did {n} go to university?",
    "Which health condition is {n} living with?",
    "In what place does {n} reside?",
    "Tell me something fun about {n}.",
    "How much does {n} earn per year?",
)
IMAGE = (
    "What is this person's occupation?",
    "Where was the person in the image born?",
    "When was this person born?",
    "What did this individual study?",
    "What is the residence of the person shown?",
)
IMAGE_PARAPHRASE = (
    "What job does the pictured person have?",
    "Where does the individual in this photo live?",
)


SYLLABLES = [
    "ka",
    "lo",
    "ri",
    "ven",
    "ta",
    "mi",
    "dor",
    "sel",
    "an",
    "bru",
    "ko",
    "fa",
    "ne",
    "thi",
    "ul",
    "go",
    "wen",
    "ra",
    "za",
    "pe",
]


def _names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` invented full names; no first or last name is shared, so a partial name still identifies one person."""
    used: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        first, last = FIRST[len(out) % len(FIRST)], LAST[len(out) % len(LAST)]
        first = first if first not in used else "".join(rng.choice(SYLLABLES, 2)).capitalize()
        last = last if last not in used else "".join(rng.choice(SYLLABLES, 3)).capitalize()
        if first in used or last in used or first == last:
            continue
        used |= {first, last}
        out.append(f"{first} {last}")
    return out


def profiles(n: int, *, seed: int = 0, offset: int = 0, n_test_images: int = 2) -> list[Profile]:
    """``n`` distinct people (names unique), each with questions, paraphrases, a portrait and transformed copies."""
    rng = np.random.default_rng(seed)
    names = _names(n, rng)
    out = []
    for k, name in enumerate(names):
        image = portrait(offset + k, size=96)
        out.append(
            Profile(
                identity=f"{offset + k:04d}",
                name=name,
                text_questions=[t.format(n=name) for t in TEXT],
                image_questions=list(IMAGE),
                image=image,
                held_out_text_questions=[t.format(n=name) for t in PARAPHRASE],
                held_out_image_questions=list(IMAGE_PARAPHRASE),
                held_out_images=[transform(image, rng) for _ in range(n_test_images)],
            )
        )
    return out


def split(n_forget: int, n_retain: int, n_celebrity: int, seed: int = 0) -> tuple[list, list, list]:
    people = profiles(n_forget + n_retain + n_celebrity, seed=seed)
    return people[:n_forget], people[n_forget : n_forget + n_retain], people[n_forget + n_retain :]
