"""Which positions of which rows a flagged request gets corrupted: the plan the hooks apply.

Scope ``prompt``: every prompt token but the last. Scope ``spans``: the tokens of the forget-target names the
classifier found, mapped through the offsets of the very token ids the model receives; a flagged row where no name
is found is marked ``fallback`` (the whole prompt, with ``GuardConfig.fallback_corruption``). Scope ``image``: the
row's projected image features. Image tokens are never in a text mask: their embeddings are replaced by image
features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from eco_guard.config import GuardConfig
from eco_guard.encoding import EncodedBatch, Encoder
from eco_guard.requests import Flag

logger = logging.getLogger(__name__)


@dataclass
class RowPlan:
    """Corrupt ``mask`` (bool over a segment) of padded row ``row`` starting at column ``start``; ``ids`` are the
    segment's token ids (what a surrogate name replaces).

    With a shared prefix already in the KV cache, the first ``cached`` tokens of the segment are not in the
    embeddings the hook sees (``start`` is where token ``cached`` sits): ``head`` holds their embeddings, so the
    corruption is drawn over the whole segment exactly as without the cache."""

    row: int
    start: int
    mask: torch.Tensor
    ids: torch.Tensor | None = None
    cached: int = 0
    head: torch.Tensor | None = None
    fallback: bool = False
    """Scope ``spans`` found no name in this row: ``config.fallback_corruption`` covers its whole prompt."""


@dataclass
class CorruptionPlan:
    text_rows: list[RowPlan]
    image_indices: list[int]
    batch_shape: tuple[int, int]

    def __bool__(self) -> bool:
        return bool(self.text_rows or self.image_indices)


def plan(
    encoder: Encoder,
    config: GuardConfig,
    batch: EncodedBatch,
    decisions: Sequence[Flag],
    shape: Sequence[int],
    ends: Sequence[int] | None = None,
) -> CorruptionPlan:
    """Which positions of which padded rows to corrupt. ``ends[r]`` tokens (scored answers) follow the prompt.

    Scope ``spans`` with ``image``: a request with an image and no forget-target name in its text ("where does this
    person live?") gets its image corrupted and its words left alone, since the picture is what identifies the
    person; without ``image`` in scope, such a request gets the fallback over its whole prompt."""
    width = int(shape[1])
    scope = config.scope
    rows, images = [], []
    for r, flag in enumerate(decisions):
        if not flag.flagged:
            continue
        identity_in_image = "image" in scope and r in batch.image_rows and not flag.terms
        if "prompt" in scope or ("spans" in scope and not identity_in_image):
            ids = batch.ids[r]
            start = width - ids.numel() - (ends[r] if ends else 0)
            mask, found = text_mask(encoder, scope, batch.prompts[r], ids, flag.terms)
            rows.append(RowPlan(r, start, mask, ids, fallback=not found))
        if "image" in scope and r in batch.image_rows:
            images.append(batch.image_rows.index(r))
    fallback = sum(p.fallback for p in rows)
    if fallback:
        logger.warning(
            "%d flagged request(s) name no forget target that scope 'spans' can find: their whole prompt gets the "
            "fallback corruption %s (strength %g)",
            fallback,
            config.fallback_corruption,
            config.fallback_strength,
        )
    return CorruptionPlan(rows, images, (len(decisions), width))


def text_mask(
    encoder: Encoder, scope: Sequence[str], prompt: str, ids: torch.Tensor, terms: Sequence[str]
) -> tuple[torch.Tensor, bool]:
    """Bool mask over one unpadded prompt, and whether it is what the scope asked for (False: scope ``spans``
    found no name, and the mask is every prompt token but the last)."""
    base = torch.ones(ids.numel(), dtype=torch.bool)
    base[-1] = False
    if encoder.image_token_id is not None:
        base &= ids != encoder.image_token_id
    if "prompt" in scope:
        return base, True
    spans = term_mask(encoder, prompt, ids, terms) if terms else None
    if spans is None or not (spans & base).any():
        return base, False
    return spans & base, True


def term_mask(encoder: Encoder, prompt: str, ids: torch.Tensor, terms: Sequence[str]) -> torch.Tensor | None:
    """Tokens overlapping any occurrence of ``terms`` in ``prompt``, through the offsets of the very token ids the
    model receives (None if a fresh tokenization would not reproduce those ids)."""
    text = prompt
    if encoder.image_token_id is not None:
        n_image = int((ids == encoder.image_token_id).sum())
        image_token = encoder.image_token
        if n_image and text.count(image_token):
            text = text.replace(image_token, image_token * (n_image // text.count(image_token)))
    enc = encoder.tokenize(text, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids.tolist():
        logger.warning("span mask: re-tokenization does not match the model input; no name span is found")
        return None
    lowered = text.lower()
    spans = []
    for term in terms:
        t = term.lower().strip()
        start = lowered.find(t) if t else -1
        while start >= 0:
            spans.append((start, start + len(t)))
            start = lowered.find(t, start + 1)
    mask = torch.zeros(ids.numel(), dtype=torch.bool)
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        mask[k] = b > a and any(a < e and s < b for s, e in spans)
    return mask
