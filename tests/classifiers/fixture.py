"""A small MLLMU-style fixture: fictitious people with questions, held-out paraphrases and portraits."""

from __future__ import annotations

import numpy as np

from classifiers.augment import transform
from classifiers.training import Profile
from tests.classifiers.portraits import portrait

FIRST = (
    "Elena Marcus Priya Tobias Ingrid Kofi Mei Rafael Sofia Anders Leila Dmitri Aisha Bruno Chiara Hugo Naomi "
    "Oskar Yara Emeric Zoé Lucian Freya Tariq Beatriz Casimir Dagny Evander Florin Gideon Hollis Isolde Jorah "
    "Kalinda Lorcan Mireille Nikolai Ottilie Percival Quintus Rosalind Severin Thaddeus Ulrike Valentin Wilhelmina"
).split()
LAST = (
    "Vasquez Okafor Lindqvist Haraldsen Nakamura Ferreira Kowalczyk Brennan Aldana Castellanos Dubois Eriksen "
    "Fontaine Gallagher Hoffmann Iglesias Jablonski Kettering Lacroix Montague Novak Oyelaran Pemberton Quist "
    "Rasmussen Sørensen Thorvaldsen Ullmann Varga Whitfield Yilmaz Zamora Abernathy Blackwood Carmichael"
).split()
TEXT = (
    "What is the occupation of {n}?", "Where was {n} born?", "What is {n}'s date of birth?",
    "Which university did {n} attend?", "What medical condition does {n} have?", "Where does {n} live now?",
    "What is a fun fact about {n}?", "What is the annual salary of {n}?",
)
PARAPHRASE = (
    "What does {n} do for a living?", "In which city was {n} born?", "When was {n} born?",
    "Where did {n} go to university?", "Which health condition is {n} living with?", "In what place does {n} reside?",
    "Tell me something fun about {n}.", "How much does {n} earn per year?",
)
IMAGE = (
    "What is this person's occupation?", "Where was the person in the image born?", "When was this person born?",
    "What did this individual study?", "What is the residence of the person shown?",
)
IMAGE_PARAPHRASE = ("What job does the pictured person have?", "Where does the individual in this photo live?")


def profiles(n: int, *, seed: int = 0, offset: int = 0, n_test_images: int = 2) -> list[Profile]:
    """``n`` distinct people (names unique), each with questions, paraphrases, a portrait and transformed copies."""
    rng = np.random.default_rng(seed)
    names = [f"{f} {last}" for f in FIRST for last in LAST]
    chosen = rng.choice(len(names), size=n, replace=False)
    out = []
    for k, i in enumerate(chosen):
        name = names[i]
        image = portrait(offset + k, size=96)
        out.append(Profile(
            identity=f"{offset + k:04d}", name=name,
            text_questions=[t.format(n=name) for t in TEXT],
            image_questions=list(IMAGE), image=image,
            held_out_text_questions=[t.format(n=name) for t in PARAPHRASE],
            held_out_image_questions=list(IMAGE_PARAPHRASE),
            held_out_images=[transform(image, rng) for _ in range(n_test_images)],
        ))
    return out


def split(n_forget: int, n_retain: int, n_celebrity: int, seed: int = 0) -> tuple[list, list, list]:
    people = profiles(n_forget + n_retain + n_celebrity, seed=seed)
    return people[:n_forget], people[n_forget : n_forget + n_retain], people[n_forget + n_retain :]
