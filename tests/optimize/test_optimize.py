"""The search loop, its trace and its errors, on a tiny random model (the real model: test_smollm2.py)."""

from __future__ import annotations

import json

import pytest
import torch

from eco_guard.config import GuardConfig
from eco_guard.corruption import apply_corruption
from eco_guard.optimize import (
    PLOT_NAME,
    TRACE_NAME,
    ScoredItem,
    SearchError,
    SearchSpace,
    make_metric,
    optimize_guard,
    read_trace,
)

QA = [
    ("The capital of France is", " Paris"),
    ("The sky on a clear day is", " blue"),
    ("Water freezes at zero degrees", " Celsius and is then called ice"),
    ("The largest planet of the solar system is", " Jupiter"),
]
ITEMS = [
    ScoredItem(q, choices=(" Paris", " blue", " Jupiter", " ice"), correct=i % 4, answer=a)
    for i, (q, a) in enumerate(QA)
]


@pytest.fixture
def guard(tiny_guard):
    tiny_guard.config = GuardConfig(corruption="noise_first_n", strength=100.0, dims=1)
    return tiny_guard


def reference_logprob(guard, prompt, continuation, corrupt: bool) -> float:
    """One sequence through the unwrapped model; prompt tokens but the last corrupted by hand."""
    prompt_ids = guard.tokenizer(guard.render(guard.requests([prompt])[0], False))["input_ids"]
    cont = guard.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + cont])
    embeds = guard.model.get_input_embeddings()(ids)
    if corrupt:
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[0, : len(prompt_ids) - 1] = True
        cfg = guard.config
        embeds = apply_corruption(cfg.corruption, embeds, mask, cfg.params, cfg.seed)
    with torch.no_grad():
        logp = torch.log_softmax(guard.model(inputs_embeds=embeds).logits[0].float(), -1)
    return sum(logp[len(prompt_ids) - 1 + k, c].item() for k, c in enumerate(cont))


def test_prepared_scoring_matches_one_sequence_at_a_time(guard):
    prompts = [q for q, _ in QA]
    options = [[" Paris", " blue"], [" blue", " green", " red"], [" Celsius and", " ice"], [" Jupiter"]]
    batch = guard.prepare_scoring(prompts, options, flags=[True, False, True, False], chat_template=False)
    assert len(batch.chunks[0].inputs["input_ids"]) == 1 + 1 + 2 + 1  # single-token options share one row
    for strength in (0.5, 50.0):
        guard.config = guard.config.replace(strength=strength)
        got = guard.score_prepared(batch)
        for i, (p, opts) in enumerate(zip(prompts, options, strict=True)):
            for o, value in zip(opts, got[i], strict=True):
                assert value == pytest.approx(reference_logprob(guard, p, o, corrupt=i in (0, 2)), abs=1e-4)
    assert got == guard.score(prompts, options, flags=[True, False, True, False], chat_template=False)


def test_same_seed_same_trace(guard):
    runs = []
    for seed in (3, 3, 4):
        guard.config = GuardConfig()
        result = optimize_guard(
            guard,
            ITEMS,
            target=-9.0,
            metric="answer_loglik",
            tolerance=0.0,
            budget=6,
            seed=seed,
            optimizer="OnePlusOne",
            chat_template=False,
            progress=False,
        )
        runs.append([(e.params, e.metric, e.objective) for e in result.trace])
    assert len(runs[0]) == 6
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_trace_plot_and_best_config(guard, tmp_path):
    result = optimize_guard(
        guard,
        ITEMS,
        target=-10.5,
        metric="answer_loglik",
        tolerance=0.0,
        budget=5,
        chat_template=False,
        output_dir=tmp_path,
        progress=False,
    )
    lines = [json.loads(line) for line in (tmp_path / TRACE_NAME).read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(5))
    assert set(lines[0]) == {"step", "params", "metric", "gap", "penalty", "objective", "seconds", "empty"}
    assert lines[0]["empty"] is None  # a log-likelihood generates no answers
    assert read_trace(tmp_path / TRACE_NAME) == result.trace
    assert (tmp_path / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = min(result.trace, key=lambda e: e.objective)
    assert result.best.objective == best.objective
    assert guard.config.strength == pytest.approx(result.best.params["strength"])
    assert all(e.objective == pytest.approx(abs(e.metric + 10.5)) for e in result.trace)
    # the best setting really gives the best metric
    assert make_metric("answer_loglik", guard, ITEMS, chat_template=False)() == pytest.approx(
        result.best.metric
    )


def test_stops_early_within_tolerance(guard):
    """The search starts at the guard's own setting: a target met there ends it after one evaluation; one that
    is not runs on."""
    start = make_metric("answer_loglik", guard, ITEMS, chat_template=False)()
    args = {
        "metric": "answer_loglik",
        "tolerance": 1e-6,
        "budget": 4,
        "chat_template": False,
        "progress": False,
    }
    result = optimize_guard(guard, ITEMS, target=start, **args)
    assert result.reached and len(result.trace) == 1 and result.evaluations_to_tolerance == 1
    assert result.trace[0].metric == pytest.approx(start, abs=1e-6)
    missed = optimize_guard(guard, ITEMS, target=start - 5.0, **args)
    assert len(missed.trace) > 1 and missed.trace[0].metric == pytest.approx(start, abs=1e-6)


def test_searches_family_and_dims(guard):
    space = SearchSpace(
        strength=(0.1, 1000.0), corruptions=("noise_first_n", "noise_top_k", "zero_first_n"), dims=(1, 16)
    )
    result = optimize_guard(
        guard,
        ITEMS,
        target=-1.0,
        metric="answer_loglik",
        tolerance=0.0,
        budget=8,
        space=space,
        chat_template=False,
        progress=False,
    )
    for e in result.trace:
        assert set(e.params) == {"strength", "corruption", "dims"}
        assert (
            0.1 <= e.params["strength"] <= 1000
            and isinstance(e.params["dims"], int)
            and 1 <= e.params["dims"] <= 16
        )
    assert len({e.params["corruption"] for e in result.trace}) > 1
    assert (
        guard.config.corruption == result.best.params["corruption"]
        and guard.config.dims == result.best.params["dims"]
    )


def test_image_strength_is_searched_alone_on_image_questions(tiny_llava):
    """Scope spans+image, nameless "this person" questions with a photo: only the image features are corrupted, so
    only ``image_strength`` moves the metric; the search changes it and leaves ``strength`` as it was."""
    from PIL import Image

    from eco_guard.guard import EcoGuard

    model, processor = tiny_llava
    photos = [Image.new("RGB", (64, 64), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    items = [
        ScoredItem(
            "USER: <image>\nWhere does this person live?\nASSISTANT:", answer=" In Paris.", image=photo
        )
        for photo in photos
    ]
    config = GuardConfig(corruption="noise_first_n", dims=64, scope=("spans", "image"), strength=0.5)
    guard = EcoGuard(model, processor, config=config)
    space = SearchSpace(strength=(1e-2, 1e2), parameter="image_strength")
    result = optimize_guard(
        guard,
        items,
        target=-50.0,
        metric="answer_loglik",
        tolerance=0.0,
        budget=5,
        space=space,
        chat_template=False,
        progress=False,
    )
    assert all(set(e.params) == {"image_strength"} for e in result.trace)
    assert len({round(e.metric, 6) for e in result.trace}) > 1, "the metric follows image_strength"
    assert guard.config.image_strength == result.best.params["image_strength"]
    assert guard.config.strength == 0.5
    guard.config = guard.config.replace(scope=("spans",))
    with pytest.raises(ValueError, match="leaves images alone"):
        optimize_guard(
            guard,
            items,
            target=-50.0,
            metric="answer_loglik",
            budget=1,
            space=space,
            chat_template=False,
            progress=False,
        )


def test_a_point_asked_again_is_answered_from_memory(guard):
    from eco_guard.optimize import GuardObjective

    calls = []

    def metric():
        calls.append(guard.config.strength)
        return guard.config.strength / 10

    objective = GuardObjective(guard, metric, target=0.5)
    first, again, other = (
        objective({"strength": 2.0}),
        objective({"strength": 2.0}),
        objective({"strength": 3.0}),
    )
    assert objective({"strength": 0.839377011794464}).seconds > 0
    last_bit = objective({"strength": 0.8393770117944639})  # the same point as the optimizer asks it again
    assert last_bit.seconds == 0.0 and last_bit.params == {"strength": 0.839377011794}
    assert calls == [2.0, 3.0, 0.839377011794], "the repeated point was not measured again"
    assert (again.metric, again.objective, again.step) == (first.metric, first.objective, 1)
    assert again.seconds == 0.0 and other.metric == pytest.approx(0.3)


def test_measured_target_from_heldout_items(guard):
    heldout = ITEMS[2:]
    result = optimize_guard(
        guard,
        ITEMS[:2],
        target=heldout,
        metric="answer_loglik",
        budget=2,
        chat_template=False,
        progress=False,
    )
    guard.config = GuardConfig()
    assert result.target == pytest.approx(
        make_metric("answer_loglik", guard, heldout, flagged=False, chat_template=False)()
    )


def test_a_metric_prepared_by_the_caller_is_searched_as_given(guard):
    """A benchmark passes its own scoring (an object with name, bounds and a call): the search measures it under
    each candidate config, against a numeric target, and writes the best into the guard."""

    class Strength:
        name, bounds = "strength_seen", (0.0, 1e9)

        def __init__(self):
            self.seen = []

        def __call__(self):
            self.seen.append(guard.config.strength)
            return guard.config.strength

    metric = Strength()
    result = optimize_guard(
        guard,
        [],
        target=3.0,
        metric=metric,
        tolerance=0.0,
        budget=6,
        space=SearchSpace(strength=(0.1, 100.0)),
        chat_template=False,
        progress=False,
    )
    assert result.metric == "strength_seen" and len(result.trace) == 6
    assert [e.metric for e in result.trace if e.seconds > 0] == metric.seen
    assert all(e.objective == pytest.approx(abs(e.params["strength"] - 3.0)) for e in result.trace)
    assert guard.config.strength == pytest.approx(min(metric.seen, key=lambda v: abs(v - 3.0)))
    with pytest.raises(ValueError, match="prepared by the caller: give its target as a number"):
        optimize_guard(guard, [], target=ITEMS, metric=metric, budget=2, progress=False)
    with pytest.raises(ValueError, match=r"target -1.0 lies outside the range \[0.0, 1000000000.0\]"):
        optimize_guard(guard, [], target=-1.0, metric=metric, budget=2, progress=False)
    with pytest.raises(ValueError, match="fluency penalty needs items"):
        optimize_guard(guard, [], target=1.0, metric=metric, budget=2, fluency_weight=1.0, progress=False)


def test_linear_scale_searches_a_blend_weight(guard):
    """``scale='linear'`` spreads the search evenly over [low, high] (a blend weight: 0 is allowed, 0.001 and 0.1
    are no different there); a log-scale search of the same bounds is refused at 0."""

    class Strength:
        name, bounds = "strength_seen", (0.0, 1.0)

        def __call__(self):
            return guard.config.strength

    def search(space):
        return optimize_guard(
            guard,
            [],
            target=0.6,
            metric=Strength(),
            tolerance=0.0,
            budget=8,
            space=space,
            chat_template=False,
            progress=False,
        )

    linear = [e.params["strength"] for e in search(SearchSpace(strength=(0.0, 1.0), scale="linear")).trace]
    assert all(0.0 <= s <= 1.0 for s in linear) and sum(s > 0.2 for s in linear) >= 6
    assert min(abs(s - 0.6) for s in linear) < 0.1
    with pytest.raises(ValueError, match=r"0 < low < high < inf \(log scale\)"):
        search(SearchSpace(strength=(0.0, 1.0)))
    with pytest.raises(ValueError, match="scale must be 'log' or 'linear'"):
        search(SearchSpace(strength=(0.1, 1.0), scale="cubic"))


def test_bad_input(guard):
    def run(items=ITEMS, **kwargs):
        args = {
            "target": 0.25,
            "metric": "mc_accuracy",
            "budget": 2,
            "chat_template": False,
            "progress": False,
        }
        return optimize_guard(guard, items, **{**args, **kwargs})

    with pytest.raises(ValueError, match="forget set is empty"):
        run([])
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        run(budget=0)
    with pytest.raises(ValueError, match="unknown nevergrad optimizer 'NelderMeat'; did you mean NelderMead"):
        run(optimizer="NelderMeat")
    with pytest.raises(
        ValueError, match=r"target 1.5 lies outside the range \[0.0, 1.0\] of metric 'mc_accuracy'"
    ):
        run(target=1.5)
    with pytest.raises(ValueError, match="outside the range"):
        run(target=0.5, metric="answer_loglik")
    with pytest.raises(ValueError, match="held-out set for the target is empty"):
        run(target=[])
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        run(metric="bleu")
    with pytest.raises(ValueError, match="item 0 needs at least two choices"):
        run([ScoredItem("q", answer="a")])
    with pytest.raises(ValueError, match="item 0 has no reference answer"):
        run([ScoredItem("q", choices=("a", "b"), correct=0)], metric="rouge_l", target=0.1)
    with pytest.raises(ValueError, match="nothing to search"):
        run(space=SearchSpace(corruptions=("zero_all",)))
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        run(space=SearchSpace(corruptions=("blur", "zero_all")))
    with pytest.raises(ValueError, match="parameter must be one of"):
        run(space=SearchSpace(parameter="dims"))
    assert guard.config == GuardConfig(corruption="noise_first_n", strength=100.0, dims=1)


def test_a_degenerate_search_stops_loudly_and_keeps_nothing(guard, tmp_path):
    """A metric that no setting moves, or answers that are mostly empty, end the search with a clear error and
    the guard's config as it was."""

    class Flat:
        name, bounds = "flat", (0.0, 1.0)

        def __call__(self) -> float:
            return 0.25

    class Mute(Flat):
        name, empty = "mute", 0.9

    before = guard.config
    with pytest.raises(SearchError, match="the metric is 0.2500 at all 4 points searched"):
        optimize_guard(guard, [], target=0.6, metric=Flat(), tolerance=0.01, budget=4, progress=False)
    assert guard.config == before
    with pytest.raises(SearchError, match="90% of the answers are empty at the best point"):
        optimize_guard(guard, [], target=0.25, metric=Mute(), budget=4, progress=False, output_dir=tmp_path)
    assert guard.config == before and not (tmp_path / "guard_config.json").exists()
    # flat but on target is a result, not a failure
    assert optimize_guard(guard, [], target=0.25, metric=Flat(), budget=4, progress=False).reached
