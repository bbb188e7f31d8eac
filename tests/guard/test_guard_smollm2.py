"""EcoGuard on the real SmolLM2-135M-Instruct: exactness when unflagged, real forgetting when flagged."""

from __future__ import annotations

import threading

import pytest
import torch

from eco_guard.config import GuardConfig
from eco_guard.guard import EcoGuard
from eco_guard.requests import Flag

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Name the largest ocean on Earth, please, in one short sentence.",
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of Japan?"},
    ],
    "Who wrote Romeo and Juliet?",
]
GEN = {"max_new_tokens": 12}


@pytest.fixture(scope="module")
def guard(smollm2):
    model, tokenizer = smollm2
    return EcoGuard(model, tokenizer, config=GuardConfig(corruption="noise_first_n", strength=100.0, dims=1))


def unwrapped_generate(guard, prompts, **kwargs):
    """The plain transformers path: tokenizer with left padding + model.generate."""
    rendered = [guard.render(r) for r in guard.requests(prompts)]
    tok = guard.tokenizer
    inputs = tok(rendered, padding=True, padding_side="left", return_tensors="pt")
    out = guard.model.generate(**inputs, do_sample=False, pad_token_id=guard.pad_token_id, **kwargs)
    return tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True), inputs


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def hooks_seen_during(guard, call) -> list[int]:
    """The other hooks registered on the model at each embedding lookup during ``call()`` (a probe hook counts)."""
    seen: list[int] = []
    probe = guard.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(hook_count(guard.model) - 1)
    )
    try:
        call()
    finally:
        probe.remove()
    return seen


def test_nothing_flagged_is_bit_identical(guard):
    expected, inputs = unwrapped_generate(guard, PROMPTS, **GEN)
    assert guard.generate(PROMPTS, **GEN) == expected
    assert guard.generate(PROMPTS, flags=[False] * 4, **GEN) == expected
    # no hook of the guard's exists while unflagged traffic runs; a flagged call has one (the probe can see it)
    unflagged = hooks_seen_during(guard, lambda: guard.generate(PROMPTS, flags=[False] * 4, **GEN))
    flagged = hooks_seen_during(guard, lambda: guard.generate(PROMPTS, flags=[True] * 4, **GEN))
    assert unflagged and set(unflagged) == {0} and max(flagged) >= 1
    with torch.no_grad():
        plain = guard.model(**inputs).logits
        wrapped = guard(**inputs).logits
    assert torch.equal(plain, wrapped)


def test_mixed_batch_rows_are_independent(guard):
    flags = [True, False, True, False]
    mixed = guard.generate(PROMPTS, flags=flags, **GEN)
    solo = [unwrapped_generate(guard, [p], **GEN)[0][0] for p in PROMPTS]
    assert mixed[1] == solo[1] and mixed[3] == solo[3]
    assert mixed[0] != solo[0] and mixed[2] != solo[2]
    # logits of unflagged rows in a mixed batch equal the unwrapped batch bit for bit
    _, inputs = unwrapped_generate(guard, PROMPTS, max_new_tokens=1)
    with torch.no_grad():
        plain = guard.model(**inputs).logits
        wrapped = guard(**inputs, flags=flags).logits
    assert torch.equal(plain[1], wrapped[1]) and torch.equal(plain[3], wrapped[3])
    assert not torch.allclose(plain[0], wrapped[0])


def test_known_fact_is_lost_only_when_flagged(guard):
    question = ["What is the capital of France?"]
    clean = guard.generate(question, max_new_tokens=16)[0]
    assert "Paris" in clean
    assert "Paris" not in guard.generate(question, flags=[True], max_new_tokens=16)[0]
    assert guard.generate(question, flags=[False], max_new_tokens=16)[0] == clean


def test_only_bools_override_the_classifier(guard):
    """``"false"`` is truthy: a flag that is not a bool, None or a Flag is refused, never read as flagged."""
    import numpy as np

    for bad in ("false", 1, 0.0):
        with pytest.raises(
            TypeError, match=f"flag 1 must be True, False, None or a Flag, got {type(bad).__name__}"
        ):
            guard.generate(PROMPTS[:2], flags=[False, bad], max_new_tokens=2)
    assert guard.generate(PROMPTS[:1], flags=[np.bool_(False)], max_new_tokens=4) == guard.generate(
        PROMPTS[:1], max_new_tokens=4
    )


def test_hooks_are_removed_also_after_errors(guard):
    before = hook_count(guard.model)
    guard.generate(PROMPTS[:2], flags=[True, False], max_new_tokens=2)
    assert hook_count(guard.model) == before
    with pytest.raises(ValueError, match="bogus_option"):  # raised inside model.generate, hooks registered
        guard.generate(PROMPTS[:2], flags=[True, True], max_new_tokens=2, bogus_option=3)
    assert hook_count(guard.model) == before


NAMED = [
    "Where does Marie Curie live?",
    "What did Albert Einstein study?",
    "What is the capital of France?",
    "Who painted the Mona Lisa?",
]


@pytest.mark.parametrize("scope", ["prompt", "spans"])
def test_concurrent_calls_match_serial(smollm2, scope):
    """4 threads x 8 mixed calls on one model equal the serial calls. Scope ``spans``: names substituted, the
    chat template's system prompt computed once per call (shared prefix), whose capture hook must not pick up
    another thread's embeddings."""
    from eco_guard.prefix import MIN_SHARED_PREFIX

    model, tokenizer = smollm2
    if scope == "prompt":
        guard = EcoGuard(
            model, tokenizer, config=GuardConfig(corruption="noise_first_n", strength=100.0, dims=1)
        )
        prompts, names = PROMPTS, [()] * 4
    else:
        guard = EcoGuard(
            model, tokenizer, config=GuardConfig(corruption="substitute", strength=1.0, scope=("spans",))
        )
        prompts, names = NAMED, [("Marie Curie",), ("Albert Einstein",), ("France",), ("Mona Lisa",)]
        batch = guard.encode(guard.requests(prompts[:2]))
        flags = [Flag(True, 1.0, "test", n) for n in names[:2]]
        plan = guard.plan(batch, flags, guard.collate(batch.ids)["input_ids"].shape)
        assert guard.share_prefix and guard.shared_prefix(batch, plan) >= MIN_SHARED_PREFIX

    def flag(k: int, on: bool):
        return Flag(True, 1.0, "test", names[k]) if on else False

    calls = [
        ([prompts[i % 4], prompts[(i + 1) % 4]], [flag(i % 4, bool(i % 2)), flag((i + 1) % 4, i % 3 == 0)])
        for i in range(8)
    ]
    serial = [guard.generate(p, flags=f, max_new_tokens=4) for p, f in calls]
    results: dict[tuple[int, int], list[str]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i, (p, f) in enumerate(calls):
                results[t, i] = guard.generate(p, flags=f, max_new_tokens=4)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert all(results[t, i] == serial[i] for t in range(4) for i in range(len(calls)))
    assert hook_count(guard.model) == 0


def test_span_scope_corrupts_only_the_name(smollm2):
    model, tokenizer = smollm2
    guard = EcoGuard(model, tokenizer, config=GuardConfig(scope=("spans",), strength=100.0))
    request = guard.requests(["Where does Marie Curie live? Tell me about Marie Curie."])[0]
    batch = guard.encode([request])
    mask = guard.prompt_mask(batch.prompts[0], batch.ids[0], ("Marie Curie",))
    tokens = [guard.tokenizer.decode(t) for t in batch.ids[0][mask]]
    assert "".join(tokens).replace(" ", "") == "MarieCurieMarieCurie"
    # no term found: every prompt token but the last
    fallback = guard.prompt_mask(batch.prompts[0], batch.ids[0], ("Ada Lovelace",))
    assert fallback.sum() == batch.ids[0].numel() - 1 and not fallback[-1]
    flag = Flag(True, 1.0, "test", ("Marie Curie",))
    assert guard.generate([request], flags=[flag], max_new_tokens=8) != guard.generate(
        [request], max_new_tokens=8
    )


def test_score_corrupts_only_the_prompt(guard):
    prompts = ["The capital of France is", "The capital of Italy is"]
    options = [[" Paris", " London"], [" Rome", " Madrid", " Oslo"]]
    clean = guard.score(prompts, options)
    assert clean[0][0] > clean[0][1] and clean[1][0] == max(clean[1])
    # reference: the unwrapped model, one sequence at a time
    tok = guard.tokenizer
    for p, opts, got in zip(prompts, options, clean):
        for o, value in zip(opts, got):
            prompt_ids = tok(guard.render(guard.requests([p])[0]))["input_ids"]
            cont = tok(o, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + cont])
            with torch.no_grad():
                logp = torch.log_softmax(guard.model(ids).logits[0, :-1].float(), -1)
            ref = sum(logp[len(prompt_ids) - 1 + k, c].item() for k, c in enumerate(cont))
            assert value == pytest.approx(ref, abs=1e-3)
    flagged = guard.score(prompts, options, flags=[True, False])
    assert flagged[1] == clean[1]
    assert flagged[0] != clean[0]


def test_bad_input(guard):
    with pytest.raises(ValueError, match="prompt 1: empty prompt"):
        guard.generate(["hello", "   "])
    with pytest.raises(ValueError, match="text-only model"):
        guard.generate([{"text": "who is this?", "image": "x.png"}])
    with pytest.raises(ValueError, match="got 1 flags for 2 prompts"):
        guard.generate(["a", "b"], flags=[True])
    with pytest.raises(TypeError, match="must be a list"):
        guard.generate("a single string")
    with pytest.raises(ValueError, match="role 'robot'"):
        guard.generate([[{"role": "robot", "content": "hi"}]])
    with pytest.raises(ValueError, match="no prompts"):
        guard.generate([])


def test_save_and_load(guard, tmp_path):
    guard.config = guard.config.replace(strength=42.0)
    try:
        guard.save_pretrained(tmp_path)
        loaded = EcoGuard.from_pretrained(tmp_path, guard.model, guard.tokenizer)
    finally:
        guard.config = guard.config.replace(strength=100.0)
    assert loaded.config.strength == 42.0 and loaded.classifier is None
    assert loaded.num_parameters() == guard.model.num_parameters()  # attribute fall-through


FEW_SHOT = (
    "Question: What is the capital of Italy?\nAnswer: Rome\n"
    "Question: What is the capital of Spain?\nAnswer: Madrid\n"
)


@pytest.mark.parametrize(
    "config, shares",
    [
        (GuardConfig(corruption="noise_first_n", strength=100.0, dims=1, scope=("spans",)), True),
        (GuardConfig(corruption="substitute", strength=1.0, scope=("spans",)), True),
        (GuardConfig(corruption="noise_first_n", strength=100.0, dims=1, scope=("prompt",)), False),
    ],
    ids=["noise-on-names", "substitute-names", "whole-prompt"],
)
def test_a_shared_prefix_is_computed_once_and_answers_stay_the_same(smollm2, config, shares):
    """Few-shot prompts start alike: the guard runs that prefix once and reuses its KV cache. The answers equal
    those of the whole prompts in one prefill, flagged rows included; the corruption is drawn over the whole
    prompt either way. A corrupted token in the prefix (scope ``prompt``) turns the sharing off."""
    from eco_guard.prefix import MIN_SHARED_PREFIX

    model, tokenizer = smollm2
    guard = EcoGuard(model, tokenizer, config=config)
    prompts = [FEW_SHOT + f"Question: What is the capital of {c}?\nAnswer:" for c in ("France", "Japan")]
    prompts += [
        FEW_SHOT + "Question: Where does Jane Doe live?\nAnswer:",
        FEW_SHOT + "Question: Who?\nAnswer:",
    ]
    flags = [False, Flag(True, terms=("Japan",)), Flag(True, terms=("Jane Doe",)), False]
    batch = guard.encode(guard.requests(prompts), chat_template=False)
    plan = guard.plan(
        batch, guard.decide(guard.requests(prompts), flags), guard.collate(batch.ids)["input_ids"].shape
    )
    shared = guard.shared_prefix(batch, plan)
    assert (shared >= MIN_SHARED_PREFIX) == shares
    if shares:
        assert torch.equal(batch.ids[0][:shared], batch.ids[3][:shared])
        assert not any(p.mask[:shared].any() for p in plan.text_rows)

    widths = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, a, out: widths.append(out.shape[:2])
    )
    try:
        together = guard.generate(prompts, flags=flags, chat_template=False, max_new_tokens=8)
    finally:
        handle.remove()
    full = max(r.numel() for r in batch.ids)
    assert widths[:2] == ([(1, shared), (4, full - shared)] if shares else [(4, full), (4, 1)])
    guard.share_prefix = False
    assert guard.generate(prompts, flags=flags, chat_template=False, max_new_tokens=8) == together
    assert together[1] != guard.generate(prompts[1:2], chat_template=False, max_new_tokens=8)[0]
