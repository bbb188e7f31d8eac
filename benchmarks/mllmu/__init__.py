"""MLLMU-Bench: loader (local hub-layout folder or hub id), synthetic profiles, reference-protocol evaluation.

``load_config(root, "forget_5")`` reads a config; ``write_synthetic(root)`` writes a synthetic benchmark in the same
schema; ``benchmarks.mllmu.evaluate.evaluate(runner, root)`` scores a (guarded) model on it.
"""

from __future__ import annotations

from benchmarks.mllmu.loader import (
    CONFIGS,
    FORGET_SPLITS,
    RETAIN_SPLITS,
    DataFormatError,
    load_config,
    retain_split,
    split_people,
)

__all__ = [
    "CONFIGS",
    "FORGET_SPLITS",
    "RETAIN_SPLITS",
    "DataFormatError",
    "load_config",
    "retain_split",
    "split_people",
    "write_synthetic",
]


def write_synthetic(*args, **kwargs):
    """See :func:`benchmarks.mllmu.synthetic.write_synthetic` (imported lazily: it needs PIL and pyarrow)."""
    from benchmarks.mllmu.synthetic import write_synthetic as _write

    return _write(*args, **kwargs)
