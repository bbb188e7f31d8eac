"""Apply a corruption plan inside the model's forward pass, for one call and one thread only.

A forward hook on the input-embedding module (and, for LLaVA-family models, on the multimodal projector) corrupts
the planned rows at the next prefill of the thread that registered it, once (cached decode steps are never
touched), and is removed on exit, also on error. Concurrent calls on one model never see each other's hooks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from eco_guard.config import GuardConfig
from eco_guard.corruption import USES_TARGET, apply_corruption
from eco_guard.planning import CorruptionPlan, RowPlan


@contextlib.contextmanager
def corrupting(
    embeddings: torch.nn.Module,
    projector: torch.nn.Module | None,
    plan: CorruptionPlan,
    corrupt_rows: Callable[[torch.Tensor, Sequence[RowPlan]], torch.Tensor],
    corrupt_images: Callable[[torch.Tensor, Sequence[int]], torch.Tensor],
) -> Iterator[None]:
    """Hooks that apply ``plan`` at the next prefill of this thread, removed on exit (also on error)."""
    if not plan:
        yield
        return
    owner = threading.get_ident()
    handles = []
    try:
        if plan.text_rows:
            handles.append(
                embeddings.register_forward_hook(
                    _once(
                        owner,
                        lambda out: tuple(out.shape[:2]) == plan.batch_shape,
                        lambda out: corrupt_rows(out, plan.text_rows),
                    )
                )
            )
        if plan.image_indices:
            if projector is None:
                raise RuntimeError("the model has no multimodal projector to hook")
            handles.append(
                projector.register_forward_hook(
                    _once(
                        owner,
                        lambda out: True,
                        lambda out: corrupt_images(out, plan.image_indices),
                    )
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def _once(owner: int, applies: Callable[[Any], bool], corrupt: Callable[[Any], Any]) -> Callable:
    """A forward hook that replaces the output once, in thread ``owner``, when ``applies`` to it."""
    state = {"done": False}

    def hook(module: Any, args: Any, output: Any) -> Any:
        if state["done"] or threading.get_ident() != owner or not applies(output):
            return None
        state["done"] = True
        return corrupt(output)

    return hook


def corrupt_rows(
    embeds: torch.Tensor,
    rows: Sequence[RowPlan],
    config: GuardConfig,
    surrogate_embeds: Callable[[RowPlan], torch.Tensor],
) -> torch.Tensor:
    """``embeds`` with each row plan's masked tokens corrupted, drawn over the row's whole segment (its cached
    head included) from ``config.seed``; a ``fallback`` row gets ``config.fallback_corruption``."""
    out = embeds.clone()
    for p in rows:
        stop = p.start + p.mask.numel() - p.cached
        segment = embeds[p.row : p.row + 1, p.start : stop]
        if p.cached:
            segment = torch.cat([p.head.to(segment.dtype), segment], dim=1)
        name, params = config.corruption, config.params
        if p.fallback:
            name, params = config.fallback_corruption, config.fallback_params
        elif USES_TARGET[name]:
            params = replace(params, target=surrogate_embeds(p)[None])
        out[p.row, p.start : stop] = apply_corruption(name, segment, p.mask[None], params, config.seed)[
            0, p.cached :
        ]
    return out


def corrupt_images(
    features: torch.Tensor,
    indices: Sequence[int],
    config: GuardConfig,
    surrogate_face: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``features`` (the projector's output) with the images at ``indices`` corrupted by ``image_corruption``."""
    out = features.clone()
    for i in indices:
        feat = features[i : i + 1].reshape(1, -1, features.shape[-1])
        mask = torch.ones(feat.shape[:2], dtype=torch.bool)
        params = config.image_params
        if USES_TARGET[config.image_corruption_name]:
            params = replace(params, target=surrogate_face(feat))
        out[i] = apply_corruption(config.image_corruption_name, feat, mask, params, config.seed).reshape(
            features[i].shape
        )
    return out
