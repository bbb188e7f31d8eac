"""EcoGuard: the transformers front end. Corrupt the input embeddings of flagged requests, leave every other
request exactly as it was.

Every step but the model call is the shared request path (:mod:`eco_guard.core`): the hooks act only in the thread
that registered them, once at prefill, on flagged rows and the configured positions of the prompt, never on
padding or answer tokens, and when nothing in a batch is flagged no hook is registered at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eco_guard import prefix
from eco_guard.config import GuardConfig
from eco_guard.core import GuardCore, chunks
from eco_guard.encoding import EncodedBatch, select_images
from eco_guard.planning import CorruptionPlan
from eco_guard.requests import Flag, PromptClassifier, PromptLike, Request


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


class EcoGuard(GuardCore):
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
        """``share_prefix``: :meth:`generate` computes the tokens every prompt of a batch starts with once and
        reuses their KV cache (:mod:`eco_guard.prefix`; few-shot benchmark prompts share most of their tokens). The
        answers are the same. Models whose positions do not simply count the attended tokens (M-RoPE), or whose
        layers keep another kind of cache (sliding windows, recurrent state), always run whole prompts."""
        super().__init__(model, tokenizer_or_processor, classifier, config, image_surrogates)
        self.share_prefix = share_prefix and prefix.supports_sharing(model)

    # ------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[PromptLike],
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
        batch_size: int | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Generate an answer per prompt (greedy, 64 new tokens unless told otherwise); flagged prompts corrupted.

        ``chat_template=None`` applies the tokenizer's chat template when it has one (plain text becomes one user
        turn); ``False`` sends the text as written (benchmark prompts with their own format).
        """
        requests = self.requests(prompts)
        decisions = self.decide(requests, flags)
        kwargs = {
            "max_new_tokens": 64,
            "do_sample": False,
            "pad_token_id": self.pad_token_id,
            **generate_kwargs,
        }
        sharing = self.share_prefix and prefix.may_share(kwargs)
        answers: list[str] = []
        for lo, hi in chunks(len(requests), batch_size):
            batch = self.encode(requests[lo:hi], chat_template=chat_template)
            inputs = self.collate(batch.ids)
            plan = self.plan(batch, decisions[lo:hi], inputs["input_ids"].shape)
            shared = prefix.shared_length(batch, plan, self.image_token_id) if sharing else 0
            kwargs_now = kwargs
            if shared:
                inputs, plan, cache = prefix.run_prefix(self.model, batch, plan, shared, self.collate)
                kwargs_now = {**kwargs, "past_key_values": cache}
            inputs.update(batch.image_inputs)
            with self.corrupting(plan):
                out = self.model.generate(**inputs, **kwargs_now)
            width = inputs["input_ids"].shape[1]
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            answers += self.restore(texts, plan)
        return answers

    def shared_prefix(self, batch: EncodedBatch, plan: CorruptionPlan) -> int:
        """How many leading tokens every prompt of ``batch`` shares and :meth:`generate` computes once (0: none)."""
        return prefix.shared_length(batch, plan, self.image_token_id)

    # ------------------------------------------------------------ scoring

    def score(
        self,
        prompts: Sequence[PromptLike],
        continuations: Sequence[Sequence[str]],
        flags: Sequence[bool | Flag | None] | None = None,
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
        flags: Sequence[bool | Flag | None] | None = None,
        *,
        chat_template: bool | None = None,
        batch_size: int | None = 16,
    ) -> ScoringBatch:
        """Tokenize, pad, plan and embed (prompt, continuation) pairs once, to score them under many corruption
        settings with :meth:`score_prepared` (the plan depends on ``config.scope``, not on the corruption itself).

        A prompt whose continuations are all single tokens is read in one row: every option's log-probability
        comes from the logits after the prompt.
        """
        requests = self.requests(prompts)
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
        scoring_chunks = []
        for lo, hi in chunks(len(rows), batch_size):
            chunk = rows[lo:hi]
            inputs = self.collate([torch.cat([encoded.ids[i], appended]) for i, appended, _ in chunk])
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            width = inputs["input_ids"].shape[1]
            sub = EncodedBatch(
                ids=[encoded.ids[i] for i, _, _ in chunk],
                prompts=[encoded.prompts[i] for i, _, _ in chunk],
                image_inputs=select_images(encoded, [i for i, _, _ in chunk]),
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
            scoring_chunks.append(ScoringChunk(inputs, plan, targets, keep=max(ends) + 1, embeds=embeds))
        return ScoringBatch(scoring_chunks, lengths)

    @torch.no_grad()
    def score_prepared(self, batch: ScoringBatch) -> list[list[float]]:
        """Score a :meth:`prepare_scoring` batch under the current ``config`` (corruption, strength, dims, seed)."""
        scores: list[float] = []
        for chunk in batch.chunks:
            width = chunk.inputs["input_ids"].shape[1]
            if chunk.embeds is not None:
                embeds = chunk.embeds
                if chunk.plan:
                    embeds = self.corrupt_rows(embeds, chunk.plan.text_rows)
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

    # ------------------------------------------------------------ forward

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
