"""A small convolutional identity encoder trained from pixels: an image encoder for ``ImageIdentityClassifier``.

The guarded MLLM's own vision tower is the default image encoder, but a small one (the demo's: two layers, four
patch tokens, taught 24 people) keeps little of what tells two new people apart: on 500 synthetic profiles its
features put some held-out people's photos closer to a forget person than that person's own transformed photos,
so the threshold lands among them. An encoder taught to tell thousands of people apart across crops, rotations,
colour jitter, flips, resizing and JPEG (as face-recognition models are for real photos) mostly leaves a wide gap
between the two (measured over many forget splits by ``benchmarks.mllmu.identity_splits``).
:func:`train_pixel_encoder` trains one on any pictures, one identity per picture (for the synthetic benchmark:
``python -m benchmarks.mllmu.portrait_encoder``, on portraits of people the benchmark never draws).
Weights are saved as safetensors with a JSON config, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.augment import transform
from classifiers.invariant import cosine_softmax_loss, torch_threads
from classifiers.persistence import ClassifierFileError, load_arrays, save_arrays

WEIGHTS, CONFIG = "pixel_encoder.safetensors", "pixel_encoder.json"
SCALE, MARGIN = 30.0, 0.35
"""The training loss's cosine scale and margin (CosFace). Without a margin a person counts as learned as soon as
their own direction wins, and look-alikes (the same background hue, skin and hair; another pattern and emblem)
stay close. With the margin fewer random forget splits break the error goals, and a larger one did no better
(``python -m benchmarks.mllmu.identity_splits``; measured in docs/classifier.md)."""


def _resized(images: Sequence[Any], side: int) -> np.ndarray:
    """``[N, 3, side, side]`` RGB pixels in [0, 1]."""
    pixels = [np.asarray(img.convert("RGB").resize((side, side)), dtype=np.float32) / 255.0 for img in images]
    return np.stack(pixels).transpose(0, 3, 1, 2)


def _network(width: int, dim: int) -> Any:
    """Four 3x3 convolution blocks (width, 2x, 4x, 8x channels; batch norm, ReLU), max-pooled between them, then
    global average pooling and a linear map to ``dim``."""
    import torch

    layers: list[Any] = []
    channels = 3
    for k in range(4):
        out = width * 2**k
        layers += [torch.nn.Conv2d(channels, out, 3, padding=1), torch.nn.BatchNorm2d(out), torch.nn.ReLU()]
        layers.append(torch.nn.MaxPool2d(2) if k < 3 else torch.nn.AdaptiveAvgPool2d(1))
        channels = out
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(channels, dim))


class PixelEncoder:
    """``encode(images) -> [N, dim]`` unit vectors: RGB images shrunk to ``side`` x ``side`` pixels, standardized per
    channel, through the network of :func:`_network`."""

    identity_embedding = True
    """Its outputs already tell people apart: an identity classifier compares them as they are (no metric fitted
    on top, see ``classifiers.image.METRICS``)."""

    def __init__(
        self,
        net: Any,
        *,
        side: int,
        width: int,
        dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 256,
    ) -> None:
        self.net = net.eval()
        self.side, self.width, self.dim, self.batch_size = int(side), int(width), int(dim), int(batch_size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)

    def pixels(self, images: Sequence[Any]) -> np.ndarray:
        """``[N, 3, side, side]`` standardized pixels."""
        return (_resized(images, self.side) - self.mean) / self.std

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        if not len(images):
            raise ValueError("no images to encode")
        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), self.batch_size):
                z = self.net(torch.from_numpy(self.pixels(images[lo : lo + self.batch_size])))
                out.append(torch.nn.functional.normalize(z, dim=-1).numpy())
        return np.concatenate(out)

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Weights and config into ``folder``; returns the spec ``ImageIdentityClassifier`` files keep."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        save_arrays(folder / WEIGHTS, state)
        spec = {
            "kind": "pixel_cnn",
            "side": self.side,
            "width": self.width,
            "dim": self.dim,
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
            "batch_size": self.batch_size,
        }
        (folder / CONFIG).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        return spec

    @classmethod
    def load(cls, folder: str | Path, spec: dict[str, Any] | None = None) -> PixelEncoder:
        """From a folder written by :meth:`save` (``spec``: its config, read from the folder when None)."""
        import torch

        folder = Path(folder)
        if spec is None:
            if not (folder / CONFIG).is_file():
                raise ClassifierFileError(f"{folder}: no {CONFIG}; not a pixel encoder folder")
            spec = json.loads((folder / CONFIG).read_text())
        if spec.get("kind") != "pixel_cnn":
            raise ClassifierFileError(f"{folder}: not a pixel encoder (kind {spec.get('kind')!r})")
        net = _network(spec["width"], spec["dim"])
        arrays = load_arrays(folder / WEIGHTS)
        try:
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        except RuntimeError as error:
            raise ClassifierFileError(
                f"{folder / WEIGHTS}: weights do not fit the configured network"
            ) from error
        return cls(
            net,
            side=spec["side"],
            width=spec["width"],
            dim=spec["dim"],
            mean=spec["mean"],
            std=spec["std"],
            batch_size=spec.get("batch_size", 256),
        )


def train_pixel_encoder(
    images: Sequence[Any],
    *,
    views: int = 10,
    steps: int = 3000,
    width: int = 24,
    dim: int = 128,
    side: int = 48,
    batch_size: int = 128,
    lr: float = 3e-3,
    scale: float = SCALE,
    margin: float = MARGIN,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
    log: list[dict[str, float]] | None = None,
) -> PixelEncoder:
    """Teach a :class:`PixelEncoder` to tell ``images`` apart, each its own identity, across ``views`` random
    transforms of each (:func:`classifiers.augment.transform`, plus a random flip per step): a cosine-softmax
    classifier with one learned direction per identity and a ``margin`` (``MARGIN``), trained ``steps`` steps
    (one-cycle learning rate). Seeded; on ``threads`` threads (1: the same bytes in every process, see
    :func:`classifiers.invariant.torch_threads`; None: the process's setting);
    ``log`` (when given) receives the loss every 100 steps."""
    import torch
    from tqdm.auto import tqdm

    if len(images) < 2:
        raise ValueError("the encoder needs at least two identities to tell apart")
    if views < 0 or steps < 1:
        raise ValueError(f"views must be >= 0 and steps >= 1, got {views} and {steps}")
    rng = np.random.default_rng(seed)
    bank = [[img, *(transform(img, rng) for _ in range(views))] for img in images]
    x = torch.from_numpy(np.concatenate([_resized(group, side) for group in bank]))
    y = torch.arange(len(images)).repeat_interleave(views + 1)
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3)) + 1e-6
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _network(width, dim)
        centres = torch.nn.Parameter(torch.randn(len(images), dim) * 0.1)
        opt = torch.optim.AdamW([*net.parameters(), centres], lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
        net.train()
        for step in tqdm(range(steps), desc="pixel encoder", disable=not progress):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),))
            batch = x[idx]
            flip = torch.rand(len(batch)) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = cosine_softmax_loss(net(batch), centres, y[idx], scale, margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            if log is not None and (step % 100 == 0 or step == steps - 1):
                log.append({"step": step, "loss": float(loss.detach())})
    return PixelEncoder(net, side=side, width=width, dim=dim, mean=mean.tolist(), std=std.tolist())
