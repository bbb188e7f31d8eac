"""The pixel identity encoder: trained from pictures, saved as safetensors, and the shipped portrait encoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.mllmu import portraits
from benchmarks.mllmu.portrait_encoder import ASSET, draw_people
from classifiers.persistence import ClassifierFileError, load_arrays, save_arrays, write_meta
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
    # a floor per identity: the 0.5% quantile of all forget images' own fresh views, or the identity's own mean
    # less FLOOR_SPREAD sd where higher; a similarity below its identity's floor never flags
    sims = model.similarities(queries)
    assert model.floor_.shape == (2,) and (model.floor_ > 0).all() and (model.floor_ < 1).all()
    assert (sims.max(1) < model.floor_.min()).any()  # strangers fall below it here
    expected = np.where(sims >= model.floor_[None, :], sims, -1.0).max(1)
    np.testing.assert_array_equal(model.score(queries), expected)
    model.save_pretrained(tmp_path)
    loaded = ImageIdentityClassifier.from_pretrained(tmp_path)
    assert isinstance(loaded.encoder_, PixelEncoder)
    np.testing.assert_array_equal(loaded.floor_, model.floor_)
    np.testing.assert_allclose(loaded.score(queries), model.score(queries), atol=1e-5)
    off = ImageIdentityClassifier(encoder, fpr=None, n_augment=4, floor_quantile=None).fit(people, labels)
    assert off.floor_ is None
    np.testing.assert_allclose(off.score(queries), sims.max(1), atol=1e-6)  # the same fit without the floor
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


def test_the_margin_is_taken_off_each_output_s_own_cosine() -> None:
    """CosFace: the loss is the cross-entropy of scale x (cosines - margin on the own class); no margin, the plain
    cosine softmax. A margin makes an output that already wins cost more, so training keeps pushing look-alikes apart."""
    import torch

    from classifiers.invariant import cosine_softmax_loss

    torch.manual_seed(0)
    outputs, centres, labels = torch.randn(6, 8), torch.randn(4, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    cosines = (
        torch.nn.functional.normalize(outputs, dim=-1) @ torch.nn.functional.normalize(centres, dim=-1).T
    )
    plain = torch.nn.functional.cross_entropy(16 * cosines, labels)
    assert torch.allclose(cosine_softmax_loss(outputs, centres, labels, 16.0), plain)
    shifted = cosines - 0.35 * torch.nn.functional.one_hot(labels, 4)
    with_margin = cosine_softmax_loss(outputs, centres, labels, 16.0, 0.35)
    assert torch.allclose(with_margin, torch.nn.functional.cross_entropy(16 * shifted, labels))
    assert with_margin > plain


def test_training_runs_on_its_own_threads_and_gives_them_back(tiny) -> None:
    import torch

    people, _ = tiny
    threads = torch.get_num_threads()
    train_pixel_encoder(people[:2], views=0, steps=1, width=4, side=16, threads=1, progress=False)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        train_pixel_encoder(people[:2], views=0, steps=1, width=4, side=16, threads=0, progress=False)


def test_an_identity_encoder_gets_48_references_per_forget_photo_and_few_copies_of_others(tiny) -> None:
    """Each forget photo is kept with 48 transformed copies (``AUGMENTATIONS['standardize']``); other people's
    photos only fix each feature's mean and scale, so they get ``STANDARDIZE_COPIES``."""
    from classifiers.image import AUGMENTATIONS, STANDARDIZE_COPIES, ImageIdentityClassifier

    people, encoder = tiny
    encoded: list[int] = []

    class Counting:
        identity_embedding = True

        def encode(self, images):
            encoded.append(len(images))
            return encoder.encode(images)

    model = ImageIdentityClassifier(Counting(), fpr=None, floor_quantile=None).fit(
        people, ["a", "b"] + [None] * 10
    )
    assert AUGMENTATIONS["standardize"] == 48 and len(model.references_) == 2 * 49
    assert encoded[:2] == [2 * 49, 10 * (1 + STANDARDIZE_COPIES)]


def test_each_identity_gets_its_own_floor_above_the_shared_one(tiny, tmp_path) -> None:
    """The shared floor follows the hardest forget person down; an identity whose own fresh views sit tighter gets
    its mean less FLOOR_SPREAD sd instead, when higher. A file with one shared floor (older) still loads; floors
    that do not match the identities are refused."""
    import json

    from classifiers import image
    from classifiers.image import FLOOR_QUANTILE, FLOOR_SPREAD, ImageIdentityClassifier

    people, encoder = tiny
    labels = ["a", "b", "c"] + [None] * 9
    model = ImageIdentityClassifier(encoder, fpr=None, n_augment=4).fit(people, labels)
    rng = np.random.default_rng(7)
    views = [image.transform(img, rng) for img in people[:3] for _ in range(image.FLOOR_VIEWS)]
    owner = np.repeat(np.arange(3), image.FLOOR_VIEWS)
    own = model.similarities(views)[np.arange(len(views)), owner]
    shared = np.quantile(own, FLOOR_QUANTILE)
    spread = np.array([own[owner == j].mean() - FLOOR_SPREAD * own[owner == j].std() for j in range(3)])
    recomputed = model._floor(people[:3], ["a", "b", "c"], FLOOR_QUANTILE, np.random.default_rng(7))
    np.testing.assert_allclose(recomputed, np.maximum(shared, spread), atol=1e-6)
    assert len(set(recomputed.round(6))) > 1  # not one shared value: the identities differ

    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "classifier.json").read_text())["config"]
    assert "floor" not in config  # the floors are an array beside the references, checksummed like them
    arrays = load_arrays(tmp_path / "references.safetensors")

    def reseal(floor_array, shared_floor):
        """The folder as another version would have written it, checksums and all."""
        saved = {k: v for k, v in arrays.items() if k != "floor"}
        if floor_array is not None:
            saved["floor"] = floor_array
        save_arrays(tmp_path / "references.safetensors", saved)
        write_meta(tmp_path, model, {**config, "floor": shared_floor})
        return ImageIdentityClassifier.from_pretrained(tmp_path)

    older = reseal(None, 0.5)  # one shared floor in the config, before floors per identity
    np.testing.assert_array_equal(older.floor_, np.full(3, 0.5, dtype=np.float32))
    with pytest.raises(ClassifierFileError, match="5 floors for 3 identities"):
        reseal(np.zeros(5, dtype=np.float32), None)
