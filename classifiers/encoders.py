"""Frozen text encoders: a Hugging Face encoder, mean pooled, reading prompts of any length in windows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


class SentenceEncoder:
    """Mean-pooled, L2-normalized sentence embeddings of a frozen Hugging Face encoder (default all-MiniLM-L6-v2).

    A prompt longer than ``window`` tokens is cut into windows of ``window`` tokens overlapping by ``overlap``, and
    every window is embedded: nothing after token 512 (or anywhere) is ever out of sight. Work proceeds in chunks of
    ``chunk_size`` texts, so a huge batch is never tokenized or embedded all at once.

    ``layers`` keeps only the encoder's first layers (None: all): the cost of a short prompt is nearly all in the
    layers, so a cut encoder embeds more prompts per second (measured in docs/results.md).
    """

    def __init__(
        self,
        name_or_path: str = "minilm",
        *,
        window: int = 128,
        overlap: int = 32,
        batch_size: int = 64,
        chunk_size: int = 1024,
        dtype: str = "auto",
        layers: int | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if not 0 <= overlap < window - 2:
            raise ValueError(f"overlap must be in [0, window - 2), got overlap={overlap}, window={window}")
        if batch_size < 1 or chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        from eco_guard.models import resolve_model_path

        self.name_or_path = str(name_or_path)
        self.window, self.overlap, self.batch_size, self.chunk_size, self.dtype = (
            window,
            overlap,
            batch_size,
            chunk_size,
            dtype,
        )
        path = resolve_model_path(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{name_or_path}: a fast tokenizer is needed to read long prompts in windows")
        self.model = AutoModel.from_pretrained(path, dtype=getattr(torch, resolve_dtype(dtype))).eval()
        limit = getattr(self.model.config, "max_position_embeddings", window)
        if window > limit:
            raise ValueError(f"window {window} exceeds the encoder's {limit} positions")
        self.dim = int(self.model.config.hidden_size)
        self.layers = layers
        if layers is not None:
            stack = getattr(getattr(self.model, "encoder", None), "layer", None)
            if (
                stack is None
                or isinstance(layers, bool)
                or not isinstance(layers, int)
                or not 1 <= layers <= len(stack)
            ):
                total = "?" if stack is None else len(stack)
                raise ValueError(
                    f"layers must be an integer in [1, {total}] for {name_or_path}, got {layers!r}"
                )
            self.model.encoder.layer = stack[:layers]

    def spec(self) -> dict[str, Any]:
        """What reloads this encoder (JSON)."""
        return {
            "name_or_path": self.name_or_path,
            "window": self.window,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "dtype": self.dtype,
            "layers": self.layers,
        }

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings [W, dim] float32, owner [W])``: one row per window, ``owner`` its text's index."""
        embeds, owners = [], []
        for lo, chunk in self._chunks(texts):
            e, o = self._encode_chunk(chunk)
            embeds.append(e)
            owners.append(o + lo)
        return np.concatenate(embeds), np.concatenate(owners)

    def iter_encode(self, texts: Sequence[str]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Chunk by chunk: ``(first text index, window embeddings, owners relative to the chunk)``."""
        for lo, chunk in self._chunks(texts):
            yield (lo, *self._encode_chunk(chunk))

    def _chunks(self, texts: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings; wrap a single text in [ ]")
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} must be a string, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"text {i} is empty")
        for lo in range(0, len(texts), self.chunk_size):
            yield lo, texts[lo : lo + self.chunk_size]

    def iter_encode_staged(
        self, texts: Sequence[str], exit_layer: int, keep: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Early exit, chunk by chunk: ``(first text index, early [W, dim], final [W, dim], continued [W], owner)``.

        Every window goes through the first ``exit_layer`` layers and is pooled (``early``); ``keep(early rows)``
        says which windows go on through the remaining layers from where they stopped (``final``; NaN rows for
        the others). Nothing is computed twice: a window that goes on costs what the plain encoder costs.
        """
        stack = self._stack()
        if (
            isinstance(exit_layer, bool)
            or not isinstance(exit_layer, int)
            or not 1 <= exit_layer < len(stack)
        ):
            raise ValueError(f"exit_layer must be an integer in [1, {len(stack) - 1}], got {exit_layer!r}")
        for lo, chunk in self._chunks(texts):
            yield (lo, *self._encode_chunk_staged(chunk, exit_layer, keep))

    def window_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of every window, in the order :meth:`encode` returns them."""
        return np.concatenate(
            [[len(x) for x in self._tokenize(chunk)[0]] for _, chunk in self._chunks(texts)]
        )

    def _stack(self) -> Any:
        stack = getattr(getattr(self.model, "encoder", None), "layer", None)
        if stack is None or not hasattr(self.model, "embeddings"):
            raise ValueError(
                f"{self.name_or_path}: early exit needs a BERT-style encoder (embeddings, encoder.layer)"
            )
        return stack

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.window,
            stride=self.overlap,
            return_overflowing_tokens=True,
        )
        return enc["input_ids"], np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """``(rows, input ids, attention mask)``, windows of similar length together (little padding)."""
        import torch

        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        for lo in range(0, len(ids), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            width = max(len(ids[r]) for r in rows)
            batch = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for k, r in enumerate(rows):
                batch[k, : len(ids[r])] = torch.tensor(ids[r])
                mask[k, : len(ids[r])] = 1
            yield rows, batch, mask

    def _encode_chunk(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        ids, owner = self._tokenize(texts)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for rows, batch, mask in self._batches(ids):
                out[rows] = _pool(self.model(input_ids=batch, attention_mask=mask).last_hidden_state, mask)
        return out, owner

    def _encode_chunk_staged(
        self, texts: list[str], exit_layer: int, keep: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        ids, owner = self._tokenize(texts)
        early = np.empty((len(ids), self.dim), dtype=np.float32)
        final = np.full((len(ids), self.dim), np.nan, dtype=np.float32)
        went_on = np.zeros(len(ids), dtype=bool)
        stack = self._stack()
        with torch.inference_mode():
            for rows, batch, mask in self._batches(ids):
                hidden = self.model.embeddings(input_ids=batch)
                attention = create_bidirectional_mask(
                    config=self.model.config, inputs_embeds=hidden, attention_mask=mask
                )
                hidden = _run_layers(stack[:exit_layer], hidden, attention)
                early[rows] = _pool(hidden, mask)
                go = np.asarray(keep(early[rows], mask.sum(1).numpy()), dtype=bool)
                if go.shape != (len(rows),):
                    raise ValueError(f"keep must return one bool per window, got shape {go.shape}")
                if not go.any():
                    continue
                sel = torch.from_numpy(np.flatnonzero(go))
                if attention is not None and attention.shape[0] == len(rows):
                    attention = attention[sel]
                hidden = _run_layers(stack[exit_layer:], hidden[sel], attention)
                final[rows[go]] = _pool(hidden, mask[sel])
                went_on[rows[go]] = True
        return early, final, went_on, owner


def _run_layers(layers: Any, hidden: Any, attention: Any) -> Any:
    for layer in layers:
        out = layer(hidden, attention)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _pool(hidden: Any, mask: Any) -> np.ndarray:
    """Mean over the unpadded tokens, L2-normalized, float32."""
    import torch

    weights = mask.unsqueeze(-1).float()
    pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 where the CPU computes it natively (AMX or AVX512-BF16, faster than float32), else
    float32 (emulated bfloat16 is slower); on a GPU, bfloat16. Speeds: docs/results.md."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    cpu = torch.cpu
    native = any(
        getattr(cpu, f, lambda: False)() for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    return "bfloat16" if native else "float32"


def max_by_owner(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per text, the maximum over its windows."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, values)
    return out
