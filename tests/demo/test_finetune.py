"""Fine-tuning the vanilla model: examples, masking, loss falls, the merged folder loads."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.finetune import (
    LOSS_LOG,
    Collator,
    Example,
    FinetuneConfig,
    build_examples,
    finetune,
    profile_names,
    save_merged,
    train,
)
from benchmarks.mllmu.loader import load_config


def test_examples_route_named_questions_to_text_and_others_to_the_image(tiny_data):
    rows = load_config(tiny_data, "ft_Data")
    names = profile_names(tiny_data)
    examples = build_examples(rows, multimodal=True, names=names, max_profiles=2)
    assert {e.id for e in examples} == {rows[0]["ID"], rows[1]["ID"]}
    for e in examples:
        named = names[e.id].lower() in e.prompt.lower()
        assert (e.image is None) == named
        assert ("<image>" in e.prompt) == (e.image is not None)
        assert e.prompt.endswith("ASSISTANT:")
    text_only = build_examples(rows, multimodal=False, names=names, max_profiles=2)
    assert text_only and all(e.image is None and names[e.id] in e.prompt for e in text_only)
    with pytest.raises(ValueError, match="not found"):
        build_examples(rows, multimodal=True, names=names, ids=["nobody"])


def test_practice_asks_each_fact_in_both_formats_with_other_people_as_distractors(tiny_data):
    from benchmarks.mllmu.metrics import stated_option
    from benchmarks.practice import FACTS, fact_value, practice_examples

    rows = load_config(tiny_data, "Full_Set")
    examples = practice_examples(rows, seed=0, per_person=12)
    by_id = {r["ID"]: r["biography"] for r in rows}
    facts = {i: {fact_value(f, bio[f]): f for f in FACTS if bio.get(f)} for i, bio in by_id.items()}
    multiple_choice = [e for e in examples if "Just give ONE letter" in e.prompt]
    cloze = [e for e in examples if "[Blank]" in e.prompt]
    assert len(multiple_choice) == len(cloze) == len(examples) // 2
    stated = {}
    for e in multiple_choice:
        # answered with a sentence stating the right option, which the stated-option metric reads back
        lines = [x for x in e.prompt.splitlines() if x[:3] in ("A: ", "B: ", "C: ", "D: ")]
        options = {x[0]: x[3:] for x in lines}
        key = stated_option(e.answer, options)
        assert len(options) == 4 and key is not None and options[key] in facts[e.id]
        assert e.answer.endswith(".") and len(e.answer.split()) > len(options[key].split())
        stated[id(e)] = options[key]
        field = facts[e.id][options[key]]
        others = {fact_value(field, b[field]) for i, b in by_id.items() if i != e.id and b.get(field)}
        assert all(o in others for k, o in options.items() if k != key)
    for person, asked in facts.items():
        # past one round over the facts, each fact is practised in both formats
        mine = [e for e in examples if e.id == person]
        in_mc = {stated[id(e)] for e in mine if id(e) in stated}
        in_cloze = {e.answer for e in mine if e in cloze}
        assert in_mc and in_mc == in_cloze and in_mc <= set(asked) and len(mine) == 2 * len(in_mc)
    for e in examples:
        named = by_id[e.id]["Name"] in e.prompt
        assert named == (e.image is None) and ("<image>" in e.prompt) == (e.image is not None)
    # the benchmark's own questions are never practised
    asked = {q["Question"] for r in rows for q in r["Mask_Task"]}
    assert not any(q.replace("__", "[Blank]") in e.prompt for q in asked for e in cloze)
    assert practice_examples(rows, seed=0, per_person=12) == examples


def test_practice_with_solved_examples_about_another_profile_first(tiny_data):
    """As the benchmark's prompts are: solved examples in the same format and modality, about someone else, whose
    answers are that person's facts; the asked question and its answer stay as without them."""
    from benchmarks.mllmu.metrics import stated_option
    from benchmarks.practice import FACTS, fact_value, practice_examples

    rows = load_config(tiny_data, "Full_Set")
    plain = practice_examples(rows, seed=0, per_person=12)
    assert practice_examples(rows, seed=0, per_person=12, shot_share=0.0) == plain
    shot = practice_examples(rows, seed=0, per_person=12, shot_share=1.0, shots=2)
    bios = {r["ID"]: r["biography"] for r in rows}
    facts = {i: {fact_value(f, b[f]) for f in FACTS if b.get(f)} for i, b in bios.items()}
    for before, after in zip(plain, shot, strict=True):
        # the asked question (the last turn), its answer and picture are unchanged
        assert after.prompt.endswith(before.prompt) and after.prompt != before.prompt
        assert (after.answer, after.id, after.image is None) == (
            before.answer,
            before.id,
            before.image is None,
        )
        solved = after.prompt[: -len(before.prompt)]
        assert solved.count("USER:") == 2 and solved.count("Correct Answer: ") == 2
        assert ("[Blank]" in solved) == ("[Blank]" in before.prompt) and "<image>" not in solved
        named = [i for i, b in bios.items() if b["Name"] in solved]
        assert named == [] if before.image is not None else len(named) == 1 and named[0] != before.id
        for turn in solved.split("USER:")[1:]:
            answer = turn.split("Correct Answer: ")[1].strip()
            if "[Blank]" not in turn:
                options = {x[0]: x[3:] for x in turn.splitlines() if x[:3] in ("A: ", "B: ", "C: ", "D: ")}
                answer = options[answer]
                assert stated_option(answer, options) is not None
            owners = [i for i in bios if answer in facts[i]]
            assert owners and (named == [] or named[0] in owners)


def test_collator_masks_the_prompt_and_keeps_answer_and_end_token(tiny_llava, tiny_data):
    _, processor = tiny_llava
    collate = Collator(processor)
    image = load_config(tiny_data, "ft_Data")[0]["image"]
    examples = [
        Example("1", "USER: <image>\nWho?\nASSISTANT:", "This person is Ann.", image),
        Example("1", "USER: Who is Ann?\nASSISTANT:", "Ann is a nurse."),
    ]
    batch = collate(examples)
    tok = processor.tokenizer
    assert batch["pixel_values"].shape[0] == 1
    image_id = tok.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"][0] == image_id).sum()) == collate.image_tokens > 0
    for r, answer in enumerate(["This person is Ann.", "Ann is a nurse."]):
        kept = batch["labels"][r][batch["labels"][r] != -100].tolist()
        assert kept[-1] == tok.eos_token_id
        assert tok.decode(kept[:-1]).strip() == answer
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_training_lowers_the_loss_and_logs_every_step(tiny_data, tmp_path):
    """Full fine-tuning of the tiny random LM (LoRA cannot move its near-uniform output: its logits are bounded by
    the final norm and the random embeddings; the real SmolLM2 run is the demo model's recipe)."""
    from eco_guard.models import build_llava

    model, processor = build_llava(None, seed=1)
    rows = load_config(tiny_data, "ft_Data")
    examples = build_examples(rows, multimodal=True, names=profile_names(tiny_data), max_profiles=2)
    config = FinetuneConfig(epochs=4, batch_size=8, lr=3e-3, lora=False, train_projector=True, seed=0)
    _, losses = train(model, processor, examples, config, log_path=tmp_path / LOSS_LOG, progress=False)
    assert len(losses) == 4 * -(-len(examples) // 8)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.5
    log = [json.loads(line) for line in (tmp_path / LOSS_LOG).read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx(losses)


def test_lora_is_merged_on_save_and_the_folder_loads(tiny_data, tmp_path):
    from eco_guard.models import build_llava, load_model

    model, processor = build_llava(None, seed=1)
    rows = load_config(tiny_data, "ft_Data")
    examples = build_examples(rows, multimodal=True, names=profile_names(tiny_data), max_profiles=1)
    config = FinetuneConfig(epochs=1, batch_size=8, lr=3e-2, train_projector=True, seed=0)
    trained, _ = train(model, processor, examples, config, progress=False)
    assert any("lora_" in n for n, _ in trained.named_parameters())
    folder = save_merged(trained, processor, tmp_path / "model")
    loaded, loaded_processor = load_model(folder)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    batch = Collator(loaded_processor)(examples[:4])
    labels = batch.pop("labels")
    fresh, _ = build_llava(None, seed=1)
    with torch.no_grad():
        reloaded_loss = float(loaded(**batch, labels=labels).loss)
        trained_loss = float(trained(**batch, labels=labels).loss)
        untrained_loss = float(fresh(**batch, labels=labels).loss)
    assert reloaded_loss == pytest.approx(trained_loss, rel=1e-4)
    assert reloaded_loss != pytest.approx(untrained_loss, rel=1e-4)


def test_finetune_cli_is_seeded(tiny_data, tmp_path):
    """The CLI and the library give the same losses for the same seed; the folder holds the log and metadata."""
    from eco_guard.cli import main
    from eco_guard.models import build_llava

    base, processor = build_llava(None, seed=2)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    config = FinetuneConfig(epochs=1, batch_size=8, seed=3)
    _, losses = finetune(
        tiny_data, tmp_path / "base", tmp_path / "lib", config, max_profiles=1, progress=False
    )
    argv = [
        "finetune",
        "--data",
        str(tiny_data),
        "--base",
        str(tmp_path / "base"),
        "--out",
        str(tmp_path / "cli"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-profiles",
        "1",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    log = [json.loads(line) for line in (tmp_path / "cli" / LOSS_LOG).read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx(losses, rel=1e-5)
    meta = json.loads((tmp_path / "cli" / "finetune.json").read_text())
    assert meta["profiles"] == [load_config(tiny_data, "ft_Data")[0]["ID"]]
