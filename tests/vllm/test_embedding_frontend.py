"""The front end the vLLM backend runs outside the engine: table, LLaVA vision path, export; no engine here."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from eco_guard.embedding_frontend import (
    EmbeddingFrontEnd,
    check_llava,
    export_language_model,
    load_embedding_table,
)
from eco_guard.guard import EcoGuard
from eco_guard.requests import Flag, Request


@pytest.fixture(scope="module")
def tiny_llava_dir(tiny_llava, tmp_path_factory):
    model, processor = tiny_llava
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_embedding_table_is_read_alone_and_equals_the_models(smollm2):
    from eco_guard.models import smollm2_dir

    model, _ = smollm2
    table = load_embedding_table(smollm2_dir())
    assert torch.equal(table, model.get_input_embeddings().weight)


def test_llava_front_end_reproduces_the_models_image_features_and_merge(tiny_llava, tiny_llava_dir):
    model, processor = tiny_llava
    front_end = EmbeddingFrontEnd.from_pretrained(tiny_llava_dir)
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    inputs = processor(text=["<image>\nWhat is this?"], images=[image], return_tensors="pt")
    with torch.no_grad():
        expected = model.model.get_image_features(
            inputs["pixel_values"],
            vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy,
        ).pooler_output
    features = front_end.image_features(inputs["pixel_values"])
    assert torch.equal(features, torch.stack(list(expected)))
    merged = front_end(inputs["input_ids"], pixel_values=inputs["pixel_values"])[0]
    slots = inputs["input_ids"][0] == model.config.image_token_id
    assert torch.equal(merged[slots], features[0])
    assert torch.equal(merged[~slots], model.get_input_embeddings()(inputs["input_ids"][0][~slots]))
    with pytest.raises(ValueError, match="do not match"):
        front_end(inputs["input_ids"][:, 1:], pixel_values=inputs["pixel_values"])


def test_exported_language_model_equals_the_llava_language_model(tiny_llava, tiny_llava_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, _ = tiny_llava
    folder = export_language_model(tiny_llava_dir, tmp_path / "lm")
    text_model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([[1, 504, 3575, 282, 4649]])
    with torch.no_grad():
        assert torch.allclose(text_model(ids).logits, model(input_ids=ids).logits, atol=1e-5)
    assert export_language_model(tiny_llava_dir, tmp_path / "lm") == folder  # reused


def test_guard_hooks_corrupt_the_front_ends_text_and_image_features(tiny_llava):
    from eco_guard.config import GuardConfig

    model, processor = tiny_llava
    guard = EcoGuard(
        EmbeddingFrontEnd.from_model(model), processor, config=GuardConfig(scope=("prompt", "image"))
    )
    request = Request(text="What is this?", image=Image.new("RGB", (64, 64), (0, 90, 200)))
    batch = guard.encode([request])
    ids = batch.ids[0][None]
    clean = guard.model(ids, **batch.image_inputs)
    with guard.corrupting(guard.plan(batch, [Flag(True)], ids.shape)):
        corrupted = guard.model(ids, **batch.image_inputs)
    image = ids[0] == guard.image_token_id
    changed = (corrupted[0] != clean[0]).any(-1)
    assert changed[image].all()  # image features corrupted
    assert changed[~image][:-1].any() and not changed[-1]  # prompt tokens, never the last one


def test_only_llava_style_models_are_accepted():
    from transformers import LlavaConfig, Qwen2VLConfig

    check_llava(LlavaConfig())
    with pytest.raises(ValueError, match="not supported"):
        check_llava(Qwen2VLConfig())


def test_flag_overrides_may_leave_requests_to_the_classifier(tiny_llava):
    model, processor = tiny_llava

    class FlagsLongPrompts:
        def flag(self, requests):
            return [Flag(len(r.classifier_text) > 10, 0.9, "length") for r in requests]

    guard = EcoGuard(model, processor, classifier=FlagsLongPrompts())
    requests = [
        Request(text="short"),
        Request(text="a much longer prompt"),
        Request(text="another long prompt"),
    ]
    decisions = guard.decide(requests, [None, False, None])
    assert [d.flagged for d in decisions] == [False, False, True]
    assert [d.source for d in decisions] == ["length", "override", "length"]
