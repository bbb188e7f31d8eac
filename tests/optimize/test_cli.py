"""``eco-guard optimize`` end to end on a synthetic MLLMU-Bench and a tiny random model saved to a folder."""

from __future__ import annotations

import json

import pytest

from eco_guard.cli import main
from eco_guard.cli.optimize import rows_to_items
from eco_guard.config import GuardConfig
from eco_guard.optimize import PLOT_NAME, TRACE_NAME


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from benchmarks.mllmu import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("mllmu"), n_profiles=20, n_celebrities=1, with_images=False
    )


@pytest.fixture(scope="module")
def model_dir(tiny_guard, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_guard.model.save_pretrained(folder)
    tiny_guard.tokenizer.save_pretrained(folder)
    return folder


def test_rows_to_items(data):
    from benchmarks.mllmu import load_config

    rows = load_config(data, "forget_10")
    mc = rows_to_items(rows, "mc_accuracy", "text")
    questions = [q for r in rows for q in r["Classification_Task"]["Pure_Text_Questions"]]
    assert len(mc) == len(questions)
    first = questions[0]
    assert (
        mc[0].prompt == first["Question"]
        and mc[0].choices[mc[0].correct] == first["Options"][first["Correct_Answer"]]
    )
    letters = rows_to_items(rows, "mc_accuracy", "text", options="letter")
    assert letters[0].choices == ("A", "B", "C", "D") and "A: " in letters[0].prompt
    gen = rows_to_items(rows, "rouge_l", "text")
    assert gen and all(it.answer and it.image is None for it in gen)
    assert rows_to_items(rows, "mc_accuracy", "image") == []  # text-only rows: no image questions


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
    assert "4 evaluations" in out and "NOT within" in out
    config = GuardConfig.from_pretrained(guard_dir)
    trace = [json.loads(line) for line in (guard_dir / TRACE_NAME).read_text().splitlines()]
    assert len(trace) == 4 and (guard_dir / PLOT_NAME).is_file()
    best = min(trace, key=lambda e: (e["objective"], e["params"]["strength"]))
    assert config.strength == pytest.approx(best["params"]["strength"])
    assert (config.corruption, config.dims) == ("noise_top_k", 2)  # unsearched fields keep the guard's values
    assert main([*args, "--target", "Test_Set", "--budget", "2"]) in (0, 1)
    assert "target mc_accuracy = " in capsys.readouterr().out
    assert len((guard_dir / TRACE_NAME).read_text().splitlines()) == 2
    # the starting family and scope from the command line; the search moves the surrogate blend
    code = main([*args, "--corruption", "substitute", "--scope", "spans", "--strength-range", "0.01", "1",
                 "--budget", "2", "--surrogate-given-names", "Nora", "Elias", "Ophelia",
                 "--surrogate-surnames", "Montague", "Pennington"])  # fmt: skip
    config = GuardConfig.from_pretrained(guard_dir)
    assert code in (0, 1) and (config.corruption, config.scope) == ("substitute", ("spans",))
    assert 0.01 <= config.strength <= 1
    assert (config.surrogate_given_names, config.surrogate_surnames) == (
        ("Nora", "Elias", "Ophelia"),
        ("Montague", "Pennington"),
    )


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
    ]
    assert main([*args, "--budget", "0"]) == 2
    assert "budget must be a positive integer" in capsys.readouterr().err
    assert main([*args, "--target", "2"]) == 2
    assert "outside the range" in capsys.readouterr().err
    assert main([*args, "--optimizer", "Bogus"]) == 2
    assert "unknown nevergrad optimizer" in capsys.readouterr().err
    assert main([*args, "--search", "image_strength"]) == 2
    assert "leaves images alone" in capsys.readouterr().err
    assert main([*args, "--scale", "log", "--strength-range", "0", "1"]) == 2
    assert "0 < low < high < inf (log scale)" in capsys.readouterr().err
    assert main([*args, "--corruption", "substitute", "--surrogate-faces", str(tmp_path / "face.png")]) == 2
    assert "takes no images" in capsys.readouterr().err
    assert main([*args, "--corruption", "blur"]) == 2
    assert "unknown corruption 'blur'" in capsys.readouterr().err
    assert main([*args, "--corruption", "substitute", "--surrogate-given-names", "nora"]) == 2
    assert "surrogate_given_names must be capitalized words" in capsys.readouterr().err


def test_cli_surrogate_faces_for_image_questions(tiny_llava, tmp_path, capsys):
    """``--image-corruption substitute --surrogate-faces ...`` on a LLaVA model: the blend is searched on a linear
    scale in [0.75, 1], the faces are saved in the guard folder, and the next run (and the guard) reuse them."""
    import torch
    from PIL import Image

    from benchmarks.mllmu import write_synthetic
    from eco_guard.guard import IMAGE_SURROGATES, EcoGuard

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
    args = ["optimize", "--data", str(data), "--forget", "forget_10", "--model", str(model_dir), "--guard",
            str(guard_dir), "--metric", "rouge_l", "--target", "0.1", "--modality", "image", "--scope", "image",
            "--search", "image_strength", "--image-corruption", "substitute", "--budget", "2", "--max-items", "2",
            "--max-new-tokens", "2"]  # fmt: skip
    assert main([*args, "--surrogate-faces", *map(str, faces)]) in (0, 1)
    capsys.readouterr()
    config = GuardConfig.from_pretrained(guard_dir)
    assert config.image_corruption == "substitute" and 0.75 <= config.image_strength <= 1.0
    saved = EcoGuard.from_pretrained(guard_dir, model, processor).image_surrogates
    assert torch.equal(saved, EcoGuard(model, processor).image_features([Image.open(f) for f in faces]))
    assert main(args) in (0, 1)  # the folder's faces, no --surrogate-faces
    assert (guard_dir / IMAGE_SURROGATES).is_file()
