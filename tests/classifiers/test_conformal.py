"""Split-conformal calibration: exact p-values, thresholds, and the false-positive guarantee in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from classifiers.calibration import ConformalCalibrator, false_negative_rate, min_negatives


def test_p_values_and_threshold_agree() -> None:
    cal = ConformalCalibrator([0.1, 0.2, 0.3, 0.4])
    assert cal.p_values([0.35, 0.4, 0.5, 0.0]).tolist() == [2 / 5, 2 / 5, 1 / 5, 1.0]
    rng = np.random.default_rng(0)
    cal = ConformalCalibrator(rng.normal(size=999))
    scores = rng.normal(size=5000) * 2
    for alpha in (0.01, 0.05, 0.2):
        t = cal.threshold(alpha)
        assert np.array_equal(scores > t, cal.p_values(scores) <= alpha)


def test_false_positive_guarantee_holds_on_fresh_negatives() -> None:
    rng = np.random.default_rng(1)
    alpha, rates = 0.05, []
    for _ in range(300):
        cal = ConformalCalibrator(rng.standard_t(3, size=99))
        rates.append(float((cal.p_values(rng.standard_t(3, size=200)) <= alpha).mean()))
    assert np.mean(rates) <= alpha + 0.005  # exact in expectation: (floor(alpha * 100)) / 100
    assert np.mean(rates) >= alpha - 0.015  # and not needlessly conservative


def test_too_few_negatives_flags_nothing() -> None:
    assert min_negatives(0.01) == 99 and min_negatives(0.01, 2) == 199
    cal = ConformalCalibrator(np.arange(50.0))
    assert cal.threshold(0.01) == math.inf
    assert (cal.p_values([1e9]) > 0.01).all()


def test_errors_and_rates() -> None:
    with pytest.raises(NotFittedError):
        ConformalCalibrator().p_values([0.5])
    with pytest.raises(ValueError, match="at least one"):
        ConformalCalibrator([])
    with pytest.raises(ValueError, match="finite"):
        ConformalCalibrator([0.1, float("nan")])
    rate = false_negative_rate([True, True, False, True])
    assert rate.value == 0.25 and rate.errors == 1 and 0.25 < rate.upper95 < 1
