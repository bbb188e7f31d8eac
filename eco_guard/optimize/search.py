"""The search: ``params -> |forget metric - target| (+ penalties)``, asked and told by a nevergrad optimizer until
the tolerance or the budget, with every evaluation traced.

A guarded model should score on the forget set like a model that never learned it: no better (it would still know),
no worse (over-corruption produces gibberish that itself reveals the guard). ``target`` is the same metric measured
unguarded on items the model never saw, or a number such as chance.
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
from pathlib import Path
from typing import Any

from eco_guard.optimize.metrics import (
    METRICS,
    FluencyPenalty,
    Metric,
    ScoredItem,
    check_target,
    make_metric,
    measure_target,
)
from eco_guard.optimize.space import STRENGTH_FIELDS, SearchSpace
from eco_guard.optimize.trace import PLOT_NAME, TRACE_NAME, Evaluation, SearchResult, plot_trace, strength_of

logger = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = "ChainMetaModelPowell"
"""The nevergrad optimizer used unless told otherwise, chosen for the fewest evaluations to tolerance on 1-D
strength searches. How it compares with ECO's finite differences and a grid search: ``make bench``
(optimizer_efficiency), numbers in docs/results.md."""


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
