"""A small learned embedding on top of a frozen image encoder, trained to keep identity and drop the transforms.

The frozen encoder (the guarded MLLM's vision tower) was never taught that a cropped, rotated, recoloured or
re-encoded photo shows the same person. At fit time we know many people (the forget identities and everyone else)
and can transform their photos at will: a two-layer network trained to tell those people apart across random
transforms (a cosine-softmax classifier, as face-recognition heads are trained) gives an embedding in which views of
one person sit together. Only its arrays are kept (JSON + safetensors, no pickle); scoring runs in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

MLP_KEYS = ("mlp_w1", "mlp_b1", "mlp_w2", "mlp_b2")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside the block (None: left as they are), given back after. One
    thread makes a seeded fit bit-reproducible: with two, MKL's matrix products gave different weights from process
    to process for the same :func:`fit_invariant_mlp` fit (``MKL_CBWR=COMPATIBLE`` also makes them agree, more
    slowly; docs/classifier.md). torch's thread count is process-wide meanwhile."""
    import torch

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit_invariant_mlp(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    hidden: int = 1024,
    dim: int = 64,
    epochs: int = 80,
    max_steps: int = 1500,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    scale: float = 16.0,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, np.ndarray]:
    """Train ``relu(x W1 + b1) W2 + b2`` so that its unit outputs classify ``labels`` by cosine to one learned
    direction per class; ``features`` are standardized encoder outputs (one row per view), ``labels`` integers.
    ``epochs`` passes over the rows (200 to ``max_steps`` steps). Seeded, without touching torch's global random
    state.

    ``threads``: torch's CPU threads while training (:func:`torch_threads`; None: as they are). One makes the
    fit bit-reproducible (fits on two threads differ from process to process, and so do the photos they flag;
    docs/classifier.md) and takes longer."""
    import torch

    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"features [N, D] and labels [N] expected, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise ValueError("the embedding needs at least two classes to tell apart")
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(hidden, dim),
        )
        centres = torch.nn.Parameter(torch.randn(n_classes, dim) * 0.1)
        opt = torch.optim.AdamW([*net.parameters(), centres], lr=lr, weight_decay=weight_decay)
        steps = min(max_steps, max(200, math.ceil(epochs * len(x) / batch_size)))
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),))
            loss = cosine_softmax_loss(net(x[idx]), centres, y[idx], scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
    first, last = net[0], net[3]
    return {
        "mlp_w1": first.weight.detach().T.contiguous().numpy(),
        "mlp_b1": first.bias.detach().numpy(),
        "mlp_w2": last.weight.detach().T.contiguous().numpy(),
        "mlp_b2": last.bias.detach().numpy(),
    }


def cosine_softmax_loss(outputs: Any, centres: Any, labels: Any, scale: float, margin: float = 0.0) -> Any:
    """Cross-entropy of ``scale`` x the cosines between ``outputs`` and one learned direction per class (the
    training loss of this embedding and of :func:`classifiers.pixels.train_pixel_encoder`). ``margin`` is taken off
    each output's cosine to its own class first (CosFace): a class counts as learned only once its own cosine beats
    every other by that much."""
    import torch

    z = torch.nn.functional.normalize(outputs, dim=-1)
    cosines = z @ torch.nn.functional.normalize(centres, dim=-1).T
    if margin:
        cosines = cosines - margin * torch.nn.functional.one_hot(labels, cosines.shape[1])
    return torch.nn.functional.cross_entropy(scale * cosines, labels)


def apply_mlp(z: np.ndarray, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The learned embedding of standardized features ``z`` (not normalized)."""
    hidden = np.maximum(z @ arrays["mlp_w1"] + arrays["mlp_b1"], 0.0)
    return hidden @ arrays["mlp_w2"] + arrays["mlp_b2"]
