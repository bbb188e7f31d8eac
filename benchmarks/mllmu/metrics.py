"""Scoring functions of the MLLMU-Bench reference evaluation, plus option log-probability classification.

Accuracies are reported in percent and ROUGE / BLEU in [0, 1], as in the reference.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Mapping, Sequence

from benchmarks.mllmu.prompts import RESPONSE_MARKER

logger = logging.getLogger(__name__)


def response_text(continuation: str) -> str:
    """What the reference scores: the text after the prompt's ``ASSISTANT:`` up to any further ``ASSISTANT:``,
    stripped (it decodes prompt + continuation and keeps ``split("ASSISTANT:")[1]``)."""
    return continuation.split(RESPONSE_MARKER)[0].strip()


def first_letter(response: str, options: Mapping[str, str]) -> str | None:
    """The first character of the response, upper-cased, if it is an option key (else None)."""
    if not response:
        return None
    letter = response[0].upper()
    return letter if letter in options else None


def stated_option(response: str, options: Mapping[str, str]) -> str | None:
    """The option a response picks, read as a person would: the one option whose text it states ("She lives in
    Cork, Ireland." -> the "Cork, Ireland" key), else a leading option letter standing alone ("B", "b)", "C: ...").
    Small models answer multiple choice in sentences, and a sentence's first letter ("Dana ...") is no choice.
    Several options stated and no letter, or nothing: None (no guessing)."""
    said = response.lower()
    stated = [key for key, text in options.items() if text and text.lower() in said]
    if len(stated) > 1:  # one option's text inside another's ("Cork" and "Cork, Ireland"): keep the longest
        longest = max(stated, key=lambda k: len(options[k]))
        stated = [longest] if all(options[k].lower() in options[longest].lower() for k in stated) else stated
    if len(stated) == 1:
        return stated[0]
    letter = re.match(r"\s*([A-Za-z])(?![A-Za-z])", response)
    key = letter.group(1).upper() if letter else None
    return key if key in options else None


def classification_correct(response: str, options: Mapping[str, str], answer: str) -> bool:
    return first_letter(response, options) == answer


def cloze_correct(response: str, ground_truth: str) -> bool:
    """The ground truth occurs in the response, ignoring case."""
    return ground_truth.lower() in response.lower()


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(reference: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures with Porter stemming (``rouge_score``), reference first as in the reference code."""
    scores = _rouge_scorer().score(reference, prediction)
    return {name: float(score.fmeasure) for name, score in scores.items()}


def bleu(reference: str, prediction: str) -> float | None:
    """Sentence BLEU on whitespace tokens with NLTK's smoothing method 1; None when NLTK is not installed."""
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    except ImportError:
        return None
    hypothesis = prediction.split()
    if not hypothesis:
        return 0.0
    return float(
        sentence_bleu([reference.split()], hypothesis, smoothing_function=SmoothingFunction().method1)
    )


def logprob_choice(option_keys: Sequence[str], logprobs: Sequence[float]) -> str:
    """The option whose continuation the model finds most likely (first one on ties)."""
    if len(option_keys) != len(logprobs) or not option_keys:
        raise ValueError(f"got {len(logprobs)} log-probabilities for {len(option_keys)} options")
    best = max(range(len(option_keys)), key=lambda k: (logprobs[k], -k))
    return option_keys[best]


def mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None
