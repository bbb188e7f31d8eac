"""EcoGuard: corrupt the input embeddings of flagged requests, leave every other request exactly as it was.

The corruption is applied by a forward hook on the model's input-embedding module (and, for LLaVA-family models,
on the multimodal projector) that lives for one call only and acts only

* in the thread that registered it (concurrent calls on one model never see each other's hooks),
* once, at prefill (cached decode steps are never touched),
* on flagged rows, on the configured positions of the prompt, never on padding or answer tokens.

When nothing in a batch is flagged no hook is registered at all: unflagged traffic runs the unwrapped model.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from eco_guard.config import GuardConfig, GuardFileError
from eco_guard.corruption import USES_TARGET, apply_corruption
from eco_guard.requests import Flag, PromptClassifier, PromptLike, Request, to_request
from eco_guard.surrogates import Surrogates, restore

logger = logging.getLogger(__name__)

CLASSIFIER_DIR = "classifier"
IMAGE_SURROGATES = "image_surrogates.safetensors"
CLASSIFIER_META = "classifier.json"
TRUSTED_CLASSIFIER_MODULES = ("classifiers.",)
MIN_SHARED_PREFIX = 16
"""Shorter shared prefixes are computed with the rest: one more forward pass would cost more than it saves."""
_NO_SURROGATE_FACES = (
    "image_corruption 'substitute' moves image features toward a surrogate face, and this guard has none: pass "
    "image_surrogates (pictures of people the model never learned) or set another image_corruption"
)


@dataclass
class EncodedBatch:
    """Tokenized requests: unpadded ids per row, the rendered prompt, and the image tensors of rows with images."""

    ids: list[torch.Tensor]
    prompts: list[str]
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    image_rows: list[int] = field(default_factory=list)


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


@dataclass
class ScoringChunk:
    """One padded batch of scoring rows: model inputs, the corruption plan, and which logits score which tokens.

    ``targets`` holds (row, positions, token ids) per continuation; ``keep`` is how many final positions need logits;
    ``embeds`` are the clean input embeddings (None when images are merged inside the model's forward)."""

    inputs: dict[str, torch.Tensor]
    plan: CorruptionPlan
    targets: list[tuple[int, torch.Tensor, torch.Tensor]]
    keep: int
    embeds: torch.Tensor | None = None


@dataclass
class ScoringBatch:
    """Prepared (prompt, continuation) pairs; ``lengths[i]`` are the token counts of prompt i's continuations."""

    chunks: list[ScoringChunk]
    lengths: list[list[int]]


class EcoGuard:
    """Wrap a Hugging Face causal LM or image-text-to-text model; corrupt flagged requests' embeddings.

    Unknown attributes fall through to the wrapped model, so the guard can stand in for it.
    """

    def __init__(
        self,
        model: Any,
        tokenizer_or_processor: Any,
        classifier: PromptClassifier | None = None,
        config: GuardConfig | None = None,
        image_surrogates: Sequence[Any] | torch.Tensor | None = None,
        share_prefix: bool = True,
    ) -> None:
        """``image_surrogates``: pictures of people the model never learned (or their features from
        :meth:`image_features`), for ``image_corruption='substitute'``: a flagged request's image features move
        toward one of theirs, as names move toward a surrogate name.

        ``share_prefix``: :meth:`generate` computes the tokens every prompt of a batch starts with once and reuses
        their KV cache (few-shot benchmark prompts share most of their tokens: about half the time on two CPU
        cores). The answers are the same; the prefix stops before any image or corrupted token. Models whose
        positions do not simply count the attended tokens (M-RoPE), or whose layers keep another kind of cache
        (sliding windows, recurrent state), always run whole prompts."""
        if classifier is not None and not isinstance(classifier, PromptClassifier):
            raise TypeError("classifier must have a flag(requests) -> list[Flag] method")
        self.model = model
        self.processor = tokenizer_or_processor
        self.tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
        self.classifier = classifier
        self.config = config or GuardConfig()
        self.share_prefix = share_prefix and _positions_follow_the_mask(model)
        self.multimodal = getattr(model.config, "vision_config", None) is not None
        self.image_token_id = _image_token_id(model.config) if self.multimodal else None
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id
        self.projector = _find_projector(model) if self.multimodal else None
        self._surrogates: Surrogates | None = None
        self._surrogates_key: tuple | None = None
        self.image_surrogates: torch.Tensor | None = None
        if image_surrogates is not None:
            self.set_image_surrogates(image_surrogates)
        if self.multimodal and self._needs_image_surrogates() and self.image_surrogates is None:
            raise ValueError(_NO_SURROGATE_FACES)
        if USES_TARGET[self.config.corruption]:
            _ = self.surrogates  # surrogate words this tokenizer cannot use fail here, not at a request

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not yet set: avoid recursion during unpickling or early errors
            raise AttributeError(name)
        return getattr(self.model, name)

    # ------------------------------------------------------------ decisions

    def decide(
        self, requests: Sequence[Request], flags: Sequence[bool | Flag | None] | None = None
    ) -> list[Flag]:
        """One Flag per request: ``flags`` if given (they override the classifier; a None entry leaves that request
        to it), else the classifier's verdict (thresholded by ``config.threshold`` when set), else nothing is
        flagged. A request flagged by ``flags`` without names gets the names the classifier finds in it when scope
        ``spans`` needs them."""
        if flags is not None:
            if len(flags) != len(requests):
                raise ValueError(f"got {len(flags)} flags for {len(requests)} prompts")
            open_rows = [i for i, f in enumerate(flags) if f is None]
            verdicts = dict(
                zip(open_rows, self.decide([requests[i] for i in open_rows]) if open_rows else [])
            )
            decided = [verdicts[i] if f is None else _as_flag(f) for i, f in enumerate(flags)]
            unnamed = [
                i
                for i, f in enumerate(flags)
                if f is not None and decided[i].flagged and not decided[i].terms
            ]
            return self._with_names(requests, decided, unnamed)
        if self.classifier is None:
            return [Flag(False) for _ in requests]
        verdicts = list(self.classifier.flag(requests))
        if len(verdicts) != len(requests):
            raise RuntimeError(f"classifier returned {len(verdicts)} flags for {len(requests)} requests")
        if self.config.threshold is None:
            return verdicts
        return [Flag(v.score >= self.config.threshold, v.score, v.source, v.terms) for v in verdicts]

    def _with_names(
        self, requests: Sequence[Request], decided: list[Flag], rows: Sequence[int]
    ) -> list[Flag]:
        """``decided`` with the names the classifier finds in ``rows`` (when scope ``spans`` reads names): its
        ``names`` method when it has one (:class:`~eco_guard.requests.NameFinder`), else its flags' terms."""
        if not rows or self.classifier is None or "spans" not in self.config.scope:
            return decided
        subset = [requests[i] for i in rows]
        finder = getattr(self.classifier, "names", None)
        found = list(finder(subset)) if callable(finder) else [v.terms for v in self.classifier.flag(subset)]
        if len(found) != len(subset):
            raise RuntimeError(f"classifier found names for {len(found)} of {len(subset)} requests")
        for i, names in zip(rows, found, strict=True):
            decided[i] = replace(decided[i], terms=tuple(names))
        return decided

    # ------------------------------------------------------------ public calls

    def generate(
        self,
        prompts: Sequence[PromptLike],
        flags: Sequence[bool | Flag] | None = None,
        *,
        chat_template: bool | None = None,
        batch_size: int | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Generate an answer per prompt (greedy, 64 new tokens unless told otherwise); flagged prompts corrupted.

        ``chat_template=None`` applies the tokenizer's chat template when it has one (plain text becomes one user
        turn); ``False`` sends the text as written (benchmark prompts with their own format).
        """
        requests = self._requests(prompts)
        decisions = self.decide(requests, flags)
        kwargs = {
            "max_new_tokens": 64,
            "do_sample": False,
            "pad_token_id": self.pad_token_id,
            **generate_kwargs,
        }
        answers: list[str] = []
        for lo, hi in _chunks(len(requests), batch_size):
            batch = self.encode(requests[lo:hi], chat_template=chat_template)
            inputs = self._collate(batch.ids)
            plan = self.plan(batch, decisions[lo:hi], inputs["input_ids"].shape)
            shared = self.shared_prefix(batch, plan) if self._may_share(kwargs) else 0
            if shared:
                inputs, plan, cache = self._after_prefix(batch, plan, shared)
                kwargs_now = {**kwargs, "past_key_values": cache}
            else:
                kwargs_now = kwargs
            inputs.update(batch.image_inputs)
            with self.corrupting(plan):
                out = self.model.generate(**inputs, **kwargs_now)
            width = inputs["input_ids"].shape[1]
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for p in plan.text_rows:
                texts[p.row] = restore(texts[p.row], self.renames(p))
            answers += texts
        return answers

    def score(
        self,
        prompts: Sequence[PromptLike],
        continuations: Sequence[Sequence[str]],
        flags: Sequence[bool | Flag] | None = None,
        *,
        chat_template: bool | None = None,
        batch_size: int | None = 16,
    ) -> list[list[float]]:
        """Sum of log-probabilities of each candidate continuation given its prompt (e.g. option letters).

        Only prompt tokens are ever corrupted; the continuation is scored as the model reads it.
        """
        batch = self.prepare_scoring(
            prompts, continuations, flags, chat_template=chat_template, batch_size=batch_size
        )
        return self.score_prepared(batch)

    @torch.no_grad()
    def prepare_scoring(
        self,
        prompts: Sequence[PromptLike],
        continuations: Sequence[Sequence[str]],
        flags: Sequence[bool | Flag] | None = None,
        *,
        chat_template: bool | None = None,
        batch_size: int | None = 16,
    ) -> ScoringBatch:
        """Tokenize, pad, plan and embed (prompt, continuation) pairs once, to score them under many corruption
        settings with :meth:`score_prepared` (the plan depends on ``config.scope``, not on the corruption itself).

        A prompt whose continuations are all single tokens is read in one row: every option's log-probability
        comes from the logits after the prompt.
        """
        requests = self._requests(prompts)
        if len(continuations) != len(requests):
            raise ValueError(f"got {len(continuations)} continuation lists for {len(requests)} prompts")
        decisions = self.decide(requests, flags)
        encoded = self.encode(requests, chat_template=chat_template)
        rows: list[tuple[int, torch.Tensor, list[torch.Tensor]]] = []  # (request, appended ids, scored ids)
        lengths = []
        for i, options in enumerate(continuations):
            if isinstance(options, str) or not options:
                raise ValueError(f"prompt {i} needs a non-empty list of continuations to score")
            conts = []
            for text in options:
                cont = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                if cont.numel() == 0:
                    raise ValueError(f"prompt {i}: empty continuation {text!r}")
                conts.append(cont)
            lengths.append([c.numel() for c in conts])
            if all(c.numel() == 1 for c in conts):
                rows.append((i, conts[0][:0], conts))
            else:
                rows += [(i, cont, [cont]) for cont in conts]
        chunks = []
        for lo, hi in _chunks(len(rows), batch_size):
            chunk = rows[lo:hi]
            inputs = self._collate([torch.cat([encoded.ids[i], appended]) for i, appended, _ in chunk])
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            width = inputs["input_ids"].shape[1]
            sub = EncodedBatch(
                ids=[encoded.ids[i] for i, _, _ in chunk],
                prompts=[encoded.prompts[i] for i, _, _ in chunk],
                image_inputs=_select_images(encoded, [i for i, _, _ in chunk]),
                image_rows=[r for r, (i, _, _) in enumerate(chunk) if i in encoded.image_rows],
            )
            inputs.update(sub.image_inputs)
            ends = [appended.numel() for _, appended, _ in chunk]
            plan = self.plan(sub, [decisions[i] for i, _, _ in chunk], (len(chunk), width), ends=ends)
            # Position p predicts token p + 1: a continuation of n tokens after `appended` is read at the n
            # positions ending one before the appended tokens' end.
            targets = [
                (r, torch.arange(width - ends[r] - 1, width - ends[r] - 1 + ids.numel()), ids)
                for r, (_, _, scored) in enumerate(chunk)
                for ids in scored
            ]
            embeds = None if sub.image_inputs else self.model.get_input_embeddings()(inputs["input_ids"])
            chunks.append(ScoringChunk(inputs, plan, targets, keep=max(ends) + 1, embeds=embeds))
        return ScoringBatch(chunks, lengths)

    @torch.no_grad()
    def score_prepared(self, batch: ScoringBatch) -> list[list[float]]:
        """Score a :meth:`prepare_scoring` batch under the current ``config`` (corruption, strength, dims, seed)."""
        scores: list[float] = []
        for chunk in batch.chunks:
            width = chunk.inputs["input_ids"].shape[1]
            if chunk.embeds is not None:
                embeds = chunk.embeds
                if chunk.plan:
                    embeds = self._corrupt_rows(embeds, chunk.plan.text_rows)
                inputs = {k: v for k, v in chunk.inputs.items() if k != "input_ids"}
                logits = self.model(inputs_embeds=embeds, **inputs, logits_to_keep=chunk.keep).logits
            else:
                with self.corrupting(chunk.plan):
                    logits = self.model(**chunk.inputs, logits_to_keep=chunk.keep).logits
            first_kept = width - logits.shape[1]
            for row, positions, ids in chunk.targets:
                logprobs = torch.log_softmax(logits[row, positions - first_kept].float(), dim=-1)
                scores.append(float(logprobs[torch.arange(ids.numel()), ids].sum()))
        out, k = [], 0
        for sizes in batch.lengths:
            out.append(scores[k : k + len(sizes)])
            k += len(sizes)
        return out

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, flags=None, **kwargs
    ):
        """The wrapped model's forward on left-padded ``input_ids``; rows flagged in ``flags`` are corrupted as
        :meth:`generate` corrupts a flagged prompt (scope ``spans``: the names the classifier finds in the row's
        text, else the fallback over every token but the last)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        flags = [False] * input_ids.shape[0] if flags is None else list(flags)
        if len(flags) != input_ids.shape[0]:
            raise ValueError(f"got {len(flags)} flags for a batch of {input_ids.shape[0]}")
        ids = [row[mask.bool()].cpu() for row, mask in zip(input_ids, attention_mask, strict=True)]
        batch = EncodedBatch(ids=ids, prompts=[self.tokenizer.decode(row) for row in ids])
        decisions = self.decide([Request(text=p) for p in batch.prompts], [bool(f) for f in flags])
        plan = self.plan(batch, decisions, input_ids.shape)
        with self.corrupting(plan):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    __call__ = forward

    # ------------------------------------------------------------ encoding

    def _requests(self, prompts: Sequence[PromptLike]) -> list[Request]:
        if isinstance(prompts, (str, Request, Mapping)):
            raise TypeError("prompts must be a list; wrap a single prompt in [ ]")
        if len(prompts) == 0:
            raise ValueError("no prompts given")
        requests = []
        for i, prompt in enumerate(prompts):
            try:
                request = to_request(prompt)
            except (ValueError, TypeError) as err:
                raise type(err)(f"prompt {i}: {err}") from None
            if request.image is not None and not self.multimodal:
                raise ValueError(
                    f"prompt {i} has an image but {type(self.model).__name__} is a text-only model"
                )
            requests.append(request)
        return requests

    def render(self, request: Request, chat_template: bool | None = None) -> str:
        """The exact prompt string the model reads."""
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        image_token = getattr(self.processor, "image_token", "<image>")
        if request.text is not None and (chat_template is False or (chat_template is None and not template)):
            text = request.text
            if request.image is not None and image_token not in text:
                text = f"{image_token}\n{text}"
            return text
        messages = [dict(m) for m in request.messages] or [{"role": "user", "content": request.text}]
        if request.image is not None and not any(image_token in m["content"] for m in messages):
            first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[first_user]["content"] = f"{image_token}\n{messages[first_user]['content']}"
        if template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role'].upper()}: {m['content']}\n" for m in messages) + "ASSISTANT:"

    def encode(self, requests: Sequence[Request], *, chat_template: bool | None = None) -> EncodedBatch:
        """Render and tokenize each request on its own (no padding); images through the processor."""
        prompts = [self.render(r, chat_template) for r in requests]
        image_rows = [i for i, r in enumerate(requests) if r.image is not None]
        if not image_rows:
            ids = [self._tokenize(p)["input_ids"] for p in prompts]
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

    def _tokenize(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        bos = self.tokenizer.bos_token
        add_special = not (bos and prompt.startswith(bos))
        return self.tokenizer(prompt, add_special_tokens=add_special, **kwargs)

    def _collate(self, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Left-pad rows into input_ids / attention_mask on the model's device."""
        width = max(r.numel() for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - r.numel() :] = r
            mask[i, width - r.numel() :] = 1
        device = self.model.device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    # ------------------------------------------------------------ planning

    def plan(
        self,
        batch: EncodedBatch,
        decisions: Sequence[Flag],
        shape: Sequence[int],
        ends: Sequence[int] | None = None,
    ) -> CorruptionPlan:
        """Which positions of which padded rows to corrupt. ``ends[r]`` tokens (scored answers) follow the prompt.

        Scope ``spans`` with ``image``: a request with an image and no forget-target name in its text ("where does
        this person live?") gets its image corrupted and its words left alone, since the picture is what
        identifies the person; without ``image`` in scope, such a request falls back to all its prompt tokens."""
        width = int(shape[1])
        scope = self.config.scope
        rows, images = [], []
        for r, flag in enumerate(decisions):
            if not flag.flagged:
                continue
            identity_in_image = "image" in scope and r in batch.image_rows and not flag.terms
            if "prompt" in scope or ("spans" in scope and not identity_in_image):
                ids = batch.ids[r]
                start = width - ids.numel() - (ends[r] if ends else 0)
                mask, found = self._text_mask(batch.prompts[r], ids, flag.terms)
                rows.append(RowPlan(r, start, mask, ids, fallback=not found))
            if "image" in scope and r in batch.image_rows:
                images.append(batch.image_rows.index(r))
        fallback = sum(p.fallback for p in rows)
        if fallback:
            logger.warning(
                "%d flagged request(s) name no forget target that scope 'spans' can find: their whole prompt gets "
                "the fallback corruption %s (strength %g)",
                fallback,
                self.config.fallback_corruption,
                self.config.fallback_strength,
            )
        return CorruptionPlan(rows, images, (len(decisions), width))

    def prompt_mask(self, prompt: str, ids: torch.Tensor, terms: Sequence[str] = ()) -> torch.Tensor:
        """Bool mask over one unpadded prompt: all tokens but the last (scope ``prompt``), or only the tokens of
        ``terms`` (scope ``spans``; all tokens but the last when none is found, which :meth:`plan` corrupts with
        the fallback corruption). Image tokens are never included: their embeddings are replaced by image
        features (scope ``image`` corrupts those)."""
        return self._text_mask(prompt, ids, terms)[0]

    def _text_mask(self, prompt: str, ids: torch.Tensor, terms: Sequence[str]) -> tuple[torch.Tensor, bool]:
        """:meth:`prompt_mask` and whether it is what the scope asked for (False: no name was found)."""
        base = torch.ones(ids.numel(), dtype=torch.bool)
        base[-1] = False
        if self.image_token_id is not None:
            base &= ids != self.image_token_id
        if "prompt" in self.config.scope:
            return base, True
        spans = self.term_mask(prompt, ids, terms) if terms else None
        if spans is None or not (spans & base).any():
            return base, False
        return spans & base, True

    def term_mask(self, prompt: str, ids: torch.Tensor, terms: Sequence[str]) -> torch.Tensor | None:
        """Tokens overlapping any occurrence of ``terms`` in ``prompt``, through the offsets of the very token ids
        the model receives (None if a fresh tokenization would not reproduce those ids)."""
        text = prompt
        if self.image_token_id is not None:
            n_image = int((ids == self.image_token_id).sum())
            image_token = getattr(self.processor, "image_token", "<image>")
            if n_image and text.count(image_token):
                text = text.replace(image_token, image_token * (n_image // text.count(image_token)))
        enc = self._tokenize(text, return_offsets_mapping=True)
        if list(enc["input_ids"]) != ids.tolist():
            logger.warning("span mask: re-tokenization does not match the model input; corrupting all tokens")
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

    # ------------------------------------------------------------ hooks

    @contextlib.contextmanager
    def corrupting(self, plan: CorruptionPlan) -> Iterator[None]:
        """Hooks that apply ``plan`` at the next prefill of this thread, removed on exit (also on error)."""
        if not plan:
            yield
            return
        owner = threading.get_ident()
        handles = []
        try:
            if plan.text_rows:
                state = {"done": False}

                def text_hook(module, args, output):
                    if (
                        state["done"]
                        or threading.get_ident() != owner
                        or tuple(output.shape[:2]) != plan.batch_shape
                    ):
                        return None
                    state["done"] = True
                    return self._corrupt_rows(output, plan.text_rows)

                handles.append(self.model.get_input_embeddings().register_forward_hook(text_hook))
            if plan.image_indices:
                if self.projector is None:
                    raise RuntimeError(f"{type(self.model).__name__} has no multimodal projector to hook")
                image_state = {"done": False}

                def image_hook(module, args, output):
                    if image_state["done"] or threading.get_ident() != owner:
                        return None
                    image_state["done"] = True
                    return self._corrupt_images(output, plan.image_indices)

                handles.append(self.projector.register_forward_hook(image_hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _corrupt_rows(self, embeds: torch.Tensor, rows: Sequence[RowPlan]) -> torch.Tensor:
        out = embeds.clone()
        cfg = self.config
        for p in rows:
            stop = p.start + p.mask.numel() - p.cached
            segment = embeds[p.row : p.row + 1, p.start : stop]
            if p.cached:
                segment = torch.cat([p.head.to(segment.dtype), segment], dim=1)
            name, params = cfg.corruption, cfg.params
            if p.fallback:
                name, params = cfg.fallback_corruption, cfg.fallback_params
            elif USES_TARGET[name]:
                params = replace(params, target=self._surrogate_embeds(p)[None])
            out[p.row, p.start : stop] = apply_corruption(name, segment, p.mask[None], params, cfg.seed)[
                0, p.cached :
            ]
        return out

    # ------------------------------------------------------------ shared prefix

    def _may_share(self, generate_kwargs: Mapping[str, Any]) -> bool:
        return (
            self.share_prefix
            and "past_key_values" not in generate_kwargs
            and generate_kwargs.get("num_beams", 1) == 1
            and generate_kwargs.get("num_return_sequences", 1) == 1
        )

    def shared_prefix(self, batch: EncodedBatch, plan: CorruptionPlan) -> int:
        """How many leading tokens every prompt of ``batch`` shares and the KV cache may compute once (0: not
        worth it). It stops before the first image token (image features differ per row) and the first
        corrupted position, and leaves every row at least one token of its own."""
        if len(batch.ids) < 2:
            return 0
        first = batch.ids[0]
        shared = min(r.numel() for r in batch.ids) - 1
        for row in batch.ids[1:]:
            same = (row[:shared] == first[:shared]).long().cumprod(0)
            shared = int(same.sum())
        if self.image_token_id is not None:
            images = (first[:shared] == self.image_token_id).nonzero()
            shared = int(images[0]) if len(images) else shared
        for p in plan.text_rows:
            touched = p.mask[:shared].nonzero()
            shared = int(touched[0]) if len(touched) else shared
        return shared if shared >= MIN_SHARED_PREFIX else 0

    @torch.no_grad()
    def _after_prefix(
        self, batch: EncodedBatch, plan: CorruptionPlan, shared: int
    ) -> tuple[dict[str, torch.Tensor], CorruptionPlan, Any]:
        """Run the shared prefix once; return the full inputs (prefix, padding, then each row's own tokens), the
        plan moved to the rows' own tokens (the only embeddings the next prefill computes) and the cache."""
        from transformers import DynamicCache

        device = self.model.device
        prefix = batch.ids[0][:shared][None].to(device)
        captured: list[torch.Tensor] = []
        handle = (
            self.model.get_input_embeddings().register_forward_hook(
                lambda module, args, output: captured.append(output.detach())
            )
            if plan.text_rows
            else None
        )
        cache = DynamicCache()
        try:
            self.model(input_ids=prefix, past_key_values=cache, use_cache=True)
        finally:
            if handle is not None:
                handle.remove()
        cache.batch_repeat_interleave(len(batch.ids))
        own = [r[shared:] for r in batch.ids]
        width = max(r.numel() for r in own)
        tail = self._collate(own)
        inputs = {
            "input_ids": torch.cat([prefix.expand(len(own), -1), tail["input_ids"]], dim=1),
            "attention_mask": torch.cat(
                [torch.ones_like(prefix).expand(len(own), -1), tail["attention_mask"]], dim=1
            ),
        }
        head = captured[0] if captured else None
        rows = [
            replace(p, start=width - (p.mask.numel() - shared), cached=shared, head=head)
            for p in plan.text_rows
        ]
        return inputs, CorruptionPlan(rows, plan.image_indices, (len(own), width)), cache

    def _corrupt_images(self, features: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        cfg = self.config
        out = features.clone()
        for i in indices:
            feat = features[i : i + 1].reshape(1, -1, features.shape[-1])
            mask = torch.ones(feat.shape[:2], dtype=torch.bool)
            params = cfg.image_params
            if USES_TARGET[cfg.image_corruption_name]:
                params = replace(params, target=self._surrogate_face(feat))
            out[i] = apply_corruption(cfg.image_corruption_name, feat, mask, params, cfg.seed).reshape(
                features[i].shape
            )
        return out

    # ------------------------------------------------------------ surrogate faces

    def _needs_image_surrogates(self) -> bool:
        return "image" in self.config.scope and USES_TARGET[self.config.image_corruption_name]

    @torch.no_grad()
    def image_features(self, images: Sequence[Any], batch_size: int = 16) -> torch.Tensor:
        """``[n, tokens, hidden]``: each image's features as the language model receives them (the projector's
        output, where scope ``image`` corrupts)."""
        if not self.multimodal or self.projector is None:
            raise ValueError(f"{type(self.model).__name__} takes no images: it has no multimodal projector")
        images = list(images)
        if not images:
            raise ValueError("no images given")
        captured: list[torch.Tensor] = []
        handle = self.projector.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            for lo, hi in _chunks(len(images), batch_size):
                batch = self.encode(
                    [Request(text=".", image=im) for im in images[lo:hi]], chat_template=False
                )
                inputs = self._collate(batch.ids)
                inputs.update(batch.image_inputs)
                self.model(**inputs)
        finally:
            handle.remove()
        hidden = captured[0].shape[-1]
        return (
            torch.cat([c.reshape(-1, hidden) for c in captured])
            .reshape(len(images), -1, hidden)
            .float()
            .cpu()
        )

    def set_image_surrogates(self, images: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """Use these faces (pictures, or features from :meth:`image_features`) as surrogates; returns the
        features kept."""
        features = images if isinstance(images, torch.Tensor) else self.image_features(images)
        hidden = self.model.get_input_embeddings().embedding_dim
        if features.dim() != 3 or features.shape[0] < 1 or features.shape[-1] != hidden:
            raise ValueError(
                f"image surrogates must be [faces, tokens, {hidden}] features, got {tuple(features.shape)}"
            )
        self.image_surrogates = features.detach().float().cpu().contiguous()
        return self.image_surrogates

    def _surrogate_face(self, feat: torch.Tensor) -> torch.Tensor:
        """The surrogate face least like ``feat`` (``[1, tokens, hidden]``; mean features compared by cosine):
        deterministic, and never a face close to the one it replaces."""
        if self.image_surrogates is None:
            raise ValueError(_NO_SURROGATE_FACES)
        bank = self.image_surrogates.to(device=feat.device, dtype=feat.dtype)
        if bank.shape[1:] != feat.shape[1:]:
            raise ValueError(
                f"image surrogates have {tuple(bank.shape[1:])} features per face, this image "
                f"{tuple(feat.shape[1:])}: they were taken with another model or processor"
            )
        similarity = torch.nn.functional.cosine_similarity(bank.mean(1), feat.mean(1), dim=-1)
        return bank[int(similarity.argmin())][None]

    # ------------------------------------------------------------ surrogate names

    @property
    def surrogates(self) -> Surrogates:
        """The surrogate-name map of this tokenizer, ``config.seed`` and the config's surrogate words (built again
        only when they change)."""
        key = (self.config.seed, self.config.surrogate_given_names, self.config.surrogate_surnames)
        if self._surrogates is None or self._surrogates_key != key:
            self._surrogates, self._surrogates_key = Surrogates.of(self.tokenizer, self.config), key
        return self._surrogates

    def _surrogate_embeds(self, p: RowPlan) -> torch.Tensor:
        """The embeddings of row plan ``p``'s segment with its masked words read as the surrogate name's."""
        if p.ids is None:
            raise RuntimeError("a substitute corruption needs the row's token ids")
        table = self.model.get_input_embeddings()
        ids = self.surrogates.ids(p.ids, p.mask).to(table.weight.device)
        return torch.nn.functional.embedding(ids, table.weight)

    def renames(self, p: RowPlan) -> list[tuple[str, str]]:
        """(surrogate word, original word) pairs to write back into the answer of row plan ``p`` (none unless the
        corruption substitutes names)."""
        if not USES_TARGET[self.config.corruption] or p.ids is None or p.fallback:
            return []
        return self.surrogates.renames(p.ids, p.mask)

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the config (and the classifier, when it can save itself) into ``directory``."""
        directory = Path(directory)
        self.save_settings(directory)
        if self.classifier is not None and hasattr(self.classifier, "save_pretrained"):
            self.classifier.save_pretrained(directory / CLASSIFIER_DIR)
        return directory

    def save_settings(self, directory: str | Path) -> Path:
        """Write what a corruption search sets into ``directory``: the config and the surrogate faces (if any),
        leaving the classifier saved there as it is."""
        directory = Path(directory)
        self.config.save_pretrained(directory)
        if self.image_surrogates is not None:
            save_image_surrogates(directory / IMAGE_SURROGATES, self.image_surrogates)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        model: Any,
        tokenizer_or_processor: Any,
        classifier: PromptClassifier | None = None,
    ) -> EcoGuard:
        """Load a guard folder onto ``model``; its classifier too, unless one is given."""
        config = GuardConfig.from_pretrained(directory)
        if classifier is None:
            classifier = load_classifier(directory)
        faces = saved_image_surrogates(directory)
        return cls(
            model, tokenizer_or_processor, classifier=classifier, config=config, image_surrogates=faces
        )


def save_image_surrogates(path: Path, features: torch.Tensor) -> None:
    from safetensors.torch import save_file

    features = features.detach().float().cpu().contiguous()
    save_file({"features": features}, str(path), metadata={"sha256": _tensor_digest(features)})


def saved_image_surrogates(directory: str | Path) -> torch.Tensor | None:
    """The surrogate faces a guard folder holds (None when it holds none)."""
    path = Path(directory) / IMAGE_SURROGATES
    return load_image_surrogates(path) if path.is_file() else None


def load_image_surrogates(path: Path) -> torch.Tensor:
    """The surrogate faces' features saved in a guard folder, checked against the digest stored with them."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            digest = (handle.metadata() or {}).get("sha256")
            features = handle.get_tensor("features")
    except (SafetensorError, OSError, KeyError) as err:
        raise GuardFileError(f"{path} is not a readable image-surrogates file: {err}") from None
    if digest != _tensor_digest(features):
        raise GuardFileError(f"{path} does not match its recorded sha256: the file was modified or corrupted")
    return features


def _tensor_digest(features: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(features.numpy().tobytes()).hexdigest()


def load_classifier(directory: str | Path) -> PromptClassifier | None:
    """The classifier saved in ``directory/classifier`` (None when there is none).

    Its metadata names a class; only classes from trusted modules (the project's ``classifiers`` package) are
    imported, and they load from JSON + safetensors, so a guard folder never executes code of its own.
    """
    folder = Path(directory) / CLASSIFIER_DIR
    meta_path = folder / CLASSIFIER_META
    if not meta_path.is_file():
        return None
    try:
        target = json.loads(meta_path.read_text())["class"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise GuardFileError(f"{meta_path} is not a valid classifier description: {err}") from None
    module_name, _, class_name = str(target).rpartition(".")
    if not module_name.startswith(TRUSTED_CLASSIFIER_MODULES):
        raise GuardFileError(
            f"{meta_path} names {target!r}, outside the trusted modules {TRUSTED_CLASSIFIER_MODULES}"
        )
    try:
        loader = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise GuardFileError(f"{meta_path}: cannot import {target!r}: {err}") from None
    return loader.from_pretrained(folder)


def _as_flag(flag: bool | Flag) -> Flag:
    return flag if isinstance(flag, Flag) else Flag(bool(flag), float(bool(flag)), "override")


def _positions_follow_the_mask(model: Any) -> bool:
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


def _chunks(n: int, size: int | None) -> Iterator[tuple[int, int]]:
    size = n if not size or size <= 0 else size
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _select_images(batch: EncodedBatch, request_rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """The image tensors for a list of request rows (repeats allowed), in row order."""
    picks = [batch.image_rows.index(i) for i in request_rows if i in batch.image_rows]
    if not picks:
        return {}
    index = torch.tensor(picks)
    return {k: v[index] for k, v in batch.image_inputs.items() if isinstance(v, torch.Tensor)}


def _image_token_id(config: Any) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _find_projector(model: Any) -> Any:
    for owner in (model, getattr(model, "model", None)):
        projector = getattr(owner, "multi_modal_projector", None)
        if projector is not None:
            return projector
    return None
