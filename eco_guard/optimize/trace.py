"""The record of a search: one Evaluation per point (written to the trace as it is known), the result, and
reading the trace back and drawing it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eco_guard.config import GuardConfig
from eco_guard.optimize.space import STRENGTH_FIELDS

TRACE_NAME = "optimize_trace.jsonl"
PLOT_NAME = "optimize_plot.png"


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


def strength_of(params: dict[str, Any], config: GuardConfig | None = None) -> float:
    """The strength searched in ``params`` (``image_strength`` when present), else the one ``config`` applies."""
    for name in reversed(STRENGTH_FIELDS):
        if params.get(name) is not None:
            return float(params[name])
    return float(config.strength) if config is not None else 0.0


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
