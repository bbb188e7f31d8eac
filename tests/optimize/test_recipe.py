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


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from benchmarks import demo_model
    from benchmarks.demo import retain_ids_of, write_split
    from benchmarks.mllmu.loader import retain_split, split_people
    from benchmarks.mllmu.synthetic import NEVER_TRAINED
    from eco_guard.embedding_frontend import export_language_model
    from eco_guard.models import demo_dir

    root = tmp_path_factory.mktemp("recipe")
    data = demo_model.DemoData()
    folder = data.write(root / "data", with_images=False)
    manifest = json.loads((folder / "synthetic_manifest.json").read_text())
    heldout, forget_ids = data.heldout_ids(folder), list(split_people(folder, FORGET))
    write_split(folder, folder, NEVER_TRAINED, heldout)
    write_split(folder, folder, retain_split(FORGET), retain_ids_of(manifest, forget_ids, heldout))
    model = export_language_model(demo_dir())  # cached: written once per artifact
    return {"data": str(folder), "model": str(model), "guard": str(root / "guard"), "root": root}


def test_train_optimize_evaluate_on_text_only_profiles(recipe, capsys):
    data, model, guard = recipe["data"], recipe["model"], recipe["guard"]
    assert main(["train-classifier", "--data", data, "--forget", FORGET, "--out", guard, "--no-image"]) == 0
    capsys.readouterr()
    # linear blends over [0, 1], starting half way, where the model still reads half of the real name
    common = ["--data", data, "--forget", FORGET, "--model", model]
    code = main(["optimize", *common, "--guard", guard, "--corruption", "substitute", "--scope", "spans",
                 "--metric", "rouge_l", "--target", "Never_Trained", "--strength-range", "0", "1",
                 "--tolerance", "0.03", "--budget", "8"])  # fmt: skip
    out = capsys.readouterr().out
    target = float(
        re.search(r"target rouge_l = ([\d.]+) \(measured unguarded: .* under the surrogate names", out).group(
            1
        )
    )
    trace = [json.loads(line) for line in Path(guard, "optimize_trace.jsonl").read_text().splitlines()]
    assert code == 0, out
    assert all(e["empty"] == 0.0 for e in trace)  # every answer of every point has words
    metrics = [e["metric"] for e in trace]
    assert len(trace) >= 2 and max(metrics) - min(metrics) > 0.05, trace  # the blend moves the metric
    assert abs(trace[-1]["metric"] - target) <= 0.03
    # the written guard, evaluated as a user would: forget within the tolerance, retain and celebrity untouched
    plain, guarded = recipe["root"] / "vanilla", recipe["root"] / "guarded"
    sets = ["--sets", "forget", "retain", "celebrity", "--limit", "16", "--no-bleu", "--no-logprob"]
    assert main(["evaluate", *common, "--out", str(plain), *sets]) == 0
    assert main(["evaluate", *common, "--guard", guard, "--out", str(guarded), *sets]) == 0
    vanilla = json.loads((plain / "results.json").read_text())["metrics"]
    after = json.loads((guarded / "results.json").read_text())["metrics"]
    assert vanilla["forget"]["text_only"]["rougeL"] - target > 0.1  # the model knew the forget people
    assert abs(after["forget"]["text_only"]["rougeL"] - target) <= 0.03
    assert after["forget"]["text_only"]["flag_rate"] == 100.0
    for set_name in ("retain", "celebrity"):
        assert after[set_name]["text_only"] == vanilla[set_name]["text_only"], set_name
