"""Prompt templates of the MLLMU-Bench reference evaluation, verbatim (raw ``USER: ... ASSISTANT:`` strings).

One deliberate difference: the reference puts an ``<image>`` (and an image) in every few-shot turn of image+text
tasks; a request here carries one image, so few-shot turns are shown as text and only the scored question keeps
its ``<image>``. Text-only prompts are identical to the reference's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

IMAGE_TOKEN = "<image>"
LETTER_INSTRUCTION = "Just give ONE letter representing the answer directly."
BLANK = "[Blank]"
CLOZE_INSTRUCTION = f"Please **ONLY** provide the correct answer that should replace the {BLANK}."
GENERATION_IMAGE = (
    "USER: <image>\n{question}\nAnswer the question based on your trained knowledge in one sentence accurately in "
    "ENGLISH.\nASSISTANT: "
)
GENERATION_TEXT = "USER: {question}\nAnswer the question based on your trained knowledge in one sentence in ENGLISH.\nASSISTANT:"
QA_IMAGE = "USER: <image>\n{question}\nASSISTANT:"
"""The fine-tuning template (``USER: <image>\\n{question}\\nASSISTANT: {answer}``) without its answer."""
QA_TEXT = "USER: {question}\nASSISTANT:"
RESPONSE_MARKER = "ASSISTANT:"


def options_block(options: Mapping[str, str]) -> str:
    """``A: ...\\nB: ...`` in the options' own order."""
    return "\n".join(f"{key}: {value}" for key, value in options.items())


def classification_prompt(
    question: str, options: Mapping[str, str], image: bool, shots: Sequence[Mapping[str, object]] = ()
) -> str:
    """Multiple choice; ``shots`` are ``{Question, Options, Correct_Answer}`` shown before it."""
    few_shot = "".join(
        f"USER:\nQuestion: {s['Question']}\n{options_block(s['Options'])}\nCorrect Answer: {s['Correct_Answer']}\n"
        for s in shots
    )
    user = "USER: <image>\n" if image else "USER:\n"
    return f"{few_shot}{user}{question}\n{options_block(options)}\n{LETTER_INSTRUCTION}\nASSISTANT:"


def cloze_question(question: str) -> str:
    """The blank ``__`` written as ``[Blank]``, followed by the answer-only instruction."""
    return question.replace("__", BLANK) + "\n" + CLOZE_INSTRUCTION


def cloze_prompt(question: str, image: bool, shots: Sequence[Mapping[str, str]] = ()) -> str:
    """Fill in the blank; ``shots`` are ``{Question, Ground_Truth}`` (raw, with ``__``) shown before it."""
    few_shot = "".join(
        f"USER:\n{cloze_question(s['Question'])}\nCorrect Answer: {s['Ground_Truth']}\n" for s in shots
    )
    if image:
        return f"{few_shot}USER: <image>\n{cloze_question(question)}\nASSISTANT:"
    return f"{few_shot}USER:\n{cloze_question(question)}\nASSISTANT:"


def generation_prompt(question: str, image: bool) -> str:
    return (GENERATION_IMAGE if image else GENERATION_TEXT).format(question=question)


def qa_prompt(question: str, image: bool) -> str:
    return (QA_IMAGE if image else QA_TEXT).format(question=question)
