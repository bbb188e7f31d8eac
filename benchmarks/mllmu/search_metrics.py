"""The forget-set metrics a corruption search matches, asked and scored exactly as ``evaluate`` asks and scores them.

``eco-guard optimize`` searches the corruption so that one of these metrics, on the forget split's questions with
every request flagged, meets the same metric measured unguarded on people the model never learned. Both sides are
the benchmark's own items (reference prompts, seeded few-shot draws), so the level the search reaches is the level
``eco-guard evaluate`` then reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mllmu import evaluate as ev
from benchmarks.mllmu import metrics
from benchmarks.mllmu.loader import CONFIGS, is_local, load_config, local_configs, row_id
from benchmarks.mllmu.twins import round_pairs, twin_row

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchMetric:
    """A metric name of ``optimize``: the tasks whose questions it reads and how one answered question scores."""

    name: str
    tasks: tuple[str, ...]
    description: str
    generated: bool = True
    """Scored on generated answers (False: on log-probabilities, no answer is generated)."""


SEARCH_METRICS = {
    m.name: m
    for m in (
        SearchMetric(
            "mc_accuracy",
            ("classification",),
            "multiple choice: the option text with the highest "
            "log-probability after the prompt is the right one",
            generated=False,
        ),
        SearchMetric("stated_accuracy", ("classification",), "multiple choice: the option the answer states"),
        SearchMetric("cloze", ("cloze",), "cloze: the ground truth is a substring of the answer"),
        SearchMetric("rouge_l", ("generation", "qa"), "open questions and QA pairs: ROUGE-L F-measure"),
        SearchMetric(
            "answer_loglik",
            ("generation", "qa"),
            "open questions and QA pairs: mean per-token log-likelihood of the reference answer",
            generated=False,
        ),
    )
}
FALLBACK_ORDER = ("mc_accuracy", "rouge_l", "cloze")
"""Which metric ``optimize`` takes when the default one has no questions in the forget split."""
MODALITIES = {"text": ("text_only",), "image": ("image_text",), "all": ev.MODALITIES}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range of a metric's values."""
    return (-np.inf, 0.0) if metric == "answer_loglik" else (0.0, 1.0)


def pick_metric(items: Sequence[ev.Item], wanted: str | None) -> tuple[str, str | None]:
    """The metric to search and, when it is not the one asked for, why (``wanted`` None: the default,
    ``mc_accuracy``, else the first of :data:`FALLBACK_ORDER` with questions). An explicit metric without
    questions raises ValueError naming the tasks that are there."""
    present = sorted({it.task for it in items})
    usable = [name for name, m in SEARCH_METRICS.items() if set(m.tasks) & set(present)]
    if wanted is not None:
        if wanted not in SEARCH_METRICS:
            raise ValueError(f"unknown metric {wanted!r}; valid: {', '.join(SEARCH_METRICS)}")
        if wanted not in usable:
            raise ValueError(
                f"metric {wanted} reads {' or '.join(SEARCH_METRICS[wanted].tasks)} questions, and there are "
                f"only {', '.join(present) or 'no'} questions; metrics that can: {', '.join(usable) or 'none'}"
            )
        return wanted, None
    chosen = next((name for name in FALLBACK_ORDER if name in usable), None)
    if chosen is None:
        raise ValueError("the forget split has no questions any metric reads")
    note = None
    if chosen != FALLBACK_ORDER[0]:
        note = f"no classification questions for {FALLBACK_ORDER[0]}; searching {chosen} instead"
    return chosen, note


def questions(items: Sequence[ev.Item], metric: str) -> list[ev.Item]:
    """The items ``metric`` reads."""
    return [it for it in items if it.task in SEARCH_METRICS[metric].tasks]


class FlagEvery:
    """A runner for ``evaluate.run_items``: every request flagged (or none), the names the guard's classifier
    finds kept, so that the corruption lands where serving puts it."""

    def __init__(self, guard: Any, flagged: bool = True) -> None:
        self.guard, self.flagged = guard, flagged

    def decide(self, requests: Sequence[Any]) -> list[Any]:
        return self.guard.decide(list(requests), [self.flagged] * len(requests))

    def generate(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.guard.generate(*args, **kwargs)


class ForgetMetric:
    """A prepared metric for ``eco_guard.optimize.optimize_guard``: ``metric`` over ``items``, asked through
    ``guard`` with every request flagged (``flagged=False``: none), in [0, 1] (``answer_loglik``: <= 0).

    ``empty`` is the share of empty answers at the last call (None for metrics that generate nothing)."""

    def __init__(
        self,
        guard: Any,
        items: Sequence[ev.Item],
        metric: str,
        *,
        flagged: bool = True,
        batch_size: int = 16,
        max_new_tokens: int = 50,
    ) -> None:
        self.name = metric
        self.spec = SEARCH_METRICS[metric]
        self.items = questions(items, metric)
        if not self.items:
            raise ValueError(f"{metric}: no {' or '.join(self.spec.tasks)} questions to score")
        self.bounds = metric_bounds(metric)
        self.guard, self.flagged = guard, flagged
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.empty: float | None = None
        self.batch = None
        if not self.spec.generated:
            flags = [flagged] * len(self.items)
            self.batch = guard.prepare_scoring(
                [it.request for it in self.items],
                [self._continuations(it) for it in self.items],
                flags,
                chat_template=False,
                batch_size=batch_size,
            )

    def _continuations(self, item: ev.Item) -> list[str]:
        if self.name == "mc_accuracy":
            return [ev.OPTION_PREFIX + text for text in item.options.values()]
        return [" " + item.reference.strip()]

    def __call__(self) -> float:
        if self.batch is not None:
            scores = self.guard.score_prepared(self.batch)
            if self.name == "answer_loglik":
                return float(np.mean([s[0] / n[0] for s, n in zip(scores, self.batch.lengths, strict=True)]))
            picks = [
                metrics.logprob_choice(list(it.options), s) for it, s in zip(self.items, scores, strict=True)
            ]
            return float(np.mean([p == it.reference for p, it in zip(picks, self.items, strict=True)]))
        ev.run_items(
            FlagEvery(self.guard, self.flagged),
            self.items,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            logprob=False,
        )
        samples = [ev.score_item(it, False) for it in self.items]
        self.empty = float(np.mean([not s["response"].strip() for s in samples]))
        return float(np.mean([_sample_score(self.name, s) for s in samples]))


def _sample_score(metric: str, sample: Mapping[str, Any]) -> float:
    if metric == "stated_accuracy":
        return float(sample["stated_correct"])
    if metric == "cloze":
        return float(sample["correct"])
    return float(sample["scores"]["rougeL"])


# ------------------------------------------------------------------ items


def forget_questions(
    data: str | Path,
    forget: str,
    *,
    rows: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    few_shot: int = 1,
    no_leak: bool = False,
    modality: str = "all",
) -> list[ev.Item]:
    """The questions ``evaluate`` asks about the forget split of ``data`` (same seed, few-shot draws and prompts),
    or about ``rows`` (other people, e.g. never-trained ones) put in the forget split's place."""
    bench = ev.load_benchmark(data, forget)
    if rows is not None:
        rows = list(rows)
        ids = [row_id(r, f"target row {i}") for i, r in enumerate(rows)]
        names = {i: (r.get("biography") or {}).get("Name") for i, r in zip(ids, rows, strict=True)}
        bench = replace(
            bench,
            sets={**bench.sets, "forget": rows},
            forget_ids=ids,
            shot_rows={**bench.shot_rows, **dict(zip(ids, rows, strict=True))},
            names={**bench.names, **{i: n for i, n in names.items() if n}},
        )
    sampler = ev.ShotSampler(bench, seed, few_shot, no_leak)
    return ev.build_items("forget", bench.sets["forget"], sampler, seed, MODALITIES[modality], bench.names)


TWIN_ROUNDS = 8
"""At most this many never-trained people stand in for the forget people (one round each)."""


def twin_rows(
    forget_rows: Sequence[Mapping[str, Any]],
    never_rows: Sequence[Mapping[str, Any]],
    name_of=None,
    photo_of=None,
) -> list[dict[str, Any]]:
    """The forget people's own rows (questions, options, right answers) about never-trained people: round k swaps
    every forget person's identity for the k-th never-trained person's photo and name. ``name_of(forget name)`` and
    ``photo_of(forget photo)``, when given, are the surrogate name and face a guard reads instead, so that both
    sides of the comparison ask about the very same unknown person (a name's length moves ROUGE-L, a face moves
    every image score). :mod:`benchmarks.mllmu.twins`."""
    forget = {row_id(r, "forget"): r for r in forget_rows}
    never = {row_id(r, "never-trained"): r for r in never_rows}
    pairs = round_pairs(list(forget), list(never), min(TWIN_ROUNDS, len(never)))
    rows = []
    for f, n in pairs:
        name = forget[f]["biography"]["Name"]
        identity = never[n]["biography"]["Name"] if name_of is None else name_of(name)
        row = twin_row(forget[f], name, never[n], identity)
        if photo_of is not None and forget[f].get("image") is not None:
            row["image"] = photo_of(forget[f]["image"])
        rows.append(row)
    return rows


def never_trained_level(
    guard: Any,
    data: str | Path,
    forget: str,
    target: str,
    metric: str,
    draws: Mapping[str, Any],
    sizes: Mapping[str, Any],
    max_items: int | None = None,
    faces: Sequence[Any] = (),
) -> tuple[float, str]:
    """``metric`` unguarded on the forget people's own questions asked about the never-trained people ``target``
    names (:func:`target_rows`, :func:`twin_rows`), and a sentence saying what was measured. Under the guard's
    surrogate names when it substitutes names; with the surrogate face it reads (of ``faces``, the pictures behind
    its ``image_surrogates``) when it substitutes image features. ``draws``: :func:`forget_questions`'s options."""
    from eco_guard.corruption import USES_TARGET

    rows, where = target_rows(data, forget, target)
    config = guard.config
    surrogate = USES_TARGET[config.corruption] and "spans" in config.scope
    paired_faces = bool(faces) and "image" in config.scope and USES_TARGET[config.image_corruption_name]
    twins = twin_rows(
        load_config(data, forget),
        rows,
        guard.surrogates.name if surrogate else None,
        surrogate_face_of(guard, faces) if paired_faces else None,
    )
    heldout = questions(forget_questions(data, forget, rows=twins, **draws), metric)[:max_items]
    if not heldout:
        raise ValueError(f"{where} has no {draws.get('modality', 'all')} questions for metric {metric}")
    value = ForgetMetric(guard, heldout, metric, flagged=False, **sizes)()
    named = "the surrogate names the guard reads" if surrogate else "their own names"
    if paired_faces:
        named += ", the surrogate faces it reads"
    elif "image" in config.scope:
        named += ", their own photos"
    people = min(len(rows), TWIN_ROUNDS)
    return value, (
        f"measured unguarded: the forget questions about {people} never-trained people of {where}, under {named}; "
        f"{len(heldout)} questions"
    )


def surrogate_face_of(guard: Any, faces: Sequence[Any]):
    """``photo -> the picture of faces`` whose features the guard moves that photo toward (the least similar one,
    as :func:`eco_guard.faces.least_similar` picks it at serving time). ``faces`` are the pictures behind the
    guard's ``image_surrogates``, in order: their features are the bank it already holds."""
    from eco_guard.faces import least_similar_index

    bank = guard.image_surrogates
    if bank is None or len(bank) != len(faces):
        held = 0 if bank is None else len(bank)
        raise ValueError(f"{len(faces)} surrogate pictures for a guard that holds {held} surrogate faces")
    return lambda photo: faces[least_similar_index(bank, guard.image_features([photo]))]


def target_rows(data: str | Path, forget: str, target: str) -> tuple[list[dict[str, Any]], str]:
    """The rows of never-trained people ``--target`` names, and where they came from: a config of ``data`` (its
    forget people left out), or another folder (a config folder of parquet shards, or a benchmark folder: its
    ``forget`` config, else its Full_Set)."""
    forget_ids = {row_id(r, forget) for r in load_config(data, forget)}
    path = Path(target).expanduser()
    configs = local_configs(data) if is_local(data) else list(CONFIGS)
    if target in configs:
        rows, source = load_config(data, target), f"config {target} of {data}"
    elif path.is_dir():
        configs = local_configs(path)
        if any(path.glob("*.parquet")):
            rows, source = load_config(path.parent, path.name), f"{path}"
        elif forget in configs or "Full_Set" in configs:
            name = forget if forget in configs else "Full_Set"
            rows, source = load_config(path, name), f"config {name} of {path}"
        else:
            raise FileNotFoundError(
                f"--target {target}: the folder holds no parquet shards, no {forget} and no Full_Set "
                f"(configs there: {', '.join(configs) or 'none'})"
            )
    else:
        raise ValueError(
            f"--target {target!r} is neither a number, a config of {data} ({', '.join(configs)}) nor a folder "
            "of never-trained people"
        )
    rows = [r for r in rows if row_id(r, source) not in forget_ids]
    if not rows:
        raise ValueError(f"--target {target}: no profiles outside {forget} in {source}")
    return rows, source
