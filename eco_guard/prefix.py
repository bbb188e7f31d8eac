"""A shared prompt prefix computed once: the tokens every prompt of a batch starts with (few-shot examples, a
system prompt) run through the model once and their KV cache is reused for every row.

The shared part stops before any image token (image features differ per row) and any corrupted token, and leaves
every row at least one token of its own; the corruption is still drawn over each row's whole prompt (the plan
carries the prefix's embeddings as its ``head``), so the answers are the same as without the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from eco_guard.encoding import EncodedBatch
from eco_guard.planning import CorruptionPlan

MIN_SHARED_PREFIX = 16
"""Shorter shared prefixes are computed with the rest: one more forward pass would cost more than it saves."""


def supports_sharing(model: Any) -> bool:
    """Whether a prefix computed once can continue with middle padding: full-attention layers in a plain KV cache
    and positions counted along the attention mask (not M-RoPE's image grid)."""
    if not getattr(type(model), "_supports_default_dynamic_cache", lambda: False)():
        return False
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if any(kind != "full_attention" for kind in getattr(text, "layer_types", None) or ()):
        return False
    if any(hasattr(m, "get_rope_index") for m in (model, getattr(model, "model", None))):
        return False  # Qwen2-VL and kin place positions on the image grid
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    return not (isinstance(rope, Mapping) and "mrope_section" in rope)


def may_share(generate_kwargs: Mapping[str, Any]) -> bool:
    """Whether this ``generate`` call leaves room for a cache of ours (no cache given, greedy or sampled, one
    sequence per prompt)."""
    return (
        "past_key_values" not in generate_kwargs
        and generate_kwargs.get("num_beams", 1) == 1
        and generate_kwargs.get("num_return_sequences", 1) == 1
    )


def shared_length(batch: EncodedBatch, plan: CorruptionPlan, image_token_id: int | None) -> int:
    """How many leading tokens every prompt of ``batch`` shares and the KV cache may compute once (0: not worth
    it)."""
    if len(batch.ids) < 2:
        return 0
    first = batch.ids[0]
    shared = min(r.numel() for r in batch.ids) - 1
    for row in batch.ids[1:]:
        same = (row[:shared] == first[:shared]).long().cumprod(0)
        shared = int(same.sum())
    if image_token_id is not None:
        images = (first[:shared] == image_token_id).nonzero()
        shared = int(images[0]) if len(images) else shared
    for p in plan.text_rows:
        touched = p.mask[:shared].nonzero()
        shared = int(touched[0]) if len(touched) else shared
    return shared if shared >= MIN_SHARED_PREFIX else 0


@torch.no_grad()
def run_prefix(
    model: Any,
    batch: EncodedBatch,
    plan: CorruptionPlan,
    shared: int,
    collate: Callable[[Sequence[torch.Tensor]], dict[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], CorruptionPlan, Any]:
    """Run the shared prefix once; return the full inputs (prefix, padding, then each row's own tokens), the
    plan moved to the rows' own tokens (the only embeddings the next prefill computes) and the cache."""
    from transformers import DynamicCache

    prefix = batch.ids[0][:shared][None].to(model.device)
    captured: list[torch.Tensor] = []
    owner = threading.get_ident()

    def capture(module: Any, args: Any, output: torch.Tensor) -> None:
        if threading.get_ident() == owner:  # another thread's forward on this model is not ours
            captured.append(output.detach())

    handle = model.get_input_embeddings().register_forward_hook(capture) if plan.text_rows else None
    cache = DynamicCache()
    try:
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
    finally:
        if handle is not None:
            handle.remove()
    cache.batch_repeat_interleave(len(batch.ids))
    own = [r[shared:] for r in batch.ids]
    width = max(r.numel() for r in own)
    tail = collate(own)
    inputs = {
        "input_ids": torch.cat([prefix.expand(len(own), -1), tail["input_ids"]], dim=1),
        "attention_mask": torch.cat(
            [torch.ones_like(prefix).expand(len(own), -1), tail["attention_mask"]], dim=1
        ),
    }
    head = captured[0] if captured else None
    rows = [
        replace(p, start=width - (p.mask.numel() - shared), cached=shared, head=head) for p in plan.text_rows
    ]
    return inputs, CorruptionPlan(rows, plan.image_indices, (len(own), width)), cache
