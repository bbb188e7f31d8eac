"""Offline search of the corruption settings, without gradients.

A guarded model should score on the forget set like a model that never learned it: no better (it would still know),
no worse (over-corruption produces gibberish that itself reveals the guard). The objective is therefore
``|forget_metric(guard with params) - target|`` (plus optional penalties), where ``target`` is the same metric
measured unguarded on items the model never saw, or a number such as chance. nevergrad searches the corruption
strength on a log scale and, optionally, the corruption family and its n / k.

The forget set is tokenized, padded and embedded once (:meth:`EcoGuard.prepare_scoring`); each evaluation is one
batched forward pass under new settings (generation metrics run one batched ``generate``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eco_guard.config import GuardConfig
from eco_guard.corruption import CORRUPTIONS, USES_DIMS, USES_STRENGTH
from eco_guard.requests import PromptLike

logger = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = "ChainMetaModelPowell"  # fewest evaluations to tolerance on 1-D strength searches (benchmarks.perf.optimizer_efficiency)
TRACE_NAME = "optimize_trace.jsonl"
PLOT_NAME = "optimize_plot.png"


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


# ---------------------------------------------------------------- search space and trace


STRENGTH_FIELDS = ("strength", "image_strength")
BLEND_RANGE = (0.75, 1.0)
"""Where a ``substitute`` blend is searched by default. Below it the model reads a mix of two names and writes
hybrids of them that no write-back can restore (the demo MLLM, 16 named questions x 4 surrogate seeds: "Cressideon
Rasmussen" in 26 of 64 answers at 0.6, 18 at 0.65, 5 at 0.7, none at 0.75, 0.8, 0.9 or 1)."""


@dataclass
class SearchSpace:
    """What nevergrad searches: a strength (log scale unless ``scale`` says linear), and optionally the corruption
    family and n / k.

    ``parameter`` names the strength searched: ``strength`` (prompt tokens; image features too unless the config
    sets ``image_strength``) or ``image_strength`` (image features only: search it on image questions whose text
    names nobody, after ``strength`` on text questions). ``corruptions`` with two or more names makes the family
    a choice; ``dims`` (low, high) searches n / k as an integer on a log scale. Whatever is not searched keeps the
    guard's current value.
    """

    strength: tuple[float, float] = (1e-2, 1e4)
    corruptions: tuple[str, ...] = ()
    dims: tuple[int, int] | None = None
    parameter: str = "strength"
    scale: str = "log"
    """How the strength is searched: ``log`` (noise scales span decades) or ``linear`` (a blend weight in
    [0, 1], as for ``substitute``, where 0.001 and 0.1 are the same nothing)."""

    def validate(self, config: GuardConfig) -> None:
        if self.parameter not in STRENGTH_FIELDS:
            raise ValueError(f"parameter must be one of {STRENGTH_FIELDS}, got {self.parameter!r}")
        if self.parameter == "image_strength" and "image" not in config.scope:
            raise ValueError(f"image_strength is searched but scope {config.scope} leaves images alone")
        if self.scale not in ("log", "linear"):
            raise ValueError(f"scale must be 'log' or 'linear', got {self.scale!r}")
        low, high = self.strength
        floor_ok = low > 0 if self.scale == "log" else low >= 0
        if not floor_ok or not low < high or not math.isfinite(high):
            sign = "<" if self.scale == "log" else "<="
            raise ValueError(
                f"strength bounds must satisfy 0 {sign} low < high < inf ({self.scale} scale), got {self.strength}"
            )
        for name in self.corruptions:
            if name not in CORRUPTIONS:
                raise ValueError(
                    f"unknown corruption {name!r}; valid names: {', '.join(sorted(CORRUPTIONS))}"
                )
        if self.dims is not None:
            lo, hi = self.dims
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi):
                raise ValueError(f"dims bounds must be integers with 1 <= low < high, got {self.dims}")
        if not self.names(config):
            raise ValueError(
                f"nothing to search: corruption {config.corruption!r} reads neither strength nor dims"
            )

    def families(self, config: GuardConfig) -> tuple[str, ...]:
        if self.corruptions:
            return tuple(self.corruptions)
        return (config.image_corruption_name if self.parameter == "image_strength" else config.corruption,)

    def names(self, config: GuardConfig) -> list[str]:
        families = self.families(config)
        names = []
        if any(USES_STRENGTH[c] for c in families):
            names.append(self.parameter)
        if len(families) > 1:
            names.append("corruption")
        if self.dims is not None and any(USES_DIMS[c] for c in families):
            names.append("dims")
        return names

    def parametrization(self, config: GuardConfig, seed: int):
        """A seeded nevergrad ``Dict`` whose initial value is the guard's current setting (clipped to the bounds)."""
        import nevergrad as ng

        low, high = self.strength
        parts: dict[str, Any] = {}
        for name in self.names(config):
            if name in STRENGTH_FIELDS:
                current = getattr(config, name)
                current = config.strength if current is None else current
                if self.scale == "log":
                    init = current if low <= current <= high else math.sqrt(low * high)
                    parts[name] = ng.p.Log(lower=low, upper=high, init=init)
                else:
                    init = current if low <= current <= high else (low + high) / 2
                    parts[name] = ng.p.Scalar(lower=low, upper=high, init=init)
            elif name == "corruption":
                parts[name] = ng.p.Choice(list(self.families(config)))
            else:
                lo, hi = self.dims
                parts[name] = ng.p.Log(
                    lower=lo, upper=hi, init=min(max(config.dims, lo), hi)
                ).set_integer_casting()
        space = ng.p.Dict(**parts)
        space.random_state = np.random.RandomState(seed)
        return space


@dataclass
class Evaluation:
    """One objective evaluation, as written to the trace."""

    step: int
    params: dict[str, Any]
    metric: float
    gap: float
    penalty: float
    objective: float
    seconds: float
    empty: float | None = None
    """Share of empty answers (metrics that generate answers)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class SearchResult:
    """The best evaluation, the whole trace, and the guard config holding the best parameters."""

    best: Evaluation
    trace: list[Evaluation]
    config: GuardConfig
    target: float
    tolerance: float
    metric: str
    optimizer: str
    seed: int
    reached: bool = field(default=False)

    @property
    def evaluations_to_tolerance(self) -> int | None:
        """1-based index of the first evaluation within the tolerance (None when none was)."""
        return next((e.step + 1 for e in self.trace if e.objective <= self.tolerance), None)


class GuardObjective:
    """``params -> Evaluation``: set the guard's config, measure the metric, add the penalties.

    The corruption is seeded, so the same parameters give the same value: a point the optimizer asks again (model-
    based optimizers do, near their optimum) is answered from memory, in no time. Strengths are read to 12
    significant digits first: the optimizer's second ask of a point can differ in the last bit (0.8393770117944639,
    then 0.839377011794464), which measured it again."""

    def __init__(
        self, guard: Any, metric: Metric, target: float, penalties: Sequence[Callable[[], float]] = ()
    ):
        self.guard, self.metric, self.target, self.penalties = guard, metric, target, list(penalties)
        self.base = guard.config
        self.calls = 0
        self.memory: dict[str, Evaluation] = {}

    def __call__(self, params: dict[str, Any]) -> Evaluation:
        start = time.perf_counter()
        changes = {
            k: (float(f"{float(v):.12g}") if k in STRENGTH_FIELDS else int(v) if k == "dims" else v)
            for k, v in params.items()
        }
        key = json.dumps(changes, sort_keys=True)
        if key in self.memory:
            self.calls += 1
            return dataclasses.replace(self.memory[key], step=self.calls - 1, seconds=0.0)
        self.guard.config = self.base.replace(**changes)
        value = self.metric()
        gap = abs(value - self.target)
        empty = getattr(self.metric, "empty", None)
        penalty = float(sum(p() for p in self.penalties))
        self.calls += 1
        evaluation = Evaluation(
            self.calls - 1, changes, value, gap, penalty, gap + penalty, time.perf_counter() - start, empty
        )
        self.memory[key] = evaluation
        return dataclasses.replace(evaluation)


def strength_of(params: dict[str, Any], config: GuardConfig | None = None) -> float:
    """The strength searched in ``params`` (``image_strength`` when present), else the one ``config`` applies."""
    for name in reversed(STRENGTH_FIELDS):
        if params.get(name) is not None:
            return float(params[name])
    return float(config.strength) if config is not None else 0.0


def make_optimizer(name: str, parametrization: Any, budget: int):
    """A nevergrad optimizer by registry name; an unknown name gets the closest valid ones."""
    import nevergrad as ng

    registry = ng.optimizers.registry
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see nevergrad.optimizers.registry"
        raise ValueError(f"unknown nevergrad optimizer {name!r}{hint}")
    return registry[name](parametrization=parametrization, budget=budget, num_workers=1)


def search(
    objective: Callable[[dict[str, Any]], Evaluation],
    parametrization: Any,
    *,
    budget: int,
    tolerance: float,
    optimizer: str = DEFAULT_OPTIMIZER,
    trace_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[Evaluation, list[Evaluation], bool]:
    """Ask/tell loop: stop at the budget or at the first objective within ``tolerance``.

    Returns the best evaluation (ties go to the weaker corruption), the trace and whether the tolerance was met.
    Each evaluation is appended to ``trace_path`` (JSONL) as soon as it is known.
    """
    from tqdm.auto import tqdm

    opt = make_optimizer(optimizer, parametrization, budget)
    trace: list[Evaluation] = []
    with contextlib.ExitStack() as stack:
        handle = None
        if trace_path is not None:
            Path(trace_path).parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(Path(trace_path).open("w"))
        bar = stack.enter_context(
            tqdm(total=budget, desc=f"optimize ({optimizer})", disable=not progress, leave=False)
        )
        for _ in range(budget):
            candidate = opt.ask()
            evaluation = objective(dict(candidate.value))
            evaluation.step = len(trace)
            opt.tell(candidate, evaluation.objective)
            trace.append(evaluation)
            if handle is not None:
                handle.write(evaluation.to_json() + "\n")
                handle.flush()
            bar.update(1)
            bar.set_postfix(metric=f"{evaluation.metric:.4g}", objective=f"{evaluation.objective:.4g}")
            if evaluation.objective <= tolerance:
                break
    best = min(trace, key=lambda e: (e.objective, strength_of(e.params), e.step))
    return best, trace, best.objective <= tolerance


def optimize_guard(
    guard: Any,
    items: Sequence[ScoredItem],
    *,
    target: float | Sequence[ScoredItem],
    metric: str | Metric = "mc_accuracy",
    tolerance: float = 0.05,
    budget: int = 30,
    optimizer: str = DEFAULT_OPTIMIZER,
    seed: int = 0,
    space: SearchSpace | None = None,
    fluency_weight: float = 0.0,
    chat_template: bool | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 32,
    output_dir: str | Path | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search corruption settings so that the guarded metric on ``items`` (the forget set, all flagged) meets
    ``target`` within ``tolerance``; write the best into ``guard.config``.

    ``target`` is a number in the metric's range (e.g. chance) or held-out items the model never learned, scored
    unguarded. ``metric`` is a registered name, or a metric the caller prepared on its own items (a benchmark's
    own scoring, say: any object like :class:`Metric`, called for a float, with ``name`` and ``bounds``); it then
    needs a numeric ``target``, and ``items`` only feed the fluency penalty.
    ``output_dir`` (the guard folder) receives the trace (JSONL) and the plot (PNG) as they are made.
    """
    prepared = None if isinstance(metric, str) else metric
    if prepared is None and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid names: {', '.join(sorted(METRICS))}")
    name = prepared.name if prepared is not None else metric
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer number of evaluations, got {budget!r}")
    if not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not items and prepared is None:
        raise ValueError("the forget set is empty: nothing to optimize on")
    space = space or SearchSpace()
    space.validate(guard.config)
    make_optimizer(optimizer, space.parametrization(guard.config, seed), budget)  # fail fast on a bad name
    if isinstance(target, (int, float)):
        target_value = check_target(name, target, prepared.bounds if prepared is not None else None)
    else:
        if prepared is not None:
            raise ValueError(f"metric {name!r} was prepared by the caller: give its target as a number")
        if not target:
            raise ValueError("the held-out set for the target is empty")
        target_value = check_target(
            metric,
            measure_target(
                metric,
                guard,
                target,
                chat_template=chat_template,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
            ),
        )
        logger.info(
            "target %s = %.4f measured unguarded on %d held-out items", metric, target_value, len(target)
        )
    scorer = prepared or make_metric(
        metric,
        guard,
        items,
        chat_template=chat_template,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )
    penalties = []
    if fluency_weight > 0:
        if not items:
            raise ValueError("the fluency penalty needs items to generate answers to")
        penalties.append(FluencyPenalty(guard, items, weight=fluency_weight, chat_template=chat_template))
    objective = GuardObjective(guard, scorer, target_value, penalties)
    trace_path = Path(output_dir) / TRACE_NAME if output_dir is not None else None
    try:
        best, trace, reached = search(
            objective,
            space.parametrization(objective.base, seed),
            budget=budget,
            tolerance=tolerance,
            optimizer=optimizer,
            trace_path=trace_path,
            progress=progress,
        )
    except BaseException:
        guard.config = objective.base
        raise
    problem = degenerate(trace, reached)
    if problem is not None:
        guard.config = objective.base
        raise SearchError(f"{name} search: {problem}; no setting was kept")
    guard.config = objective.base.replace(**best.params)
    result = SearchResult(
        best, trace, guard.config, target_value, float(tolerance), name, optimizer, seed, reached
    )
    logger.info(
        "best %s after %d evaluations: %s=%.4f (target %.4f, %s)",
        best.params,
        len(trace),
        name,
        best.metric,
        target_value,
        "within tolerance" if reached else "NOT within tolerance",
    )
    if output_dir is not None:
        plot_trace(result, Path(output_dir) / PLOT_NAME)
    return result


class SearchError(ValueError):
    """The search ran but found nothing worth keeping (a degenerate objective)."""


MOSTLY_EMPTY = 0.5
"""A best point at which more than this share of answers is empty is a broken prompt, not forgetting."""


def degenerate(trace: Sequence[Evaluation], reached: bool) -> str | None:
    """Why a search result must not be kept, or None: most answers empty at the best point (the corruption
    destroys the prompt, e.g. a name-reading corruption over a prompt whose names were not found), or, with the
    target missed, one metric value at every point (the corruption does not reach what the metric reads)."""
    best = min(trace, key=lambda e: (e.objective, strength_of(e.params), e.step))
    if best.empty is not None and best.empty > MOSTLY_EMPTY:
        return (
            f"{best.empty:.0%} of the answers are empty at the best point {best.params}: the corrupted prompts "
            "read as nothing (with scope spans, check that the guard's classifier finds the names)"
        )
    values = {round(e.metric, 12) for e in trace}
    if not reached and len(trace) >= 3 and len(values) == 1:
        return (
            f"the metric is {trace[0].metric:.4f} at all {len(trace)} points searched: the corruption does not "
            "move it (another scope, corruption or strength range may)"
        )
    return None


def read_trace(path: str | Path) -> list[Evaluation]:
    """The evaluations of a trace file written by :func:`search`."""
    return [Evaluation(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_trace(result: SearchResult, path: str | Path) -> Path:
    """Metric vs strength (log scale) of every evaluation, with the target, its tolerance band and the best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        families = sorted({str(e.params.get("corruption", result.config.corruption)) for e in result.trace})
        for family in families:
            points = [
                e for e in result.trace if e.params.get("corruption", result.config.corruption) == family
            ]
            xs = [strength_of(e.params, result.config) for e in points]
            ax.scatter(xs, [e.metric for e in points], s=22, label=family, alpha=0.8)
        ax.axhline(result.target, color="black", lw=1, label=f"target {result.target:.3g}")
        ax.axhspan(
            result.target - result.tolerance, result.target + result.tolerance, color="grey", alpha=0.2
        )
        best_x = strength_of(result.best.params, result.config)
        ax.scatter([best_x], [result.best.metric], s=120, facecolors="none", edgecolors="red", label="best")
        strengths = [strength_of(e.params, result.config) for e in result.trace]
        if min(strengths) == max(strengths):
            ax.set_xlim(strengths[0] / 10, strengths[0] * 10)
        ax.set_xscale("log")
        searched = next((k for k in reversed(STRENGTH_FIELDS) if k in result.best.params), "strength")
        ax.set_xlabel(f"corruption {searched.replace('_', ' ')}")
        ax.set_ylabel(f"forget {result.metric} (guarded)")
        ax.set_title(f"{result.optimizer}: {len(result.trace)} evaluations")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
