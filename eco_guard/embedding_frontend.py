"""The part of a model that runs before its decoder layers, loaded apart from the decoder.

A serving engine that accepts ``prompt_embeds`` runs the decoder; the guard builds the embeddings itself so that it
can corrupt them. For a text model that is the token-embedding table (read alone from the checkpoint's safetensors,
never the whole model); for a LLaVA-family model it is the table plus the vision tower and the projector, whose image
features replace the image-token embeddings exactly as ``LlavaModel`` does.

:class:`EmbeddingFrontEnd` looks like a model to :class:`~eco_guard.guard.EcoGuard` (``config``,
``get_input_embeddings()``, ``multi_modal_projector``), so the guard's own hooks corrupt its outputs: a request gets
the same corrupted embeddings whichever backend serves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Where checkpoints keep the token-embedding table (transformers 5 layout first, then older layouts).
EMBEDDING_KEYS = (
    "model.embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
    "language_model.model.embed_tokens.weight",
    "transformer.wte.weight",
    "embed_tokens.weight",
)


class EmbeddingFrontEnd(nn.Module):
    """Token embeddings (and, for LLaVA, projected image features merged at the image-token positions)."""

    def __init__(
        self,
        config: Any,
        embed_tokens: nn.Embedding,
        vision_tower: nn.Module | None = None,
        multi_modal_projector: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.vision_tower = vision_tower
        self.multi_modal_projector = multi_modal_projector
        if (vision_tower is None) != (multi_modal_projector is None):
            raise ValueError("a multimodal front end needs both a vision tower and a projector")

    @property
    def multimodal(self) -> bool:
        return self.vision_tower is not None

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        """``[B, L]`` ids (and the processor's ``pixel_values``) -> ``[B, L, D]`` input embeddings."""
        embeds = self.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        if not self.multimodal:
            raise ValueError("this front end has no vision tower; it cannot embed images")
        features = self.image_features(pixel_values).to(embeds.dtype)
        slots = input_ids == int(
            getattr(self.config, "image_token_id", None) or self.config.image_token_index
        )
        if int(slots.sum()) != features.shape[0] * features.shape[1]:
            raise ValueError(
                f"image features and image tokens do not match: {int(slots.sum())} image tokens, "
                f"{features.shape[0]} image(s) of {features.shape[1]} features"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), features)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n_images, n_features, D]``: LLaVA's vision-layer selection, CLS drop ("default") and projection."""
        layer = self.config.vision_feature_layer
        hidden = self.vision_tower(
            pixel_values.to(self._vision_dtype()), output_hidden_states=True
        ).hidden_states
        layers = [layer] if isinstance(layer, int) else list(layer)
        selected = [hidden[i] for i in layers]
        if self.config.vision_feature_select_strategy == "default":
            selected = [h[:, 1:] for h in selected]
        return self.multi_modal_projector(torch.cat(selected, dim=-1))

    def _vision_dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    # ------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype = torch.float32) -> EmbeddingFrontEnd:
        """Load from a Hugging Face folder: only the embedding table of a text model; the vision tower, projector
        and table of a LLaVA model (``llava`` model type only, see :func:`check_llava`)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        if getattr(config, "vision_config", None) is not None:
            return cls.from_model(_load_llava(path, dtype))
        table = load_embedding_table(path).to(dtype)
        return cls(config, nn.Embedding.from_pretrained(table, freeze=True)).eval()

    @classmethod
    def from_model(cls, model: Any) -> EmbeddingFrontEnd:
        """Share the modules of a loaded Hugging Face model (no copy): its table, and its vision tower and projector
        when it is a LLaVA model."""
        config = model.config
        if getattr(config, "vision_config", None) is None:
            return cls(config, model.get_input_embeddings()).eval()
        check_llava(config)
        inner = getattr(model, "model", model)
        return cls(
            config, model.get_input_embeddings(), inner.vision_tower, inner.multi_modal_projector
        ).eval()


def check_llava(config: Any) -> None:
    """Raise ValueError unless the guard can build this multimodal model's embeddings outside the engine."""
    if config.model_type != "llava":
        raise ValueError(
            f"multimodal model type {config.model_type!r} is not supported by the vLLM backend; only 'llava' "
            "(vision features merged into the input embeddings, 1-D positions) is; see eco_guard.vllm_backend"
        )


def _load_llava(path: str | Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    check_llava(model.config)
    return model.eval()


def load_embedding_table(path: str | Path) -> torch.Tensor:
    """The ``[vocab, hidden]`` token-embedding weight, read alone from the folder's safetensors."""
    from safetensors import safe_open

    folder = Path(path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
    elif (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", framework="pt") as handle:
            weight_map = dict.fromkeys(handle.keys(), "model.safetensors")
    else:
        raise FileNotFoundError(
            f"{folder} has no model.safetensors (or index); the guard reads the table from it"
        )
    key = next((k for k in EMBEDDING_KEYS if k in weight_map), None)
    if key is None:
        raise ValueError(f"{folder}: no token-embedding weight among {EMBEDDING_KEYS}")
    with safe_open(folder / weight_map[key], framework="pt") as handle:
        return handle.get_tensor(key)


def export_language_model(model_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the language model of a LLaVA checkpoint as a text-only causal-LM folder an engine can serve.

    The default target is a cache folder keyed by the checkpoint's path and config, reused when present.
    """
    from transformers import AutoModelForCausalLM, AutoProcessor

    from eco_guard.models import cache_dir, save_once

    model_dir = Path(model_dir).resolve()
    if out_dir is None:
        stamp = hashlib.sha256(
            f"{model_dir}\n{(model_dir / 'config.json').read_text()}".encode()
        ).hexdigest()[:12]
        out_dir = cache_dir() / "language-models" / f"{model_dir.name}-{stamp}"
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    llava = _load_llava(model_dir, torch.float32)
    text = AutoModelForCausalLM.from_config(llava.config.text_config, dtype=torch.float32)
    text.model.load_state_dict(llava.model.language_model.state_dict())
    text.lm_head.load_state_dict(llava.lm_head.state_dict())
    text.generation_config = llava.generation_config
    save_once(out_dir, text, AutoProcessor.from_pretrained(model_dir).tokenizer)
    logger.info("exported the language model of %s to %s", model_dir, out_dir)
    return out_dir
