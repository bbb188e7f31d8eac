"""EcoGuard on a tiny LLaVA-architecture model: text corruption before the merge, optional image corruption."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from eco_guard.config import GuardConfig
from eco_guard.guard import EcoGuard


@pytest.fixture(scope="module")
def image():
    img = Image.new("RGB", (96, 80), (30, 120, 200))
    for x in range(20, 60):
        for y in range(10, 50):
            img.putpixel((x, y), (250, 200, 40))
    return img


def merged_embeddings(guard, prompts, flags):
    """The embeddings the language model receives (after image features are merged), captured by a pre-hook; the
    whole prompt in one prefill (no shared prefix computed apart)."""
    captured = {}

    def grab(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = guard.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    sharing, guard.share_prefix = guard.share_prefix, False
    try:
        guard.generate(prompts, flags=flags, max_new_tokens=1)
    finally:
        handle.remove()
        guard.share_prefix = sharing
    return captured["embeds"]


def image_positions(guard, prompts):
    batch = guard.encode(guard.requests(prompts))
    inputs = guard.collate(batch.ids)
    return inputs["input_ids"] == guard.image_token_id


def test_text_corruption_leaves_image_features(tiny_llava, image):
    model, processor = tiny_llava
    prompts = [{"text": "Who is this person?", "image": image}, "What is the capital of France?"]
    guard = EcoGuard(model, processor, config=GuardConfig(scope=("prompt",)))
    clean = merged_embeddings(guard, prompts, [False, False])
    text_only = merged_embeddings(guard, prompts, [True, False])
    img = image_positions(guard, prompts)
    assert img[0].sum() == 16 and img[1].sum() == 0  # (64/16)^2 patches
    assert torch.equal(text_only[0][img[0]], clean[0][img[0]]), "image features must be untouched"
    assert not torch.equal(text_only[0][~img[0]], clean[0][~img[0]]), "text tokens must be corrupted"
    assert torch.equal(text_only[1], clean[1]), "unflagged row untouched"


def test_image_corruption_changes_image_features(tiny_llava, image):
    model, processor = tiny_llava
    prompts = [{"text": "Who is this person?", "image": image}, {"text": "Describe it.", "image": image}]
    guard = EcoGuard(
        model,
        processor,
        config=GuardConfig(scope=("image",), strength=10.0, corruption="noise_rand_n", dims=8),
    )
    clean = merged_embeddings(guard, prompts, [False, False])
    corrupted = merged_embeddings(guard, prompts, [False, True])
    img = image_positions(guard, prompts)
    assert torch.equal(corrupted[0], clean[0])
    assert not torch.equal(corrupted[1][img[1]], clean[1][img[1]])
    assert torch.equal(corrupted[1][~img[1]], clean[1][~img[1]]), "image scope alone leaves text tokens"


def test_spans_and_image_scope_corrupts_the_picture_when_no_name_is_in_the_words(tiny_llava, image):
    """ "Who is this person?" with a photo: the photo identifies them, so only its features are corrupted; a
    named person with a photo gets both; an unmatched text-only request falls back to all its prompt tokens."""
    from eco_guard.requests import Flag

    model, processor = tiny_llava
    prompts = [
        {"text": "Who is this person?", "image": image},
        {"text": "Is this Jane Doe?", "image": image},
        "Who is this person?",
    ]
    config = GuardConfig(scope=("spans", "image"), strength=10.0, corruption="noise_rand_n", dims=8)
    guard = EcoGuard(model, processor, config=config)
    clean = merged_embeddings(guard, prompts, [False] * 3)
    corrupted = merged_embeddings(guard, prompts, [Flag(True), Flag(True, terms=("Jane Doe",)), Flag(True)])
    img = image_positions(guard, prompts)
    assert torch.equal(corrupted[0][~img[0]], clean[0][~img[0]]), "the words of a nameless image request stay"
    assert not torch.equal(corrupted[0][img[0]], clean[0][img[0]])
    changed = (corrupted[1] != clean[1]).any(-1) & ~img[1]
    assert changed.any() and not torch.equal(corrupted[1][img[1]], clean[1][img[1]])
    text_changed = (corrupted[2] != clean[2]).any(-1)
    assert text_changed.sum() > changed.sum(), "no name and no image: all prompt tokens, not a span"


def test_image_strength_sets_the_image_features_noise_apart_from_the_names(tiny_llava, image):
    """One request with a name and a photo: the name's tokens move with ``strength``, the photo's features with
    ``image_strength``; 0 leaves that part exactly as it was."""
    from eco_guard.requests import Flag

    model, processor = tiny_llava
    prompts = [{"text": "Is this Jane Doe?", "image": image}]
    flag = [Flag(True, terms=("Jane Doe",))]
    base = GuardConfig(scope=("spans", "image"), corruption="noise_first_n", dims=8, strength=1.0)
    guard = EcoGuard(model, processor, config=base)
    clean = merged_embeddings(guard, prompts, [False])[0]
    img = image_positions(guard, prompts)[0]

    def shift(config):
        guard.config = config
        moved = merged_embeddings(guard, prompts, flag)[0] - clean
        return float(moved[~img].norm()), float(moved[img].norm())

    text_same, image_same = shift(base)
    text_off, image_off = shift(base.replace(image_strength=0.0))
    text_big, image_big = shift(base.replace(image_strength=4.0))
    assert text_same > 0 and image_same > 0
    assert text_off == text_same == text_big, "image_strength never touches the words"
    assert image_off == 0.0
    assert image_big == pytest.approx(4 * image_same, rel=1e-4), "noise scales with image_strength"


def test_generate_and_score_with_images(tiny_llava, image, tmp_path):
    model, processor = tiny_llava
    path = tmp_path / "face.png"
    image.save(path)
    guard = EcoGuard(model, processor, config=GuardConfig(scope=("prompt", "image")))
    prompts = [{"text": "USER: <image>\nWho is this?\nASSISTANT:", "image": str(path)}, "Hello there"]
    plain = guard.generate(prompts, chat_template=False, max_new_tokens=3)
    assert len(plain) == 2 and all(isinstance(a, str) for a in plain)
    clean = guard.score(prompts, [[" A", " B"], [" C"]], chat_template=False)
    flagged = guard.score(prompts, [[" A", " B"], [" C"]], flags=[True, False], chat_template=False)
    assert flagged[1] == clean[1] and flagged[0] != clean[0]


def test_missing_and_unreadable_images(tiny_llava, tmp_path):
    model, processor = tiny_llava
    guard = EcoGuard(model, processor)
    with pytest.raises(FileNotFoundError, match="prompt 0: image file not found"):
        guard.generate([{"text": "who?", "image": str(tmp_path / "missing.png")}])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot be read"):
        guard.generate([{"text": "who?", "image": str(bad)}])
    with pytest.raises(TypeError, match="prompt 1: an image must be a file path or a PIL image, got int"):
        guard.generate([{"text": "who?"}, {"text": "who?", "image": 5}])


def test_images_of_any_mode_read_as_their_rgb_conversion(tiny_llava, image):
    """RGBA, palette, greyscale, 16-bit and CMYK pictures are converted to RGB once, as the model's processor
    expects: each answers as its own RGB conversion does."""
    model, processor = tiny_llava
    guard = EcoGuard(model, processor)

    def logprob(picture) -> float:
        return guard.score([{"text": "who?", "image": picture}], [[" A"]], chat_template=False)[0][0]

    assert logprob(image) != logprob(image.rotate(90))  # the score reads the picture
    for mode in ("RGBA", "P", "L", "LA", "I;16", "CMYK"):
        odd = image.convert(mode)
        assert logprob(odd) == logprob(odd.convert("RGB")), mode


def test_substituted_names_beside_noisy_image_features(tiny_llava, image):
    """``substitute`` on the name, ``image_corruption`` noise on the photo: the name's merged embeddings are exactly
    the surrogate's token embeddings, the photo's features move with ``image_strength``, the other words stay."""
    from eco_guard.requests import Flag

    model, processor = tiny_llava
    prompts = [{"text": "Is this Jane Doe?", "image": image}]
    config = GuardConfig(
        scope=("spans", "image"),
        corruption="substitute",
        image_corruption="noise_first_n",
        dims=8,
        strength=1.0,
        image_strength=2.0,
    )
    guard = EcoGuard(model, processor, config=config)
    clean = merged_embeddings(guard, prompts, [False])[0]
    corrupted = merged_embeddings(guard, prompts, [Flag(True, terms=("Jane Doe",))])[0]
    img = image_positions(guard, prompts)[0]
    batch = guard.encode(guard.requests(prompts))
    mask = guard.prompt_mask(batch.prompts[0], batch.ids[0], ("Jane Doe",))
    surrogate = model.get_input_embeddings()(guard.surrogates.ids(batch.ids[0], mask))
    assert mask.sum() >= 2 and torch.equal(corrupted[mask], surrogate[mask])
    assert torch.equal(corrupted[~mask & ~img], clean[~mask & ~img])
    assert not torch.equal(corrupted[img], clean[img])
    guard.config = config.replace(image_strength=0.0)
    assert torch.equal(
        merged_embeddings(guard, prompts, [Flag(True, terms=("Jane Doe",))])[0][img], clean[img]
    )


def test_surrogate_faces_replace_a_flagged_picture_and_travel_with_the_guard(tiny_llava, image, tmp_path):
    """``image_corruption='substitute'``: at strength 1 a flagged picture's features are exactly those of the
    least similar surrogate face (the model sees that face instead), unflagged ones stay; a guard folder carries
    the faces and refuses them modified; without faces the guard says what is missing."""
    from eco_guard.config import GuardFileError

    model, processor = tiny_llava
    faces = [Image.new("RGB", (64, 64), c) for c in ((250, 250, 250), (200, 30, 30), (0, 0, 0))]
    config = GuardConfig(scope=("image",), corruption="substitute", image_strength=1.0)
    with pytest.raises(ValueError, match="has none: pass image_surrogates"):
        EcoGuard(model, processor, config=config)
    guard = EcoGuard(model, processor, config=config, image_surrogates=faces)
    assert guard.image_surrogates.shape == (3, 16, model.get_input_embeddings().embedding_dim)

    prompts = [
        {"text": "Who is this person?", "image": image},
        {"text": "Who is this person?", "image": image},
    ]
    corrupted = merged_embeddings(guard, prompts, [True, False])
    img = image_positions(guard, prompts)
    own = guard.image_features([image])[0]
    chosen = int(
        torch.nn.functional.cosine_similarity(guard.image_surrogates.mean(1), own.mean(0)[None]).argmin()
    )
    as_face = merged_embeddings(guard, [{"text": "Who is this person?", "image": faces[chosen]}], [False])
    assert torch.equal(corrupted[0], as_face[0]), "the flagged row reads exactly as the surrogate's picture"
    assert torch.allclose(corrupted[1][img[1]], own, atol=1e-6), "the unflagged row keeps its own picture"
    guard.config = config.replace(image_strength=0.5)
    half = merged_embeddings(guard, prompts, [True, False])[0][img[0]]
    assert torch.allclose(half, torch.lerp(own, guard.image_surrogates[chosen], 0.5), atol=1e-5)

    guard.save_pretrained(tmp_path / "guard")
    loaded = EcoGuard.from_pretrained(tmp_path / "guard", model, processor)
    assert torch.equal(loaded.image_surrogates, guard.image_surrogates)
    path = tmp_path / "guard" / "image_surrogates.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GuardFileError, match="sha256"):
        EcoGuard.from_pretrained(tmp_path / "guard", model, processor)
    with pytest.raises(ValueError, match=r"\[faces, tokens, 64\]"):
        guard.set_image_surrogates(torch.zeros(2, 16, 5))


def test_a_shared_prefix_stops_before_the_picture(tiny_llava, image):
    """Image prompts after a common text: the shared prefix ends before the first image token (each row's picture
    differs), and the answers with a corrupted picture equal those of one full prefill."""
    model, processor = tiny_llava
    few_shot = (
        "Question: What is the capital of Italy?\nAnswer: Rome\nQuestion: And of Spain?\nAnswer: Madrid\n"
    )
    other = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    prompts = [
        {"text": few_shot + f"<image>\nWho is this {k}?\nAnswer:", "image": im}
        for k, im in enumerate((image, other))
    ]
    config = GuardConfig(
        scope=("spans", "image"), image_corruption="noise_first_n", dims=8, image_strength=5.0
    )
    guard = EcoGuard(model, processor, config=config)
    flags = [True, False]
    batch = guard.encode(guard.requests(prompts), chat_template=False)
    plan = guard.plan(
        batch, guard.decide(guard.requests(prompts), flags), guard.collate(batch.ids)["input_ids"].shape
    )
    first_image = int((batch.ids[0] == guard.image_token_id).nonzero()[0])
    assert guard.shared_prefix(batch, plan) == first_image
    prefills = []

    def grab(module, args, kwargs):
        if kwargs["inputs_embeds"].shape[:2] != (2, 1):  # not a decode step
            prefills.append(kwargs["inputs_embeds"].detach().clone())

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        shared = guard.generate(prompts, flags=flags, chat_template=False, max_new_tokens=6)
        guard.generate(prompts, flags=[False, False], chat_template=False, max_new_tokens=6)
    finally:
        handle.remove()
    (_, flagged), (_, clean) = prefills[:2], prefills[2:]
    assert flagged.shape[:2] == (2, batch.ids[0].numel() - first_image)
    assert not torch.equal(flagged[0], clean[0]) and torch.equal(flagged[1], clean[1])
    guard.share_prefix = False
    assert guard.generate(prompts, flags=flags, chat_template=False, max_new_tokens=6) == shared


def test_models_whose_positions_or_caches_differ_run_whole_prompts(tiny_llava):
    """Sharing a prefix needs positions that count the attended tokens and a plain KV cache: sliding-window layers
    (Gemma 3) and image-grid positions (Qwen2-VL's M-RoPE) turn it off; LLaVA and Llama keep it."""
    from transformers import (
        AutoModelForCausalLM,
        Gemma3TextConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    from eco_guard.prefix import supports_sharing

    assert supports_sharing(tiny_llava[0])
    small = dict(
        num_hidden_layers=1,
        hidden_size=32,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    gemma = AutoModelForCausalLM.from_config(Gemma3TextConfig(head_dim=16, vocab_size=64, **small))
    assert not supports_sharing(gemma)
    qwen = Qwen2VLForConditionalGeneration(
        Qwen2VLConfig(
            text_config=dict(vocab_size=64, **small),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2),
        )
    )
    assert not supports_sharing(qwen)
