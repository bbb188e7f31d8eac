"""Shrinkage linear discriminant analysis that stays cheap when features outnumber images.

An image encoder's pooled features are wide (a LLaVA CLIP tower read at three layers on a 4 x 4 grid: ~49,000
numbers), while a guard is fitted on a few hundred images. A textbook solver builds and factorizes the p x p
within-class covariance: O(p^2) memory and O(p^3) time (49,000 wide would need ~19 GB per covariance; fit times
against scikit-learn's ``eigen`` solver: ``make bench``, lda_fit, and docs/results.md).

The same answer lives in the span of the data. The within-class covariance is shrunk toward its own diagonal
(Ledoit-Wolf, on features scaled to unit within-class variance; shrinking toward a single ``mu I`` instead flagged
some of the demo's retain photos, this none: docs/classifier.md): in those scaled units ``C = (1 - a) S + a mu I``.
The between-class
scatter ``B`` lies in the span of the class-centred rows and the class means, and ``C`` maps that span onto
itself, so every solution of ``B v = l C v`` with ``l > 0`` lies in it: solving in an orthonormal basis ``Q`` of
the span (rank r <= n + classes) and mapping back gives exactly the full-space discriminants, normalized as
``V^T C V = I``. ``a`` comes from the n x n Gram matrix. Cost: O(n^2 p); with more rows than features the span
is the whole space and the p x p problem is solved directly (O(n p^2 + p^3)).
"""

from __future__ import annotations

import numpy as np


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit-Wolf's shrinkage of the empirical covariance of ``centred`` rows toward ``mu I``, from the n x n Gram
    matrix or the p x p scatter, whichever is smaller (the same estimate as
    ``sklearn.covariance.ledoit_wolf_shrinkage``)."""
    n, p = centred.shape
    sq_norms = (centred**2).sum(1)
    gram = centred @ centred.T if n <= p else centred.T @ centred  # the smaller one: same squared norm
    mu = sq_norms.sum() / (n * p)
    frob = float((gram**2).sum()) / n**2  # ||S||_F^2
    beta = (float((sq_norms**2).sum()) / n - frob) / (p * n)
    delta = (frob - 2 * mu * sq_norms.sum() / n + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if delta <= 0 else float(beta / delta)


def shrinkage_lda(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[p, classes - 1]`` discriminant directions of ``features`` (rows) for the labels ``groups``, strongest
    first; ``features @ result`` are the discriminant coordinates."""
    x = np.asarray(features, dtype=np.float64)
    classes, labels = np.unique(np.asarray(groups), return_inverse=True)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"features [N, D] and groups [N] expected, got {x.shape} and {len(labels)}")
    if len(classes) < 2:
        raise ValueError("discriminant analysis needs at least two groups")
    counts = np.bincount(labels).astype(np.float64)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, labels, x)
    means /= counts[:, None]
    within = x - means[labels]
    n, p = x.shape
    unit = within.std(0)
    unit[unit == 0] = 1.0  # constant features stay as they are (as scikit-learn's StandardScaler does)
    within, means = within / unit, means / unit
    shrink = max(ledoit_wolf_shrinkage(within), 1e-6)  # > 0 keeps C invertible on the class means' directions
    mu = float((within**2).sum()) / (n * p)
    priors = counts / n
    spread = (means - priors @ means) * np.sqrt(priors)[:, None]  # B = spread^T spread
    basis = None  # as many rows as features: the span is the whole space, solved as it is
    w, b = within, spread
    if n + len(classes) < p:
        _, sv, vt = np.linalg.svd(np.concatenate([within, spread]), full_matrices=False)
        basis = vt[sv > sv[0] * max(n, p) * np.finfo(np.float64).eps].T  # Q: [p, r]
        w, b = within @ basis, spread @ basis
    covariance = (1 - shrink) * (w.T @ w) / n + shrink * mu * np.eye(w.shape[1])
    # B v = l C v through C's Cholesky factor: the symmetric problem L^-1 B L^-T u = l u, v = L^-T u.
    chol = np.linalg.cholesky(covariance)
    half = np.linalg.solve(chol, b.T)  # L^-1 spread^T
    values, vectors = np.linalg.eigh(half @ half.T)
    order = np.argsort(values)[::-1][: len(classes) - 1]
    directions = np.linalg.solve(chol.T, vectors[:, order])
    if basis is not None:
        directions = basis @ directions
    return (directions / unit[:, None]).astype(np.float32)
