"""A LLaVA-architecture model (real SmolLM2 language model, CLIP tower) served by vLLM through the guard: vision
tower and projector outside the engine, merged and corrupted embeddings into an engine on the exported language
model. Compared with the transformers guard on the same model."""

from __future__ import annotations

import pytest
from PIL import Image

from eco_guard.config import GuardConfig
from eco_guard.guard import EcoGuard

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONFIG = GuardConfig(scope=("prompt", "image"))


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from eco_guard.models import build_llava

    model, processor = build_llava("smollm2", seed=0)
    folder = tmp_path_factory.mktemp("llava-smollm2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


@pytest.fixture(scope="module")
def llava_llm(llava, tmp_path_factory, monkeypatch_module):
    from eco_guard.vllm_backend import GuardedLLM

    monkeypatch_module.setenv("ECO_GUARD_CACHE", str(tmp_path_factory.mktemp("cache")))
    runner = GuardedLLM.from_pretrained(
        llava[2], config=CONFIG, max_model_len=512, dtype="float32", enforce_eager=True, seed=0
    )
    yield runner
    runner.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, color in [("red", (220, 20, 20)), ("green", (20, 200, 40)), ("blue", (10, 30, 230))]:
        path = folder / f"{name}.png"
        Image.new("RGB", (96, 72), color).save(path)
        paths.append(str(path))
    broken = folder / "broken.png"
    broken.write_text("not an image")
    return paths, str(broken), str(folder / "missing.png")


def test_image_prompts_match_transformers_flagged_and_unflagged(llava, llava_llm, images):
    model, processor, _ = llava
    paths, _, _ = images
    prompts = [{"text": "What is in this picture?", "image": p} for p in paths] + [
        "What is the capital of France?"
    ]
    prompts = prompts + prompts
    flags = [False] * 4 + [True] * 4
    ours = llava_llm.generate(prompts, flags, max_new_tokens=16)
    theirs = EcoGuard(model, processor, config=CONFIG).generate(
        prompts, flags, max_new_tokens=16, batch_size=1
    )
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) >= 7, list(zip(ours, theirs, strict=True))
    assert "Paris" in ours[3] and ours[3] != ours[7]
    prepared = llava_llm.prepare(prompts[:4], [False] * 4)
    assert (
        all(p.embeds is not None for p in prepared[:3]) and prepared[3].embeds is None
    )  # images need embeds


def test_surrogate_faces_on_the_engine(llava, llava_llm, images):
    """``image_corruption='substitute'`` at strength 1 through vLLM: a flagged picture is answered exactly as the
    surrogate face it is replaced by, asked unflagged on the same engine."""
    import torch

    model, processor, _ = llava
    paths, _, _ = images
    reference = EcoGuard(model, processor, config=CONFIG)
    faces = reference.image_features(paths[1:])
    own = reference.image_features(paths[:1])
    chosen = int(torch.nn.functional.cosine_similarity(faces.mean(1), own.mean(1)).argmin())
    guard = llava_llm.guard
    before = guard.config, guard.image_surrogates
    try:
        guard.set_image_surrogates(faces)
        guard.config = CONFIG.replace(scope=("image",), image_corruption="substitute", strength=1.0)
        question = "What is in this picture?"
        flagged = llava_llm.generate([{"text": question, "image": paths[0]}], [True], max_new_tokens=12)
        as_face = llava_llm.generate(
            [{"text": question, "image": paths[1 + chosen]}], [False], max_new_tokens=12
        )
        plain = llava_llm.generate([{"text": question, "image": paths[0]}], [False], max_new_tokens=12)
        assert flagged == as_face and flagged != plain, (flagged, as_face, plain)
    finally:
        guard.config, guard.image_surrogates = before


def test_bad_images_get_their_own_errors(llava_llm, images):
    paths, broken, missing = images
    prompts = [
        {"text": "What is in this picture?", "image": broken},
        {"text": "What is in this picture?", "image": paths[0]},
        {"text": "What is in this picture?", "image": missing},
        "What is the capital of France?",
        {"text": "What is in this picture?", "image": 5},
    ]
    outputs = llava_llm.serve(prompts, sampling_params={"max_new_tokens": 8})
    assert [o.ok for o in outputs] == [False, True, False, True, False]
    assert "cannot be read" in outputs[0].error and "not found" in outputs[2].error
    assert "an image must be a file path or a PIL image, got int" in outputs[4].error
