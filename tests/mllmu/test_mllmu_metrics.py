"""Scoring and prompts against hand-worked examples of the MLLMU-Bench reference behaviour."""

from __future__ import annotations

import pytest

from benchmarks.mllmu import metrics, prompts

OPTIONS = {"A": "potter", "B": "astronomer", "C": "firefighter", "D": "nurse"}


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("B", "B"),
        ("b) astronomer", "B"),  # upper-cased first character
        ("Bob is an astronomer", "B"),  # only the first character counts, whatever follows
        ("The answer is B", None),  # 'T' is no option key
        ("E", None),
        ("", None),
        (
            " C",
            None,
        ),  # the reference strips the response first; response_text does that, first_letter does not
    ],
)
def test_first_letter(response, letter):
    assert metrics.first_letter(response, OPTIONS) == letter


def test_classification_correct_uses_the_first_letter_only():
    assert metrics.classification_correct("A: potter", OPTIONS, "A")
    assert metrics.classification_correct(
        "Answer: B", OPTIONS, "A"
    )  # reference quirk: 'A' of "Answer" counts
    assert not metrics.classification_correct("B: astronomer", OPTIONS, "A")


@pytest.mark.parametrize(
    ("response", "option"),
    [
        ("C", "C"),  # a letter first: the reference rule
        ("Petra works as a firefighter.", "C"),  # a sentence stating one option
        ("She is a nurse, not a potter.", None),  # two options stated: no guess
        ("B: nurse, not potter", "B"),  # two stated, but a letter stands first
        ("Dana paints.", None),  # a sentence's first letter is no choice
        ("She paints.", None),
        ("Dana lives in Cork, Ireland.", "X"),  # "Cork" is inside "Cork, Ireland": the longer option
    ],
)
def test_stated_option(response, option):
    options = dict(OPTIONS, X="Cork, Ireland", Y="Cork") if option == "X" else OPTIONS
    assert metrics.stated_option(response, options) == option


def test_response_text_cuts_at_a_second_assistant_turn():
    assert metrics.response_text("  B\nUSER: next question\nASSISTANT: C") == "B\nUSER: next question"
    assert metrics.response_text(" Lisbon ") == "Lisbon"


@pytest.mark.parametrize(
    ("response", "truth", "correct"),
    [
        ("She was born in LISBON.", "Lisbon", True),  # case-insensitive substring
        ("Lisbon", "Lisbon, Portugal", False),  # the whole ground truth must occur
        ("Lisbonne", "Lisbon", True),  # substring, not word match
        ("Porto", "Lisbon", False),
    ],
)
def test_cloze_substring(response, truth, correct):
    assert metrics.cloze_correct(response, truth) is correct


def test_rouge_hand_worked_values():
    # reference "the cat sat on the mat" (6 tokens), prediction "the cat lay on the mat":
    # unigram overlap 5 -> P = R = F1 = 5/6; bigrams: 5 each, common {the cat, on the, the mat} = 3 -> 3/5;
    # LCS "the cat on the mat" = 5 -> 5/6
    scores = metrics.rouge("the cat sat on the mat", "the cat lay on the mat")
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)
    # stemming: "works" / "working" -> "work"; reference 4 tokens, prediction 3 tokens, LCS 3 -> F = 2*1*0.75/1.75
    scores = metrics.rouge("He works as potter", "working as potter")
    assert scores["rougeL"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert metrics.rouge("a b c", "x y z")["rougeL"] == 0.0
    assert metrics.rouge("Lisbon", "Lisbon")["rougeL"] == 1.0


def test_bleu_identity_and_smoothing():
    assert metrics.bleu("this person works as a potter", "this person works as a potter") == pytest.approx(
        1.0
    )
    assert metrics.bleu("this person works as a potter", "") == 0.0
    partial = metrics.bleu("this person works as a potter", "this person works as a nurse")
    assert 0.0 < partial < 1.0


def test_logprob_choice_takes_the_most_likely_option_first_on_ties():
    assert metrics.logprob_choice(["A", "B", "C", "D"], [-3.0, -0.5, -2.0, -9.0]) == "B"
    assert metrics.logprob_choice(["A", "B"], [-1.0, -1.0]) == "A"
    with pytest.raises(ValueError):
        metrics.logprob_choice(["A", "B"], [-1.0])


def test_prompts_follow_the_reference_verbatim():
    assert prompts.classification_prompt("What is the profession of Ann Lee?", OPTIONS, image=False) == (
        "USER:\nWhat is the profession of Ann Lee?\nA: potter\nB: astronomer\nC: firefighter\nD: nurse\n"
        "Just give ONE letter representing the answer directly.\nASSISTANT:"
    )
    assert prompts.classification_prompt("Q?", OPTIONS, image=True).startswith(
        "USER: <image>\nQ?\nA: potter\n"
    )
    shot = {"Question": "S?", "Options": OPTIONS, "Correct_Answer": "D"}
    assert prompts.classification_prompt("Q?", OPTIONS, image=False, shots=[shot]).startswith(
        "USER:\nQuestion: S?\nA: potter\nB: astronomer\nC: firefighter\nD: nurse\nCorrect Answer: D\nUSER:\nQ?\n"
    )
    assert prompts.cloze_prompt("Ann Lee was born in __.", image=False) == (
        "USER:\nAnn Lee was born in [Blank].\n"
        "Please **ONLY** provide the correct answer that should replace the [Blank].\nASSISTANT:"
    )
    assert prompts.cloze_prompt("This person lives in __.", image=True).startswith(
        "USER: <image>\nThis person lives in [Blank].\n"
    )
    assert prompts.cloze_prompt("Q __.", False, [{"Question": "S __.", "Ground_Truth": "x"}]).startswith(
        "USER:\nS [Blank].\nPlease **ONLY** provide the correct answer that should replace the [Blank].\n"
        "Correct Answer: x\nUSER:\n"
    )
    assert prompts.generation_prompt("Where does Ann live?", image=True) == (
        "USER: <image>\nWhere does Ann live?\nAnswer the question based on your trained knowledge in one sentence "
        "accurately in ENGLISH.\nASSISTANT: "
    )
    assert prompts.generation_prompt("Where does Ann live?", image=False) == (
        "USER: Where does Ann live?\nAnswer the question based on your trained knowledge in one sentence in "
        "ENGLISH.\nASSISTANT:"
    )
