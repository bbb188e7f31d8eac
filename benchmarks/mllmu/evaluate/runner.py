"""Asking and scoring: a runner answers the items (batched), each answer becomes a sample record, the records
a ``metrics[set][modality][metric]`` table; :func:`evaluate` does it all for every set."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.mllmu import metrics
from benchmarks.mllmu.evaluate.items import (
    MODALITIES,
    SETS,
    Item,
    ShotSampler,
    build_items,
    limit_items,
    load_benchmark,
)
from benchmarks.mllmu.evaluate.report import UNITS, git_revision, package_versions, write_outputs

logger = logging.getLogger(__package__)  # one logger for the package, named as before it became one


OPTION_PREFIX = " "
"""Options are scored as the continuation `` <option text>`` of the prompt."""


def _decide(runner: Any, batch: Sequence[Item]) -> list[Any]:
    from eco_guard.requests import Flag, to_request

    if not hasattr(runner, "decide"):
        return [Flag(False) for _ in batch]
    flags = list(runner.decide([to_request(it.request) for it in batch]))
    if len(flags) != len(batch):
        raise RuntimeError(f"runner.decide returned {len(flags)} flags for {len(batch)} requests")
    return flags


def run_items(
    runner: Any,
    items: Sequence[Item],
    *,
    batch_size: int,
    max_new_tokens: int,
    logprob: bool,
    progress: Any = None,
) -> None:
    """Ask every item (batched per task and modality) and fill ``item.record`` with the raw outcome."""
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for it in items:
        groups[(it.task, it.modality)].append(it)
    can_score = logprob and callable(getattr(runner, "score", None))
    for group in groups.values():
        for lo in range(0, len(group), max(1, batch_size)):
            batch = group[lo : lo + batch_size]
            flags = _decide(runner, batch)
            requests = [it.request for it in batch]
            outputs = runner.generate(
                requests, flags=flags, chat_template=False, max_new_tokens=max_new_tokens
            )
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"runner.generate returned {len(outputs)} answers for {len(batch)} prompts"
                )
            option_scores = [None] * len(batch)
            if can_score and batch[0].task == "classification":
                continuations = [[OPTION_PREFIX + text for text in it.options.values()] for it in batch]
                option_scores = runner.score(requests, continuations, flags=flags, chat_template=False)
            for it, out, flag, scores in zip(batch, outputs, flags, option_scores, strict=True):
                it.record = {
                    "output": out,
                    "flagged": bool(flag.flagged),
                    "flag_score": float(flag.score),
                    "option_logprobs": None if scores is None else [float(s) for s in scores],
                }
            if progress is not None:
                progress.update(len(batch))


def score_item(it: Item, with_bleu: bool) -> dict[str, Any]:
    """The sample record of one answered item: prompt, response, reference, per-item scores, the guard's flag."""
    response = metrics.response_text(it.record["output"])
    sample = {
        "set": it.set,
        "task": it.task,
        "modality": it.modality,
        "id": it.id,
        "index": it.index,
        "question": it.question,
        "prompt": it.prompt,
        "image": it.image_ref,
        "few_shot_ids": list(it.few_shot_ids),
        "output": it.record["output"],
        "response": response,
        "reference": it.reference,
        "flagged": it.record["flagged"],
        "flag_score": it.record["flag_score"],
    }
    if it.task == "classification":
        prediction = metrics.first_letter(response, it.options)
        stated = metrics.stated_option(response, it.options)
        sample.update(
            options=it.options,
            prediction=prediction,
            correct=prediction == it.reference,
            stated_prediction=stated,
            stated_correct=stated == it.reference,
        )
        if it.record["option_logprobs"] is not None:
            keys = list(it.options)
            choice = metrics.logprob_choice(keys, it.record["option_logprobs"])
            sample.update(
                option_logprobs=dict(zip(keys, it.record["option_logprobs"], strict=True)),
                logprob_prediction=choice,
                logprob_correct=choice == it.reference,
            )
    elif it.task == "cloze":
        sample["correct"] = metrics.cloze_correct(response, it.reference)
    else:
        sample["scores"] = metrics.rouge(it.reference, response)
        if with_bleu and it.task == "generation":
            sample["scores"]["bleu"] = metrics.bleu(it.reference, response)
    return sample


def _score(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda s: None if s.get(key) is None else float(s[key])


def _text_score(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda s: s["scores"].get(key)


SAMPLE_METRICS: dict[str, tuple[str, Callable[[Mapping[str, Any]], float | None], float]] = {
    "classification_acc": ("classification", _score("correct"), 100),
    "classification_stated_acc": ("classification", _score("stated_correct"), 100),
    "classification_logprob_acc": ("classification", _score("logprob_correct"), 100),
    "cloze_acc": ("cloze", _score("correct"), 100),
    **{key: ("generation", _text_score(key), 1) for key in ("rouge1", "rouge2", "rougeL", "bleu")},
    "qa_rougeL": ("qa", _text_score("rougeL"), 1),
}
"""metric -> (task, the score of one sample record, scale): each metric is the mean of that score over the task's
samples, times the scale (accuracies are in percent); it is left out when a sample lacks the score."""


def summarize(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """metrics[set][modality][metric] from the sample records."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for s in samples:
        grouped[(s["set"], s["modality"])].append(s)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (set_name, modality), group in sorted(
        grouped.items(), key=lambda kv: (SETS.index(kv[0][0]), kv[0][1])
    ):
        by_task = defaultdict(list)
        for s in group:
            by_task[s["task"]].append(s)
        m: dict[str, Any] = {}
        for name, (task, read, scale) in SAMPLE_METRICS.items():
            values = [read(s) for s in by_task[task]]
            value = metrics.mean(values) if values and None not in values else None
            if value is not None:
                m[name] = scale * value
        m["flag_rate"] = 100 * metrics.mean([float(s["flagged"]) for s in group])
        m["n"] = len(group)
        for task in ("classification", "cloze", "generation", "qa"):
            if by_task[task]:
                m[f"n_{task}"] = len(by_task[task])
        out.setdefault(set_name, {})[modality] = m
    return out


def evaluate(
    runner: Any,
    data_root: str | Path,
    forget: str = "forget_5",
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    no_leak: bool = False,
    few_shot_profiles: int = 1,
    max_new_tokens: int = 50,
    limit: int | None = None,
    batch_size: int = 8,
    sets: Sequence[str] = SETS,
    logprob: bool = True,
    bleu: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``runner`` on every set and modality; write ``results.json``, ``samples.jsonl`` and ``results.md`` to
    ``out_dir`` when given. Returns the results dict (``metrics[set][modality][metric]`` plus provenance).

    ``limit`` caps the questions per set, task and modality (quick runs). The same seed gives the same few-shot
    draws, Test_Set images, prompts and (with greedy decoding) the same scores.
    """
    from tqdm.auto import tqdm

    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ValueError(f"unknown sets {unknown}; valid: {', '.join(SETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    started = time.perf_counter()
    bench = load_benchmark(data_root, forget)
    multimodal = bool(getattr(runner, "multimodal", False))
    modalities = MODALITIES if multimodal else ("text_only",)
    sampler = ShotSampler(bench, seed, few_shot_profiles, no_leak)
    samples: list[dict[str, Any]] = []
    timings: dict[str, float] = {"load": round(time.perf_counter() - started, 3)}
    for set_name in sets:
        items = limit_items(
            build_items(set_name, bench.sets[set_name], sampler, seed, modalities, bench.names), limit
        )
        if not items:
            logger.warning("set %s has no questions to ask here; skipped", set_name)
            continue
        t0 = time.perf_counter()
        with tqdm(total=len(items), desc=f"MLLMU {set_name}", unit="q") as bar:
            run_items(
                runner,
                items,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                logprob=logprob,
                progress=bar,
            )
        samples += [score_item(it, bleu) for it in items]
        timings[set_name] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - started, 3)
    results = {
        "metrics": summarize(samples),
        "units": UNITS,
        "few_shot": {k: dict(v) for k, v in sampler.log.items()},
        "provenance": {
            **dict(provenance or {}),
            "data": str(data_root),
            "split": forget,
            "seed": seed,
            "no_leak": no_leak,
            "few_shot_profiles": few_shot_profiles,
            "max_new_tokens": max_new_tokens,
            "limit": limit,
            "batch_size": batch_size,
            "sets": list(sets),
            "modalities": list(modalities),
            "protocol": "MLLMU-Bench reference prompts; greedy decoding; seeded few-shot and Test_Set image "
            "choice",
            "versions": package_versions(),
            "git": git_revision(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": timings,
        },
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), results, samples)
    return results
