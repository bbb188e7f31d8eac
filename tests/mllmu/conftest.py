"""Tiny synthetic MLLMU-Bench sets, written once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """14 fictitious profiles (with portraits; forget_15 holds two) and 3 celebrities, seed 0."""
    from benchmarks.mllmu.synthetic import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("mllmu") / "synthetic", n_profiles=14, n_celebrities=3, seed=0
    )
