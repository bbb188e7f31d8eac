"""Guard overhead on the real SmolLM2 with HF generate, batch 16: guarded vs unwrapped, measured side by side.

Prints throughput ratios (guarded / unwrapped; 1.0 = no overhead) for 0% and 100% flagged traffic, with the
guard's shared-prefix reuse off so that the ratios are the guard's own cost; one more row has it on (the chat
template's system prompt is the prefix these prompts share). The runs are interleaved and the median of several
rounds is reported, so machine noise hits both sides alike.
"""

from __future__ import annotations

import statistics
import time

import torch

QUESTIONS = [
    "What is the capital of France?",
    "Who painted the Mona Lisa?",
    "What is the boiling point of water in Celsius?",
    "Name a famous novel by Jane Austen.",
    "What is the chemical symbol for iron?",
    "How many continents are there on Earth?",
    "Which planet is known as the Red Planet?",
    "Who developed the theory of general relativity?",
]


def main(batch: int = 16, new_tokens: int = 32, rounds: int = 5) -> dict[str, float]:
    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    model, tokenizer = load_model("smollm2")
    guard = EcoGuard(model, tokenizer, config=GuardConfig(), share_prefix=False)
    sharing = EcoGuard(model, tokenizer, config=GuardConfig())
    prompts = [QUESTIONS[i % len(QUESTIONS)] + " " * (i // len(QUESTIONS)) for i in range(batch)]
    rendered = [guard.render(r) for r in guard.requests(prompts)]
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def unwrapped() -> None:
        inputs = tokenizer(rendered, padding=True, padding_side="left", return_tensors="pt")
        model.generate(**inputs, pad_token_id=guard.pad_token_id, **kwargs)

    def guarded(share: float, wrapper: EcoGuard = guard) -> None:
        flags = [i < round(share * batch) for i in range(batch)]
        wrapper.generate(prompts, flags=flags, **kwargs)

    runs = {
        "unwrapped": unwrapped,
        "guarded_0": lambda: guarded(0.0),
        "guarded_100": lambda: guarded(1.0),
        "shared_0": lambda: guarded(0.0, sharing),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["unwrapped"])
    tokens = batch * new_tokens
    print(
        f"SmolLM2-135M, HF generate, batch {batch}, {new_tokens} new tokens, median of {rounds} interleaved rounds"
    )
    print(f"{'run':<14}{'seconds':>10}{'tokens/s':>12}{'ratio':>8}")
    ratios = {}
    for name in runs:
        t = statistics.median(times[name])
        ratios[name] = base / t
        print(f"{name:<14}{t:>10.3f}{tokens / t:>12.1f}{base / t:>8.3f}")
    print(f"unflagged-traffic throughput ratio: {ratios['guarded_0']:.3f} (goal >= 0.97)")
    return ratios


if __name__ == "__main__":
    main()
