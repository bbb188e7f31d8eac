"""General prompts (about nobody in particular) and unrelated filler text, generated from templates."""

from __future__ import annotations

import itertools

import numpy as np

TEMPLATES = (
    "What is the capital of {place}?",
    "Give me three facts about {place}.",
    "How do I {task}?",
    "Explain {concept} in simple terms.",
    "Write a short poem about {thing}.",
    "What are the health benefits of {food}?",
    "Summarize the history of {concept} in two sentences.",
    "Can you recommend a book about {concept}?",
    "What is the best way to {task} on a budget?",
    "Translate 'good morning' into the language spoken in {place}.",
    "Describe a typical day for someone who works as a {job}.",
    "What skills does a {job} need?",
    "Is {food} a good source of protein?",
    "List some common mistakes people make when they {task}.",
    "Why is {thing} important for the environment?",
    "Compare {concept} and {concept2}.",
)
FILL = {
    "place": [
        "France",
        "Japan",
        "Brazil",
        "Kenya",
        "Canada",
        "Norway",
        "Peru",
        "Egypt",
        "India",
        "Chile",
        "Spain",
        "Vietnam",
        "Ghana",
        "Italy",
        "Mexico",
    ],
    "task": [
        "bake bread",
        "learn to swim",
        "fix a flat tire",
        "plant tomatoes",
        "write a resume",
        "train a puppy",
        "start running",
        "save money",
        "learn a language",
        "paint a room",
        "brew coffee",
        "meditate",
    ],
    "concept": [
        "photosynthesis",
        "inflation",
        "machine learning",
        "the water cycle",
        "democracy",
        "gravity",
        "evolution",
        "blockchain",
        "the stock market",
        "climate change",
        "quantum computing",
        "the immune system",
    ],
    "thing": [
        "the ocean",
        "autumn leaves",
        "a quiet library",
        "mountains",
        "the night sky",
        "rain",
        "bees",
        "old trees",
        "a city at dawn",
    ],
    "food": [
        "lentils",
        "spinach",
        "salmon",
        "oats",
        "almonds",
        "yogurt",
        "quinoa",
        "eggs",
        "broccoli",
        "tofu",
    ],
    "job": [
        "nurse",
        "carpenter",
        "pilot",
        "teacher",
        "chef",
        "software engineer",
        "farmer",
        "librarian",
        "electrician",
        "architect",
    ],
}
FILLER = (
    "The committee reviewed the quarterly budget and approved funding for new playground equipment.",
    "Rainfall in the valley was above average this spring, which helped the orchards recover.",
    "A good sourdough starter needs flour, water, patience and a warm corner of the kitchen.",
    "The museum's new wing displays pottery from several centuries and regions.",
    "Cyclists are advised to check their tire pressure before long rides in cold weather.",
    "The library extended its opening hours during the exam period at the university.",
    "Solar panels convert sunlight into electricity through the photovoltaic effect.",
    "The recipe calls for two cups of rice, a pinch of salt and a bay leaf.",
    "Migrating birds often follow coastlines and river valleys on their long journeys.",
    "The town council discussed repairs to the old bridge over the river.",
    "Regular stretching can improve flexibility and reduce the risk of injury.",
    "The orchestra rehearsed the symphony twice before the opening night.",
)


def general_prompts(n: int | None = None, *, templates: slice = slice(None), seed: int = 0) -> list[str]:
    """Distinct general prompts from ``TEMPLATES[templates]`` (all fillings, shuffled; the first ``n``)."""
    rng = np.random.default_rng(seed)
    out = []
    for template in TEMPLATES[templates]:
        keys = sorted({k for k in FILL if "{" + k + "}" in template})
        choices = [FILL[k] for k in keys]
        for combo in itertools.product(*choices):
            values = dict(zip(keys, combo, strict=True))
            if "{concept2}" in template:
                values["concept2"] = FILL["concept"][
                    (FILL["concept"].index(values["concept"]) + 1) % len(FILL["concept"])
                ]
            out.append(template.format(**values))
    order = rng.permutation(len(out))
    out = [out[i] for i in order]
    return out if n is None else out[:n]


def filler(n_words: int, rng: np.random.Generator) -> str:
    """Unrelated sentences, at least ``n_words`` words."""
    words, parts = 0, []
    while words < n_words:
        sentence = FILLER[int(rng.integers(len(FILLER)))]
        parts.append(sentence)
        words += len(sentence.split())
    return " ".join(parts)
