"""A tiny synthetic MLLMU-Bench for the fine-tuning and demo tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 fictitious profiles with 64 px portraits and 2 celebrities, seed 0."""
    from benchmarks.mllmu.synthetic import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("demo") / "data", n_profiles=4, n_celebrities=2, seed=0, image_size=64
    )
