"""Shrinkage LDA solved in the span of the data equals the full-space solution, and stays cheap when wide."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

from classifiers.discriminant import ledoit_wolf_shrinkage, shrinkage_lda


def _problem(n: int, p: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, classes, size=n)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p)
    x[:, :3] += groups[:, None]  # the groups differ along three directions
    return x, groups


def _full_space(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The textbook solution: B v = l C v with the p x p pooled covariance C shrunk toward its diagonal."""
    labels = np.unique(groups, return_inverse=True)[1]
    n, p = x.shape
    means = np.stack([x[labels == k].mean(0) for k in range(labels.max() + 1)])
    unit = (x - means[labels]).std(0)
    x, means = x / unit, means / unit
    within = x - means[labels]
    shrink = sklearn_shrinkage(within, assume_centered=True)
    scatter = within.T @ within / n
    cov = (1 - shrink) * scatter + shrink * np.trace(scatter) / p * np.eye(p)
    priors = np.bincount(labels) / n
    spread = (means - priors @ means) * np.sqrt(priors)[:, None]
    _, vectors = scipy.linalg.eigh(spread.T @ spread, cov)
    return vectors[:, ::-1][:, : len(means) - 1] / unit[:, None]


@pytest.mark.parametrize(("n", "p"), [(200, 40), (60, 300)])
def test_equals_the_full_space_solution(n: int, p: int) -> None:
    x, groups = _problem(n, p, classes=6, seed=n)
    within = x - np.stack([x[groups == g].mean(0) for g in groups])
    assert ledoit_wolf_shrinkage(within) == pytest.approx(
        sklearn_shrinkage(within, assume_centered=True), rel=1e-9
    )
    ours, reference = x @ shrinkage_lda(x, groups), x @ _full_space(x, groups)
    assert ours.shape == (n, 5)
    # eigenvectors are defined up to sign
    np.testing.assert_allclose(np.abs(ours), np.abs(reference), rtol=1e-3, atol=1e-3)


def test_wide_features_separate_held_out_rows_without_a_p_by_p_matrix() -> None:
    """30,000 features, 90 rows (a p x p covariance would take 7 GB): the groups differ a little along 2,000
    features, as identities do in an image tower's pooled features; nearest group centre in the discriminant
    space recovers held-out rows' groups (chance: 1/3)."""
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 3, size=120)
    x = rng.normal(size=(120, 30_000)) * rng.uniform(0.5, 2.0, size=30_000)
    x[:, :2000] += 0.3 * groups[:, None]
    z = x @ shrinkage_lda(x[:90], groups[:90])
    centres = np.stack([z[:90][groups[:90] == g].mean(0) for g in range(3)])
    nearest = np.argmin(((z[90:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == groups[90:]).mean() >= 0.75


def test_errors() -> None:
    x, groups = _problem(20, 5, classes=2, seed=0)
    with pytest.raises(ValueError, match="at least two groups"):
        shrinkage_lda(x, np.zeros(20))
    with pytest.raises(ValueError, match="groups \\[N\\] expected"):
        shrinkage_lda(x, groups[:10])
