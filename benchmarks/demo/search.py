"""The guard's offline half: the prompt classifier, the corruption strengths' nevergrad search (one per
modality) and the strength sweep behind the figure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.demo.cache import cached, mark
from benchmarks.demo.scoring import FORGET_TOLERANCE, GOAL_METRICS, unit
from benchmarks.demo.settings import DemoSettings


def sweep(
    guard: Any,
    forget_items: Sequence[Any],
    retain_items: Sequence[Any],
    strengths: Sequence[float],
    batch_size: int = 16,
) -> list[dict[str, float]]:
    """Mean per-token log-likelihood of the reference answers, forget (flagged) and retain (the classifier's
    verdict) items, at each corruption strength: how knowledge falls on the forget set only.

    Each set is flagged once. An unflagged request never reads the strength (no hook is registered), so when
    the classifier flags no retain item their curve is measured once and drawn flat."""
    base = guard.config
    sets = []
    for name, items, forced in (("forget", forget_items, True), ("retain", retain_items, False)):
        prompts = [it.request for it in items]
        flags = guard.decide(prompts, [True] * len(prompts) if forced else None)
        lengths = [
            len(guard.tokenizer(" " + it.reference, add_special_tokens=False)["input_ids"]) for it in items
        ]
        sets.append((name, items, prompts, flags, lengths, forced or any(f.flagged for f in flags)))
    rows: list[dict[str, float]] = []
    try:
        for strength in strengths:
            # one strength for names and images alike
            guard.config = base.replace(strength=float(strength), image_strength=None)
            row = {"strength": float(strength)}
            for name, items, prompts, flags, lengths, moves in sets:
                if rows and not moves:
                    row[name] = rows[0][name]
                    continue
                scores = guard.score(
                    prompts,
                    [[" " + it.reference] for it in items],
                    flags=flags,
                    chat_template=False,
                    batch_size=batch_size,
                )
                row[name] = sum(s[0] / n for s, n in zip(scores, lengths, strict=True)) / len(items)
            rows.append(row)
    finally:
        guard.config = base
    return rows


def fit_classifier(
    root: Path, forget: str, model: Any, processor: Any, out: Path, settings: DemoSettings, key: str
):
    """The prompt classifier (text + image identity through the demo model's own vision tower), saved in ``out``."""
    from benchmarks.mllmu.loader import retain_split
    from benchmarks.mllmu.profiles import profiles_from_mllmu
    from classifiers.image_encoders import VisionTowerEncoder
    from classifiers.multimodal import MultimodalClassifier
    from classifiers.training import fit_classifier as fit

    folder = out / "classifier"
    if cached(out, key, "classifier") and folder.is_dir():
        return MultimodalClassifier.from_pretrained(folder)
    forget_people, retain_people, celebrities = profiles_from_mllmu(root, forget, retain_split(forget))
    encoder = VisionTowerEncoder.from_mllm(model, processor)
    classifier, report = fit(
        forget_people,
        retain_people,
        celebrities,
        fpr=settings.fpr,
        image_encoder=encoder,
        combine=settings.combine,
        seed=settings.seed,
        robustness_per_family=20,
    )
    classifier.save_pretrained(folder)
    (out / "classifier_report.json").write_text(
        json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"
    )
    mark(out, key, "classifier")
    return classifier


def benchmark_items(
    root: Path,
    forget: str,
    set_name: str,
    task: str | None,
    seed: int,
    limit: int | None,
    no_leak: bool = False,
) -> list[Any]:
    """The evaluation's own items of one set and task (None: every task), both modalities, as
    ``benchmarks.mllmu.evaluate`` asks them."""
    from benchmarks.mllmu import evaluate as ev

    bench = ev.load_benchmark(root, forget)
    sampler = ev.ShotSampler(bench, seed, 1, no_leak)
    items = ev.build_items(set_name, bench.sets[set_name], sampler, seed, ev.MODALITIES, bench.names)
    return ev.limit_items([it for it in items if task is None or it.task == task], limit)


class GoalGap:
    """A prepared metric for ``eco_guard.optimize.optimize_guard``: the mean |guarded - never-trained| over the
    goal metrics of one modality's forget questions (all three tasks), scored by the benchmark's own code.
    Searching it aims the corruption at what the goals measure; ROUGE-L alone left stated answers and cloze
    memorized."""

    name = "goal_gap"
    bounds = (0.0, 1.0)

    def __init__(
        self, guard: Any, items: Sequence[Any], reference: Mapping[str, float], settings: DemoSettings
    ):
        if not items or not reference:
            raise ValueError("goal_gap needs forget questions and never-trained scores")
        from benchmarks.mllmu.search_metrics import FlagEvery

        self.runner, self.items, self.reference = FlagEvery(guard), list(items), dict(reference)
        self.batch_size, self.max_new_tokens = settings.batch_size, settings.max_new_tokens

    def __call__(self) -> float:
        from benchmarks.mllmu import evaluate as ev

        ev.run_items(
            self.runner,
            self.items,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            logprob=False,
        )
        summary = ev.summarize([ev.score_item(it, False) for it in self.items])
        (scores,) = (by_modality for by_set in summary.values() for by_modality in by_set.values())
        measured = {m: unit(m, scores.get(m)) for m in self.reference}
        missing = [m for m, v in measured.items() if v is None]
        if missing:
            raise ValueError(f"goal_gap: the forget questions yield no {missing}")
        gaps = [abs(measured[m] - r) for m, r in self.reference.items()]
        return float(sum(gaps) / len(gaps))


SEARCHES = (("text_only", "strength"), ("image_text", "image_strength"))
"""One search per modality, text first: named questions move with ``strength`` (their names' tokens), "this
person" questions with a photo move with ``image_strength`` alone (scope spans+image leaves their words)."""


def optimize(
    guard: Any,
    root: Path,
    reference: Path,
    twin_scores: Mapping[str, Mapping[str, float]],
    forget: str,
    out: Path,
    settings: DemoSettings,
    key: str,
):
    """nevergrad search of the corruption strengths, one per modality: the guarded forget scores of that
    modality's questions -> the scores of the twins whose identities the guard reads (``twin_scores``, round 0;
    ``settings.metric``)."""
    from eco_guard.config import GuardConfig
    from eco_guard.corruption import USES_TARGET
    from eco_guard.optimize import ScoredItem, SearchSpace, optimize_guard

    if cached(out, key, "optimize") and (out / "search.json").is_file():
        guard.config = GuardConfig.from_pretrained(out)
        return json.loads((out / "search.json").read_text())

    def scored(items, modality):
        return [
            ScoredItem(prompt=it.prompt, answer=it.reference, image=it.image)
            for it in items
            if it.modality == modality
        ]

    goals = settings.metric == "goals"
    forget_items = benchmark_items(
        root,
        forget,
        "forget",
        None if goals else "generation",
        settings.seed,
        settings.limit,
        settings.no_leak,
    )
    heldout_gen = (
        []
        if goals
        else benchmark_items(
            reference, forget, "forget", "generation", settings.seed, settings.limit, settings.no_leak
        )
    )
    searches = {}
    for modality, parameter in SEARCHES:
        if parameter == "image_strength" and "image" not in guard.config.scope:
            continue
        if goals:
            never_scores = {m: v for m, v in twin_scores.get(modality, {}).items() if m in GOAL_METRICS}
            questions = [it for it in forget_items if it.modality == modality]
            if not questions or not never_scores:
                continue
            items, target, metric = [], 0.0, GoalGap(guard, questions, never_scores, settings)
        else:
            items, target = scored(forget_items, modality), scored(heldout_gen, modality)
            metric = settings.metric
            if not items or not target:
                continue
        family = settings.image_corruption if parameter == "image_strength" else settings.corruption
        blend = USES_TARGET[family]
        space = SearchSpace(
            settings.blend_range if blend else settings.strength_range,
            parameter=parameter,
            scale="linear" if blend else "log",
        )
        result = optimize_guard(
            guard,
            items,
            target=target,
            metric=metric,
            tolerance=FORGET_TOLERANCE / 2,
            budget=settings.budget,
            seed=settings.seed,
            chat_template=False,
            batch_size=settings.batch_size,
            space=space,
            max_new_tokens=settings.max_new_tokens,
            output_dir=out / f"search_{modality}",
        )
        searches[modality] = {
            "parameter": parameter,
            "best": asdict(result.best),
            "target": result.target,
            "reached": result.reached,
            "evaluations": len(result.trace),
            "metric": result.metric,
        }
    guard.save_settings(out)
    (out / "search.json").write_text(json.dumps(searches, indent=2, sort_keys=True) + "\n")
    mark(out, key, "optimize")
    return searches
