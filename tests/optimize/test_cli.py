"""``eco-guard optimize`` end to end on a synthetic MLLMU-Bench and a tiny random model saved to a folder."""

from __future__ import annotations

import json
import re

import pytest

from eco_guard.cli import main
from eco_guard.config import GuardConfig
from eco_guard.optimize import PLOT_NAME, TRACE_NAME


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from benchmarks.mllmu import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("mllmu"), n_profiles=20, n_celebrities=1, with_images=False, never_trained=3
    )


@pytest.fixture(scope="module")
def model_dir(tiny_guard, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_guard.model.save_pretrained(folder)
    tiny_guard.tokenizer.save_pretrained(folder)
    return folder


def test_the_search_asks_what_evaluate_asks(data):
    """The forget questions are evaluate's own items (same prompts, same few-shot draws); the target's people are
    asked the same questions in the forget split's place."""
    from benchmarks.mllmu import evaluate as ev
    from benchmarks.mllmu import load_config
    from benchmarks.mllmu.search_metrics import (
        TWIN_ROUNDS,
        forget_questions,
        questions,
        target_rows,
        twin_rows,
    )

    bench = ev.load_benchmark(data, "forget_10")
    sampler = ev.ShotSampler(bench, 0, 1, False)
    expected = ev.build_items("forget", bench.sets["forget"], sampler, 0, ("text_only",), bench.names)
    asked = forget_questions(data, "forget_10", modality="text")
    assert [it.prompt for it in asked] == [it.prompt for it in expected] and asked
    assert {it.task for it in asked} == {"classification", "cloze", "generation"}
    assert [it.task for it in questions(asked, "rouge_l")] == ["generation"] * len(
        questions(asked, "rouge_l")
    )
    rows, source = target_rows(data, "forget_10", "Never_Trained")
    never = {r["ID"] for r in load_config(data, "Never_Trained")}
    assert {r["ID"] for r in rows} == never and "Never_Trained" in source
    assert not never & {r["ID"] for r in load_config(data, "Full_Set")}  # nobody learns them
    theirs = forget_questions(data, "forget_10", rows=rows, modality="text")
    assert {it.id for it in theirs} <= never and len({it.id for it in theirs}) >= 2
    # the target asks the forget people's own questions about never-trained people (under a name of one's choice)
    forget = load_config(data, "forget_10")
    twins = twin_rows(forget, rows)
    assert len(twins) == min(3, TWIN_ROUNDS) * len(forget)
    first, person = twins[0], forget[0]["biography"]["Name"]
    questions_before = [q["Question"] for q in forget[0]["Generation_Task"]]
    assert person not in json.dumps(first["Generation_Task"]) and first["ID"].endswith(forget[0]["ID"])
    assert [q["Question"] for q in first["Generation_Task"]] == [
        q.replace(person, first["biography"]["Name"]) for q in questions_before
    ]
    named = twin_rows(forget, rows, name_of=lambda name: "Nora Keller")
    text_only = [q for q in named[0]["Generation_Task"] if q["Type"] == "Pure_Text"]
    assert text_only and all(q["Ground_Truth"].startswith("Nora Keller") for q in text_only)
    # another folder: a config folder of parquet shards, or a benchmark folder's Full_Set
    assert {r["ID"] for r in target_rows(data, "forget_10", str(data / "Never_Trained"))[0]} == never
    with pytest.raises(ValueError, match="no profiles outside forget_10"):  # its forget_10: the same people
        target_rows(data, "forget_10", str(data))
    with pytest.raises(ValueError, match="neither a number, a config of"):
        target_rows(data, "forget_10", "Nobody_Set")


def test_a_metric_without_questions_gives_way_to_one_with_them(data):
    from benchmarks.mllmu.search_metrics import forget_questions, pick_metric, questions

    asked = forget_questions(data, "forget_10", modality="text")
    assert pick_metric(asked, None) == ("mc_accuracy", None)
    open_only = [it for it in asked if it.task == "generation"]
    assert pick_metric(open_only, None) == (
        "rouge_l",
        "no classification questions for mc_accuracy; searching rouge_l instead",
    )
    with pytest.raises(ValueError, match="metric cloze reads cloze questions, and there are only generation"):
        pick_metric(open_only, "cloze")
    assert questions(asked, "cloze") and all(it.task == "cloze" for it in questions(asked, "cloze"))


def test_cli_writes_config_trace_and_plot(data, model_dir, tmp_path, capsys):
    guard_dir = tmp_path / "guard"
    GuardConfig(corruption="noise_top_k", dims=2).save_pretrained(guard_dir)
    args = [
        "optimize",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--model",
        str(model_dir),
        "--guard",
        str(guard_dir),
    ]
    code = main([*args, "--metric", "answer_loglik", "--target", "-20", "--tolerance", "0", "--budget", "4"])
    assert code == 1  # a target no setting meets exactly: the search reports it did not reach the tolerance
    out = capsys.readouterr().out
    assert "4 evaluations" in out and "NOT within" in out and "target answer_loglik = -20.0000 (given)" in out
    config = GuardConfig.from_pretrained(guard_dir)
    trace = [json.loads(line) for line in (guard_dir / TRACE_NAME).read_text().splitlines()]
    assert len(trace) == 4 and (guard_dir / PLOT_NAME).is_file()
    assert len({round(e["metric"], 6) for e in trace}) > 1  # the strength moves the metric
    best = min(trace, key=lambda e: (e["objective"], e["params"]["strength"]))
    assert config.strength == pytest.approx(best["params"]["strength"])
    assert (config.corruption, config.dims) == ("noise_top_k", 2)  # unsearched fields keep the guard's values
    # the target measured on the never-trained people, and printed
    code = main(
        [*args, "--metric", "answer_loglik", "--target", "Never_Trained", "--budget", "2", "--tolerance", "0"]
    )
    out = capsys.readouterr().out
    measured = re.search(
        r"target answer_loglik = (-[\d.]+) \(measured unguarded: the forget questions about 3 never-trained "
        r"people of config Never_Trained .*, under their own names; (\d+) questions\)",
        out,
    )
    assert code == 1 and measured and float(measured.group(1)) < 0 and int(measured.group(2)) > 0
    assert len((guard_dir / TRACE_NAME).read_text().splitlines()) == 2
    # substitute over spans needs the names a classifier finds: without one in the folder, a clear refusal
    code = main(
        [
            *args,
            "--corruption",
            "substitute",
            "--scope",
            "spans",
            "--target",
            "0.3",
            "--budget",
            "2",
            "--surrogate-given-names",
            "Nora",
            "Elias",
            "Ophelia",
        ]
    )
    assert code == 2 and "holds no classifier, and scope spans corrupts the names" in capsys.readouterr().err
    assert GuardConfig.from_pretrained(guard_dir).corruption == "noise_top_k"  # nothing written


def test_cli_bad_input(data, model_dir, tmp_path, capsys):
    args = [
        "optimize",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--model",
        str(model_dir),
        "--guard",
        str(tmp_path),
        "--target",
        "0.25",
    ]
    assert main([*args, "--budget", "0"]) == 2
    assert "budget must be a positive integer" in capsys.readouterr().err
    assert main([*args, "--target", "2"]) == 2
    assert "outside the range" in capsys.readouterr().err
    assert main([*args, "--target", "Nobody_Set"]) == 2
    assert "neither a number, a config of" in capsys.readouterr().err
    assert main([*args, "--metric", "mc_accuracy", "--modality", "image"]) == 2  # text-only rows
    err = capsys.readouterr().err
    assert "forget_10 of" in err and "has no image questions" in err
    assert main([*args, "--optimizer", "Bogus"]) == 2
    assert "unknown nevergrad optimizer" in capsys.readouterr().err
    assert main([*args, "--search", "image_strength"]) == 2
    assert "leaves images alone" in capsys.readouterr().err
    assert main([*args, "--scale", "log", "--strength-range", "0", "1"]) == 2
    assert "0 < low < high < inf (log scale)" in capsys.readouterr().err
    assert main([*args, "--corruption", "substitute"]) == 2  # the folder's scope is prompt
    assert "scope 'prompt' would turn every word of a flagged prompt into a name" in capsys.readouterr().err
    faces = ["--image-corruption", "substitute", "--surrogate-faces", str(tmp_path / "face.png")]
    assert main([*args, *faces, "--scope", "image"]) == 2
    assert "takes no images" in capsys.readouterr().err
    assert main([*args, "--corruption", "blur"]) == 2
    assert "unknown corruption 'blur'" in capsys.readouterr().err
    assert (
        main([*args, "--corruption", "substitute", "--scope", "spans", "--surrogate-given-names", "nora"])
        == 2
    )
    assert "surrogate_given_names must be capitalized words" in capsys.readouterr().err


def test_cli_surrogate_faces_for_image_questions(tiny_llava, tmp_path, capsys):
    """``--image-corruption substitute --surrogate-faces ...`` on a LLaVA model: the blend is searched on a linear
    scale in [0.75, 1], the faces are saved in the guard folder, and the next run (and the guard) reuse them."""
    import torch
    from PIL import Image

    from benchmarks.mllmu import write_synthetic
    from eco_guard.faces import IMAGE_SURROGATES
    from eco_guard.guard import EcoGuard

    model, processor = tiny_llava
    model_dir = tmp_path / "llava"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    data = write_synthetic(tmp_path / "mllmu", n_profiles=10, n_celebrities=1, image_size=64)
    faces = []
    for k, colour in enumerate(((240, 240, 240), (20, 20, 20))):
        faces.append(tmp_path / f"face{k}.png")
        Image.new("RGB", (64, 64), colour).save(faces[-1])
    guard_dir = tmp_path / "guard"
    args = [
        "optimize",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--model",
        str(model_dir),
        "--guard",
        str(guard_dir),
        "--metric",
        "answer_loglik",
        "--target",
        "-5",
        "--modality",
        "image",
        "--scope",
        "image",
        "--search",
        "image_strength",
        "--image-corruption",
        "substitute",
        "--budget",
        "2",
        "--max-items",
        "2",
        "--max-new-tokens",
        "2",
    ]
    assert main([*args, "--surrogate-faces", *map(str, faces)]) in (0, 1)
    capsys.readouterr()
    config = GuardConfig.from_pretrained(guard_dir)
    assert config.image_corruption == "substitute" and 0.75 <= config.image_strength <= 1.0
    saved = EcoGuard.from_pretrained(guard_dir, model, processor).image_surrogates
    assert torch.equal(saved, EcoGuard(model, processor).image_features([Image.open(f) for f in faces]))
    assert main(args) in (0, 1)  # the folder's faces, no --surrogate-faces
    assert (guard_dir / IMAGE_SURROGATES).is_file()
