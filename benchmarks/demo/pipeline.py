"""Every step of the demo in order (:func:`run_demo`), each timed and cached."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.demo.cache import cached, fingerprint, folder_digest, mark
from benchmarks.demo.data import TWINS_FILE, load_vanilla, prepare_data, write_reference
from benchmarks.demo.report import DemoReport, figure, table
from benchmarks.demo.scoring import (
    FORGET_TOLERANCE,
    Goal,
    forget_gaps,
    goals,
    mean_forget,
    own_name_gaps,
    round_scores,
)
from benchmarks.demo.search import SEARCHES, benchmark_items, fit_classifier, optimize, sweep
from benchmarks.demo.settings import DemoSettings

logger = logging.getLogger(__package__)  # the demo's one logger, named as before it became a package


def evaluate_cached(
    runner: Any,
    root: Path,
    out: Path,
    settings: DemoSettings,
    forget: str,
    sets: Sequence[str],
    key: str,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """``benchmarks.mllmu.evaluate.evaluate`` into ``out``, or its earlier results when ``key`` matches."""
    from benchmarks.mllmu.evaluate import evaluate

    if cached(out, key) and (out / "results.json").is_file():
        logger.info("reusing %s", out)
        return json.loads((out / "results.json").read_text())
    results = evaluate(
        runner,
        root,
        forget=forget,
        out_dir=out,
        seed=settings.seed,
        max_new_tokens=settings.max_new_tokens,
        limit=settings.limit,
        batch_size=settings.batch_size,
        sets=tuple(sets),
        provenance=dict(provenance),
        logprob=settings.logprob,
        no_leak=settings.no_leak,
    )
    mark(out, key)
    return results


def own_name_check(
    runner: Any,
    data: Any,
    root: Path,
    out: Path,
    settings: DemoSettings,
    heldout: Sequence[str],
    guarded: Sequence[Path],
    key: str,
    provenance: Mapping[str, Any],
) -> list[Goal]:
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
    evaluate_cached(
        runner,
        folder,
        results,
        settings,
        data.forget,
        ("forget",),
        fingerprint(key, folder_digest(folder / data.forget)),
        {
            **provenance,
            "guard": None,
            "note": "the forget people's questions about every never-trained "
            "profile under its own name and photo",
        },
    )
    gaps = own_name_gaps(guarded, results / "samples.jsonl")
    return [
        Goal(
            f"forget {modality} {metric}: guarded within {FORGET_TOLERANCE} of the never-trained people's "
            "own names",
            abs(cell["gap"]) <= FORGET_TOLERANCE + 1e-9,
            f"guarded {cell['guarded']:.3f} vs {cell['never_trained']:.3f} (diff {cell['gap']:+.3f}, "
            f"95% interval +-{cell['interval']:.3f} over {cell['questions']} questions, "
            f"{cell['identities']} people each)",
        )
        for modality, cells in gaps.items()
        for metric, cell in cells.items()
    ]


def timed(settings: DemoSettings, name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        settings.timings[name] = round(time.perf_counter() - start, 1)
        logger.info("demo step %s: %.1f s", name, settings.timings[name])


def evaluate_seeds(
    guard: Any,
    data: Any,
    root: Path,
    out: Path,
    settings: DemoSettings,
    key: str,
    provenance: Mapping[str, Any],
    faces: Sequence[tuple[str, Any]],
) -> list[dict[str, Any]]:
    """The forget set under ``settings.guard_seeds - 1`` more guards like ``guard`` (same classifier and strengths):
    guard k with surrogate names of ``GuardConfig.seed`` + k and, for ``substitute`` on images, ``faces[k]`` (the
    k-th never-trained person: ID, photo), as round k of the twins; results in ``out/guarded_seed{k}``."""
    from eco_guard.guard import EcoGuard

    runs = []
    for k in range(1, settings.guard_seeds):
        never_id, photo = faces[k]
        bank = [photo] if guard.image_surrogates is not None else None
        other = EcoGuard(
            guard.model,
            guard.processor,
            classifier=guard.classifier,
            config=guard.config.replace(seed=settings.seed + k),
            image_surrogates=bank,
        )
        runs.append(
            evaluate_cached(
                other,
                root,
                out / f"guarded_seed{k}",
                settings,
                data.forget,
                ("forget",),
                fingerprint(key, k, never_id),
                {**provenance, "guard_config": other.config.to_dict(), "surrogate_face_of": never_id},
            )
        )
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
            f"guard_seeds={settings.guard_seeds}: each guard reads one never-trained person, "
            f"and this demo model has {len(heldout)}"
        )
    dims = settings.dims or int(model.get_input_embeddings().embedding_dim)
    blend = USES_TARGET[settings.corruption]
    config = GuardConfig(
        corruption=settings.corruption,
        image_corruption=settings.image_corruption,
        dims=dims,
        scope=settings.scope,
        strength=1.0 if blend else settings.initial_strength,
        seed=settings.seed,
    )
    tokenizer = getattr(processor, "tokenizer", processor)
    root, reference, config = timed(
        settings, "data", lambda: prepare_data(data, out, heldout, settings.guard_seeds, tokenizer, config)
    )
    photos = {r["ID"]: r["image"] for r in load_config(root, "Full_Set") if r["ID"] in heldout}
    faces = [(h, photos[h].convert("RGB")) for h in heldout[: settings.guard_seeds]]
    eval_settings = {
        k: getattr(settings, k)
        for k in ("limit", "max_new_tokens", "batch_size", "seed", "logprob", "no_leak")
    }
    base_key = fingerprint(model_key, asdict(data), record["heldout_ids"], eval_settings)
    vanilla_runner = EcoGuard(model, processor)
    provenance = {"model": "demo MLLM (benchmarks.demo_model)", "artifact_digest": model_key}
    vanilla = timed(
        settings,
        "evaluate vanilla",
        lambda: evaluate_cached(
            vanilla_runner,
            root,
            out / "results" / "vanilla",
            settings,
            data.forget,
            ("forget", "test", "retain", "celebrity"),
            base_key,
            {**provenance, "guard": None},
        ),
    )
    never = timed(
        settings,
        "evaluate never-trained",
        lambda: evaluate_cached(
            vanilla_runner,
            reference,
            out / "results" / "never_trained",
            settings,
            data.forget,
            ("forget", "test"),
            fingerprint(base_key, *(folder_digest(reference / c) for c in (data.forget, "Test_Set"))),
            {
                **provenance,
                "guard": None,
                "note": "forget/test = the forget people's "
                "questions about profiles the model never saw (benchmarks.mllmu.twins)",
            },
        ),
    )
    pairs = json.loads((reference / TWINS_FILE).read_text())["pairs"]
    twin_scores = round_scores(out / "results" / "never_trained" / "samples.jsonl", twin_rounds(pairs)[0])
    guarded, seeds, sweep_rows, guard = None, [], [], None
    try:
        classifier = timed(
            settings,
            "classifier",
            lambda: fit_classifier(
                root,
                data.forget,
                model,
                processor,
                out / "guard",
                settings,
                fingerprint(base_key, settings.fpr, settings.combine),
            ),
        )
    except ImportError as err:
        missing.append(f"classifier ({err})")
        classifier = None
    if classifier is not None:
        bank = [faces[0][1]] if USES_TARGET[settings.image_corruption] else None
        guard = EcoGuard(model, processor, classifier=classifier, config=config, image_surrogates=bank)
        try:
            search_key = fingerprint(
                base_key,
                settings.fpr,
                settings.budget,
                settings.metric,
                asdict(config),
                settings.strength_range,
                settings.blend_range,
                faces[0][0],
                twin_scores,
                SEARCHES,
            )
            timed(
                settings,
                "optimize",
                lambda: optimize(
                    guard, root, reference, twin_scores, data.forget, out / "guard", settings, search_key
                ),
            )
        except ImportError as err:
            missing.append(f"optimize ({err})")
            guard = None
    if guard is not None:
        guard_key = fingerprint(
            base_key, guard.config.to_dict(), folder_digest(out / "guard" / "classifier"), faces[0][0]
        )
        guarded = timed(
            settings,
            "evaluate guarded",
            lambda: evaluate_cached(
                guard,
                root,
                out / "results" / "guarded",
                settings,
                data.forget,
                ("forget", "test", "retain", "celebrity"),
                guard_key,
                {
                    **provenance,
                    "guard": str(out / "guard"),
                    "guard_config": guard.config.to_dict(),
                    "surrogate_face_of": faces[0][0],
                },
            ),
        )
        seeds = timed(
            settings,
            "evaluate guard seeds",
            lambda: evaluate_seeds(
                guard, data, root, out / "results", settings, guard_key, provenance, faces
            ),
        )
        forget_gen, retain_gen = (
            benchmark_items(
                root, data.forget, s, "generation", settings.seed, settings.limit, settings.no_leak
            )
            for s in ("forget", "retain")
        )
        sweep_rows = timed(
            settings,
            "sweep",
            lambda: sweep(
                guard, forget_gen, retain_gen, settings.blend_strengths if blend else settings.strengths
            ),
        )
        (out / "results" / "sweep.json").write_text(json.dumps(sweep_rows, indent=2) + "\n")
    guard_samples = [
        out / "results" / name / "samples.jsonl"
        for name in ["guarded", *(f"guarded_seed{k}" for k in range(1, len(seeds) + 1))]
    ]
    never_samples = out / "results" / "never_trained" / "samples.jsonl"
    gaps = forget_gaps(guard_samples, never_samples, pairs) if guarded is not None else {}
    own_checks: list[Goal] = []
    if guarded is not None and settings.own_names:
        own_checks = timed(
            settings,
            "own-name check",
            lambda: own_name_check(
                vanilla_runner, data, root, out, settings, heldout, guard_samples, base_key, provenance
            ),
        )
    if guarded is not None:
        guarded = mean_forget([guarded, *seeds])
    text = table(vanilla, guarded, never)
    checks = goals(vanilla, guarded, never, gaps) if guarded is not None else []
    path = figure(out / "demo.png", sweep_rows, vanilla, guarded, never)
    summary = {
        "table": text,
        "goals": [asdict(g) for g in checks],
        "forget_gaps": gaps,
        "own_name_check": [asdict(g) for g in own_checks],
        "guard_seeds": 1 + len(seeds),
        "twin_pairs": len(pairs),
        "timings_s": settings.timings,
        "missing": missing,
        "limit": settings.limit,
        "max_new_tokens": settings.max_new_tokens,
    }
    (out / "results" / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    results = {"vanilla": vanilla, "guarded": guarded, "never_trained": never}
    return DemoReport(text, checks, results, path, settings.timings, missing, own_checks)
