"""``eco-guard demo``: a multimodal model that learned fictitious people forgets some of them, measured end to end.

Synthetic profiles -> the vanilla demo MLLM -> prompt classifier -> nevergrad corruption search -> MLLMU-Bench
evaluation of vanilla vs guarded (forget / test / retain / celebrity x image+text / text-only) -> a table, each goal
as PASS / FAIL with its measured number, the results folders and a PNG figure. ``--smoke`` only shows the guard on
the real SmolLM2, flagged vs unflagged answers side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the whole idea on a real multimodal model: vanilla vs guarded on MLLMU-Bench-style profiles"

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "What is the largest planet in the solar system?",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.demo import DemoSettings
    from classifiers import COMBINES  # a constant of the light package module

    parser.add_argument(
        "--out", default="runs/demo", help="output folder (reused as a cache; default runs/demo, git-ignored)"
    )
    parser.add_argument(
        "--artifact", default=None, help="demo model artifact folder (default: the packaged one)"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train the demo model even if an artifact exists"
    )
    parser.add_argument("--limit", type=int, default=None, help="max questions per set, task and modality")
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="greedy tokens per answer (reference: 50)"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=DemoSettings.budget,
        help="nevergrad evaluations of the corruption search",
    )
    parser.add_argument(
        "--search-metric",
        choices=("goals", "rouge_l", "answer_loglik"),
        default=DemoSettings.metric,
        help="what each corruption search matches to the never-trained profiles: goals (mean distance over stated "
        "multiple choice, cloze and ROUGE-L; default) or one metric of the open questions",
    )
    parser.add_argument(
        "--corruption",
        default=DemoSettings.corruption,
        help="corruption of the names' tokens: substitute (default: toward a surrogate name, the answer keeps the "
        "real one) or a registry family such as noise_first_n",
    )
    parser.add_argument(
        "--image-corruption",
        default=DemoSettings.image_corruption,
        help='corruption of the photo\'s features in "this person" questions: substitute (default: toward a '
        "surrogate face the model never saw) or a registry family such as noise_first_n",
    )
    parser.add_argument(
        "--combine",
        choices=COMBINES,
        default=DemoSettings.combine,
        help="how an image request's two detectors share the false-positive rate (classifiers.multimodal)",
    )
    parser.add_argument(
        "--leaky-few-shot",
        action="store_true",
        help="draw few-shot examples from the scored set itself, as the reference code does (default: from retain "
        "people, the same for the forget set and the never-trained reference)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--guard-seeds",
        type=int,
        default=DemoSettings.guard_seeds,
        help="guards scored on the forget set (at most the 8 never-trained people): guard k reads the k-th "
        "never-trained person's photo and its own surrogate names, and round k of the never-trained twins asks "
        "about that same identity; the forget goals read their mean (1: the searched guard alone)",
    )
    parser.add_argument(
        "--own-names",
        action="store_true",
        help="also check the guards against every never-trained person under their own name and photo (not a goal; "
        "about 3 more minutes)",
    )
    parser.add_argument(
        "--logprob",
        action="store_true",
        help="also score multiple choice by option log-likelihood (doubles the evaluation time)",
    )
    parser.add_argument("--smoke", action="store_true", help="only flagged vs unflagged answers of SmolLM2")


def smoke() -> int:
    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    model, tokenizer = load_model("smollm2")
    guard = EcoGuard(model, tokenizer, config=GuardConfig())
    answers = guard.generate(
        QUESTIONS * 2, flags=[False] * len(QUESTIONS) + [True] * len(QUESTIONS), max_new_tokens=24
    )
    cfg = guard.config
    print(
        f"corruption: {cfg.corruption} (strength={cfg.strength}, dims={cfg.dims}, scope={','.join(cfg.scope)})\n"
    )
    for i, question in enumerate(QUESTIONS):
        print(
            f"Q: {question}\n  unflagged: {answers[i].strip()!r}\n  flagged:   {answers[i + len(QUESTIONS)].strip()!r}\n"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.smoke:
        return smoke()
    import time

    from benchmarks.demo import DemoSettings, run_demo

    started = time.perf_counter()
    settings = DemoSettings(
        out=Path(args.out),
        artifact=Path(args.artifact) if args.artifact else None,
        retrain=args.retrain,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        budget=args.budget,
        seed=args.seed,
        logprob=args.logprob,
        metric=args.search_metric,
        corruption=args.corruption,
        image_corruption=args.image_corruption,
        no_leak=not args.leaky_few_shot,
        combine=args.combine,
        guard_seeds=args.guard_seeds,
        own_names=args.own_names,
    )
    report = run_demo(settings)
    print(
        "\nScores on [0, 1] (accuracies / 100): vanilla | guarded (forget set: the mean of the guard seeds) |\n"
        "never-trained (the forget people's questions asked about every profile the model never saw: the twins)\n"
    )
    print(report.table)
    for goal in report.goals:
        print(f"[{'PASS' if goal.passed else 'FAIL'}] {goal.name}: {goal.measured}")
    if report.goals:
        passed = sum(g.passed for g in report.goals)
        print(f"\n{passed}/{len(report.goals)} goals met")
    for check in report.checks:
        print(f"[check {'ok' if check.passed else 'OFF'}] {check.name}: {check.measured}")
    for step in report.missing:
        print(f"[NOT RUN] {step}")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report.timings.items())
    print(f"\ntime: {time.perf_counter() - started:.0f} s ({timings})")
    print(f"results: {settings.out / 'results'}  figure: {report.figure}")
    return 0
