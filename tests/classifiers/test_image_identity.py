"""Image identity matching with the guarded MLLM's own (tiny, randomly initialized) vision tower."""

from __future__ import annotations

import numpy as np
import pytest
from clf_fixture import portrait
from sklearn.exceptions import NotFittedError

from classifiers import image as image_module
from classifiers.augment import TRANSFORMS, transform
from classifiers.image import ImageIdentityClassifier
from classifiers.image_encoders import CallableImageEncoder


@pytest.fixture(scope="module")
def identity(tower_encoder):
    images = [portrait(i, size=96) for i in range(60)]
    labels = [f"p{i}" if i < 10 else None for i in range(60)]
    return ImageIdentityClassifier(tower_encoder, fpr=0.1, n_augment=8, query_views=4).fit(images, labels)


def test_transformed_forget_images_match_their_identity(identity) -> None:
    rng = np.random.default_rng(7)
    queries = [transform(portrait(i, size=96), rng) for i in range(10) for _ in range(3)]
    strangers = [transform(portrait(i, size=96), rng) for i in range(500, 530)]
    hits = identity.identify(queries)
    assert identity.floor_ is None  # a vision tower is no identity embedding: no floor under its scores
    assert np.mean([h == f"p{k // 3}" for k, h in enumerate(hits)]) >= 0.8
    pos, neg = identity.score(queries), identity.score(strangers)
    assert (pos[:, None] > neg[None, :]).mean() > 0.8  # AUC
    assert identity.predict(queries).mean() > identity.predict(strangers).mean()


def test_query_views_make_the_score_blind_to_mirroring(identity) -> None:
    """A scored image is the mean of its fixed views (itself, mirrored, centre crop, crop mirrored): its mirror
    image has the same views, so exactly the same score; one view alone does not have that property."""
    from PIL import ImageOps

    rng = np.random.default_rng(11)
    queries = [transform(portrait(i, size=96), rng) for i in (0, 1, 2, 300, 301)]
    mirrored = [ImageOps.mirror(q) for q in queries]
    assert identity.query_views == 4
    np.testing.assert_allclose(identity.score(mirrored), identity.score(queries), atol=1e-5)
    identity.query_views = 1
    try:
        assert not np.allclose(identity.score(mirrored), identity.score(queries), atol=1e-5)
    finally:
        identity.query_views = 4


def test_every_transform_kind_runs() -> None:
    rng = np.random.default_rng(0)
    img = portrait(1, size=64)
    for kind in TRANSFORMS:
        out = transform(img, rng, [kind])
        assert out.mode == "RGB" and min(out.size) >= 8
    with pytest.raises(ValueError, match="unknown transforms"):
        transform(img, rng, ["blur"])


def test_save_load_keeps_the_tower(identity, tmp_path) -> None:
    rng = np.random.default_rng(3)
    queries = [transform(portrait(i, size=96), rng) for i in (0, 3, 400)]
    identity.save_pretrained(tmp_path)
    assert (tmp_path / "encoder" / "vision_tower" / "model.safetensors").is_file()
    loaded = ImageIdentityClassifier.from_pretrained(tmp_path)
    np.testing.assert_allclose(loaded.score(queries), identity.score(queries), atol=1e-4)


def test_errors() -> None:
    fake = CallableImageEncoder(lambda imgs: np.random.default_rng(0).normal(size=(len(imgs), 8)))
    with pytest.raises(NotFittedError):
        ImageIdentityClassifier(fake).score([portrait(0)])
    with pytest.raises(ValueError, match="no forget identity"):
        ImageIdentityClassifier(fake).fit([portrait(0), portrait(1)], [None, None])
    with pytest.raises(ValueError, match="2 images but 1"):
        ImageIdentityClassifier(fake).fit([portrait(0), portrait(1)], ["a"])
    with pytest.raises(TypeError, match="encoder"):
        ImageIdentityClassifier(None).fit([portrait(0)], ["a"])
    with pytest.raises(ValueError, match="query_views must be an integer in"):
        ImageIdentityClassifier(fake, query_views=0).fit([portrait(0), portrait(1)], ["a", None])
    model = ImageIdentityClassifier(fake, fpr=None, n_augment=1, metric="standardize")
    model.fit([portrait(i) for i in range(6)], ["a", None, None, None, None, None])
    with pytest.raises(TypeError, match="cannot be saved"):
        model.save_pretrained("/tmp/never-written")
    with pytest.raises(NotFittedError, match="not calibrated"):
        model.p_values([portrait(0)])


def test_learned_embedding_separates_transformed_photos_better_than_lda(
    tiny_llava, tmp_path, monkeypatch
) -> None:
    """The default ``mlp`` embedding is trained at fit time to tell people apart across random transforms; on
    transformed photos of the forget people vs strangers it ranks better than the linear ``lda`` projection, and
    the fit is seeded (same arrays twice) without touching torch's global random state. The tower's features are
    pooled on a 2 x 2 grid (a quarter of the default width): the fits train on one thread, and width is their
    cost."""
    import torch

    from classifiers.image_encoders import VisionTowerEncoder

    tower_encoder = VisionTowerEncoder.from_mllm(*tiny_llava, grid=2)

    images = [portrait(i, size=96) for i in range(60)]
    labels = [f"p{i}" if i < 10 else None for i in range(60)]
    rng = np.random.default_rng(5)
    queries = [transform(portrait(i, size=96), rng) for i in range(10) for _ in range(3)]
    strangers = [transform(portrait(i, size=96), rng) for i in range(600, 660)]
    auc, models = {}, {}
    for metric in ("mlp", "lda"):
        models[metric] = ImageIdentityClassifier(tower_encoder, fpr=None, n_augment=8, metric=metric).fit(
            images, labels
        )
        pos, neg = models[metric].score(queries), models[metric].score(strangers)
        auc[metric] = float((pos[:, None] > neg[None, :]).mean())
    assert auc["mlp"] >= 0.9 and auc["mlp"] > auc["lda"], auc
    # the default asks for more people than this fixture has
    monkeypatch.setattr(image_module, "MLP_MIN_OTHERS", 50)
    state = torch.random.get_rng_state()
    again = ImageIdentityClassifier(tower_encoder, fpr=None, n_augment=8).fit(images, labels)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again.metric == "auto" and again.metric_ == "mlp"  # 50 other people: enough to learn from
    # seeded: bit for bit the same arrays as the explicit "mlp" fit (one thread while training); another seed not
    other = ImageIdentityClassifier(tower_encoder, fpr=None, n_augment=8, random_state=1).fit(images, labels)
    for key, value in again.mlp_.items():
        assert np.array_equal(value, models["mlp"].mlp_[key]), key
        assert np.abs(other.mlp_[key] - value).max() > 1e-2, key
    again.save_pretrained(tmp_path)
    loaded = ImageIdentityClassifier.from_pretrained(tmp_path)
    assert loaded.metric_ == "mlp"
    np.testing.assert_allclose(loaded.score(queries[:5]), again.score(queries[:5]), atol=1e-5)
    few = ImageIdentityClassifier(tower_encoder, fpr=None, n_augment=2).fit(images[:30], labels[:30])
    assert few.metric_ == "lda" and few.mlp_ is None  # 20 others: too few for a learned embedding
    with pytest.raises(ValueError, match="metric must be one of"):
        ImageIdentityClassifier(tower_encoder, fpr=None, metric="cosine").fit(images[:2], ["p0", None])


def test_tower_features_are_its_layers_plus_a_pixel_thumbnail(tower_encoder, tmp_path) -> None:
    """The default encoder reads the patch embeddings, the penultimate and the last layer, and appends the image
    shrunk to a thumbnail; a saved spec keeps the thumbnail, and a spec written before it existed loads without."""
    from classifiers.image_encoders import THUMBNAIL, VisionTowerEncoder

    images = [portrait(i, size=96) for i in (0, 1)]
    features = tower_encoder.encode(images)
    side = tower_encoder.thumbnail
    assert side == THUMBNAIL > 0 and tower_encoder.layers == (0, -2, -1)
    pixels = np.asarray(images[1].convert("RGB").resize((side, side)), dtype=np.float32).reshape(-1) / 255.0
    np.testing.assert_allclose(features[1, -side * side * 3 :], pixels, atol=1e-6)
    plain = VisionTowerEncoder(tower_encoder.tower, tower_encoder.image_processor, thumbnail=0)
    np.testing.assert_allclose(plain.encode(images), features[:, : -side * side * 3], atol=1e-5)
    last = VisionTowerEncoder(
        tower_encoder.tower, tower_encoder.image_processor, layers=(-1,), thumbnail=0
    ).encode(images)
    pixel_width = side * side * 3
    np.testing.assert_allclose(last, features[:, -last.shape[1] - pixel_width : -pixel_width], atol=1e-5)

    spec = tower_encoder.save(tmp_path)
    assert VisionTowerEncoder.load(tmp_path, spec).thumbnail == side
    old = {k: v for k, v in spec.items() if k != "thumbnail"}
    np.testing.assert_allclose(
        VisionTowerEncoder.load(tmp_path, old).encode(images), plain.encode(images), atol=1e-5
    )
    with pytest.raises(ValueError, match="thumbnail must be >= 0"):
        VisionTowerEncoder(tower_encoder.tower, tower_encoder.image_processor, thumbnail=-1)
