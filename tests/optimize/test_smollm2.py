"""Acceptance on the real SmolLM2-135M-Instruct: the search brings a forget set of facts it knows to chance, within
the tolerance, while unflagged (retain) questions are scored exactly as by the unwrapped model."""

from __future__ import annotations

import pytest
import torch

from benchmarks.perf.optimizer_efficiency import CAPITALS, capital_items
from eco_guard.config import GuardConfig
from eco_guard.guard import EcoGuard
from eco_guard.optimize import FluencyPenalty, ScoredItem, make_metric, optimize_guard

pytestmark = pytest.mark.slow

FORGET = capital_items(CAPITALS[:14], seed=1)
RETAIN = capital_items(CAPITALS[14:], seed=2)


@pytest.fixture(scope="module")
def guard(smollm2):
    model, tokenizer = smollm2
    return EcoGuard(model, tokenizer, config=GuardConfig(corruption="noise_first_n", strength=100.0, dims=1))


def unwrapped_option_logprobs(model, tokenizer, item: ScoredItem) -> list[float]:
    ids = torch.tensor([tokenizer(item.prompt)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    return [logp[tokenizer(c, add_special_tokens=False)["input_ids"][0]].item() for c in item.choices]


def test_search_reaches_chance_and_leaves_retain_untouched(guard, tmp_path):
    guard.config = GuardConfig(strength=0.1)  # the search starts here, where the model still knows every fact
    assert make_metric("mc_accuracy", guard, FORGET, chat_template=False)() >= 0.9
    result = optimize_guard(
        guard,
        FORGET,
        target=0.25,
        metric="mc_accuracy",
        tolerance=0.08,
        budget=15,
        chat_template=False,
        output_dir=tmp_path,
        progress=False,
    )
    assert result.reached and len(result.trace) > 1, [(e.params, e.metric) for e in result.trace]
    assert abs(make_metric("mc_accuracy", guard, FORGET, chat_template=False)() - 0.25) <= 0.08
    assert GuardConfig.from_pretrained(guard.save_pretrained(tmp_path)) == guard.config
    # retain questions, unflagged, beside flagged forget questions in one batch: bit-identical to the plain model
    mixed = RETAIN + FORGET
    scores = guard.score(
        [it.prompt for it in mixed],
        [list(it.choices) for it in mixed],
        flags=[False] * len(RETAIN) + [True] * len(FORGET),
        chat_template=False,
    )
    model, tokenizer = guard.model, guard.tokenizer
    for item, got in zip(RETAIN, scores, strict=False):
        assert got == pytest.approx(unwrapped_option_logprobs(model, tokenizer, item), abs=1e-4)
    # the same batch with nothing flagged: same shapes, same kernels, so the retain rows must agree bit for bit
    # (a batch of another size may round differently on some CPUs; that is the kernels, not the guard)
    unflagged = guard.score(
        [it.prompt for it in mixed],
        [list(it.choices) for it in mixed],
        flags=[False] * len(mixed),
        chat_template=False,
    )
    assert scores[: len(RETAIN)] == unflagged[: len(RETAIN)]
    assert scores[len(RETAIN) :] != unflagged[len(RETAIN) :]
    retain_accuracy = make_metric("mc_accuracy", guard, RETAIN, flagged=False, chat_template=False)()
    assert retain_accuracy >= 0.9


def test_generation_metric_and_fluency_penalty(guard):
    items = [
        ScoredItem(f"What is the capital of {c}?", answer=f"The capital of {c} is {cap}.")
        for c, cap in CAPITALS[:2]
    ]
    rouge = make_metric("rouge_l", guard, items, max_new_tokens=12)
    penalty = FluencyPenalty(guard, items, weight=1.0, max_new_tokens=8)
    guard.config = GuardConfig(strength=1e-3)
    clean_rouge, clean_penalty = rouge(), penalty()
    guard.config = GuardConfig(strength=1e4)
    broken_rouge, broken_penalty = rouge(), penalty()
    assert clean_rouge > 0.8 and broken_rouge < 0.2
    assert clean_penalty == pytest.approx(0.0, abs=0.05) and broken_penalty > 1.0
