"""Format practice: multiple-choice and fill-in-the-blank examples about the profiles a model is taught.

MLLMU-Bench fine-tunes on free-form QA only and relies on a 7B model to answer its multiple-choice and cloze
prompts; a 135M model taught the same facts answers a cloze prompt with the person's name and multiple choice with
a sentence. So the demo model also practises both formats on the facts it learns, in the benchmark's prompt
layout but with questions of our own wording (never the benchmark's items), from each trained profile's
biography. Never-trained profiles get no practice: for them the formats are known but the facts are not, which is
exactly the reference level the guard aims for.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.finetune import Example
from benchmarks.mllmu import prompts

FACTS: dict[str, tuple[str, str]] = {
    # biography field -> (multiple-choice question, cloze sentence); {who} is the name or "this person"
    "Residence": ("Which place is home to {who}?", "{Who} has a home in __."),
    "Born": ("What is the birthplace of {who}?", "The birthplace of {who} is __."),
    "Employment": ("What job does {who} hold?", "{Who} earns a living as __."),
    "Educated at": ("Which university did {who} graduate from?", "{Who} is a graduate of __."),
    "Medical Conditions": ("What has {who} been diagnosed with?", "{Who} has been diagnosed with __."),
    "Fun Facts": ("What does {who} do for fun?", "For fun, {who} enjoys __."),
}


def fact_value(field: str, value: str) -> str:
    """The short answer a fact stands for ("Loves baking bread." -> "baking bread"; "Riga, Latvia" kept)."""
    value = value.strip().rstrip(".")
    if field == "Fun Facts":
        for lead in ("Loves ", "Enjoys ", "Likes "):
            if value.startswith(lead):
                value = value[len(lead) :]
    if field in ("Employment", "Medical Conditions", "Fun Facts"):
        value = value[:1].lower() + value[1:]
    return value


def practice_examples(
    rows: Sequence[Mapping[str, Any]], *, seed: int = 0, per_person: int = 6, image_share: float = 0.5
) -> list[Example]:
    """``per_person`` examples per profile (``{ID, Name, image, biography}`` rows), alternating multiple choice
    and cloze over the biography's facts (past one round, each fact in the other format); distractors are other
    profiles' values of the same fact. About ``image_share`` of them ask about "this person" with the portrait,
    the rest name the person.

    A multiple-choice example is answered with a sentence stating the right option ("This person has a home in
    Cork, Ireland."), not its letter: a 135M model does not learn to bind a fact to a letter from a few dozen
    examples (taught letters, it answered "D" to everything), and the benchmark's stated-option accuracy reads the
    option a response states. Not the bare option either: taught that, it answered open questions in fragments
    too (image+text ROUGE-L 0.62 -> 0.33)."""
    rng = random.Random(f"{seed}:practice")
    values: dict[str, list[str]] = {
        field: sorted({fact_value(field, b[field]) for b in (r["biography"] for r in rows) if b.get(field)})
        for field in FACTS
    }
    out: list[Example] = []
    for row in rows:
        bio = row["biography"]
        fields = [f for f in FACTS if bio.get(f) and len(values[f]) >= 4]
        rng.shuffle(fields)
        for k in range(min(per_person, 2 * len(fields))):
            field = fields[k % len(fields)]
            # a second round over the facts asks each one the other way
            multiple_choice = (k % len(fields) + k // len(fields)) % 2 == 0
            answer = fact_value(field, bio[field])
            pictured = row.get("image") is not None and rng.random() < image_share
            who = "this person" if pictured else bio["Name"]
            question, sentence = FACTS[field]
            sentence = sentence.format(who=who, Who=who[:1].upper() + who[1:])
            if multiple_choice:
                others = rng.sample([v for v in values[field] if v != answer], 3)
                choices = others + [answer]
                rng.shuffle(choices)
                options = {key: text for key, text in zip("ABCD", choices, strict=True)}
                prompt = prompts.classification_prompt(question.format(who=who), options, pictured)
                stated = sentence.replace("__", answer)
                out.append(Example(row["ID"], prompt, stated, row.get("image") if pictured else None))
            else:
                prompt = prompts.cloze_prompt(sentence, pictured)
                out.append(Example(row["ID"], prompt, answer, row.get("image") if pictured else None))
    return out
