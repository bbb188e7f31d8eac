"""The request path both front ends share (transformers: :class:`~eco_guard.guard.EcoGuard`; vLLM:
:class:`~eco_guard.vllm_backend.GuardedLLM`), so that a check or a fix is written once:

1. normalize: every prompt becomes a Request, its image decoded once (:func:`~eco_guard.requests.normalize`);
2. decide: override flags > the classifier > nothing flagged; a caller's flag gets the names the classifier finds;
3. encode: render and tokenize each request on its own (:mod:`eco_guard.encoding`);
4. plan: which tokens and image features of flagged rows to corrupt (:mod:`eco_guard.planning`);
5. corrupt: hooks that apply the plan at the next prefill of this thread only (:mod:`eco_guard.hooks`);
6. run: the front end's own model call (``generate``, a forward pass, or a vLLM engine on ``prompt_embeds``);
7. restore: surrogate names in the answer are written back as the names they stand for.

When nothing is flagged no hook is registered: unflagged traffic runs the unwrapped model.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from eco_guard import faces, hooks, planning
from eco_guard.config import GuardConfig
from eco_guard.corruption import USES_TARGET
from eco_guard.encoding import EncodedBatch, Encoder, is_multimodal
from eco_guard.io import GuardFileError
from eco_guard.planning import CorruptionPlan, RowPlan
from eco_guard.requests import Flag, PromptClassifier, PromptLike, Request, RequestError, normalize
from eco_guard.surrogates import Surrogates, restore

logger = logging.getLogger(__name__)

CLASSIFIER_DIR = "classifier"
CLASSIFIER_META = "classifier.json"
TRUSTED_CLASSIFIER_MODULES = ("classifiers.",)


class GuardCore:
    """A model, its tokenizer or processor, a classifier, a config and (optionally) surrogate faces, and every step
    of a guarded request but the model call itself. Unknown attributes fall through to the wrapped model."""

    def __init__(
        self,
        model: Any,
        tokenizer_or_processor: Any,
        classifier: PromptClassifier | None = None,
        config: GuardConfig | None = None,
        image_surrogates: Sequence[Any] | torch.Tensor | None = None,
    ) -> None:
        """``image_surrogates``: pictures of people the model never learned (or their features from
        :meth:`image_features`), for ``image_corruption='substitute'``: a flagged request's image features move
        toward one of theirs, as names move toward a surrogate name."""
        if classifier is not None and not isinstance(classifier, PromptClassifier):
            raise TypeError("classifier must have a flag(requests) -> list[Flag] method")
        self.model = model
        self.processor = tokenizer_or_processor
        self.encoder = Encoder(model, tokenizer_or_processor)
        self.tokenizer = self.encoder.tokenizer
        self.classifier = classifier
        self.config = config or GuardConfig()
        self.multimodal = is_multimodal(model)
        self.image_token_id = self.encoder.image_token_id
        self.pad_token_id = self.encoder.pad_token_id
        self.projector = _find_projector(model) if self.multimodal else None
        self._surrogates: Surrogates | None = None
        self._surrogates_key: tuple | None = None
        self.image_surrogates: torch.Tensor | None = None
        if image_surrogates is not None:
            self.set_image_surrogates(image_surrogates)
        if self.multimodal and self._needs_image_surrogates() and self.image_surrogates is None:
            raise ValueError(faces.NO_SURROGATE_FACES)
        if USES_TARGET[self.config.corruption]:
            _ = self.surrogates  # surrogate words this tokenizer cannot use fail here, not at a request

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not yet set: avoid recursion during unpickling or early errors
            raise AttributeError(name)
        return getattr(self.model, name)

    # ------------------------------------------------------------ 1-2: normalize, decide

    def requests(
        self, prompts: Sequence[PromptLike], *, collect: bool = False
    ) -> list[Request | RequestError]:
        """The call's prompts as Requests (:func:`~eco_guard.requests.normalize`; images only for a multimodal
        model)."""
        return normalize(prompts, images=self.multimodal, collect=collect)

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
            decided = [verdicts[i] if f is None else _as_flag(f, i) for i, f in enumerate(flags)]
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

    # ------------------------------------------------------------ 3: encode

    def render(self, request: Request, chat_template: bool | None = None) -> str:
        """The exact prompt string the model reads."""
        return self.encoder.render(request, chat_template)

    def encode(self, requests: Sequence[Request], *, chat_template: bool | None = None) -> EncodedBatch:
        """Render and tokenize each request on its own (no padding); images through the processor."""
        return self.encoder.encode(requests, chat_template=chat_template)

    def collate(self, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Left-pad token rows into input_ids / attention_mask on the model's device."""
        return self.encoder.collate(rows)

    # ------------------------------------------------------------ 4: plan

    def plan(
        self,
        batch: EncodedBatch,
        decisions: Sequence[Flag],
        shape: Sequence[int],
        ends: Sequence[int] | None = None,
    ) -> CorruptionPlan:
        """Which positions of which padded rows to corrupt (:func:`eco_guard.planning.plan`)."""
        return planning.plan(self.encoder, self.config, batch, decisions, shape, ends)

    def prompt_mask(self, prompt: str, ids: torch.Tensor, terms: Sequence[str] = ()) -> torch.Tensor:
        """Bool mask over one unpadded prompt: all tokens but the last (scope ``prompt``), or only the tokens of
        ``terms`` (scope ``spans``; all tokens but the last when none is found, which :meth:`plan` corrupts with
        the fallback corruption)."""
        return planning.text_mask(self.encoder, self.config.scope, prompt, ids, terms)[0]

    def term_mask(self, prompt: str, ids: torch.Tensor, terms: Sequence[str]) -> torch.Tensor | None:
        """Tokens overlapping any occurrence of ``terms`` in ``prompt`` (None if a fresh tokenization would not
        reproduce ``ids``)."""
        return planning.term_mask(self.encoder, prompt, ids, terms)

    # ------------------------------------------------------------ 5: corrupt

    def corrupting(self, plan: CorruptionPlan) -> AbstractContextManager[None]:
        """Hooks that apply ``plan`` at the next prefill of this thread, removed on exit (also on error)."""
        return hooks.corrupting(
            self.model.get_input_embeddings(), self.projector, plan, self.corrupt_rows, self.corrupt_images
        )

    def corrupt_rows(self, embeds: torch.Tensor, rows: Sequence[RowPlan]) -> torch.Tensor:
        """``embeds`` with the planned rows corrupted under the current config."""
        return hooks.corrupt_rows(embeds, rows, self.config, self._surrogate_embeds)

    def corrupt_images(self, features: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """Projected image ``features`` with the planned images corrupted under the current config."""
        return hooks.corrupt_images(features, indices, self.config, self._surrogate_face)

    # ------------------------------------------------------------ 7: restore (surrogate names)

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

    def restore(self, texts: list[str], plan: CorruptionPlan) -> list[str]:
        """``texts`` (one answer per row) with each planned row's surrogate names written back."""
        for p in plan.text_rows:
            texts[p.row] = restore(texts[p.row], self.renames(p))
        return texts

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
            for lo in range(0, len(images), batch_size):
                requests = [Request(text=".", image=im) for im in images[lo : lo + batch_size]]
                batch = self.encode(requests, chat_template=False)
                inputs = self.collate(batch.ids)
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
        self.image_surrogates = faces.check_faces(features, hidden)
        return self.image_surrogates

    def _surrogate_face(self, feat: torch.Tensor) -> torch.Tensor:
        return faces.least_similar(self.image_surrogates, feat)

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
            faces.save_faces(directory / faces.IMAGE_SURROGATES, self.image_surrogates)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        model: Any,
        tokenizer_or_processor: Any,
        classifier: PromptClassifier | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a guard folder onto ``model``; its classifier too, unless one is given."""
        config = GuardConfig.from_pretrained(directory)
        if classifier is None:
            classifier = load_classifier(directory)
        bank = faces.saved_faces(directory)
        return cls(
            model,
            tokenizer_or_processor,
            classifier=classifier,
            config=config,
            image_surrogates=bank,
            **kwargs,
        )


def load_classifier(directory: str | Path) -> PromptClassifier | None:
    """The classifier saved in ``directory/classifier`` (None when there is none).

    Its metadata names a class; only classes from trusted modules (the project's ``classifiers`` package) are
    imported, by name at load time, and they load from JSON + safetensors, so a guard folder never executes code of
    its own."""
    folder = Path(directory) / CLASSIFIER_DIR
    meta_path = folder / CLASSIFIER_META
    if not meta_path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            # Serving such a folder unguarded would break the deployer's intent without a word.
            raise GuardFileError(
                f"{folder} holds classifier files but not {CLASSIFIER_META}: the guard folder is incomplete; "
                "copy it again or retrain with `eco-guard train-classifier`"
            )
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


def chunks(n: int, size: int | None) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` ranges of at most ``size`` (None or <= 0: one range)."""
    size = n if not size or size <= 0 else size
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _as_flag(flag: bool | Flag, position: int) -> Flag:
    """A caller's override as a Flag: only a bool (Python's or numpy's) or a Flag; ``"false"`` is truthy, so any
    other value is refused rather than read as flagged."""
    import numpy as np

    if isinstance(flag, Flag):
        return flag
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(
            f"flag {position} must be True, False, None or a Flag, got {type(flag).__name__} {flag!r}"
        )
    return Flag(bool(flag), float(bool(flag)), "override")


def _find_projector(model: Any) -> Any:
    for owner in (model, getattr(model, "model", None)):
        projector = getattr(owner, "multi_modal_projector", None)
        if projector is not None:
            return projector
    return None
