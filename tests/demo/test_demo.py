"""The demo MLLM recipe and the demo pipeline on a tiny configuration (tiny random LM, 6 profiles, few steps)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from benchmarks import demo_model
from benchmarks.finetune import FinetuneConfig


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    recipe = demo_model.DemoRecipe(
        data=demo_model.DemoData(n_profiles=6, n_celebrities=2, n_heldout=2),
        language_model=None,
        vision_steps=30,
        views_per_person=4,
        profiles=FinetuneConfig(epochs=1, batch_size=16, lr=3e-3),
    )
    folder = tmp_path_factory.mktemp("artifact") / "demo_mllm"
    return demo_model.build_demo_model(folder, recipe, command="test", progress=False)


def test_recipe_writes_a_small_artifact_that_rebuilds_the_model(tiny_artifact):
    recipe, record = demo_model.read_recipe(tiny_artifact)
    assert record["command"] == "test"
    assert not set(record["trained_ids"]) & set(record["heldout_ids"])
    assert len(record["heldout_ids"]) == 2 and len(record["trained_ids"]) == 4
    assert record["vision_loss"][1] < record["vision_loss"][0]
    size = sum(p.stat().st_size for p in tiny_artifact.rglob("*") if p.is_file())
    assert size < 20e6
    first, processor = demo_model.load_demo_model(tiny_artifact)
    second, _ = demo_model.load_demo_model(tiny_artifact)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    untrained, _ = __import__("eco_guard.models", fromlist=["build_llava"]).build_llava(
        None, image_size=recipe.image_size, patch_size=recipe.patch_size, seed=recipe.seed
    )
    key = next(k for k in first.state_dict() if "multi_modal_projector" in k and k.endswith("weight"))
    assert not torch.equal(first.state_dict()[key], untrained.state_dict()[key])


def test_vision_stage_writes_names_into_the_image_tokens(tiny_artifact):
    """After stage 1 each training portrait's image tokens lie nearer its own name's embeddings than any other's."""
    from benchmarks.finetune import profile_names
    from benchmarks.mllmu.loader import load_config

    recipe, record = demo_model.read_recipe(tiny_artifact)
    model, processor = demo_model.load_demo_model(tiny_artifact)
    root = recipe.data.write(tiny_artifact.parent / "data")
    names = profile_names(root)
    rows = [r for r in load_config(root, "ft_Data") if r["ID"] in record["trained_ids"]]
    pixels = processor.image_processor([r["image"].convert("RGB") for r in rows], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        features = demo_model._projected(model, pixels)
    targets = demo_model.name_targets(
        model, processor.tokenizer, [names[r["ID"]] for r in rows], features.shape[1]
    )
    distances = torch.cdist(features.flatten(1), targets.flatten(1))
    assert (distances.argmin(dim=1) == torch.arange(len(rows))).float().mean() >= 0.75


@pytest.mark.slow
def test_demo_pipeline_end_to_end_and_cached(tiny_artifact, tmp_path):
    from benchmarks.demo import DemoSettings, run_demo

    settings = DemoSettings(
        out=tmp_path / "out",
        artifact=tiny_artifact,
        limit=1,
        max_new_tokens=4,
        budget=2,
        blend_strengths=(0.0, 1.0),
        guard_seeds=2,
    )
    with pytest.raises(ValueError, match="guard_seeds=3: each guard reads one never-trained person"):
        run_demo(DemoSettings(out=tmp_path / "out", artifact=tiny_artifact, guard_seeds=3))
    report = run_demo(settings)
    assert report.missing == []
    for name in ("vanilla", "never_trained", "guarded"):
        assert (tmp_path / "out" / "results" / name / "results.json").is_file()
    assert (tmp_path / "out" / "demo.png").stat().st_size > 1000
    assert (tmp_path / "out" / "guard" / "classifier").is_dir()
    # one search per modality: the names' strength on text-only questions, the image strength on photo ones
    from eco_guard.config import GuardConfig

    search = json.loads((tmp_path / "out" / "guard" / "search.json").read_text())
    assert {m: s["parameter"] for m, s in search.items()} == {
        "text_only": "strength",
        "image_text": "image_strength",
    }
    assert {s["metric"] for s in search.values()} == {"goal_gap"}  # stated MC, cloze and ROUGE-L together
    config = GuardConfig.from_pretrained(tmp_path / "out" / "guard")
    assert config.strength == search["text_only"]["best"]["params"]["strength"]
    assert config.image_strength == search["image_text"]["best"]["params"]["image_strength"]
    # names and photos move toward surrogates (the blend searched in [0.75, 1]); the face travels with the guard
    assert (config.corruption, config.image_corruption) == ("substitute", "substitute")
    assert 0.75 <= config.strength <= 1 and 0.75 <= config.image_strength <= 1
    from eco_guard.faces import IMAGE_SURROGATES, load_faces

    assert load_faces(tmp_path / "out" / "guard" / IMAGE_SURROGATES).shape[0] == 1
    # the few-shot examples of the forget set and of the never-trained reference: the same retain person
    vanilla = json.loads((tmp_path / "out" / "results" / "vanilla" / "results.json").read_text())
    shots = json.loads((tmp_path / "out" / "results" / "never_trained" / "results.json").read_text())[
        "few_shot"
    ]
    assert vanilla["few_shot"]["forget"] == shots["forget"] and shots["forget"]
    from benchmarks.mllmu import load_config, retain_split

    forget = demo_model.read_recipe(tiny_artifact)[0].data.forget
    retain_ids = {r["ID"] for r in load_config(tmp_path / "out" / "data", retain_split(forget))}
    assert all(i in retain_ids for ids in shots["forget"].values() for i in ids)
    # the reference asks the forget people's own questions about the never-trained profiles (twins), round k about
    # what guard k reads: the k-th never-trained person's photo, the surrogate name of its seed
    from benchmarks.mllmu.twins import round_pairs, twin_id, twin_pairs, twin_parts
    from benchmarks.mllmu.vocab import FEMALE_FIRST, LAST_NAMES, MALE_FIRST
    from eco_guard.config import GuardConfig
    from eco_guard.surrogates import Surrogates

    twins_file = json.loads((tmp_path / "out" / "reference" / "twins.json").read_text())
    pairs = twins_file["pairs"]
    twins = load_config(tmp_path / "out" / "reference", forget)
    sources = {r["ID"]: r for r in load_config(tmp_path / "out" / "data", forget)}
    full = {r["ID"]: r for r in load_config(tmp_path / "out" / "data", "Full_Set")}
    heldout = sorted(demo_model.read_recipe(tiny_artifact)[1]["heldout_ids"])
    assert [twin_id(f, n) for f, n in pairs] == [r["ID"] for r in twins]
    assert list(map(tuple, pairs)) == round_pairs(list(sources), heldout, settings.guard_seeds)
    tokenizer = demo_model.load_demo_model(tiny_artifact)[1].tokenizer
    # the guard reads the benchmark's own kind of names, never a word of a profile's name
    config = GuardConfig.from_pretrained(tmp_path / "out" / "guard")
    profile_words = {w for r in full.values() for w in r["biography"]["Name"].split()}
    words = config.surrogate_given_names + config.surrogate_surnames
    assert set(words) < set(FEMALE_FIRST + MALE_FIRST + LAST_NAMES) and not set(words) & profile_words
    for k, ((f, n, name), twin) in enumerate(zip(twins_file["named"], twins, strict=True)):
        seed = settings.seed + k // len(sources)
        assert name == Surrogates.of(tokenizer, config.replace(seed=seed)).name(
            sources[f]["biography"]["Name"]
        )
        assert not set(name.split()) & profile_words
        assert twin["biography"]["Name"] == name and twin["image"].tobytes() == full[n]["image"].tobytes()
    # the Test_Set row (the table's, no goal reads it): each never-trained person once
    tests = load_config(tmp_path / "out" / "reference", "Test_Set")
    assert [r["ID"] for r in tests] == [twin_id(f, n) for f, n in twin_pairs(list(sources), heldout)]
    for (source, _), twin in zip(pairs, twins, strict=True):
        assert twin["Mask_Task"][0]["Ground_Truth"] == sources[source]["Mask_Task"][0]["Ground_Truth"]
        assert twin["biography"]["Name"] != sources[source]["biography"]["Name"]
    for set_name in ("forget", "test", "retain", "celebrity"):
        assert (
            f"| {set_name} | image_text |" in report.table and f"| {set_name} | text_only |" in report.table
        )
    names = [g.name for g in report.goals]
    assert any(n.startswith("forget image_text rougeL") for n in names)
    assert any(n.startswith("celebrity text_only") for n in names)
    # the figure's sweep: forget answers move with the strength, unflagged retain answers cannot
    rows = json.loads((tmp_path / "out" / "results" / "sweep.json").read_text())
    assert [r["strength"] for r in rows] == [0.0, 1.0] and rows[0]["forget"] != rows[1]["forget"]
    guarded = json.loads((tmp_path / "out" / "results" / "guarded" / "results.json").read_text())["metrics"]
    # (this tiny classifier flags every retain photo, so here the retain curve moves; text-only retain is not flagged)
    assert guarded["retain"]["text_only"]["flag_rate"] == 0
    unflagged = all(v["flag_rate"] == 0 for v in guarded["retain"].values())
    assert (rows[0]["retain"] == rows[1]["retain"]) == unflagged
    never = json.loads((tmp_path / "out" / "results" / "never_trained" / "results.json").read_text())
    assert set(never["metrics"]) == {"forget", "test"}
    # more guards on the forget set, each its own surrogate names and faces; the forget goals read their mean
    seeds = [
        json.loads((tmp_path / "out" / "results" / f"guarded_seed{k}" / "results.json").read_text())
        for k in range(1, settings.guard_seeds)
    ]
    assert [r["provenance"]["guard_config"]["seed"] for r in seeds] == list(range(1, settings.guard_seeds))
    assert [r["provenance"]["surrogate_face_of"] for r in seeds] == heldout[1 : settings.guard_seeds]
    assert all(set(r["metrics"]) == {"forget"} for r in seeds)
    summary = json.loads((tmp_path / "out" / "results" / "demo_summary.json").read_text())
    cell = summary["forget_gaps"]["text_only"]["rougeL"]
    assert (cell["seeds"], cell["rounds"]) == (settings.guard_seeds, settings.guard_seeds)
    assert 0 <= cell["agreement"] <= 1
    runs = [guarded["forget"], *(r["metrics"]["forget"] for r in seeds)]
    assert report.results["guarded"]["metrics"]["forget"]["text_only"]["rougeL"] == pytest.approx(
        sum(r["text_only"]["rougeL"] for r in runs) / len(runs)
    )
    stamp = (tmp_path / "out" / "results" / "vanilla" / "results.json").stat().st_mtime_ns
    again = run_demo(
        DemoSettings(
            out=tmp_path / "out",
            artifact=tiny_artifact,
            limit=1,
            max_new_tokens=4,
            budget=2,
            blend_strengths=(0.0, 1.0),
            guard_seeds=2,
        )
    )
    assert (tmp_path / "out" / "results" / "vanilla" / "results.json").stat().st_mtime_ns == stamp
    assert again.table == report.table, (again.table, report.table)
    # one metric of the open questions instead: a new search (the evaluations before it are reused)
    checked = run_demo(
        DemoSettings(
            out=tmp_path / "out",
            artifact=tiny_artifact,
            limit=1,
            max_new_tokens=4,
            budget=2,
            blend_strengths=(0.0, 1.0),
            metric="rouge_l",
            guard_seeds=2,
            own_names=True,
        )
    )
    search = json.loads((tmp_path / "out" / "guard" / "search.json").read_text())
    assert {s["metric"] for s in search.values()} == {"rouge_l"}
    # the own-name check: every never-trained person under their own name and photo, for every forget person
    own = load_config(tmp_path / "out" / "reference_own_names", forget)
    assert sorted(r["ID"] for r in own) == sorted(twin_id(f, n) for f in sources for n in heldout)
    assert all(r["biography"]["Name"] == full[twin_parts(r["ID"])[1]]["biography"]["Name"] for r in own)
    assert {c.name.split(":")[0] for c in checked.checks} >= {
        "forget text_only rougeL",
        "forget image_text rougeL",
    }
    assert all("of the never-trained people's own names" in c.name for c in checked.checks)
    assert report.checks == []  # off by default
    assert (tmp_path / "out" / "results" / "vanilla" / "results.json").stat().st_mtime_ns == stamp


def _samples(path, rows):
    """Forget-set sample lines: (profile ID, task, question index, score) each."""
    out = []
    for who, task, index, value in rows:
        base = {"set": "forget", "id": who, "task": task, "index": index, "modality": "text_only"}
        if task == "classification":
            out.append({**base, "correct": False, "stated_correct": bool(value)})
        else:
            out.append({**base, "scores": {"rougeL": value}})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def test_forget_gaps_pair_each_guard_with_the_twins_of_its_own_round(tmp_path):
    from benchmarks.demo import forget_gaps
    from benchmarks.mllmu.twins import twin_id

    # forget a and b; round 0 asks about x (guard 0 reads x), round 1 about y (guard 1 reads y)
    pairs = [["a", "x"], ["b", "x"], ["a", "y"], ["b", "y"]]
    t = {(f, n): twin_id(f, n) for f, n in pairs}
    reference = _samples(
        tmp_path / "r.jsonl",
        [
            (t["a", "x"], "classification", 0, 1),
            (t["b", "x"], "classification", 0, 0),  # round 0
            (t["a", "y"], "classification", 0, 0),
            (t["b", "y"], "classification", 0, 0),  # round 1
            (t["a", "x"], "generation", 0, 0.5),
            (t["b", "x"], "generation", 0, 0.6),
            (t["a", "y"], "generation", 0, 0.7),
            (t["b", "y"], "generation", 0, 0.6),
            ("x", "classification", 0, 1),  # not a twin of this run: ignored
        ],
    )
    seed0 = _samples(
        tmp_path / "g0.jsonl",
        [
            ("a", "classification", 0, 1),
            ("b", "classification", 0, 0),
            ("a", "generation", 0, 0.6),
            ("b", "generation", 0, 0.6),
        ],
    )
    seed1 = _samples(
        tmp_path / "g1.jsonl",
        [
            ("a", "classification", 0, 0),
            ("b", "classification", 0, 1),
            ("a", "generation", 0, 0.6),
            ("b", "generation", 0, 0.6),
        ],
    )
    gaps = forget_gaps([seed0, seed1], reference, pairs)["text_only"]
    mc = gaps["classification_stated_acc"]
    # per question over the rounds: a (1 - 1 + 0 - 0) / 2 = 0, b (0 - 0 + 1 - 0) / 2 = 0.5
    assert mc["gap"] == pytest.approx(0.25)
    assert mc["interval"] == pytest.approx(1.96 * (0.125**0.5) / 2**0.5)
    assert (mc["seeds"], mc["rounds"], mc["questions"]) == (2, 2, 2)
    assert mc["agreement"] == pytest.approx(0.75)  # guard and twin differ on b in round 1 only
    assert mc["seed_sd"] == pytest.approx(0.0)  # both guards got one of two right
    assert mc["round_sd"] == pytest.approx(0.5**0.5 / 2)  # rounds score 0.5 and 0
    rouge = gaps["rougeL"]
    assert rouge["gap"] == pytest.approx(0.0)  # a: (0.1 - 0.1) / 2, b: 0
    assert rouge["round_sd"] == pytest.approx(0.1 / 2**0.5)  # rounds: (0.5 + 0.6) / 2, (0.7 + 0.6) / 2
    # the pairing is by round: the same guards in the other order agree with their twins less often
    swapped = forget_gaps([seed1, seed0], reference, pairs)["text_only"]["classification_stated_acc"]
    assert swapped["gap"] == pytest.approx(0.25) and swapped["agreement"] == pytest.approx(0.25)
    one = forget_gaps([seed0], reference, pairs[:2])["text_only"]["classification_stated_acc"]
    assert one["gap"] == pytest.approx(0.0) and one["seed_sd"] is None and one["agreement"] == 1.0
    with pytest.raises(ValueError, match="1 guards for 2 rounds"):
        forget_gaps([seed0], reference, pairs)


def test_own_name_gaps_average_every_never_trained_person_per_question(tmp_path):
    """The unpaired check: per question, the guards' mean against the mean over all never-trained people."""
    from benchmarks.demo import own_name_gaps
    from benchmarks.mllmu.twins import twin_id

    reference = _samples(
        tmp_path / "r.jsonl",
        [
            (twin_id("a", "x"), "classification", 0, 1),
            (twin_id("a", "y"), "classification", 0, 0),
            (twin_id("a", "z"), "classification", 0, 0),
            (twin_id("b", "x"), "classification", 0, 1),
            (twin_id("b", "y"), "classification", 0, 1),
            (twin_id("b", "z"), "classification", 0, 1),
        ],
    )
    seed0 = _samples(tmp_path / "g0.jsonl", [("a", "classification", 0, 1), ("b", "classification", 0, 1)])
    seed1 = _samples(tmp_path / "g1.jsonl", [("a", "classification", 0, 0), ("b", "classification", 0, 0)])
    cell = own_name_gaps([seed0, seed1], reference)["text_only"]["classification_stated_acc"]
    # a: 0.5 - 1/3, b: 0.5 - 1
    assert cell["gap"] == pytest.approx((1 / 6 - 0.5) / 2)
    assert cell["interval"] == pytest.approx(1.96 * statistics.stdev([1 / 6, -0.5]) / 2**0.5)
    assert (cell["guarded"], cell["never_trained"]) == (pytest.approx(0.5), pytest.approx(2 / 3))
    assert (cell["questions"], cell["identities"]) == (2, 3)


def test_mean_forget_averages_forget_metrics_only():
    from benchmarks.demo import mean_forget

    def run(acc, retain):
        return {
            "metrics": {
                "forget": {"text_only": {"n": 4, "cloze_acc": acc, "rougeL": acc / 100}},
                "retain": {"text_only": {"n": 4, "cloze_acc": retain}},
            }
        }

    out = mean_forget([run(50.0, 70.0), run(25.0, 10.0)])
    assert out["metrics"]["forget"]["text_only"] == {"n": 4, "cloze_acc": 37.5, "rougeL": 0.375}
    assert out["metrics"]["retain"]["text_only"]["cloze_acc"] == 70.0  # unflagged sets: the first guard's


def test_recipes_of_older_artifacts_rebuild_what_they_built():
    """A recipe stored before a setting existed loads with the value that artifact was built with, not today's."""
    recipe = demo_model.DemoRecipe()
    stored = recipe.to_json()
    assert recipe.practice_shot_share > 0 and recipe.profiles.max_length == 192
    for key in ("classification_per_modality", "values_per_fact"):
        del stored["data"][key]
    del stored["practice_shot_share"]
    stored["profiles"]["max_length"] = 160
    old = demo_model.DemoRecipe.from_json(stored)
    assert old.practice_shot_share == 0.0 and old.profiles.max_length == 160
    assert old.data.classification_per_modality == demo_model.LEGACY_DATA["classification_per_modality"]
    assert old.data.values_per_fact is None
    assert demo_model.DemoRecipe.from_json(recipe.to_json()) == recipe


def test_keep_goals_name_the_same_metric_whatever_the_key_order():
    """A cached run reads results.json back with sorted keys; a tie among the largest changes must not rename the
    metric a goal line prints (a fresh run printed classification_acc, a cached one bleu, for the same numbers)."""
    from benchmarks.demo import goals

    def results(order, rouge):
        values = {"classification_acc": 50.0, "bleu": 0.2, "rougeL": rouge}
        return {"metrics": {"retain": {"text_only": {m: values[m] for m in order}}}}

    fresh, cached = ("classification_acc", "rougeL", "bleu"), ("bleu", "classification_acc", "rougeL")
    lines = [
        [g.measured for g in goals(results(order, 0.5), results(order, 0.5), {})] for order in (fresh, cached)
    ]
    assert lines[0] == lines[1] == ["largest change +0.000 (bleu)"]
    moved = goals(results(fresh, 0.5), results(fresh, 0.504), {})
    assert [g.measured for g in moved] == ["largest change +0.004 (rougeL)"] and moved[0].passed
