"""Image-identity LDA fit time: the span solver (``classifiers.discriminant``) vs scikit-learn's ``eigen`` LDA on
the same rows, as the feature width grows (the guard fits a few hundred images; a LLaVA CLIP-L tower read at three
layers on a 4 x 4 grid gives ~49,000 features, where a p x p covariance needs ~19 GB)."""

from __future__ import annotations

import time

import numpy as np

ROWS, GROUPS = 600, 60
WIDTHS = (1_000, 2_000, 4_000)
"""scikit-learn is measured on these widths only (its time is cubic in the width: docs/results.md); the span solver
also runs at ``WIDE``."""
WIDE = 49_584


def _rows(width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(GROUPS), ROWS // GROUPS)
    x = rng.normal(size=(ROWS, width)) + 0.3 * rng.normal(size=(GROUPS, width))[groups]
    return x, groups


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from classifiers.discriminant import shrinkage_lda

    print(f"{ROWS} rows, {GROUPS} groups")
    print(f"{'features':>9} {'span LDA s':>11} {'sklearn eigen s':>16} {'ratio':>7}")
    for width in WIDTHS:
        x, groups = _rows(width)
        ours = _seconds(lambda: shrinkage_lda(x, groups))  # noqa: B023
        theirs = _seconds(lambda: LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(x, groups))  # noqa: B023
        print(f"{width:>9,} {ours:>11.2f} {theirs:>16.2f} {theirs / ours:>6.0f}x", flush=True)
    x, groups = _rows(WIDE)
    ours = _seconds(lambda: shrinkage_lda(x, groups))
    print(f"{WIDE:>9,} {ours:>11.2f} {'(p x p: ~19 GB)':>16}", flush=True)


if __name__ == "__main__":
    main()
