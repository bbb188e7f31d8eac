"""Text classification speed: batched prompts/s and single-prompt latency of the real MiniLM classifier, the
name detector and the combined classifier, side by side (goals: >= 1,000 prompts/s batched, p50 <= 10 ms; ECO's
RoBERTa classifier needs ~21 ms per prompt on a GPU)."""

from __future__ import annotations

import functools
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ECO_ROBERTA_MS = 21.0
QUESTIONS = (
    "What is the occupation of {n}?",
    "Where was {n} born?",
    "Which university did {n} attend?",
    "What medical condition does {n} have, according to the records?",
    "Where does {n} live now?",
)


VARIANTS = {
    "6 layers, no early exit": {"early_exit": None},
    "6 layers, early exit after 1": {"early_exit": 1},
    "6 layers, early exit after 2": {"early_exit": 2},
    "encoder cut to 2 layers": {"early_exit": None, "layers": 2},
}
"""Combined classifiers measured side by side; early exit keeps the 6-layer decisions (see TextClassifier)."""


@functools.cache
def _names(n: int = 200) -> list[str]:
    """The synthetic benchmark's fictitious names (seeded)."""
    from benchmarks.mllmu.synthetic import make_people

    return [p["Name"] for p in make_people(n, random.Random(0))]


def _prompts(n: int) -> list[str]:
    names = _names()
    return [QUESTIONS[i % len(QUESTIONS)].format(n=names[(i * 7) % len(names)]) for i in range(n)]


def _rate(fn, items: list, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def _p50_ms(fn, items: list) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        fn([item])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    import torch

    from classifiers.encoders import resolve_dtype
    from classifiers.multimodal import MultimodalClassifier
    from classifiers.prompts import general_prompts
    from classifiers.terms import TermDetector
    from classifiers.text import TextClassifier

    torch.set_num_threads(os.cpu_count() or 1)
    names = _names()
    forget = names[:10]
    positives = [q.format(n=n) for n in forget for q in QUESTIONS]
    negatives = [q.format(n=n) for n in names[10:60] for q in QUESTIONS] + general_prompts(150)
    labels = [1] * len(positives) + [0] * len(negatives)
    terms = TermDetector().fit(forget, negatives=names[10:])
    variants = {}  # label -> combined classifier
    for label, options in VARIANTS.items():
        text = TextClassifier("minilm", fpr=None, **options).fit(positives + negatives, labels)
        variants[label] = MultimodalClassifier(text, terms).calibrate(_prompts(400)[200:])
        text.score(positives[:64])  # warm up
    default = variants["6 layers, no early exit"]
    batch, singles = _prompts(2048), _prompts(200)
    rows = [
        ("MiniLM encoder only", lambda xs: default.text.encoder_.encode(xs)),
        ("text classifier (encoder + head)", default.text.score),
        ("name detector", terms.score),
        *((f"combined .flag, {label}", model.flag) for label, model in variants.items()),
    ]
    print(f"{'component':48} {'batched prompts/s':>18} {'single p50 ms':>14} {'vs ECO 21 ms':>13}")
    measured = {}
    for label, fn in rows:
        rate = _rate(fn, batch)
        p50 = _p50_ms(fn, singles)
        measured[label] = rate, p50
        print(f"{label:48} {rate:18.0f} {p50:14.2f} {ECO_ROBERTA_MS / p50:12.1f}x")
    for label, model in variants.items():
        if model.text.early_exit is not None:
            share = float(model.text.goes_past_exit(batch).mean())
            print(f"{label}: {share:.1%} of the batched prompts went past the early exit")
    print(f"\ntext encoder precision 'auto' resolves to {resolve_dtype('auto')} on this CPU")
    for label in variants:
        rate, p50 = measured[f"combined .flag, {label}"]
        print(
            f"goals, {label}: batched >= 1000 prompts/s: {'met' if rate >= 1000 else 'NOT met'} ({rate:.0f}); "
            f"single p50 <= 10 ms: {'met' if p50 <= 10 else 'NOT met'} ({p50:.1f} ms)"
        )
    text = default.text
    long = [" ".join(["filler words about nothing in particular"] * 150) + " " + q for q in positives[:20]]
    print(f"long prompts (~1,000 tokens, windows of 128): {_rate(text.score, long, 1):.0f} prompts/s")


if __name__ == "__main__":
    main()
