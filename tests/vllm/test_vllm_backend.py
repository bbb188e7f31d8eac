"""GuardedLLM on the real vLLM engine and the real SmolLM2, against the transformers guard."""

from __future__ import annotations

import logging

import pytest
import torch

from eco_guard.corruption import apply_corruption
from eco_guard.guard import EcoGuard
from eco_guard.vllm_backend import GuardedOutput, PreparedRequest, RequestError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def hf_guard(smollm2):
    model, tokenizer = smollm2
    return EcoGuard(model, tokenizer)


@pytest.fixture(scope="module")
def both_answers(guarded_llm, hf_guard, questions):
    """Greedy answers of both backends to 50 questions, unflagged then flagged (HF in left-padded batches)."""
    prompts = questions + questions
    flags = [False] * len(questions) + [True] * len(questions)
    ours = guarded_llm.generate(prompts, flags, max_new_tokens=MAX_NEW_TOKENS)
    theirs = hf_guard.generate(prompts, flags, max_new_tokens=MAX_NEW_TOKENS, batch_size=25)
    return ours, theirs


def test_greedy_answers_match_transformers_unflagged_and_flagged(both_answers, questions):
    ours, theirs = both_answers
    n = len(questions)
    same = [a == b for a, b in zip(ours, theirs, strict=False)]
    logging.getLogger(__name__).warning(
        "identical: %d/%d unflagged, %d/%d flagged", sum(same[:n]), n, sum(same[n:]), n
    )
    assert sum(same[:n]) >= 0.95 * n, [
        (a, b) for a, b, s in zip(ours[:n], theirs[:n], same[:n], strict=False) if not s
    ]
    assert sum(same[n:]) >= 0.95 * n, [
        (a, b) for a, b, s in zip(ours[n:], theirs[n:], same[n:], strict=False) if not s
    ]


def test_corruption_changes_the_answers(both_answers, questions):
    ours, _ = both_answers
    n = len(questions)
    assert sum(a != b for a, b in zip(ours[:n], ours[n:], strict=False)) >= 0.8 * n
    assert "Paris" in ours[0] and "Paris" not in ours[n]


def test_unflagged_go_as_tokens_flagged_as_the_hf_guards_corrupted_embeddings(
    guarded_llm, hf_guard, questions
):
    plain, flagged = guarded_llm.prepare(questions[:2], [False, True])
    assert isinstance(plain, PreparedRequest) and plain.embeds is None
    assert plain.engine_prompt() == {"prompt_token_ids": plain.ids.tolist()}
    assert set(flagged.engine_prompt()) == {"prompt_embeds"}
    # the HF guard's own tokenization and mask, corrupted on the model's own embedding table
    batch = hf_guard.encode(hf_guard.requests(questions[1:2]))
    assert torch.equal(batch.ids[0], flagged.ids)
    mask = hf_guard.prompt_mask(batch.prompts[0], batch.ids[0])
    clean = hf_guard.model.get_input_embeddings()(batch.ids[0])[None].detach()
    cfg = hf_guard.config
    expected = apply_corruption(cfg.corruption, clean, mask[None], cfg.params, cfg.seed)[0]
    assert torch.equal(flagged.embeds, expected)
    assert not torch.equal(flagged.embeds, clean[0])


def test_a_failing_request_gets_its_own_error_and_the_rest_are_served(guarded_llm, questions):
    prompts = [
        questions[0],
        "",  # empty
        "word " * 600,  # longer than max_model_len=512
        {"text": "Describe the picture.", "image": "missing.png"},  # text-only model
        {"txt": "typo"},  # malformed
        [{"role": "user", "content": questions[0]}],
    ]
    outputs = guarded_llm.serve(prompts, sampling_params={"max_new_tokens": 12})
    assert [o.ok for o in outputs] == [True, False, False, False, False, True]
    assert "empty" in outputs[1].error
    assert "max_model_len" in outputs[2].error
    assert "text-only" in outputs[3].error
    assert "text" in outputs[4].error and outputs[4].text is None
    assert (
        "Paris" in outputs[0].text and outputs[0].text == outputs[5].text
    )  # chat messages == text + template
    with pytest.raises(RequestError, match="prompt 1"):
        guarded_llm.generate(prompts[:2], max_new_tokens=4)
    assert "Paris" in guarded_llm.generate(questions[:1], max_new_tokens=12)[0]  # the engine still serves


def test_per_request_sampling_parameters_and_flags_in_one_call(guarded_llm, questions):
    outputs = guarded_llm.serve(
        questions[:3],
        [True, False, None],
        sampling_params=[{"max_new_tokens": 3}, {"max_new_tokens": 20}, None],
    )
    assert all(isinstance(o, GuardedOutput) and o.ok for o in outputs)
    assert [o.flagged for o in outputs] == [True, False, False]  # None: no classifier, not flagged
    assert len(outputs[0].token_ids) == 3 and 3 < len(outputs[1].token_ids) <= 20
    sampled = guarded_llm.generate(questions[:1], do_sample=True, temperature=1.0, seed=1, max_new_tokens=8)
    assert isinstance(sampled[0], str)
    with pytest.raises(ValueError, match="unknown generation options"):
        guarded_llm.generate(questions[:1], max_length=5)


def test_score_matches_transformers(guarded_llm, hf_guard, questions):
    prompts = questions[:3]
    options = [[" The capital of France", " Berlin"], [" William Shakespeare"], [" Au", " Ag"]]
    for flags in ([False, False, False], [True, False, True]):
        ours = guarded_llm.score(prompts, options, flags)
        theirs = hf_guard.score(prompts, options, flags)
        for a, b in zip(ours, theirs, strict=False):
            assert a == pytest.approx(b, abs=2e-3)
    plain = guarded_llm.score(prompts[:1], options[:1])
    corrupted = guarded_llm.score(prompts[:1], options[:1], [True])
    assert plain[0][0] > plain[0][1] and abs(corrupted[0][0] - plain[0][0]) > 1.0


def test_substituted_names_match_transformers_and_are_written_back(guarded_llm, hf_guard):
    """``substitute``: the engine gets the surrogate name's embeddings, and the answer gets the real name back,
    as on the transformers backend."""
    from eco_guard.config import GuardConfig
    from eco_guard.requests import Flag

    prompts = ["Who was Albert Einstein? Answer in one sentence.", "What is the capital of France?"]
    flags = [Flag(True, 1.0, "test", ("Albert Einstein",)), False]
    config = GuardConfig(corruption="substitute", strength=1.0, scope=("spans",))
    before = (guarded_llm.guard.config, hf_guard.config)
    guarded_llm.guard.config = hf_guard.config = config
    try:
        ours = guarded_llm.generate(prompts, flags, max_new_tokens=24)
        theirs = hf_guard.generate(prompts, flags, max_new_tokens=24)
        prepared = guarded_llm.prepare(prompts[:1], flags[:1])[0]
    finally:
        guarded_llm.guard.config, hf_guard.config = before
    assert ours == theirs
    assert "Einstein" in ours[0] and "physic" not in ours[0] and "Paris" in ours[1]
    assert {original for _, original in prepared.renames} == {"Albert", "Einstein"}
