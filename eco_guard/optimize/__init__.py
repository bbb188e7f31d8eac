"""Offline search of the corruption settings, without gradients (nevergrad).

A guarded model should score on the forget set like a model that never learned it. The objective is
``|forget_metric(guard with params) - target|`` (plus optional penalties), where ``target`` is the same metric
measured unguarded on items the model never saw, or a number such as chance. nevergrad searches the corruption
strength (log scale for noise, linear for a ``substitute`` blend) and, optionally, the family and its n / k.

``metrics`` (what is measured), ``space`` (what is searched), ``search`` (the loop and its result), ``trace``
(reading and drawing it).
"""

from __future__ import annotations

from eco_guard.optimize.metrics import (
    METRICS,
    AnswerLogLikelihood,
    ChoiceAccuracy,
    FluencyPenalty,
    GenerationRougeL,
    Metric,
    ScoredItem,
    check_target,
    make_metric,
    measure_target,
)
from eco_guard.optimize.search import (
    DEFAULT_OPTIMIZER,
    MOSTLY_EMPTY,
    PLOT_NAME,
    TRACE_NAME,
    Evaluation,
    GuardObjective,
    SearchError,
    SearchResult,
    degenerate,
    make_optimizer,
    optimize_guard,
    search,
    strength_of,
)
from eco_guard.optimize.space import BLEND_RANGE, STRENGTH_FIELDS, SearchSpace
from eco_guard.optimize.trace import plot_trace, read_trace

__all__ = [
    "BLEND_RANGE",
    "DEFAULT_OPTIMIZER",
    "METRICS",
    "MOSTLY_EMPTY",
    "PLOT_NAME",
    "STRENGTH_FIELDS",
    "TRACE_NAME",
    "AnswerLogLikelihood",
    "ChoiceAccuracy",
    "Evaluation",
    "FluencyPenalty",
    "GenerationRougeL",
    "GuardObjective",
    "Metric",
    "ScoredItem",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "check_target",
    "degenerate",
    "make_metric",
    "make_optimizer",
    "measure_target",
    "optimize_guard",
    "plot_trace",
    "read_trace",
    "search",
    "strength_of",
]
