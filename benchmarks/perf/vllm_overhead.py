"""Throughput of the guarded vLLM engine relative to the same engine unguarded, at 0%, 10% and 100% flagged traffic.

Unguarded: ``llm.generate`` on pre-tokenized chat prompts (the fastest thing a caller can send). Guarded: the same
prompts through :meth:`GuardedLLM.serve` (rendering, tokenization, decision, and ``prompt_embeds`` for the flagged
share), flags set by override so no classifier cost is counted. Every request decodes exactly the same number of
tokens (``ignore_eos``), so the work per request is equal; modes are interleaved and the median time is kept.
Goals: ratio >= 0.97 at 0% flagged, >= 0.90 at 10%.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_PROMPTS = 48
NEW_TOKENS = 32
REPEATS = 4
GOALS = {0.0: 0.97, 0.1: 0.90}
SUBJECTS = ["France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "India", "Egypt"]
TEMPLATES = [
    "What is the capital of {}?",
    "Describe the climate of {} in two sentences.",
    "Name three famous people from {}.",
    "What language is spoken in {}?",
    "Give a short history of {}.",
    "What is the national dish of {}?",
]


def prompts() -> list[str]:
    return [t.format(s) for t in TEMPLATES for s in SUBJECTS][:N_PROMPTS]


def main() -> None:
    from vllm import SamplingParams

    from eco_guard.requests import to_request
    from eco_guard.vllm_backend import GuardedLLM

    start = time.perf_counter()
    runner = GuardedLLM.from_pretrained(
        "smollm2", max_model_len=512, dtype="float32", enforce_eager=True, seed=0
    )
    print(f"engine start: {time.perf_counter() - start:.0f} s", flush=True)
    questions = prompts()
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    # the very ids the guard sends for an unflagged request, prepared outside the timed region
    encoded = runner.guard.encode([to_request(q) for q in questions])
    token_prompts = [{"prompt_token_ids": ids.tolist()} for ids in encoded.ids]

    def unguarded() -> None:
        runner.llm.generate(token_prompts, params, use_tqdm=False)

    def guarded(share: float):
        every = round(1 / share) if share else 0
        flags = [bool(every) and i % every == 0 for i in range(len(questions))]

        def call() -> None:
            outputs = runner.serve(questions, flags, sampling_params=params)
            assert all(o.ok for o in outputs) and sum(o.flagged for o in outputs) == sum(flags)

        return call

    modes = {"unguarded": unguarded, 0.0: guarded(0.0), 0.1: guarded(0.1), 1.0: guarded(1.0)}
    for call in modes.values():  # warm-up
        call()
    times: dict[object, list[float]] = {name: [] for name in modes}
    order = list(modes.items())
    for r in range(REPEATS):  # rotate the order so no mode always runs first in a round
        for name, call in order[r % len(order) :] + order[: r % len(order)]:
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["unguarded"])
    tokens = len(questions) * NEW_TOKENS
    print(
        f"{len(questions)} prompts x {NEW_TOKENS} new tokens, median of {REPEATS} interleaved runs, order rotated"
    )
    print(f"unguarded: {base:.2f} s ({tokens / base:.0f} tok/s)")
    for share in (0.0, 0.1, 1.0):
        median = statistics.median(times[share])
        ratio = base / median
        goal = GOALS.get(share)
        verdict = "" if goal is None else f"  goal >= {goal:.2f}: {'met' if ratio >= goal else 'MISSED'}"
        print(f"guarded, {share:>4.0%} flagged: {median:.2f} s, throughput ratio {ratio:.3f}{verdict}")
    runner.shutdown()


if __name__ == "__main__":
    main()
