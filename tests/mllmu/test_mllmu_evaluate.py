"""``evaluate`` end to end: a tiny LLaVA-architecture model (image+text) here, the real SmolLM2 in the slow test."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.mllmu import load_config, split_people
from benchmarks.mllmu.evaluate import MODALITIES, SETS, ShotSampler, build_items, evaluate, load_benchmark
from eco_guard.guard import EcoGuard
from eco_guard.requests import Flag, Request

FAST = {"limit": 1, "max_new_tokens": 4, "batch_size": 8}


class NameClassifier:
    """Flags requests that name one of the given people (reads text only, like a text classifier)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def flag(self, requests: Sequence[Request]) -> list[Flag]:
        out = []
        for r in requests:
            hits = tuple(n for n in self.names if n in r.classifier_text)
            out.append(Flag(bool(hits), float(bool(hits)), "names", hits))
        return out


def _samples(out_dir):
    return [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def llava_guard(tiny_llava):
    model, processor = tiny_llava
    return EcoGuard(model, processor)


def test_tiny_llava_end_to_end_all_sets_modalities_and_files(llava_guard, synthetic_root, tmp_path):
    results = evaluate(
        llava_guard,
        synthetic_root,
        "forget_15",
        tmp_path / "run1",
        seed=0,
        **FAST,
        provenance={"model": "tiny-llava"},
    )
    out = tmp_path / "run1"
    assert {p.name for p in out.iterdir()} == {"results.json", "samples.jsonl", "results.md"}
    table = results["metrics"]
    assert set(table) == set(SETS)
    for set_name in SETS:
        assert set(table[set_name]) == {"image_text", "text_only"}
        for values in table[set_name].values():
            for key in ("classification_acc", "classification_logprob_acc", "cloze_acc", "rougeL", "bleu"):
                assert key in values, (set_name, key)
            assert values["flag_rate"] == 0.0  # no classifier: nothing flagged
    samples = _samples(out)
    assert len(samples) == sum(v["n"] for s in table.values() for v in s.values())
    image_samples = [s for s in samples if s["modality"] == "image_text"]
    assert image_samples and all(s["image"] and "<image>" in s["prompt"] for s in image_samples)
    assert all(s["image"].startswith("Test_Set/") for s in samples if s["set"] == "test" and s["image"])
    assert all("<image>" not in s["prompt"] for s in samples if s["modality"] == "text_only")
    for s in samples:
        assert {"prompt", "response", "reference", "flagged", "flag_score"} <= set(s)
    forget_ids = set(split_people(synthetic_root, "forget_15"))
    assert {s["id"] for s in samples if s["set"] in ("forget", "test")} <= forget_ids
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(table))
    prov = saved["provenance"]
    assert prov["model"] == "tiny-llava" and prov["split"] == "forget_15" and prov["seed"] == 0
    assert {"torch", "transformers", "python"} <= set(prov["versions"]) and "total" in prov["timings_s"]
    assert "| forget | image_text |" in (out / "results.md").read_text()

    evaluate(llava_guard, synthetic_root, "forget_15", tmp_path / "run2", seed=0, **FAST)
    assert (out / "samples.jsonl").read_text() == (tmp_path / "run2" / "samples.jsonl").read_text()
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["metrics"] == saved["metrics"]


def test_guard_flags_are_logged_per_sample(tiny_llava, synthetic_root):
    model, processor = tiny_llava
    forget_names = list(split_people(synthetic_root, "forget_15").values())
    guard = EcoGuard(model, processor, classifier=NameClassifier(forget_names))
    results = evaluate(guard, synthetic_root, "forget_15", None, sets=("forget", "retain"), **FAST)
    table = results["metrics"]
    assert table["forget"]["text_only"]["flag_rate"] == 100.0  # text-only questions name the person
    # the picture carries the identity of image+text questions: a text classifier misses them
    assert table["forget"]["image_text"]["flag_rate"] == 0.0
    assert table["retain"]["text_only"]["flag_rate"] == 0.0


def test_few_shot_is_seeded_and_no_leak_keeps_forget_people_out_of_other_prompts(synthetic_root):
    bench = load_benchmark(synthetic_root, "forget_15")
    forget = split_people(synthetic_root, "forget_15")
    assert len(forget) == 2

    def draw(set_name, no_leak, seed=1):
        sampler = ShotSampler(bench, seed, profiles=1, no_leak=no_leak)
        items = build_items(set_name, bench.sets[set_name], sampler, seed, MODALITIES, bench.names)
        return sampler.log[set_name], items

    shots, items = draw("forget", no_leak=False)
    assert set(shots["classification"]) <= set(forget)  # the reference draws shots from the scored set ...
    scored = {it.id for it in items if it.task == "classification"}
    assert scored and not scored & set(
        shots["classification"]
    )  # ... and leaves those profiles out of scoring
    again, again_items = draw("forget", no_leak=False)
    assert again == shots and [it.prompt for it in again_items] == [it.prompt for it in items]  # seeded
    for set_name in ("forget", "test", "retain", "celebrity"):
        shots, items = draw(set_name, no_leak=True)
        assert shots and not {i for ids in shots.values() for i in ids} & set(forget)
        for it in items:
            others = [n for pid, n in forget.items() if pid != it.id]
            assert not any(n in it.prompt for n in others), it.prompt  # no other forget person in any prompt
    celebrity_ids = {r["ID"] for r in load_config(synthetic_root, "Retain_Set")}
    assert set(draw("retain", no_leak=True)[0]["classification"]) <= celebrity_ids


def test_qa_only_data_is_scored_with_rouge_l(llava_guard, synthetic_root, tmp_path):
    """Training-style splits (image + metadata, no task fields, no Full_Set): generated answers vs QA answers."""
    forget = set(split_people(synthetic_root, "forget_5"))
    ft = next((synthetic_root / "ft_Data").glob("*.parquet"))
    table = pq.read_table(ft)
    for name, keep in (("forget_5", True), ("retain_95", False)):
        (tmp_path / name).mkdir()
        mask = pa.array([(i in forget) == keep for i in table.column("ID").to_pylist()])
        pq.write_table(table.filter(mask), tmp_path / name / "train-00000-of-00001.parquet")
    results = evaluate(llava_guard, tmp_path, "forget_5", tmp_path / "out", **FAST)
    assert set(results["metrics"]) == {"forget", "retain"}
    for by_modality in results["metrics"].values():
        assert set(by_modality) == {"image_text"}  # no biography: the name is unknown, the image carries it
        assert 0.0 <= by_modality["image_text"]["qa_rougeL"] <= 1.0
    assert {s["task"] for s in _samples(tmp_path / "out")} == {"qa"}


def test_bad_arguments_are_refused(llava_guard, synthetic_root):
    with pytest.raises(ValueError, match="forget_7"):
        evaluate(llava_guard, synthetic_root, "forget_7")
    with pytest.raises(ValueError, match="unknown sets"):
        evaluate(llava_guard, synthetic_root, sets=("holdout",))


def test_cli_on_a_saved_tiny_llava_with_a_guard_folder(tiny_llava, synthetic_root, tmp_path):
    from eco_guard.cli import main
    from eco_guard.config import GuardConfig

    model, processor = tiny_llava
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    EcoGuard(model, processor, config=GuardConfig(strength=5.0)).save_pretrained(tmp_path / "guard")
    args = [
        "evaluate",
        "--data",
        str(synthetic_root),
        "--forget",
        "forget_15",
        "--model",
        str(tmp_path / "llava"),
        "--guard",
        str(tmp_path / "guard"),
        "--sets",
        "forget",
        "celebrity",
        "--limit",
        "1",
        "--max-new-tokens",
        "3",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["metrics"]) == {"forget", "celebrity"}
    assert set(results["metrics"]["forget"]) == {"image_text", "text_only"}
    assert (
        results["provenance"]["guard"] == str(tmp_path / "guard") and results["provenance"]["backend"] == "hf"
    )
    assert (tmp_path / "out" / "samples.jsonl").is_file() and (tmp_path / "out" / "results.md").is_file()


@pytest.mark.slow
def test_real_smollm2_cli_end_to_end_and_reproducible(smollm2, synthetic_root, tmp_path):
    from eco_guard.cli import main

    args = [
        "evaluate",
        "--data",
        str(synthetic_root),
        "--forget",
        "forget_10",
        "--model",
        "smollm2",
        "--limit",
        "1",
        "--few-shot",
        "0",
        "--max-new-tokens",
        "8",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert a["metrics"] == b["metrics"]
    assert (tmp_path / "a" / "samples.jsonl").read_text() == (tmp_path / "b" / "samples.jsonl").read_text()
    assert (tmp_path / "a" / "results.md").is_file()
    assert set(a["metrics"]) == set(SETS)
    assert all(
        set(v) == {"text_only"} for v in a["metrics"].values()
    )  # text-only model: image questions skipped
    # the base model knows the real celebrities (option log-probability), not the fictitious people
    guard = EcoGuard(*smollm2)
    knows = evaluate(
        guard,
        synthetic_root,
        "forget_15",
        None,
        sets=("forget", "celebrity"),
        limit=3,
        few_shot_profiles=0,
        max_new_tokens=1,
    )["metrics"]
    celebrity = knows["celebrity"]["text_only"]["classification_logprob_acc"]
    assert celebrity >= 66.0 and celebrity > knows["forget"]["text_only"]["classification_logprob_acc"], knows
