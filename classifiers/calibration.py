"""Split-conformal calibration of detector scores on held-out negatives.

Guarantee. Let ``s_1..s_n`` be the scores of ``n`` held-out negative requests (not about any forget target) and
``s`` the score of a new negative request. If the ``n + 1`` scores are exchangeable (for instance i.i.d.: the
calibration negatives come from the same distribution as future negatives, and the detector was not fitted on
them), the conformal p-value ``p(s) = (1 + #{i: s_i >= s}) / (n + 1)`` satisfies ``P(p(s) <= alpha) <= alpha`` for
every ``alpha``; flagging when ``p <= alpha`` therefore has a false-positive rate of at most ``alpha``, on average
over the draw of the calibration set. With ``k`` detectors, flagging when ``k * min p <= alpha`` keeps the combined
rate at most ``alpha`` (union bound, no independence needed).

What it does not promise: anything on negatives unlike the calibration ones (a different kind of prompt, another
image source), or on the false-negative rate, which is only measured (on held-out positives) and reported. The
smallest p-value is ``1 / (n + 1)``: reaching ``alpha`` with ``k`` detectors needs ``n >= k / alpha - 1``
negatives; with fewer, nothing can be flagged at that rate and :meth:`ConformalCalibrator.fit` says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


class ConformalCalibrator:
    """Conformal p-values of scores (higher score = more likely a forget-target request) against negatives."""

    def __init__(self, negative_scores: Sequence[float] | np.ndarray | None = None) -> None:
        self.negatives_ = None
        if negative_scores is not None:
            self.fit(negative_scores)

    def fit(self, negative_scores: Sequence[float] | np.ndarray) -> ConformalCalibrator:
        scores = np.asarray(negative_scores, dtype=np.float64).reshape(-1)
        if scores.size == 0:
            raise ValueError("conformal calibration needs at least one held-out negative score")
        if not np.isfinite(scores).all():
            raise ValueError("calibration scores must be finite")
        self.negatives_ = np.sort(scores)
        return self

    @property
    def n(self) -> int:
        self._check()
        return int(self.negatives_.size)

    def p_values(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(1 + #{negatives >= s}) / (n + 1)`` for each score."""
        self._check()
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        at_least = self.n - np.searchsorted(self.negatives_, s, side="left")
        return (1.0 + at_least) / (self.n + 1.0)

    def threshold(self, alpha: float) -> float:
        """The score ``t`` such that ``score > t`` is exactly ``p <= alpha`` (``inf`` when unreachable)."""
        self._check()
        allowed = math.floor(alpha * (self.n + 1) + 1e-9) - 1  # negatives allowed at or above the score
        if allowed < 0:
            return math.inf
        if allowed >= self.n:
            return -math.inf
        return float(self.negatives_[self.n - 1 - allowed])

    def _check(self) -> None:
        if self.negatives_ is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "this ConformalCalibrator has no negative scores yet; call fit(negative_scores)"
            )


def min_negatives(alpha: float, detectors: int = 1) -> int:
    """How many calibration negatives are needed before anything can be flagged at rate ``alpha``."""
    return max(1, math.ceil(detectors / alpha - 1 - 1e-9))


@dataclass(frozen=True)
class Rate:
    """An error rate with its count and an exact (Clopper-Pearson) 95% upper bound.

    The bound treats requests as independent. Many requests about one person are not: a look-alike has all their
    photos flagged at once. Given who each request is about (``owners``), the rate also counts the people with an
    error and bounds the share of such people, which bounds the rate itself for equally many requests per
    person when people, not requests, are independent."""

    errors: int
    total: int
    people_with_errors: int | None = None
    people: int | None = None

    @property
    def value(self) -> float | None:
        return self.errors / self.total if self.total else None

    @property
    def upper95(self) -> float | None:
        return _clopper_pearson_upper(self.errors, self.total)

    @property
    def people_upper95(self) -> float | None:
        if self.people is None:
            return None
        return _clopper_pearson_upper(self.people_with_errors, self.people)

    def to_dict(self) -> dict[str, float | int | None]:
        out = {"rate": self.value, "errors": self.errors, "n": self.total, "upper95": self.upper95}
        if self.people is not None:
            out.update(
                people_with_errors=self.people_with_errors,
                people=self.people,
                people_upper95=self.people_upper95,
            )
        return out


def _clopper_pearson_upper(errors: int, total: int) -> float | None:
    if not total:
        return None
    if errors == total:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(0.975, errors + 1, total - errors))


def _rate(errors: Sequence[bool], owners: Sequence[str] | None) -> Rate:
    if owners is None:
        return Rate(sum(errors), len(errors))
    if len(owners) != len(errors):
        raise ValueError(f"got {len(owners)} owners for {len(errors)} requests")
    wrong = {o for o, e in zip(owners, errors, strict=True) if e}
    return Rate(sum(errors), len(errors), len(wrong), len(set(owners)))


def false_negative_rate(flags: Sequence[bool], owners: Sequence[str] | None = None) -> Rate:
    """Share of positives (forget-target requests) that were not flagged; ``owners``: who each is about."""
    return _rate([not bool(f) for f in flags], owners)


def false_positive_rate(flags: Sequence[bool], owners: Sequence[str] | None = None) -> Rate:
    """Share of negatives that were flagged; ``owners``: who each is about."""
    return _rate([bool(f) for f in flags], owners)
