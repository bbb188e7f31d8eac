"""The pixel identity encoder: trained from pictures, saved as safetensors, and the shipped portrait encoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.mllmu import portraits
from benchmarks.mllmu.portrait_encoder import ASSET, draw_people
from classifiers.persistence import ClassifierFileError
from classifiers.pixels import PixelEncoder, train_pixel_encoder


def _views(images, n, seed):
    rng = random.Random(seed)
    return [portraits.transformed_view(img, rng) for img in images for _ in range(n)]


def _identified(encoder, people, views_each, seed):
    """Share of Test_Set-style views whose most similar portrait is their own, and the genuine / impostor cosines."""
    refs = encoder.encode(people)
    sims = encoder.encode(_views(people, views_each, seed)) @ refs.T
    owner = np.repeat(np.arange(len(people)), views_each)
    genuine = sims[np.arange(len(sims)), owner]
    impostor = sims[np.arange(len(people))[None, :] != owner[:, None]]
    return float((sims.argmax(1) == owner).mean()), genuine, impostor


@pytest.fixture(scope="module")
def tiny():
    people = draw_people(12, seed=3, size=64)
    return people, train_pixel_encoder(people, views=6, steps=150, width=8, side=32, progress=False)


def test_training_teaches_the_people_and_the_folder_round_trips(tiny, tmp_path) -> None:
    people, encoder = tiny
    untrained = train_pixel_encoder(people, views=0, steps=1, width=8, side=32, lr=1e-9, progress=False)
    accuracy, _, _ = _identified(encoder, people, 4, seed=1)
    before, _, _ = _identified(untrained, people, 4, seed=1)
    assert accuracy >= 0.8 and accuracy > before + 0.2, (accuracy, before)
    z = encoder.encode(people[:3])
    assert z.shape == (3, 128) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)

    spec = encoder.save(tmp_path / "enc")
    assert spec["kind"] == "pixel_cnn"
    loaded = PixelEncoder.load(tmp_path / "enc")
    np.testing.assert_allclose(loaded.encode(people[:3]), z, atol=1e-6)
    again = train_pixel_encoder(people, views=6, steps=150, width=8, side=32, progress=False)
    np.testing.assert_allclose(again.encode(people[:3]), z, atol=1e-4)  # seeded

    narrow = train_pixel_encoder(people[:2], views=0, steps=1, width=4, side=32, progress=False)
    narrow.save(tmp_path / "narrow")
    (tmp_path / "narrow" / "pixel_encoder.safetensors").replace(
        tmp_path / "enc" / "pixel_encoder.safetensors"
    )
    with pytest.raises(ClassifierFileError, match="do not fit"):
        PixelEncoder.load(tmp_path / "enc")
    with pytest.raises(ClassifierFileError, match="not a pixel encoder folder"):
        PixelEncoder.load(tmp_path)
    with pytest.raises(ValueError, match="no images"):
        encoder.encode([])
    with pytest.raises(ValueError, match="at least two identities"):
        train_pixel_encoder(people[:1], progress=False)


def test_an_identity_classifier_compares_its_outputs_and_saves_it(tiny, tmp_path) -> None:
    from classifiers.image import ImageIdentityClassifier

    people, encoder = tiny
    labels = ["a", "b"] + [None] * 10
    model = ImageIdentityClassifier(encoder, fpr=None, n_augment=4).fit(people, labels)
    assert model.metric_ == "standardize" and model.mlp_ is None  # an identity embedding is compared as it is
    queries = _views(people, 2, seed=2)
    # the floor: the 0.5% quantile of the forget images' own fresh views; below it a score is -1, never flagged
    best = model.similarities(queries).max(1)
    assert model.floor_ is not None and 0 < model.floor_ < 1
    assert (best < model.floor_).any()  # strangers fall below it here
    np.testing.assert_array_equal(model.score(queries), np.where(best >= model.floor_, best, -1.0))
    model.save_pretrained(tmp_path)
    loaded = ImageIdentityClassifier.from_pretrained(tmp_path)
    assert isinstance(loaded.encoder_, PixelEncoder) and loaded.floor_ == model.floor_
    np.testing.assert_allclose(loaded.score(queries), model.score(queries), atol=1e-5)
    off = ImageIdentityClassifier(encoder, fpr=None, n_augment=4, floor_quantile=None).fit(people, labels)
    assert off.floor_ is None
    np.testing.assert_allclose(off.score(queries), best, atol=1e-6)  # the same fit without the floor
    with pytest.raises(ValueError, match="floor_quantile must be"):
        ImageIdentityClassifier(encoder, fpr=None, n_augment=4, floor_quantile=1.5).fit(people, labels)


def test_the_shipped_portrait_encoder_tells_apart_people_it_never_saw() -> None:
    """The benchmark's own first 60 people (never taught: the encoder learned people from index 100,000 on), each
    seen through 5 Test_Set-style views: nearly every view is nearest its own portrait, and a view's cosine to its
    own portrait sits above nearly every cosine to someone else's."""
    encoder = PixelEncoder.load(ASSET)
    rng = random.Random(0)
    people = [portraits.draw_portrait(portraits.draw_traits(i, rng, "brown"), 128) for i in range(60)]
    accuracy, genuine, impostor = _identified(encoder, people, 5, seed=4)
    assert accuracy >= 0.98, accuracy
    assert np.quantile(genuine, 0.02) > np.quantile(impostor, 0.999), (genuine.min(), impostor.max())


def test_the_recipe_command_builds_a_loadable_encoder(tmp_path) -> None:
    """``python -m benchmarks.mllmu.portrait_encoder`` on a tiny configuration; the shipped folder's recipe names
    the command that made it."""
    import json

    from benchmarks.mllmu.portrait_encoder import FIRST_INDEX, main

    argv = ["--out", str(tmp_path), "--people", "3", "--views", "1", "--steps", "2"]
    assert main(argv) == 0
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert recipe["command"] == "python -m benchmarks.mllmu.portrait_encoder --people 3 --views 1 --steps 2"
    assert recipe["first_index"] == FIRST_INDEX and len(recipe["loss"]) == 2
    assert PixelEncoder.load(tmp_path).encode(draw_people(2, seed=9)).shape == (2, 128)
    shipped = json.loads((ASSET / "recipe.json").read_text())
    assert shipped["command"] == "python -m benchmarks.mllmu.portrait_encoder" and shipped["people"] == 4000
