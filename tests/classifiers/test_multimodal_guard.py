"""The combined classifier end to end: pipeline report, flags, persistence into a guard folder, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from classifiers.attacks import FAMILIES
from classifiers.multimodal import MultimodalClassifier
from classifiers.persistence import ClassifierFileError
from eco_guard.requests import Request

pytestmark = pytest.mark.slow


def test_report_rates_and_robustness(fitted) -> None:
    _, report = fitted
    rates = report["rates"]
    assert set(rates) == {"text", "image"}
    for modality in rates:
        assert set(rates[modality]) == {"train", "held_out"}
    text = rates["text"]["held_out"]
    assert text["forget_fnr"]["n"] >= 40 and text["forget_fnr"]["rate"] <= 0.05
    assert text["celebrity_fpr"]["n"] > 0
    assert rates["text"]["train"]["general_fpr"]["rate"] <= 0.15
    assert rates["image"]["train"]["forget_fnr"]["rate"] <= 0.2  # the reference images themselves
    forget_people = len(fitted[0].image.identities_)
    for modality in rates:
        for split, row in rates[modality].items():
            assert row["forget_fnr"]["people"] == forget_people, (modality, split)
            for (
                entry
            ) in row.values():  # people are counted for every rate that knows whose requests these are
                assert "people" not in entry or 0 <= entry["people_with_errors"] <= min(
                    entry["errors"], entry["people"]
                )
    assert set(report["robustness"]) == set(FAMILIES)
    for family, row in report["robustness"].items():
        assert row["fnr"]["rate"] <= 0.1, (family, row)


def test_flags_name_the_source_and_terms(fitted, people) -> None:
    classifier, _ = fitted
    forget, retain, _ = people
    target = forget[0]
    flags = classifier.flag(
        [
            Request(text=f"What does {target.name.upper()} do for work?"),
            Request(
                messages=(
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": f"Tell me about {target.name}."},
                    {"role": "assistant", "content": "Sure."},
                    {"role": "user", "content": "Where does she live?"},
                )
            ),
            Request(text="What is this person's occupation?", image=target.image),
            Request(text="How do I bake bread?"),
            Request(text="What is this person's occupation?", image=retain[-1].image),
        ]
    )
    assert [f.flagged for f in flags[:3]] == [True, True, True]
    assert flags[0].source == "text" and flags[0].terms == (target.name.upper(),)
    assert flags[1].terms == (target.name,)
    assert flags[2].source == "image" and flags[2].terms == ()
    assert not flags[3].flagged and flags[3].score < flags[0].score
    assert all(0.0 <= f.score <= 1.0 for f in flags)


def test_guard_folder_roundtrip_and_tampering(fitted, people, tiny_llava, tmp_path) -> None:
    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard

    classifier, _ = fitted
    model, processor = tiny_llava
    guard = EcoGuard(model, processor, classifier=classifier, config=GuardConfig(scope=("spans",)))
    guard.save_pretrained(tmp_path)
    loaded = EcoGuard.from_pretrained(tmp_path, model, processor)
    assert isinstance(loaded.classifier, MultimodalClassifier)
    forget = people[0]
    prompts = [
        f"Where was {forget[1].name} born?",
        "Name three rivers in Spain.",
        {"text": "Where does this person live?", "image": forget[2].image},
    ]
    ours = guard.decide(
        [__import__("eco_guard.requests", fromlist=["to_request"]).to_request(p) for p in prompts]
    )
    theirs = loaded.decide([loaded.requests(prompts)][0])
    assert [(f.flagged, round(f.score, 6), f.terms) for f in ours] == [
        (f.flagged, round(f.score, 6), f.terms) for f in theirs
    ]
    answers = loaded.generate(prompts, max_new_tokens=2)
    assert len(answers) == 3
    data = tmp_path / "classifier" / "calibration.safetensors"
    data.write_bytes(data.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ClassifierFileError, match="calibration.safetensors"):
        EcoGuard.from_pretrained(tmp_path, model, processor)


def test_bad_requests(fitted, tmp_path) -> None:
    classifier, _ = fitted
    with pytest.raises(FileNotFoundError, match="request 1"):
        classifier.flag([Request(text="hi"), Request(text="Who is this?", image=tmp_path / "missing.png")])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot be read"):
        classifier.flag([Request(text="Who is this?", image=broken)])
    with pytest.raises(ValueError, match="empty prompt"):
        classifier.flag([{"text": "  "}])
    with pytest.raises(TypeError, match="list"):
        classifier.flag(Request(text="hi"))
    with pytest.raises(NotFittedError, match="calibrate"):
        MultimodalClassifier(classifier.text, classifier.terms).flag([Request(text="hi")])


def test_classify_cli_streams_jsonl(fitted, people, tmp_path) -> None:
    from eco_guard.cli import main

    classifier, _ = fitted
    forget, retain, _ = people
    guard = tmp_path / "guard"
    classifier.save_pretrained(guard / "classifier")
    forget[0].image.save(tmp_path / "face.png")
    lines = [
        {"text": f"Where does {forget[0].name} work?", "id": 1},
        {"messages": [{"role": "user", "content": "Name a fruit."}], "id": 2},
        {"text": "Who is this person?", "image": "face.png", "id": 3},
    ] + [{"text": q} for q in retain[-1].text_questions] * 3
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "classify",
                "--guard",
                str(guard),
                "--prompts",
                str(source),
                "--out",
                str(out),
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(results) == len(lines)
    assert [r["flagged"] for r in results[:3]] == [True, False, True]
    assert results[0]["id"] == 1 and isinstance(results[0]["score"], float)
    assert np.mean([r["flagged"] for r in results[3:]]) < 0.5
    # a guard folder that lost a file is refused, never served unguarded or half-loaded
    import shutil

    from eco_guard.config import GuardFileError
    from eco_guard.core import load_classifier

    broken = tmp_path / "broken"
    shutil.copytree(guard, broken)
    (broken / "classifier" / "classifier.json").unlink()
    with pytest.raises(GuardFileError, match="holds classifier files but not classifier.json"):
        load_classifier(broken)
    assert main(["classify", "--guard", str(broken), "--prompts", str(source), "--out", str(out)]) == 2
    shutil.rmtree(broken)
    shutil.copytree(guard, broken)
    (broken / "classifier" / "calibration.safetensors").unlink()
    with pytest.raises((GuardFileError, FileNotFoundError), match="calibration.safetensors"):
        load_classifier(broken)
    source.write_text('{"text": "fine"}\n{"txt": "typo"}\n')  # the typo costs its own line only
    assert main(["classify", "--guard", str(guard), "--prompts", str(source), "--out", str(out)]) == 0
    fine, typo = (json.loads(x) for x in out.read_text().splitlines())
    assert fine["flagged"] is False and "error" not in fine
    assert (
        typo["flagged"] is None
        and "line 2: a prompt dict needs exactly one of 'text' or 'messages'" in typo["error"]
    )


def test_lookalike_names_are_calibrated_against(fitted, people) -> None:
    """Calibration holds decoys (forget questions about made-up people whose names splice forget names with
    others'): fresh decoys, from another seed and other people's name pieces, are flagged about as often as the
    target rate allows, not wholesale (a lookalike retain person had all their questions flagged before)."""
    from classifiers.training import decoy_questions

    classifier, report = fitted
    forget, retain, _ = people
    assert report["counts"]["calibration_decoys"] >= 2 * sum(len(p.text_questions) for p in forget)
    fresh = decoy_questions(forget, [p.name for p in retain[-10:]], np.random.default_rng(77))
    assert len(fresh) >= 20
    flagged = np.mean([f.flagged for f in classifier.flag(fresh)])
    assert flagged <= 2 * classifier.fpr, flagged


def test_head_gets_its_share_of_the_rate(fitted, people, tmp_path) -> None:
    """Without a name match the head needs p <= share * fpr: fewer head alarms, the same name-match flags, the
    share saved with the classifier, and the rate on the calibration negatives themselves within the share."""
    import copy

    from classifiers.training import decoy_questions
    from eco_guard.requests import to_request

    classifier, _ = fitted
    forget, retain, _ = people
    assert classifier.text_head_share == 0.25
    whole = copy.copy(classifier)
    whole.text_head_share = 1.0
    named = [f"Where was {p.name} born?" for p in forget]
    # lookalike names: near the head's boundary, and no forget name to match
    others = decoy_questions(forget, [p.name for p in retain[-10:]], np.random.default_rng(5))
    for a, b in zip(classifier.flag(named), whole.flag(named), strict=True):
        assert a.flagged and b.flagged and a.score == b.score
    ours, theirs = classifier.scores(others)[0], whole.scores(others)[0]
    assert np.all(ours <= theirs + 1e-12)
    raw = classifier.raw_scores([to_request(q) for q in others])["text"]
    head = (raw <= 1.0) & (raw >= classifier.text_floor)
    assert head.any() and np.any(ours[head] < theirs[head])  # the share made a difference, not just a tie

    calibrator = classifier.calibrators_["text"]["text"]
    negatives = calibrator.negatives_
    p = calibrator.p_values(negatives)
    adjusted = np.array([classifier._text_p(r, q) for r, q in zip(negatives, p, strict=True)])
    head_rows = negatives <= 1.0
    fired = np.mean((adjusted <= classifier.fpr) & head_rows)
    assert fired <= classifier.text_head_share * classifier.fpr + 1 / calibrator.n

    classifier.save_pretrained(tmp_path / "clf")
    assert MultimodalClassifier.from_pretrained(tmp_path / "clf").text_head_share == 0.25
    with pytest.raises(ValueError, match="text_head_share"):
        MultimodalClassifier(classifier.text, text_head_share=0.0)


def test_a_forced_flag_keeps_the_names_and_no_name_falls_back(fitted, people, tiny_llava, caplog) -> None:
    """``flags=[True]`` corrupts what the classifier's flag would: the names it finds. A flagged prompt without a
    name gets the fallback corruption over the whole prompt, never surrogate names for every word."""
    import logging

    import torch

    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.requests import Flag

    classifier, _ = fitted
    target = people[0][0]
    model, processor = tiny_llava
    config = GuardConfig(corruption="substitute", strength=1.0, scope=("spans",), fallback_strength=3.0)
    guard = EcoGuard(model, processor, classifier=classifier, config=config)
    requests = guard.requests([f"Where does {target.name} live?", "Who was the smartest person in history?"])
    forced = guard.decide(requests, [True, True])
    assert forced[0].terms == classifier.flag(requests[:1])[0].terms == (target.name,)
    assert forced[1].flagged and forced[1].terms == ()
    batch = guard.encode(requests)
    with caplog.at_level(logging.WARNING, logger="eco_guard.guard"):
        plan = guard.plan(batch, forced, (2, max(i.numel() for i in batch.ids)))
    named, unnamed = plan.text_rows
    spans = guard.prompt_mask(batch.prompts[0], batch.ids[0], (target.name,))
    assert not named.fallback and torch.equal(named.mask, spans) and 0 < int(spans.sum()) < spans.numel() - 1
    assert unnamed.fallback and int(unnamed.mask.sum()) == batch.ids[1].numel() - 1
    assert "1 flagged request(s) name no forget target" in caplog.text
    assert guard.renames(unnamed) == [] and {o for _, o in guard.renames(named)} == set(target.name.split())
    # the unnamed row gets noise on its first dimension (noise_first_n), not surrogate names in every dimension
    embeds = model.get_input_embeddings()(guard.collate(batch.ids)["input_ids"])
    out = guard.corrupt_rows(embeds, plan.text_rows)
    assert torch.equal(out[1, :, 1:], embeds[1, :, 1:]) and not torch.equal(out[1, :, 0], embeds[1, :, 0])
    assert not torch.equal(
        out[0, :, 1:], embeds[0, :, 1:]
    )  # the named row: its names move in every dimension
    # a flag the caller gives with its own names keeps them; an unflagged one asks for none
    own = guard.decide(requests, [Flag(True, 1.0, "caller", ("Somebody Else",)), False])
    assert own[0].terms == ("Somebody Else",) and not own[1].flagged and own[1].terms == ()
