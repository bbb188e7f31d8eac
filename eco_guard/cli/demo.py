"""``eco-guard demo``: the guard on the real SmolLM2-135M-Instruct, flagged vs unflagged answers side by side."""

from __future__ import annotations

import argparse

HELP = "run the guard on the real SmolLM2 and print flagged vs unflagged answers"

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "What is the largest planet in the solar system?",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="model alias, folder or hub id (default: smollm2)")
    parser.add_argument("--max-new-tokens", type=int, default=24)


def run(args: argparse.Namespace) -> int:
    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    model, tokenizer = load_model(args.model)
    guard = EcoGuard(model, tokenizer, config=GuardConfig())
    prompts = QUESTIONS * 2
    flags = [False] * len(QUESTIONS) + [True] * len(QUESTIONS)
    answers = guard.generate(prompts, flags=flags, max_new_tokens=args.max_new_tokens)
    cfg = guard.config
    print(
        f"corruption: {cfg.corruption} (strength={cfg.strength}, dims={cfg.dims}, scope={','.join(cfg.scope)})\n"
    )
    for i, question in enumerate(QUESTIONS):
        clean, corrupted = answers[i], answers[i + len(QUESTIONS)]
        print(f"Q: {question}\n  unflagged: {clean.strip()!r}\n  flagged:   {corrupted.strip()!r}\n")
    return 0
