"""``eco-guard evaluate``: score a plain or guarded model on MLLMU-Bench (real or synthetic) with the reference
protocol; vanilla vs guarded is the same command with and without ``--guard``."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "evaluate a plain or guarded model on MLLMU-Bench (results.json, samples.jsonl, results.md)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="MLLMU-Bench folder (hub layout) or hub id, e.g. MLLMMU/MLLMU-Bench"
    )
    parser.add_argument("--forget", default="forget_5", help="forget split: forget_5, forget_10 or forget_15")
    parser.add_argument("--model", default="smollm2", help="model alias (smollm2), local folder or hub id")
    parser.add_argument(
        "--guard", default=None, help="guard folder (EcoGuard.save_pretrained); omit for the plain model"
    )
    parser.add_argument("--backend", default="hf", choices=sorted(BACKENDS), help="inference backend")
    parser.add_argument(
        "--out", required=True, help="output folder for results.json, samples.jsonl, results.md"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of few-shot draws and Test_Set image choice"
    )
    parser.add_argument(
        "--no-leak", action="store_true", help="draw few-shot examples from profiles outside the scored set"
    )
    parser.add_argument(
        "--few-shot", type=int, default=1, help="few-shot profiles per set and task (0: none)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=50, help="greedy tokens per answer (reference: 50)"
    )
    parser.add_argument("--limit", type=int, default=None, help="max questions per set, task and modality")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-model-len", type=int, default=2048, help="vllm backend: the engine's context length"
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", help="vllm backend: no compilation (faster start)"
    )
    parser.add_argument("--sets", nargs="+", default=None, help="subset of: forget test retain celebrity")
    parser.add_argument(
        "--no-logprob", action="store_true", help="skip option log-probability classification"
    )
    parser.add_argument("--no-bleu", action="store_true", help="skip BLEU")


def hf_runner(args: argparse.Namespace) -> Any:
    """The model through transformers, wrapped in EcoGuard (a guard without classifier flags nothing)."""
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    model, processor = load_model(args.model)
    if args.guard:
        return EcoGuard.from_pretrained(args.guard, model, processor)
    return EcoGuard(model, processor)


def vllm_runner(args: argparse.Namespace) -> Any:
    """The model on a vLLM engine behind the guard (GuardedLLM: token prompts unless flagged)."""
    from eco_guard.vllm_backend import GuardedLLM

    return GuardedLLM.from_pretrained(
        args.model,
        guard_dir=args.guard,
        max_model_len=args.max_model_len,
        dtype="float32",
        seed=args.seed,
        enforce_eager=args.enforce_eager,
    )


BACKENDS = {"hf": hf_runner, "vllm": vllm_runner}
"""Backend name -> function(args) -> runner with generate / score / decide (see benchmarks.mllmu.evaluate)."""


def run(args: argparse.Namespace) -> int:
    from benchmarks.mllmu.evaluate import SETS, evaluate, markdown_table

    runner = BACKENDS[args.backend](args)
    results = evaluate(
        runner,
        args.data,
        forget=args.forget,
        out_dir=args.out,
        seed=args.seed,
        no_leak=args.no_leak,
        few_shot_profiles=args.few_shot,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        batch_size=args.batch_size,
        sets=tuple(args.sets) if args.sets else SETS,
        logprob=not args.no_logprob,
        bleu=not args.no_bleu,
        provenance={"model": args.model, "guard": args.guard, "backend": args.backend},
    )
    print(markdown_table(results))
    print(f"wrote {args.out}/results.json, samples.jsonl, results.md")
    return 0
