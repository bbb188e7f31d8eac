"""The README's recipe through the command line, on text-only profiles and a real model that learned them.

The model is the demo MLLM's language model (real SmolLM2 weights, fine-tuned on the demo profiles) saved as a
plain causal LM; the data are the demo's profiles written without images, with its held-out people as the config
``Never_Trained``. ``train-classifier`` -> ``optimize --scope spans --corruption substitute`` -> ``evaluate``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eco_guard.cli import main

pytestmark = pytest.mark.slow

FORGET = "forget_15"


def demo_profiles(root: Path, with_images: bool) -> tuple[Path, list[str]]:
    """The demo model's profiles under ``root``, its held-out people as the config ``Never_Trained`` (and out of
    the retain split); returns the folder and the held-out IDs."""
    from benchmarks import demo_model
    from benchmarks.demo import retain_ids_of, write_split
    from benchmarks.mllmu.loader import retain_split, split_people
    from benchmarks.mllmu.synthetic import NEVER_TRAINED

    data = demo_model.DemoData()
    folder = data.write(root / "data", with_images=with_images)
    manifest = json.loads((folder / "synthetic_manifest.json").read_text())
    heldout, forget_ids = data.heldout_ids(folder), list(split_people(folder, FORGET))
    write_split(folder, folder, NEVER_TRAINED, heldout)
    write_split(folder, folder, retain_split(FORGET), retain_ids_of(manifest, forget_ids, heldout))
    return folder, heldout


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from eco_guard.embedding_frontend import export_language_model
    from eco_guard.models import demo_dir

    root = tmp_path_factory.mktemp("recipe")
    folder, _ = demo_profiles(root, with_images=False)
    model = export_language_model(demo_dir())  # cached: written once per artifact
    return {"data": str(folder), "model": str(model), "guard": str(root / "guard"), "root": root}


def test_train_optimize_evaluate_on_text_only_profiles(recipe, capsys):
    data, model, guard = recipe["data"], recipe["model"], recipe["guard"]
    assert main(["train-classifier", "--data", data, "--forget", FORGET, "--out", guard, "--no-image"]) == 0
    capsys.readouterr()
    common = ["--data", data, "--forget", FORGET, "--model", model]
    code = main(
        [
            "optimize",
            *common,
            "--guard",
            guard,
            "--corruption",
            "substitute",
            "--scope",
            "spans",
            "--metric",
            "rouge_l",
            "--target",
            "Never_Trained",
            "--tolerance",
            "0.03",
            "--budget",
            "8",
            "--max-items",
            "8",
        ]
    )
    out = capsys.readouterr().out
    target = float(
        re.search(r"target rouge_l = ([\d.]+) \(measured unguarded: .* under the surrogate names", out).group(
            1
        )
    )
    trace = [json.loads(line) for line in Path(guard, "optimize_trace.jsonl").read_text().splitlines()]
    assert code == 0, out
    assert all(e["empty"] == 0.0 for e in trace)  # every answer of every point has words
    assert abs(trace[-1]["metric"] - target) <= 0.03
    assert blend_moves_it(guard, model, data, "text", "strength")
    # the written guard, evaluated as a user would: forget within the tolerance, retain and celebrity untouched
    plain, guarded = recipe["root"] / "vanilla", recipe["root"] / "guarded"
    # --limit 8 asks the 8 open questions the search scored (and the twins' first 8 are their pairs)
    sets = ["--sets", "forget", "retain", "celebrity", "--limit", "8", "--no-bleu", "--no-logprob"]
    assert main(["evaluate", *common, "--out", str(plain), *sets]) == 0
    assert main(["evaluate", *common, "--guard", guard, "--out", str(guarded), *sets]) == 0
    vanilla = json.loads((plain / "results.json").read_text())["metrics"]
    after = json.loads((guarded / "results.json").read_text())["metrics"]
    assert vanilla["forget"]["text_only"]["rougeL"] - target > 0.1  # the model knew the forget people
    assert abs(after["forget"]["text_only"]["rougeL"] - target) <= 0.03
    assert after["forget"]["text_only"]["flag_rate"] == 100.0
    for set_name in ("retain", "celebrity"):
        assert after[set_name]["text_only"] == vanilla[set_name]["text_only"], set_name


def test_the_recipe_on_the_demo_mllm_with_photos(tmp_path, capsys):
    """The same commands on the demo MLLM and its profiles with photos: names substituted for the named
    questions, the photo moved toward a never-trained person's face for the "this person" ones; the target asks
    the forget people's questions about that very face."""
    from benchmarks.mllmu import load_config

    folder, _ = demo_profiles(tmp_path, with_images=True)
    data, guard = str(folder), str(tmp_path / "guard")
    face = tmp_path / "face.png"
    load_config(data, "Never_Trained")[0]["image"].convert("RGB").save(face)
    fit = [
        "train-classifier",
        "--data",
        data,
        "--forget",
        FORGET,
        "--out",
        guard,
        "--robustness-per-family",
        "8",
    ]
    assert main(fit) == 0
    common = ["--data", data, "--forget", FORGET, "--model", "demo", "--guard", guard, "--target", "Never_Trained",
              "--metric", "rouge_l", "--tolerance", "0.03", "--budget", "4", "--max-items", "8",
              "--surrogate-faces", str(face)]  # fmt: skip
    names = ["--corruption", "substitute", "--scope", "spans", "image", "--image-corruption", "substitute"]
    assert main(["optimize", *common, *names, "--modality", "text"]) == 0, capsys.readouterr().out
    text_trace = [json.loads(x) for x in Path(guard, "optimize_trace.jsonl").read_text().splitlines()]
    code = main(["optimize", *common, "--search", "image_strength", "--modality", "image"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "under the surrogate names the guard reads, the surrogate faces it reads" in out
    image_trace = [json.loads(x) for x in Path(guard, "optimize_trace.jsonl").read_text().splitlines()]
    assert all(e["empty"] == 0.0 for e in text_trace + image_trace)
    target = float(re.findall(r"target rouge_l = ([\d.]+) \(measured", out)[-1])  # the image search's
    assert abs(image_trace[-1]["metric"] - target) <= 0.03
    assert blend_moves_it(guard, "demo", data, "image", "image_strength")


def blend_moves_it(guard: str, model: str, data: str, modality: str, field: str) -> bool:
    """The written blend is what moves the forget questions: at 0 the model still knows the people."""
    from benchmarks.mllmu import search_metrics as sm
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    guarded = EcoGuard.from_pretrained(guard, *load_model(model))
    items = sm.questions(sm.forget_questions(data, FORGET, modality=modality), "rouge_l")[:8]
    written = sm.ForgetMetric(guarded, items, "rouge_l")()
    guarded.config = guarded.config.replace(**{field: 0.0})
    return sm.ForgetMetric(guarded, items, "rouge_l")() - written > 0.05
