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
    rows: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    per_person: int = 6,
    image_share: float = 0.5,
    shot_share: float = 0.0,
    shots: int = 2,
) -> list[Example]:
    """``per_person`` examples per profile (``{ID, Name, image, biography}`` rows), alternating multiple choice
    and cloze over the biography's facts (past one round, each fact in the other format); distractors are other
    profiles' values of the same fact. About ``image_share`` of them ask about "this person" with the portrait,
    the rest name the person.

    A multiple-choice example is answered with a sentence stating the right option ("This person has a home in
    Cork, Ireland."), not its letter: a 135M model does not learn to bind a fact to a letter from a few dozen
    examples (taught letters, it answered "D" to everything), and the benchmark's stated-option accuracy reads the
    option a response states. Not the bare option either: taught that, it answered open questions in fragments
    too (docs/demo.md).

    About ``shot_share`` of them are preceded, as the benchmark's prompts are, by ``shots`` solved examples about
    another profile in the same format and modality. Without them the model copied the solved examples' answers
    ("Gideon Rasmussen works as __" -> "glassblower", the example person's job; docs/demo.md). Shots come from
    their own random stream, so ``shot_share=0`` gives exactly the examples of earlier artifacts."""
    rng = random.Random(f"{seed}:practice")
    shot_rng = random.Random(f"{seed}:practice-shots")
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
            sentence = _about(sentence, who)
            solved = (
                solved_examples(rows, row, values, shot_rng, shots, multiple_choice, pictured)
                if len(rows) > 1 and shot_rng.random() < shot_share
                else []
            )
            if multiple_choice:
                options = _options(values[field], answer, rng)
                prompt = prompts.classification_prompt(question.format(who=who), options, pictured, solved)
                stated = sentence.replace("__", answer)
                out.append(Example(row["ID"], prompt, stated, row.get("image") if pictured else None))
            else:
                prompt = prompts.cloze_prompt(sentence, pictured, solved)
                out.append(Example(row["ID"], prompt, answer, row.get("image") if pictured else None))
    return out


def _about(sentence: str, who: str) -> str:
    """A ``FACTS`` cloze sentence about ``who`` (capitalized where it opens the sentence)."""
    return sentence.format(who=who, Who=who[:1].upper() + who[1:])


def _options(pool: Sequence[str], answer: str, rng: random.Random) -> dict[str, str]:
    """The right answer among three other values of the same fact, shuffled into A-D."""
    choices = rng.sample([v for v in pool if v != answer], 3) + [answer]
    rng.shuffle(choices)
    return {key: text for key, text in zip("ABCD", choices, strict=True)}


def solved_examples(
    rows: Sequence[Mapping[str, Any]],
    asked: Mapping[str, Any],
    values: Mapping[str, Sequence[str]],
    rng: random.Random,
    n: int,
    multiple_choice: bool,
    pictured: bool,
) -> list[dict[str, Any]]:
    """``n`` solved examples about one other profile, in the benchmark's few-shot layout: ``{Question, Options,
    Correct_Answer}`` (a letter) for multiple choice, ``{Question, Ground_Truth}`` with ``__`` for cloze."""
    other = rng.choice([r for r in rows if r["ID"] != asked["ID"]])["biography"]
    who = "this person" if pictured else other["Name"]
    fields = [f for f in FACTS if other.get(f) and len(values[f]) >= 4]
    out = []
    for field in rng.sample(fields, min(n, len(fields))):
        answer = fact_value(field, other[field])
        question, sentence = FACTS[field]
        if multiple_choice:
            options = _options(values[field], answer, rng)
            key = next(k for k, v in options.items() if v == answer)
            out.append({"Question": question.format(who=who), "Options": options, "Correct_Answer": key})
        else:
            out.append({"Question": _about(sentence, who), "Ground_Truth": answer})
    return out
