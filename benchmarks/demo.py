"""The end-to-end demo: a multimodal model that learned fictitious people forgets some of them at inference time.

Steps, each written under ``out/`` and reused on the next run when its inputs are unchanged:

1. ``data/``: the synthetic MLLMU-Bench the demo model was trained on; ``reference/`` is the same benchmark with
   twins in the forget split's place: the forget people's questions about people the model never saw (their scores
   are the level a perfect guard should reach; ``benchmarks.mllmu.twins``), round k about the identity guard k
   reads: the k-th never-trained person's photo, the surrogate name of guard k's seed.
2. the vanilla demo MLLM (``benchmarks.demo_model``: the committed artifact, or trained when missing).
3. ``classifier/``: the prompt classifier (text + image identity), fitted on the forget split.
4. ``guard/``: the corruption strengths found by nevergrad so that the forget set scores like the never-trained
   profiles, one per modality (names' tokens for named questions, image features for "this person" ones).
5. ``results/{vanilla,never_trained,guarded}/``: the benchmark's evaluation, then the table, the goals (PASS / FAIL
   with the measured numbers) and ``demo.png``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eco_guard.optimize import BLEND_RANGE

logger = logging.getLogger(__name__)

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
STAGE_PREFIX = ".stage-"
TWINS_FILE = "twins.json"


@dataclass
class DemoSettings:
    """What a demo run does; the defaults keep a cached run within minutes on two CPU cores."""

    out: Path = Path("demo_out")
    artifact: Path | None = None
    retrain: bool = False
    limit: int | None = None
    max_new_tokens: int = 32
    batch_size: int = 16
    """Questions per generate call (16 ran the demo's forget set 5% faster than 8 on two CPU cores)."""
    seed: int = 0
    budget: int = 8
    metric: str = "goals"
    """What the corruption search matches to the never-trained profiles: ``goals`` (the mean distance over the
    goal metrics: stated multiple choice, cloze and ROUGE-L, scored as the benchmark scores them) or one of
    ``eco_guard.optimize.METRICS`` on the generation questions (e.g. ``rouge_l``)."""
    fpr: float = 0.01
    combine: str = "bonferroni"
    """How an image request's two detectors share ``fpr`` (``classifiers.multimodal``)."""
    corruption: str = "substitute"
    """On the names' tokens: ``substitute`` moves them toward a surrogate name (the answer keeps the person's name,
    as a model that never learned them would; noise garbled the name: text-only ROUGE-L 0.20 vs never-trained
    0.74)."""
    image_corruption: str = "substitute"
    """On the image features of "this person" questions: ``substitute`` moves them toward a surrogate face (a
    never-trained person's photo, see ``guard_seeds``), the picture analogue of a surrogate name; noise
    made every face read alike ("Cork, Ireland" for anyone) and answers worse than never-trained."""
    guard_seeds: int = 6
    """Guards scored on the forget set, paired with rounds of never-trained twins (common random numbers): guard
    k reads the k-th never-trained person's photo as its surrogate face and its own surrogate names
    (``GuardConfig.seed`` + k); round k asks the forget people's questions about that same identity (that photo,
    those names). Which unknown person is drawn then moves both sides alike, and the gap measures the guard alone:
    with independent draws (4 guards with faces drawn for nobody, 8 rounds of the never-trained people's own
    names) one unknown person moved a cloze cell by 0.08-0.10 and its 95% interval was +-0.11. At most the number
    of never-trained people (8)."""
    dims: int | None = None
    """Dimensions the noise touches; None: all of them (isotropic noise on the image features, and on the names'
    tokens when ``corruption`` is a noise; ECO's single dimension needs a strength so large on this small model
    that answers stop being sentences before the person is forgotten)."""
    scope: tuple[str, ...] = ("spans", "image")
    strength_range: tuple[float, float] = (1e-3, 1.0)
    """Searched on a log scale for a noise family."""
    blend_range: tuple[float, float] = BLEND_RANGE
    """Searched on a linear scale for ``substitute`` (a blend weight: at 1 the surrogate alone is read; below
    ``BLEND_RANGE`` the answers mix the two names)."""
    initial_strength: float = 0.03
    strengths: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    blend_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    no_leak: bool = True
    """Few-shot examples from retain people (``evaluate(no_leak=True)``), the same person for the forget set and the
    never-trained reference. The reference protocol draws them from the scored set itself: a forget person
    (guarded too) against a never-trained one, whose facts the model copies in other proportions (both models
    answered most multiple-choice questions about the few-shot person), one draw per cell."""
    own_names: bool = False
    """Also check the guards against the never-trained people under their own names and photos, every one for every
    forget person (``own_name_check``; not a goal: the pairing cannot see whether a surrogate identity is a typical
    never-trained one, this can). 192 s more on two CPU cores (832 questions)."""
    logprob: bool = False
    """Also score multiple choice by option log-likelihood (``classification_logprob_acc``, no goal reads it): one
    more forward pass per option, which doubles the evaluation time on two CPU cores."""
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------ stage cache


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able inputs (settings, file digests)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """Hash of every file's name and bytes under ``folder`` (what a stage's output depends on)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(STAGE_PREFIX)):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached(folder: Path, key: str, stage: str = "output") -> bool:
    """Whether ``stage`` already wrote ``folder`` from the inputs hashed into ``key``."""
    stamp = folder / f"{STAGE_PREFIX}{stage}.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("key") == key


def mark(folder: Path, key: str, stage: str = "output") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{STAGE_PREFIX}{stage}.json").write_text(json.dumps({"key": key}) + "\n")


# ------------------------------------------------------------------ data


def write_split(source_root: Path, target_root: Path, name: str, ids: Sequence[str]) -> None:
    """Write config ``name`` under ``target_root`` holding the Full_Set rows of ``ids`` (schema kept)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from benchmarks.mllmu.loader import shard_files

    tables = [pq.read_table(s) for s in shard_files(source_root, "Full_Set")]
    import pyarrow as pa

    table = pa.concat_tables(tables)
    table = table.filter(pc.is_in(table["ID"], value_set=pa.array(list(ids), type=pa.string())))
    folder = target_root / name
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")


def surrogate_words(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The demo guard's surrogate words (``GuardConfig`` fields): the synthetic benchmark's own name pools, less
    every word of its profiles' and celebrities' names. A guarded request then reads about someone like the
    never-trained people, never about one the model knows. The guard's built-in words ("Lazarus", "Thaddeus")
    are not such a person: twins under them (8 rounds) scored text-only multiple choice 0.43, the never-trained
    people under their own names 0.30, and four other draws of 8 names from these pools 0.33-0.37."""
    from benchmarks.mllmu.celebrities import CELEBRITY_NAME_PARTS
    from benchmarks.mllmu.vocab import FEMALE_FIRST, LAST_NAMES, MALE_FIRST

    taken = {word for name in names for word in name.split()} | set(CELEBRITY_NAME_PARTS)
    return {
        "surrogate_given_names": tuple(w for w in FEMALE_FIRST + MALE_FIRST if w not in taken),
        "surrogate_surnames": tuple(w for w in LAST_NAMES if w not in taken),
    }


def prepare_data(data: Any, out: Path, heldout: Sequence[str], rounds: int, tokenizer: Any,
                 config: Any) -> tuple[Path, Path, Any]:  # fmt: skip
    """The benchmark (retain split without the held-out profiles), its never-trained twin and the guard's config
    with the benchmark's :func:`surrogate_words`. The twin asks the forget people's questions in ``rounds`` rounds
    (``benchmarks.mllmu.twins.round_pairs``), round k about the k-th held-out person's photo under the name that
    guard k (``config.seed`` + k) reads; data and twin under ``out``."""
    from benchmarks.mllmu.loader import retain_split, split_people
    from benchmarks.mllmu.twins import round_pairs, twin_pairs
    from eco_guard.surrogates import Surrogates

    root, reference = out / "data", out / "reference"
    data_key = fingerprint(asdict(data))
    if not cached(root, data_key, "data"):
        data.write(root)
        mark(root, data_key, "data")
    manifest = json.loads((root / "synthetic_manifest.json").read_text())
    forget_ids = list(split_people(root, data.forget))
    if set(heldout) & set(forget_ids):
        raise ValueError(
            f"held-out profiles {sorted(set(heldout) & set(forget_ids))} are in the forget split"
        )
    config = config.replace(**surrogate_words(manifest["names"].values()))
    namers = [Surrogates.of(tokenizer, config.replace(seed=config.seed + k)) for k in range(rounds)]
    pairs = round_pairs(forget_ids, heldout, rounds)
    twin_names = {(f, n): namers[k // len(forget_ids)].name(manifest["names"][f])
                  for k, (f, n) in enumerate(pairs)}  # fmt: skip
    key = fingerprint(data_key, sorted(heldout), sorted(twin_names.items()), "test once")
    if cached(root, key) and cached(reference, key):
        return root, reference, config
    write_split(root, root, retain_split(data.forget), retain_ids_of(manifest, forget_ids, heldout))
    # the Test_Set row only fills the table: each never-trained person once is enough (a quarter of the time)
    write_reference(root, reference, data.forget, pairs, manifest, heldout, twin_names,
                    test_pairs=twin_pairs(forget_ids, heldout))  # fmt: skip
    mark(root, key)
    mark(reference, key)
    return root, reference, config


def retain_ids_of(
    manifest: Mapping[str, Any], forget_ids: Sequence[str], heldout: Sequence[str]
) -> list[str]:
    """The retain people: neither forget nor never-trained."""
    return [i for i in sorted(manifest["names"]) if i not in set(forget_ids) | set(heldout)]


def write_reference(root: Path, folder: Path, forget: str, pairs: Sequence[tuple[str, str]],
                    manifest: Mapping[str, Any], heldout: Sequence[str],
                    twin_names: Mapping[tuple[str, str], str] | None = None,
                    test_pairs: Sequence[tuple[str, str]] | None = None) -> None:  # fmt: skip
    """``folder``: the benchmark in ``root`` with the twins of ``pairs`` in the ``forget`` split's place (under
    ``twin_names``, else the never-trained people's own names) and, with ``test_pairs``, in the Test_Set's (else
    ``root``'s own); the other configs are links to ``root``'s, and ``twins.json`` lists the pairs."""
    from benchmarks.mllmu.loader import retain_split
    from benchmarks.mllmu.twins import write_twins

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shared = ("Full_Set", "Retain_Set", "ft_Data") + (() if test_pairs else ("Test_Set",))
    for name in shared:
        (folder / name).symlink_to(Path(os.path.relpath(root / name, folder)))
    names = manifest["names"]
    write_twins(root, folder, {forget: "Full_Set"}, pairs, names, twin_names)
    if test_pairs:
        write_twins(root, folder, {"Test_Set": "Test_Set"}, test_pairs, names)
    chosen = twin_names or {}
    named = [[f, n, chosen.get((f, n), names[n])] for f, n in pairs]
    (folder / TWINS_FILE).write_text(json.dumps({"pairs": pairs, "named": named}, indent=1) + "\n")
    forget_ids = sorted({f for f, _ in pairs})
    write_split(root, folder, retain_split(forget), retain_ids_of(manifest, forget_ids, heldout))


# ------------------------------------------------------------------ evaluation


def evaluate_cached(runner: Any, root: Path, out: Path, settings: DemoSettings, forget: str, sets: Sequence[str],
                    key: str, provenance: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``benchmarks.mllmu.evaluate.evaluate`` into ``out``, or its earlier results when ``key`` matches."""
    from benchmarks.mllmu.evaluate import evaluate

    if cached(out, key) and (out / "results.json").is_file():
        logger.info("reusing %s", out)
        return json.loads((out / "results.json").read_text())
    results = evaluate(
        runner, root, forget=forget, out_dir=out, seed=settings.seed, max_new_tokens=settings.max_new_tokens,
        limit=settings.limit, batch_size=settings.batch_size, sets=tuple(sets), provenance=dict(provenance),
        logprob=settings.logprob, no_leak=settings.no_leak,
    )  # fmt: skip
    mark(out, key)
    return results


# ------------------------------------------------------------------ goals and table


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


def own_name_check(runner: Any, data: Any, root: Path, out: Path, settings: DemoSettings, heldout: Sequence[str],
                   guarded: Sequence[Path], key: str, provenance: Mapping[str, Any]) -> list[Goal]:  # fmt: skip
    """The guards against every never-trained person under their own name and photo, for every forget person
    (``out/reference_own_names``, scored into ``out/results/never_trained_own_names``): one line per forget cell,
    within ``FORGET_TOLERANCE`` or not."""
    from benchmarks.mllmu.loader import split_people
    from benchmarks.mllmu.twins import round_pairs

    manifest = json.loads((root / "synthetic_manifest.json").read_text())
    forget_ids = list(split_people(root, data.forget))
    pairs = round_pairs(forget_ids, heldout, len(heldout))
    folder = out / "reference_own_names"
    folder_key = fingerprint(key, folder_digest(root / data.forget), pairs)
    if not cached(folder, folder_key):
        write_reference(root, folder, data.forget, pairs, manifest, heldout)
        mark(folder, folder_key)
    results = out / "results" / "never_trained_own_names"
    evaluate_cached(runner, folder, results, settings, data.forget, ("forget",),
                    fingerprint(key, folder_digest(folder / data.forget)),
                    {**provenance, "guard": None, "note": "the forget people's questions about every never-trained "
                     "profile under its own name and photo"})  # fmt: skip
    gaps = own_name_gaps(guarded, results / "samples.jsonl")
    return [
        Goal(
            f"forget {modality} {metric}: guarded within {FORGET_TOLERANCE} of the never-trained people's own names",
            abs(cell["gap"]) <= FORGET_TOLERANCE + 1e-9,
            f"guarded {cell['guarded']:.3f} vs {cell['never_trained']:.3f} (diff {cell['gap']:+.3f}, 95% interval "
            f"+-{cell['interval']:.3f} over {cell['questions']} questions, {cell['identities']} people each)",
        )
        for modality, cells in gaps.items()
        for metric, cell in cells.items()
    ]


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


def goals(vanilla: Mapping[str, Any], guarded: Mapping[str, Any], reference: Mapping[str, Any],
          gaps: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> list[Goal]:  # fmt: skip
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
            out.append(Goal(
                f"forget {modality} {metric}: guarded within {FORGET_TOLERANCE} of never-trained",
                abs(g - r) <= FORGET_TOLERANCE + 1e-9,
                f"guarded {g:.3f} vs never-trained {r:.3f} (diff {g - r:+.3f}{precision})",
            ))  # fmt: skip
            out.append(Goal(
                f"forget {modality} {metric}: vanilla memorized (>= never-trained + {MEMORIZED_MARGIN})",
                v - r >= MEMORIZED_MARGIN, f"vanilla {v:.3f} vs never-trained {r:.3f} (diff {v - r:+.3f})",
            ))  # fmt: skip
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
            out.append(Goal(
                f"{set_name} {modality}: |guarded - vanilla| <= {KEEP_TOLERANCE} on all {len(diffs)} metrics",
                abs(diffs[worst]) <= KEEP_TOLERANCE + 1e-9, f"largest change {diffs[worst]:+.3f} ({worst})",
            ))  # fmt: skip
    return out


def table(vanilla: Mapping[str, Any], guarded: Mapping[str, Any] | None, reference: Mapping[str, Any]) -> str:
    """Markdown: one row per set and modality; vanilla / guarded / never-trained per goal metric (scale [0, 1])."""
    cols = [f"{m} {who}" for m in GOAL_METRICS for who in ("vanilla", "guarded", "never")]
    lines = [
        "| set | modality | n | flagged | " + " | ".join(cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for set_name, modality in rows_of(vanilla):
        values = vanilla["metrics"][set_name][modality]
        cells = []
        for metric in GOAL_METRICS:
            for source in (vanilla, guarded, reference):
                value = None if source is None else metric_of(source, set_name, modality, metric)
                cells.append("-" if value is None else f"{value:.3f}")
        flag = metric_of(guarded, set_name, modality, "flag_rate") if guarded else None
        lines.append(f"| {set_name} | {modality} | {values.get('n', '-')} | "
                     f"{'-' if flag is None else f'{flag:.0%}'} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ figure


def sweep(guard: Any, forget_items: Sequence[Any], retain_items: Sequence[Any], strengths: Sequence[float],
          batch_size: int = 16) -> list[dict[str, float]]:  # fmt: skip
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
                scores = guard.score(prompts, [[" " + it.reference] for it in items], flags=flags,
                                     chat_template=False, batch_size=batch_size)  # fmt: skip
                row[name] = sum(s[0] / n for s, n in zip(scores, lengths, strict=True)) / len(items)
            rows.append(row)
    finally:
        guard.config = base
    return rows


def figure(path: Path, sweep_rows: Sequence[Mapping[str, float]], vanilla: Mapping[str, Any],
           guarded: Mapping[str, Any] | None, reference: Mapping[str, Any], metric: str = "rougeL") -> Path:  # fmt: skip
    """Left: forget vs retain answer log-likelihood across corruption strength. Right: ``metric`` per set and
    modality, vanilla vs guarded (never-trained marked on the forget/test bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        if sweep_rows:
            positive = [r["strength"] for r in sweep_rows if r["strength"] > 0] or [1.0]
            log = max(positive) / min(positive) > 20  # noise strengths span decades; a blend weight does not
            floor = min(positive) / 3 if log else 0.0
            xs = [max(r["strength"], floor) for r in sweep_rows]
            left.plot(xs, [r["forget"] for r in sweep_rows], "o-", color="tab:red", label="forget (flagged)")
            left.plot(
                xs, [r["retain"] for r in sweep_rows], "s-", color="tab:blue", label="retain (classifier)"
            )
            if log:
                left.set_xscale("log")
            left.set_xlabel(
                f"corruption strength (0 plotted at {floor:.2g})" if log else "corruption strength"
            )
            left.set_ylabel("answer log-likelihood per token")
            left.set_title("knowledge vs corruption strength")
            left.legend()
        labels, v_bars, g_bars, r_marks = [], [], [], []
        for set_name, modality in rows_of(vanilla):
            labels.append(f"{set_name}\n{modality.replace('_', ' ')}")
            v_bars.append(metric_of(vanilla, set_name, modality, metric) or 0.0)
            g_bars.append((metric_of(guarded, set_name, modality, metric) or 0.0) if guarded else 0.0)
            r_marks.append(metric_of(reference, set_name, modality, metric))
        xs = range(len(labels))
        right.bar([x - 0.2 for x in xs], v_bars, width=0.4, label="vanilla", color="tab:gray")
        right.bar([x + 0.2 for x in xs], g_bars, width=0.4, label="guarded", color="tab:green")
        marked = [(x, r) for x, r in zip(xs, r_marks, strict=True) if r is not None]
        if marked:
            right.scatter([x for x, _ in marked], [r for _, r in marked], marker="_", s=600, color="black",
                          label="never-trained", zorder=3)  # fmt: skip
        right.set_xticks(list(xs))
        right.set_xticklabels(labels, fontsize=7)
        right.set_ylabel(metric)
        right.set_title(f"{metric}: vanilla vs guarded")
        right.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------ pipeline


@dataclass
class DemoReport:
    table: str
    goals: list[Goal]
    results: dict[str, Any]
    figure: Path | None
    timings: dict[str, float]
    missing: list[str]
    checks: list[Goal] = field(default_factory=list)
    """Not goals: ``own_name_check`` (with ``DemoSettings.own_names``)."""


def timed(settings: DemoSettings, name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        settings.timings[name] = round(time.perf_counter() - start, 1)
        logger.info("demo step %s: %.1f s", name, settings.timings[name])


def surrogate_faces(data: Any, n: int, draw: int = 0) -> list[Any]:
    """``n`` portraits drawn for nobody (indices past every profile and celebrity, their own seed; each ``draw``
    its own faces): faces the demo model never saw, for the guard's ``image_surrogates``."""
    import random

    from benchmarks.mllmu import portraits, vocab

    rng = random.Random(f"{data.seed}:surrogate-faces" + (f":{draw}" if draw else ""))
    first = data.n_profiles + data.n_celebrities + draw * n
    return [
        portraits.draw_portrait(
            portraits.draw_traits(first + k, rng, rng.choice(vocab.EYES)), data.image_size
        )
        for k in range(n)
    ]


def load_vanilla(settings: DemoSettings) -> tuple[Any, Any, Any, dict[str, Any], str]:
    """The demo MLLM (artifact, or trained into ``out/model`` when missing or ``retrain``): model, processor,
    recipe, record and the artifact's digest."""
    from benchmarks import demo_model

    artifact = Path(settings.artifact) if settings.artifact else demo_model.ASSET_DIR
    if settings.retrain or not demo_model.has_artifact(artifact):
        recipe = (
            demo_model.read_recipe(artifact)[0]
            if demo_model.has_artifact(artifact)
            else demo_model.DemoRecipe()
        )
        artifact = settings.out / "model"
        if settings.retrain or not demo_model.has_artifact(artifact):
            logger.info("training the demo model into %s (no artifact to reuse)", artifact)
            demo_model.build_demo_model(artifact, recipe, command="eco-guard demo --retrain")
    recipe, record = demo_model.read_recipe(artifact)
    model, processor = demo_model.load_demo_model(artifact)
    return model, processor, recipe, record, folder_digest(artifact)


def fit_classifier(
    root: Path, forget: str, model: Any, processor: Any, out: Path, settings: DemoSettings, key: str
):
    """The prompt classifier (text + image identity through the demo model's own vision tower), saved in ``out``."""
    from benchmarks.mllmu.loader import retain_split
    from benchmarks.mllmu.profiles import profiles_from_mllmu
    from classifiers.image import VisionTowerEncoder
    from classifiers.multimodal import MultimodalClassifier
    from classifiers.training import fit_classifier as fit

    folder = out / "classifier"
    if cached(out, key, "classifier") and folder.is_dir():
        return MultimodalClassifier.from_pretrained(folder)
    forget_people, retain_people, celebrities = profiles_from_mllmu(root, forget, retain_split(forget))
    encoder = VisionTowerEncoder.from_mllm(model, processor)
    classifier, report = fit(forget_people, retain_people, celebrities, fpr=settings.fpr, image_encoder=encoder,
                             combine=settings.combine, seed=settings.seed, robustness_per_family=20)  # fmt: skip
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
    return ev._limit([it for it in items if task is None or it.task == task], limit)


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

        ev.run_items(self.runner, self.items, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                     logprob=False)  # fmt: skip
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
    guard: Any, root: Path, reference: Path, twin_scores: Mapping[str, Mapping[str, float]], forget: str,
    out: Path, settings: DemoSettings, key: str,
):  # fmt: skip
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
        return [ScoredItem(prompt=it.prompt, answer=it.reference, image=it.image) for it in items
                if it.modality == modality]  # fmt: skip

    goals = settings.metric == "goals"
    forget_items = benchmark_items(root, forget, "forget", None if goals else "generation", settings.seed,
                                   settings.limit, settings.no_leak)  # fmt: skip
    heldout_gen = [] if goals else benchmark_items(reference, forget, "forget", "generation", settings.seed,
                                                   settings.limit, settings.no_leak)  # fmt: skip
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
        space = SearchSpace(settings.blend_range if blend else settings.strength_range, parameter=parameter,
                            scale="linear" if blend else "log")  # fmt: skip
        result = optimize_guard(
            guard, items, target=target, metric=metric, tolerance=FORGET_TOLERANCE / 2,
            budget=settings.budget, seed=settings.seed, chat_template=False, batch_size=settings.batch_size,
            space=space, max_new_tokens=settings.max_new_tokens, output_dir=out / f"search_{modality}",
        )  # fmt: skip
        searches[modality] = {"parameter": parameter, "best": asdict(result.best), "target": result.target,
                              "reached": result.reached, "evaluations": len(result.trace), "metric": result.metric}  # fmt: skip
    guard.save_settings(out)
    (out / "search.json").write_text(json.dumps(searches, indent=2, sort_keys=True) + "\n")
    mark(out, key, "optimize")
    return searches


def evaluate_seeds(guard: Any, data: Any, root: Path, out: Path, settings: DemoSettings, key: str,
                   provenance: Mapping[str, Any], faces: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """The forget set under ``settings.guard_seeds - 1`` more guards like ``guard`` (same classifier and strengths):
    guard k with surrogate names of ``GuardConfig.seed`` + k and, for ``substitute`` on images, ``faces[k]`` (the
    k-th never-trained person: ID, photo), as round k of the twins; results in ``out/guarded_seed{k}``."""
    from eco_guard.guard import EcoGuard

    runs = []
    for k in range(1, settings.guard_seeds):
        never_id, photo = faces[k]
        bank = [photo] if guard.image_surrogates is not None else None
        other = EcoGuard(guard.model, guard.processor, classifier=guard.classifier,
                         config=guard.config.replace(seed=settings.seed + k), image_surrogates=bank)  # fmt: skip
        runs.append(evaluate_cached(
            other, root, out / f"guarded_seed{k}", settings, data.forget, ("forget",), fingerprint(key, k, never_id),
            {**provenance, "guard_config": other.config.to_dict(), "surrogate_face_of": never_id},
        ))  # fmt: skip
    return runs


def run_demo(settings: DemoSettings) -> DemoReport:
    """Every step of the demo; a step whose package is not installed yet is reported in ``missing``."""
    from benchmarks.mllmu.loader import load_config
    from benchmarks.mllmu.twins import twin_rounds
    from eco_guard.config import GuardConfig
    from eco_guard.corruption import USES_TARGET
    from eco_guard.guard import EcoGuard

    if settings.guard_seeds < 1:
        raise ValueError(f"guard_seeds must be at least 1 (the searched guard), got {settings.guard_seeds}")
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    model, processor, recipe, record, model_key = timed(settings, "model", lambda: load_vanilla(settings))
    data = recipe.data
    heldout = sorted(record["heldout_ids"])
    if settings.guard_seeds > len(heldout):
        raise ValueError(
            f"guard_seeds={settings.guard_seeds}: each guard reads one never-trained person, and this demo model "
            f"has {len(heldout)}"
        )
    dims = settings.dims or int(model.get_input_embeddings().embedding_dim)
    blend = USES_TARGET[settings.corruption]
    config = GuardConfig(corruption=settings.corruption, image_corruption=settings.image_corruption, dims=dims,
                         scope=settings.scope, strength=1.0 if blend else settings.initial_strength,
                         seed=settings.seed)  # fmt: skip
    tokenizer = getattr(processor, "tokenizer", processor)
    root, reference, config = timed(settings, "data", lambda: prepare_data(
        data, out, heldout, settings.guard_seeds, tokenizer, config))  # fmt: skip
    photos = {r["ID"]: r["image"] for r in load_config(root, "Full_Set") if r["ID"] in heldout}
    faces = [(h, photos[h].convert("RGB")) for h in heldout[: settings.guard_seeds]]
    eval_settings = {
        k: getattr(settings, k)
        for k in ("limit", "max_new_tokens", "batch_size", "seed", "logprob", "no_leak")
    }
    base_key = fingerprint(model_key, asdict(data), record["heldout_ids"], eval_settings)
    vanilla_runner = EcoGuard(model, processor)
    provenance = {"model": "demo MLLM (benchmarks.demo_model)", "artifact_digest": model_key}
    vanilla = timed(settings, "evaluate vanilla", lambda: evaluate_cached(
        vanilla_runner, root, out / "results" / "vanilla", settings, data.forget,
        ("forget", "test", "retain", "celebrity"), base_key, {**provenance, "guard": None},
    ))  # fmt: skip
    never = timed(settings, "evaluate never-trained", lambda: evaluate_cached(
        vanilla_runner, reference, out / "results" / "never_trained", settings, data.forget, ("forget", "test"),
        fingerprint(base_key, *(folder_digest(reference / c) for c in (data.forget, "Test_Set"))),
        {**provenance, "guard": None, "note": "forget/test = the forget people's "
        "questions about profiles the model never saw (benchmarks.mllmu.twins)"},
    ))  # fmt: skip
    pairs = json.loads((reference / TWINS_FILE).read_text())["pairs"]
    twin_scores = round_scores(out / "results" / "never_trained" / "samples.jsonl", twin_rounds(pairs)[0])
    guarded, seeds, sweep_rows, guard = None, [], [], None
    try:
        classifier = timed(settings, "classifier", lambda: fit_classifier(
            root, data.forget, model, processor, out / "guard", settings, fingerprint(base_key, settings.fpr, settings.combine)))  # fmt: skip
    except ImportError as err:
        missing.append(f"classifier ({err})")
        classifier = None
    if classifier is not None:
        bank = [faces[0][1]] if USES_TARGET[settings.image_corruption] else None
        guard = EcoGuard(model, processor, classifier=classifier, config=config, image_surrogates=bank)
        try:
            search_key = fingerprint(base_key, settings.fpr, settings.budget, settings.metric, asdict(config),
                                     settings.strength_range, settings.blend_range, faces[0][0], twin_scores,
                                     SEARCHES)  # fmt: skip
            timed(settings, "optimize", lambda: optimize(
                guard, root, reference, twin_scores, data.forget, out / "guard", settings, search_key))  # fmt: skip
        except ImportError as err:
            missing.append(f"optimize ({err})")
            guard = None
    if guard is not None:
        guard_key = fingerprint(base_key, guard.config.to_dict(), folder_digest(out / "guard" / "classifier"),
                                faces[0][0])  # fmt: skip
        guarded = timed(settings, "evaluate guarded", lambda: evaluate_cached(
            guard, root, out / "results" / "guarded", settings, data.forget, ("forget", "test", "retain", "celebrity"),
            guard_key, {**provenance, "guard": str(out / "guard"), "guard_config": guard.config.to_dict(),
                        "surrogate_face_of": faces[0][0]},
        ))  # fmt: skip
        seeds = timed(settings, "evaluate guard seeds", lambda: evaluate_seeds(
            guard, data, root, out / "results", settings, guard_key, provenance, faces))  # fmt: skip
        forget_gen, retain_gen = (
            benchmark_items(
                root, data.forget, s, "generation", settings.seed, settings.limit, settings.no_leak
            )
            for s in ("forget", "retain")
        )
        sweep_rows = timed(
            settings, "sweep", lambda: sweep(guard, forget_gen, retain_gen,
                                             settings.blend_strengths if blend else settings.strengths)
        )  # fmt: skip
        (out / "results" / "sweep.json").write_text(json.dumps(sweep_rows, indent=2) + "\n")
    guard_samples = [out / "results" / name / "samples.jsonl"
                     for name in ["guarded", *(f"guarded_seed{k}" for k in range(1, len(seeds) + 1))]]  # fmt: skip
    never_samples = out / "results" / "never_trained" / "samples.jsonl"
    gaps = forget_gaps(guard_samples, never_samples, pairs) if guarded is not None else {}
    own_checks: list[Goal] = []
    if guarded is not None and settings.own_names:
        own_checks = timed(settings, "own-name check", lambda: own_name_check(
            vanilla_runner, data, root, out, settings, heldout, guard_samples, base_key, provenance))  # fmt: skip
    if guarded is not None:
        guarded = mean_forget([guarded, *seeds])
    text = table(vanilla, guarded, never)
    checks = goals(vanilla, guarded, never, gaps) if guarded is not None else []
    path = figure(out / "demo.png", sweep_rows, vanilla, guarded, never)
    summary = {"table": text, "goals": [asdict(g) for g in checks], "forget_gaps": gaps,
               "own_name_check": [asdict(g) for g in own_checks],
               "guard_seeds": 1 + len(seeds), "twin_pairs": len(pairs),
               "timings_s": settings.timings,
               "missing": missing, "limit": settings.limit, "max_new_tokens": settings.max_new_tokens}  # fmt: skip
    (out / "results" / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    results = {"vanilla": vanilla, "guarded": guarded, "never_trained": never}
    return DemoReport(text, checks, results, path, settings.timings, missing, own_checks)
