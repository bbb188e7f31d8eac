"""What goes to an engine that takes ``prompt_embeds`` (vLLM), one request at a time: an unflagged text request
as its token ids, exactly what an unguarded caller would send; a flagged request (and any request with an image,
whose features the engine's text-only model cannot compute) as input embeddings from the model's own table and
vision tower, corrupted by the shared request path's hooks with the same seed as on the transformers backend.
Used by :class:`~eco_guard.vllm_backend.GuardedLLM` and the OpenAI-compatible server.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import torch

from eco_guard.core import GuardCore
from eco_guard.requests import Flag, Request


@dataclass
class PreparedRequest:
    """What goes to the engine for one request: its token ids always, its (corrupted) embeddings when needed."""

    ids: torch.Tensor
    flag: Flag
    embeds: torch.Tensor | None = None
    renames: tuple[tuple[str, str], ...] = ()
    """Surrogate words to write back as the names they stand for (``substitute`` corruption)."""

    def engine_prompt(
        self, continuation: torch.Tensor | None = None, table: torch.nn.Embedding | None = None
    ) -> dict:
        """A token prompt, or a ``prompt_embeds`` prompt; a scored continuation follows as real tokens."""
        ids = self.ids if continuation is None else torch.cat([self.ids, continuation])
        if self.embeds is None:
            return {"prompt_token_ids": ids.tolist()}
        if continuation is None:
            return {"prompt_embeds": self.embeds}
        with torch.no_grad():
            tail = table(continuation).to(self.embeds.dtype)
        return {
            "prompt_embeds": torch.cat([self.embeds, tail]),
            "prompt_token_ids": ids.tolist(),
            "prompt_is_token_ids": [False] * self.ids.numel() + [True] * continuation.numel(),
        }

    def embeds_base64(self) -> str:
        """The embeddings as an OpenAI-style server takes ``prompt_embeds``: base64 of ``torch.save``."""
        buffer = io.BytesIO()
        torch.save(self.embeds.detach().cpu().contiguous(), buffer)
        return base64.b64encode(buffer.getvalue()).decode()


@torch.no_grad()
def prepare_request(
    guard: GuardCore, request: Request, flag: Flag, chat_template: bool | None, max_model_len: int
) -> PreparedRequest:
    """Encode one request; corrupt its embeddings when it is flagged. ValueError when it renders to no tokens or
    leaves no room for a new token in ``max_model_len``. ``guard.model`` is an
    :class:`~eco_guard.embedding_frontend.EmbeddingFrontEnd`."""
    batch = guard.encode([request], chat_template=chat_template)
    ids = batch.ids[0]
    if ids.numel() == 0:
        raise ValueError("empty prompt: it renders to no tokens")
    if ids.numel() >= max_model_len:
        raise ValueError(
            f"prompt has {ids.numel()} tokens; the engine's max_model_len is {max_model_len} "
            "(prompt plus at least one new token)"
        )
    if not flag.flagged and not batch.image_rows:
        return PreparedRequest(ids, flag)
    plan = guard.plan(batch, [flag], (1, ids.numel()))
    with guard.corrupting(plan):
        embeds = guard.model(ids[None], **batch.image_inputs)[0]
    renames = tuple(pair for p in plan.text_rows for pair in guard.renames(p))  # written back after the run
    return PreparedRequest(ids, flag, embeds.detach(), renames)
