"""The demo's goals and the numbers behind them: scores on one scale, guarded vs never-trained gaps per
question, the mean over guard seeds, and the PASS / FAIL lines."""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOAL_METRICS = ("classification_stated_acc", "cloze_acc", "rougeL")
"""Classification is read from the stated option: the demo's 135M model answers in sentences, never a letter."""
SET_ORDER = ("forget", "test", "retain", "celebrity")
MODALITY_ORDER = ("image_text", "text_only")
PERCENT_METRICS = (
    "classification_acc",
    "classification_stated_acc",
    "classification_logprob_acc",
    "cloze_acc",
    "flag_rate",
)
FORGET_TOLERANCE = 0.03
KEEP_TOLERANCE = 0.005
MEMORIZED_MARGIN = 0.10


@dataclass
class Goal:
    name: str
    passed: bool
    measured: str


def unit(metric: str, value: float | None) -> float | None:
    """Scores on one [0, 1] scale (accuracies are stored in percent)."""
    if value is None:
        return None
    return value / 100 if metric in PERCENT_METRICS else value


def metric_of(results: Mapping[str, Any], set_name: str, modality: str, metric: str) -> float | None:
    return unit(metric, results.get("metrics", {}).get(set_name, {}).get(modality, {}).get(metric))


def rows_of(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(set, modality) pairs present in ``results``, in a fixed order (JSON round trips sort the keys)."""
    table = results.get("metrics", {})
    return [(s, m) for s in SET_ORDER for m in MODALITY_ORDER if m in table.get(s, {})]


def forget_item_scores(samples: Path) -> dict[tuple[str, str], dict[tuple[str, str, int], float]]:
    """``{(modality, goal metric): {(profile ID, task, question index): score}}`` of the forget questions, read as
    the benchmark's summary reads them (``benchmarks.mllmu.evaluate.SAMPLE_METRICS``)."""
    from benchmarks.mllmu.evaluate import SAMPLE_METRICS

    out: dict[tuple[str, str], dict[tuple[str, str, int], float]] = {}
    for line in samples.read_text().splitlines():
        record = json.loads(line) if line.strip() else None
        if record is None or record["set"] != "forget":
            continue
        for metric in GOAL_METRICS:
            task, read, _ = SAMPLE_METRICS[metric]
            if record["task"] == task:
                key = (record["id"], record["task"], int(record.get("index", 0)))
                out.setdefault((record["modality"], metric), {})[key] = float(read(record))
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _gap(diffs: Sequence[float]) -> dict[str, float]:
    """The mean of per-question differences and its 95% half-width (normal, over questions)."""
    return {"gap": _mean(diffs), "interval": 1.96 * (_sd(diffs) or 0.0) / len(diffs) ** 0.5}


def forget_gaps(
    guarded: Sequence[Path], reference: Path, pairs: Sequence[Sequence[str]]
) -> dict[str, dict[str, dict]]:
    """Per forget modality and goal metric, guarded vs never-trained on the very same questions and identities.

    ``pairs``: the never-trained twins' ``(forget ID, never-trained ID)`` in rounds of one twin per forget person
    (``reference``: their samples); ``guarded[k]``: the samples of the guard that read round k's identities as its
    surrogates. Each question's difference is its mean over the rounds of guard k's score minus twin k's; the gap
    is their mean, its 95% half-width the normal one over questions. ``seed_sd`` and ``round_sd``: how much one
    guard and one round of twins move the cell (the draw of an unknown person, which the pairing cancels);
    ``agreement``: the share of (question, round) pairs where guard and twin scored alike."""
    from benchmarks.mllmu.twins import twin_id, twin_rounds

    rounds = [dict(members) for members in twin_rounds(pairs)]  # forget ID -> its twin's identity, per round
    if len(guarded) != len(rounds):
        raise ValueError(f"{len(guarded)} guards for {len(rounds)} rounds of twins: one guard per round")
    runs = [forget_item_scores(path) for path in guarded]
    twins = forget_item_scores(reference)
    out: dict[str, dict[str, dict]] = {}
    for (modality, metric), scores in sorted(twins.items()):
        if any((modality, metric) not in run for run in runs):
            continue
        paired: dict[tuple[str, str, int], list[float]] = {}
        by_round: list[list[float]] = [[] for _ in rounds]
        for k, (run, never_of) in enumerate(zip(runs, rounds, strict=True)):
            for (who, task, index), value in run[modality, metric].items():
                twin = scores.get((twin_id(who, never_of[who]), task, index)) if who in never_of else None
                if twin is not None:
                    paired.setdefault((who, task, index), []).append(value - twin)
                    by_round[k].append(twin)
        questions = sorted(paired)  # with --limit, a question may lack some rounds: it averages those it has
        if not questions:
            continue
        diffs = [_mean(paired[q]) for q in questions]
        every = [d for q in questions for d in paired[q]]
        out.setdefault(modality, {})[metric] = {
            **_gap(diffs),
            "seed_sd": _sd([_mean(list(run[modality, metric].values())) for run in runs]),
            "round_sd": _sd([_mean(values) for values in by_round if values]),
            "agreement": sum(abs(d) < 1e-9 for d in every) / len(every),
            "seeds": len(runs),
            "rounds": len(rounds),
            "questions": len(questions),
        }
    return out


def round_scores(samples: Path, members: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """``{modality: {goal metric: score}}`` of one round of twins (``members``: its pairs), on [0, 1]."""
    from benchmarks.mllmu.twins import twin_id

    ids = {twin_id(f, n) for f, n in members}
    out: dict[str, dict[str, float]] = {}
    for (modality, metric), scores in forget_item_scores(samples).items():
        values = [v for (who, _, _), v in scores.items() if who in ids]
        if values:
            out.setdefault(modality, {})[metric] = _mean(values)
    return out


def own_name_gaps(guarded: Sequence[Path], reference: Path) -> dict[str, dict[str, dict]]:
    """Per forget modality and goal metric, the guards' mean against the mean over never-trained people (twins in
    ``reference``, any number per forget person) on each question; the gap is their mean over questions, its 95%
    half-width the normal one. Unpaired: which unknown people were drawn is part of the spread."""
    from benchmarks.mllmu.twins import twin_parts

    runs = [forget_item_scores(path) for path in guarded]
    twins = forget_item_scores(reference)
    out: dict[str, dict[str, dict]] = {}
    for (modality, metric), scores in sorted(twins.items()):
        never: dict[tuple[str, str, int], list[float]] = {}
        for (who, task, index), value in scores.items():
            never.setdefault((twin_parts(who)[0], task, index), []).append(value)
        shared = [q for q in sorted(never) if all(q in run.get((modality, metric), {}) for run in runs)]
        if not shared:
            continue
        mine = {q: _mean([run[modality, metric][q] for run in runs]) for q in shared}
        theirs = {q: _mean(never[q]) for q in shared}
        out.setdefault(modality, {})[metric] = {
            **_gap([mine[q] - theirs[q] for q in shared]),
            "guarded": _mean(list(mine.values())),
            "never_trained": _mean(list(theirs.values())),
            "questions": len(shared),
            "identities": min(len(never[q]) for q in shared),
        }
    return out


def mean_forget(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``runs[0]`` with each forget metric replaced by its mean over ``runs`` (guards with other seeds, scored on the
    forget set)."""
    out = copy.deepcopy(dict(runs[0]))
    for modality, values in out.get("metrics", {}).get("forget", {}).items():
        for metric, value in values.items():
            if metric == "n" or metric.startswith("n_") or not isinstance(value, (int, float)):
                continue
            seen = [r["metrics"]["forget"][modality].get(metric) for r in runs]
            if all(isinstance(v, (int, float)) for v in seen):
                values[metric] = _mean(seen)
    return out


def _precision(cell: Mapping[str, Any] | None) -> str:
    """How precisely a forget gap is measured, for the goal's printed line."""
    if not cell:
        return ""
    text = f", 95% interval +-{cell['interval']:.3f} over {cell['questions']} questions"
    if cell.get("seed_sd") is not None:
        text += f"; one guard seed of {cell['seeds']} moves it by {cell['seed_sd']:.3f} (sd)"
    if cell.get("round_sd") is not None:
        text += f", one round of twins of {cell['rounds']} by {cell['round_sd']:.3f}"
    if cell.get("agreement") is not None:
        text += f"; guard and twin scored alike on {cell['agreement']:.0%} of pairs"
    return text


def goals(
    vanilla: Mapping[str, Any],
    guarded: Mapping[str, Any],
    reference: Mapping[str, Any],
    gaps: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> list[Goal]:
    """The demo's claims, each measured: forget ~ never-trained, retain / celebrity unchanged, vanilla memorized."""
    out = []
    modalities = sorted({m for s in vanilla.get("metrics", {}).values() for m in s})
    for modality in modalities:
        for metric in GOAL_METRICS:
            g = metric_of(guarded, "forget", modality, metric)
            r = metric_of(reference, "forget", modality, metric)
            v = metric_of(vanilla, "forget", modality, metric)
            if g is None or r is None or v is None:
                continue
            precision = _precision((gaps or {}).get(modality, {}).get(metric))
            out.append(
                Goal(
                    f"forget {modality} {metric}: guarded within {FORGET_TOLERANCE} of never-trained",
                    abs(g - r) <= FORGET_TOLERANCE + 1e-9,
                    f"guarded {g:.3f} vs never-trained {r:.3f} (diff {g - r:+.3f}{precision})",
                )
            )
            out.append(
                Goal(
                    f"forget {modality} {metric}: vanilla memorized (>= never-trained + {MEMORIZED_MARGIN})",
                    v - r >= MEMORIZED_MARGIN,
                    f"vanilla {v:.3f} vs never-trained {r:.3f} (diff {v - r:+.3f})",
                )
            )
    for set_name in ("retain", "celebrity"):
        for modality, values in vanilla.get("metrics", {}).get(set_name, {}).items():
            diffs = {}
            for metric in values:
                if metric in ("n", "flag_rate") or metric.startswith("n_"):
                    continue
                v, g = (
                    metric_of(vanilla, set_name, modality, metric),
                    metric_of(guarded, set_name, modality, metric),
                )
                if v is not None and g is not None:
                    diffs[metric] = g - v
            if not diffs:
                continue
            worst = max(sorted(diffs), key=lambda m: abs(diffs[m]))  # ties: the same name, fresh or cached
            out.append(
                Goal(
                    f"{set_name} {modality}: |guarded - vanilla| <= {KEEP_TOLERANCE} "
                    f"on all {len(diffs)} metrics",
                    abs(diffs[worst]) <= KEEP_TOLERANCE + 1e-9,
                    f"largest change {diffs[worst]:+.3f} ({worst})",
                )
            )
    return out
