"""What a search measures: forget metrics on a fixed item set, prepared once and evaluated under the guard's
current config, and the fluency penalty. Every item is flagged; the guard keeps the names its classifier finds.

The forget set is tokenized, padded and embedded once (:meth:`EcoGuard.prepare_scoring`); each evaluation is one
batched forward pass under new settings (generation metrics run one batched ``generate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eco_guard.requests import PromptLike


@dataclass(frozen=True)
class ScoredItem:
    """One question to score: a multiple-choice item (``choices`` scored as continuations of ``prompt``,
    ``correct`` the index of the right one) and/or an open one (``answer``, the reference continuation)."""

    prompt: PromptLike
    choices: tuple[str, ...] = ()
    correct: int | None = None
    answer: str | None = None
    image: Any = None

    def request(self) -> PromptLike:
        """The prompt as the guard takes it (a ``{"text", "image"}`` dict when there is an image)."""
        if self.image is None:
            return self.prompt
        if not isinstance(self.prompt, str):
            raise ValueError("an item with an image needs a plain-text prompt")
        return {"text": self.prompt, "image": self.image}


# ---------------------------------------------------------------- metrics


class Metric:
    """A forget metric on a fixed item set, prepared once and evaluated under the guard's current config.

    Every item is flagged (``flagged=False``: none); the guard keeps the names its classifier finds in each, so
    the search corrupts the very tokens serving corrupts. ``empty``: the share of empty answers at the last call
    (None for metrics that generate nothing)."""

    name = ""
    bounds: tuple[float, float] = (0.0, 1.0)
    empty: float | None = None

    def __init__(self, guard: Any, items: Sequence[ScoredItem], *, flagged: bool = True, chat_template=None):
        items = list(items)
        if not items:
            raise ValueError(f"{self.name}: no items to score (the item set is empty)")
        for i, item in enumerate(items):
            self.check(i, item)
        self.guard, self.items, self.flagged, self.chat_template = guard, items, flagged, chat_template
        self.flags = [flagged] * len(items)

    def check(self, index: int, item: ScoredItem) -> None:
        """Raise ValueError when ``item`` cannot be scored by this metric."""

    def __call__(self) -> float:
        raise NotImplementedError


class ChoiceAccuracy(Metric):
    """Multiple-choice accuracy: the option with the highest log-probability is the model's answer."""

    name = "mc_accuracy"

    def __init__(self, guard, items, *, flagged=True, chat_template=None, batch_size: int = 32, **_: Any):
        super().__init__(guard, items, flagged=flagged, chat_template=chat_template)
        self.batch = guard.prepare_scoring(
            [it.request() for it in self.items],
            [list(it.choices) for it in self.items],
            flags=self.flags,
            chat_template=chat_template,
            batch_size=batch_size,
        )

    def check(self, index, item):
        if len(item.choices) < 2:
            raise ValueError(f"{self.name}: item {index} needs at least two choices, got {len(item.choices)}")
        if not isinstance(item.correct, int) or not 0 <= item.correct < len(item.choices):
            raise ValueError(
                f"{self.name}: item {index} has correct={item.correct!r}, not an index of its choices"
            )

    def __call__(self) -> float:
        scores = self.guard.score_prepared(self.batch)
        hits = [int(np.argmax(s)) == it.correct for s, it in zip(scores, self.items, strict=True)]
        return float(np.mean(hits))


class AnswerLogLikelihood(Metric):
    """Mean per-token log-likelihood of the reference answers (a smooth measure of what the model knows)."""

    name = "answer_loglik"
    bounds = (-math.inf, 0.0)

    def __init__(self, guard, items, *, flagged=True, chat_template=None, batch_size: int = 32, **_: Any):
        super().__init__(guard, items, flagged=flagged, chat_template=chat_template)
        self.batch = guard.prepare_scoring(
            [it.request() for it in self.items],
            [[it.answer] for it in self.items],
            flags=self.flags,
            chat_template=chat_template,
            batch_size=batch_size,
        )

    def check(self, index, item):
        if not item.answer or not item.answer.strip():
            raise ValueError(f"{self.name}: item {index} has no reference answer")

    def __call__(self) -> float:
        scores = self.guard.score_prepared(self.batch)
        return float(np.mean([s[0] / n[0] for s, n in zip(scores, self.batch.lengths, strict=True)]))


class GenerationRougeL(Metric):
    """ROUGE-L F-measure (stemmed) of the greedy answer against the reference answer."""

    name = "rouge_l"

    def __init__(
        self,
        guard,
        items,
        *,
        flagged=True,
        chat_template=None,
        batch_size: int = 32,
        max_new_tokens: int = 32,
        **_,
    ):
        super().__init__(guard, items, flagged=flagged, chat_template=chat_template)
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    check = AnswerLogLikelihood.check

    def answers(self) -> list[str]:
        return self.guard.generate(
            [it.request() for it in self.items],
            flags=self.flags,
            chat_template=self.chat_template,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
        )

    def __call__(self) -> float:
        answers = self.answers()
        self.empty = float(np.mean([not a.strip() for a in answers]))
        pairs = zip(self.items, answers, strict=True)
        return float(np.mean([self.scorer.score(it.answer, out)["rougeL"].fmeasure for it, out in pairs]))


METRICS: dict[str, type[Metric]] = {
    m.name: m for m in (ChoiceAccuracy, AnswerLogLikelihood, GenerationRougeL)
}


def make_metric(name: str, guard: Any, items: Sequence[ScoredItem], **kwargs: Any) -> Metric:
    """The metric ``name`` prepared on ``items`` (``flagged=False`` scores them unguarded)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(sorted(METRICS))}")
    return METRICS[name](guard, items, **kwargs)


def measure_target(name: str, guard: Any, heldout: Sequence[ScoredItem], **kwargs: Any) -> float:
    """The never-trained surrogate: the metric on items the model never saw, unguarded."""
    return make_metric(name, guard, heldout, flagged=False, **kwargs)()


def check_target(name: str, target: float, bounds: tuple[float, float] | None = None) -> float:
    low, high = bounds or METRICS[name].bounds
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise ValueError(f"target must be a finite number, got {target!r}")
    if not low <= target <= high:
        raise ValueError(f"target {target} lies outside the range [{low}, {high}] of metric {name!r}")
    return float(target)


# ---------------------------------------------------------------- penalties


class FluencyPenalty:
    """``weight`` x how much less fluent the guarded answers read than the unguarded ones.

    Fluency is the clean model's mean per-token log-likelihood of the answer the model generated: corrupted
    prompts that make the model babble score low, a plain wrong answer scores like a right one.
    """

    name = "fluency"

    def __init__(
        self,
        guard: Any,
        items: Sequence[ScoredItem],
        *,
        weight: float = 1.0,
        max_new_tokens: int = 16,
        chat_template=None,
    ):
        if not items:
            raise ValueError("fluency penalty: no items")
        if weight < 0:
            raise ValueError(f"fluency penalty weight must be >= 0, got {weight}")
        self.guard, self.weight, self.max_new_tokens, self.chat_template = (
            guard,
            weight,
            max_new_tokens,
            chat_template,
        )
        self.prompts = [it.request() for it in items]
        self.flags = [True] * len(self.prompts)
        self.baseline = self.fluency(flagged=False)

    def fluency(self, *, flagged: bool) -> float:
        n = len(self.prompts)
        answers = self.guard.generate(
            self.prompts,
            flags=self.flags if flagged else [False] * n,
            chat_template=self.chat_template,
            max_new_tokens=self.max_new_tokens,
        )
        keep = [i for i, a in enumerate(answers) if a.strip()]
        if not keep:
            return -math.inf if flagged else 0.0
        batch = self.guard.prepare_scoring(
            [self.prompts[i] for i in keep], [[answers[i]] for i in keep], chat_template=self.chat_template
        )
        scores = self.guard.score_prepared(batch)
        return float(np.mean([s[0] / n[0] for s, n in zip(scores, batch.lengths, strict=True)]))

    def __call__(self) -> float:
        gap = self.baseline - self.fluency(flagged=True)
        return self.weight * max(0.0, min(gap, 1e3))
