"""Evaluations-to-tolerance of the nevergrad search against ECO's finite-difference scheme and a grid search.

All three minimize the same objective, ``|forget metric(strength) - target|``, on the real SmolLM2-135M-Instruct
with a multiple-choice forget set of capitals it knows (option log-probability accuracy) and on the same set's
answer log-likelihood, for several targets. The objective is deterministic, so values are cached by parameter to
save time, but every method is charged for each evaluation it asks for.

* nevergrad: ``eco_guard.optimize.search`` with the default optimizer, averaged over starting strengths.
* finite differences (ECO): on x = log10(strength), probe f(x - h) and f(x + h) (two evaluations per step),
  step x <- x - lr * (f(x + h) - f(x - h)) / (2h).
* grid: log-spaced strengths, weakest first (a corruption is raised until it is strong enough).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import numpy as np

from eco_guard.optimize import DEFAULT_OPTIMIZER, Evaluation, ScoredItem, SearchSpace, search

CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Russia", "Moscow"),
    ("England", "London"),
    ("Egypt", "Cairo"),
    ("China", "Beijing"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Poland", "Warsaw"),
    ("Canada", "Ottawa"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"),
    ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
]
LOW, HIGH = -2.0, 4.0  # log10 strength bounds
STARTS = (
    0.0,
    1.0,
    2.0,
    3.0,
)  # log10 starting strengths of nevergrad and finite differences (ECO's default: 2)
BUDGET = 30


def capital_items(pairs=CAPITALS, seed: int = 0) -> list[ScoredItem]:
    """ "The capital of X is" with four single-token capitals as options (plain completion prompts)."""
    rng = random.Random(seed)
    capitals = [c for _, c in pairs]
    items = []
    for country, capital in pairs:
        options = [*rng.sample([c for c in capitals if c != capital], 3), capital]
        rng.shuffle(options)
        items.append(
            ScoredItem(
                f"The capital of {country} is",
                tuple(f" {o}" for o in options),
                options.index(capital),
                answer=f" {capital}",
            )
        )
    return items


class CountingObjective:
    """f(log10 strength) -> |metric - target|, cached by parameter, counting each evaluation a method asks for."""

    def __init__(self, metric: Callable[[float], float], target: float):
        self.metric, self.target = metric, target
        self.cache: dict[float, float] = {}
        self.calls = 0

    def value(self, x: float) -> float:
        self.calls += 1
        x = float(min(max(x, LOW), HIGH))
        if x not in self.cache:
            self.cache[x] = self.metric(10**x)
        return self.cache[x]

    def __call__(self, x: float) -> float:
        return abs(self.value(x) - self.target)

    def fresh(self) -> CountingObjective:
        twin = CountingObjective(self.metric, self.target)
        twin.cache = self.cache
        return twin


def nevergrad_evals(
    objective: CountingObjective,
    tolerance: float,
    start: float,
    seed: int = 0,
    optimizer: str = DEFAULT_OPTIMIZER,
) -> int | None:
    from eco_guard.config import GuardConfig

    def evaluate(params):
        x = math.log10(params["strength"])
        gap = objective(x)
        return Evaluation(0, params, objective.value(x), gap, 0.0, gap, 0.0)

    space = SearchSpace(strength=(10**LOW, 10**HIGH)).parametrization(GuardConfig(strength=10**start), seed)
    _, trace, reached = search(
        evaluate, space, budget=BUDGET, tolerance=tolerance, optimizer=optimizer, progress=False
    )
    return len(trace) if reached else None


def finite_difference_evals(
    objective: CountingObjective, tolerance: float, start: float, h: float = 0.25, lr: float = 1.0
) -> int | None:
    """ECO's zeroth-order scheme: central differences on log-strength, two evaluations per step."""
    x, used = start, 0
    while used + 2 <= BUDGET:
        f_minus, f_plus = objective(x - h), objective(x + h)
        used += 2
        if f_minus <= tolerance:
            return used - 1
        if f_plus <= tolerance:
            return used
        x = min(max(x - lr * (f_plus - f_minus) / (2 * h), LOW), HIGH)
    return None


def grid_evals(objective: CountingObjective, tolerance: float) -> int | None:
    for i, x in enumerate(np.linspace(LOW, HIGH, BUDGET)):
        if objective(float(x)) <= tolerance:
            return i + 1
    return None


def compare(objective: CountingObjective, tolerance: float) -> dict[str, float]:
    """Mean evaluations to tolerance per method over the starting points (a run out of budget is charged twice
    the budget); the grid does not depend on a start."""
    nevergrad = [nevergrad_evals(objective.fresh(), tolerance, x, seed=i) for i, x in enumerate(STARTS)]
    finite_diff = [finite_difference_evals(objective.fresh(), tolerance, x) for x in STARTS]
    return {
        "nevergrad": float(np.mean([_charged(v) for v in nevergrad])),
        "finite_diff": float(np.mean([_charged(v) for v in finite_diff])),
        "grid": float(_charged(grid_evals(objective.fresh(), tolerance))),
    }


def _charged(value: float | None) -> float:
    """A method that never reached the tolerance is charged twice the budget."""
    return 2 * BUDGET if value is None else value


def main() -> None:
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model
    from eco_guard.optimize import make_metric

    model, tokenizer = load_model("smollm2")
    guard = EcoGuard(model, tokenizer)
    items = capital_items()
    metrics = {
        "mc_accuracy": make_metric("mc_accuracy", guard, items, chat_template=False),
        "answer_loglik": make_metric("answer_loglik", guard, items, chat_template=False),
    }

    def at(name):
        def metric(strength: float) -> float:
            guard.config = guard.config.replace(strength=strength)
            return metrics[name]()

        return metric

    guard.config = guard.config.replace(strength=1e-3)
    clean = {name: m() for name, m in metrics.items()}
    print(
        f"SmolLM2-135M-Instruct, {len(items)} capitals, noise_first_n (n=1), strength in [1e{LOW:g}, 1e{HIGH:g}]"
    )
    print(
        f"unguarded: accuracy {clean['mc_accuracy']:.3f}, answer log-likelihood {clean['answer_loglik']:.2f}"
    )
    print(
        f"nevergrad {DEFAULT_OPTIMIZER} and finite differences averaged over log10 starts {STARTS}; budget "
        f"{BUDGET}; a run that misses the tolerance is charged {2 * BUDGET}\n"
    )
    cases = [("mc_accuracy", t, 0.05) for t in (0.25, 0.4)] + [
        ("answer_loglik", t, 0.5) for t in (-5.0, -11.0)
    ]
    header = f"{'metric':14s} {'target':>7s} {'tol':>5s} {'nevergrad':>10s} {'fin.diff':>9s} {'grid':>5s} {'distinct':>8s} {'s':>5s}"
    print(header)
    totals = {"nevergrad": 0.0, "finite_diff": 0.0, "grid": 0.0}
    cached: dict[str, CountingObjective] = {}
    for name, target, tolerance in cases:
        start = time.perf_counter()
        base = cached.setdefault(name, CountingObjective(at(name), target))
        objective = base.fresh()
        objective.target = target
        result = compare(objective, tolerance)
        for k, v in result.items():
            totals[k] += v
        show = {k: f"{v:.1f}" for k, v in result.items()}
        print(
            f"{name:14s} {target:7.2f} {tolerance:5.2f} {show['nevergrad']:>10s} {show['finite_diff']:>9s} "
            f"{show['grid']:>5s} {len(base.cache):8d} {time.perf_counter() - start:5.0f}",
            flush=True,
        )
    n = len(cases)
    print(
        f"\nmean evaluations to tolerance: nevergrad {totals['nevergrad'] / n:.1f}, finite differences "
        f"{totals['finite_diff'] / n:.1f}, grid {totals['grid'] / n:.1f}"
    )
    print(
        f"nevergrad / finite differences = {totals['nevergrad'] / totals['finite_diff']:.2f}, "
        f"nevergrad / grid = {totals['nevergrad'] / totals['grid']:.2f} (goal: <= 0.5 each)"
    )


if __name__ == "__main__":
    main()
