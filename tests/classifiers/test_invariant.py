"""The learned image embedding (``classifiers.invariant``): its seeded fit gives the same bytes in every process."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from classifiers.invariant import fit_invariant_mlp

FIT = """
import hashlib
import numpy as np
import torch
from classifiers.invariant import fit_invariant_mlp

torch.set_num_threads(2)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(540, 2048)).astype(np.float32), rng.integers(0, 20, 540)
arrays = fit_invariant_mlp(x, y, hidden=512, max_steps=200)
print(hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest())
"""


def test_the_fit_gives_the_same_bytes_in_every_process():
    """With two threads, MKL's products let this very fit end in two different weight sets over six processes on a
    2-core CPU; trained on one thread, every process (and this one, whatever its thread count) agrees."""
    runs = [
        subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    ]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(540, 2048)).astype(np.float32), rng.integers(0, 20, 540)
    threads = torch.get_num_threads()
    arrays = fit_invariant_mlp(x, y, hidden=512, max_steps=200)
    assert torch.get_num_threads() == threads  # given back
    here = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()
    assert runs == [here, here]
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        fit_invariant_mlp(x, y, threads=0)
