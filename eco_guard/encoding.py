"""Requests -> the exact token ids (and image tensors) the model reads: render, tokenize, left-pad.

Each request is tokenized on its own, unpadded, so its corruption is drawn on its own segment: the same request
gets the same corrupted embeddings in a batch, alone, or on the vLLM backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from eco_guard.requests import Request


@dataclass
class EncodedBatch:
    """Tokenized requests: unpadded ids per row, the rendered prompt, and the image tensors of rows with images."""

    ids: list[torch.Tensor]
    prompts: list[str]
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    image_rows: list[int] = field(default_factory=list)


class Encoder:
    """Renders and tokenizes requests for one model and its tokenizer or processor."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_token_id = image_token_id(model.config) if is_multimodal(model) else None
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = self.tokenizer.eos_token_id if pad is None else pad

    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", "<image>")

    def render(self, request: Request, chat_template: bool | None = None) -> str:
        """The exact prompt string the model reads. ``chat_template=None`` applies the tokenizer's template when
        it has one (plain text becomes one user turn); ``False`` sends the text as written."""
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        if request.text is not None and (chat_template is False or (chat_template is None and not template)):
            text = request.text
            if request.image is not None and self.image_token not in text:
                text = f"{self.image_token}\n{text}"
            return text
        messages = [dict(m) for m in request.messages] or [{"role": "user", "content": request.text}]
        if request.image is not None and not any(self.image_token in m["content"] for m in messages):
            first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[first_user]["content"] = f"{self.image_token}\n{messages[first_user]['content']}"
        if template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role'].upper()}: {m['content']}\n" for m in messages) + "ASSISTANT:"

    def encode(self, requests: Sequence[Request], *, chat_template: bool | None = None) -> EncodedBatch:
        """Render and tokenize each request on its own (no padding); images through the processor."""
        prompts = [self.render(r, chat_template) for r in requests]
        image_rows = [i for i, r in enumerate(requests) if r.image is not None]
        if not image_rows:
            ids = [self.tokenize(p)["input_ids"] for p in prompts]
            return EncodedBatch(ids=[torch.tensor(x, dtype=torch.long) for x in ids], prompts=prompts)
        images = []
        for i in image_rows:
            try:
                images.append(requests[i].load_image())
            except (OSError, ValueError) as err:
                raise type(err)(f"prompt {i}: {err}") from None
        processed = self.processor(
            text=prompts, images=images, padding=True, padding_side="left", return_tensors="pt"
        )
        mask = processed["attention_mask"].bool()
        ids = [processed["input_ids"][r][mask[r]] for r in range(len(prompts))]
        image_inputs = {k: v for k, v in processed.items() if k not in ("input_ids", "attention_mask")}
        return EncodedBatch(ids=ids, prompts=prompts, image_inputs=image_inputs, image_rows=image_rows)

    def tokenize(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        """The tokenizer on a rendered prompt, adding a BOS only when the prompt does not start with one."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and prompt.startswith(bos))
        return self.tokenizer(prompt, add_special_tokens=add_special, **kwargs)

    def collate(self, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Left-pad rows into input_ids / attention_mask on the model's device."""
        width = max(r.numel() for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - r.numel() :] = r
            mask[i, width - r.numel() :] = 1
        device = self.model.device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def select_images(batch: EncodedBatch, request_rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """The image tensors for a list of request rows (repeats allowed), in row order."""
    picks = [batch.image_rows.index(i) for i in request_rows if i in batch.image_rows]
    if not picks:
        return {}
    index = torch.tensor(picks)
    return {k: v[index] for k, v in batch.image_inputs.items() if isinstance(v, torch.Tensor)}


def is_multimodal(model: Any) -> bool:
    return getattr(model.config, "vision_config", None) is not None


def image_token_id(config: Any) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None
