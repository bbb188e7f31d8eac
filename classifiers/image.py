"""Image identity classifier: is the pictured person one of the forget set?

A request about a forget-set profile in MLLMU-Bench usually names nobody ("this person"): the picture carries the
identity. Each image is embedded by a frozen image encoder (default: the guarded MLLM's own vision tower, its
patch tokens pooled; or an identity encoder trained from pixels, :mod:`classifiers.pixels`, which a small tower
needs), projected by a metric fitted on the training images, and scored by its best cosine
similarity to any reference of any forget identity. References are each forget image plus transformed copies
(test-time augmentation), so crops, rotations, colour jitter, flips, resizing and JPEG still land near them.

The metric (``METRICS``): ``"mlp"`` learns an embedding that tells every known person apart across random
transforms; ``"lda"`` is shrinkage linear discriminant analysis over identities, each seen through transformed
copies: it keeps the directions that tell people apart and drops those that transforms move (a frozen, even
randomly initialized, tower mixes both), solved in the span of the data (:mod:`classifiers.discriminant`), so a
wide tower costs no p x p matrix. ``"standardize"`` only centres and scales the features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from classifiers.augment import transform
from classifiers.calibration import ConformalCalibrator
from classifiers.image_encoders import ImageEncoder, VisionTowerEncoder
from classifiers.persistence import ClassifierFileError, load_arrays, read_meta, save_arrays, write_meta

logger = logging.getLogger(__name__)


def _centre_crop(image: Any, keep: float = 0.88) -> Any:
    w, h = image.size
    dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return image.crop((dx, dy, w - dx, h - dy)).resize((w, h))


QUERY_VIEWS: tuple[Callable[[Any], Any], ...] = (
    lambda image: image,
    ImageOps.mirror,
    _centre_crop,
    lambda image: ImageOps.mirror(_centre_crop(image)),
)


METRICS = ("auto", "mlp", "lda", "standardize")
"""How encoder outputs become identity embeddings: ``mlp`` a small network trained at fit time to tell every known
person apart across random transforms (:mod:`classifiers.invariant`), ``lda`` a linear discriminant of the same
groups, ``standardize`` per-feature z-scores; ``auto`` is ``standardize`` for an encoder whose outputs already are an
identity embedding (``identity_embedding = True``, as :class:`classifiers.pixels.PixelEncoder`), else ``mlp`` from
``MLP_MIN_OTHERS`` other people on, else ``lda``. A metric fitted on top of an identity encoder learns the fit
people and flags look-alikes among new ones, hence ``standardize`` for such an encoder (measured in
docs/classifier.md)."""
AUGMENTATIONS = {"mlp": 128, "lda": 64, "standardize": 48}
"""Transformed copies per forget image when ``n_augment`` is None (other people's images get half as many for
``lda``, and at most ``STANDARDIZE_COPIES`` for ``standardize``, where they only fix each feature's mean and
scale). Every metric gains from more: a Test_Set view finds a closer reference of its own person, and a
look-alike gains little; each copy costs fitting time (what the counts change: docs/classifier.md; for the
portrait encoder, ``python -m benchmarks.mllmu.identity_splits``)."""
STANDARDIZE_COPIES = 8
FLOOR_VIEWS = 32
FLOOR_QUANTILE = 0.005
FLOOR_SPREAD = 4.0
"""With an encoder whose outputs already are an identity embedding, a score for a forget identity below its floor
never flags (``floor_quantile="auto"``). The floor is the 0.5% quantile of fresh transformed views of all forget
images, each scored against its own identity, raised for an identity whose own views sit tighter: to their mean
minus ``FLOOR_SPREAD`` standard deviations, when higher. The conformal threshold comes from a few hundred
calibration people, and a few look-alikes among other new people sit above it; such an encoder leaves a wide gap
below the forget people's own views, and the floor spends it. The floors are part of the score the calibration
sees, so the conformal guarantee covers them as any other score. A floor shared by all forget people follows the
hardest one down, below the look-alikes of a person whose own views sit tight, hence one per identity; a narrower
spread cuts into Test_Set views, which trail further below than fresh views (measured in docs/classifier.md)."""
MLP_MIN_OTHERS = 150
"""A learned embedding needs many people to generalize: with a few hundred others it misses fewer transformed
forget photos than LDA, with about a hundred or fewer it flags more of other people's photos (measured on synthetic
MLLMU with the demo tower: docs/classifier.md). 150 lies between the measured points."""


def identity_floors(own: np.ndarray, owner: np.ndarray, n_identities: int, quantile: float) -> np.ndarray:
    """Per identity ``j < n_identities``: the ``quantile`` quantile of ``own`` (each view's similarity to its own
    identity, ``owner``), or the mean of identity ``j``'s own views less ``FLOOR_SPREAD`` standard deviations
    where that is higher (``FLOOR_SPREAD`` says why)."""
    shared = np.quantile(own, quantile)
    spread = [own[owner == j].mean() - FLOOR_SPREAD * own[owner == j].std() for j in range(n_identities)]
    return np.maximum(shared, spread).astype(np.float32)


class ImageIdentityClassifier(BaseEstimator):
    """Flags images of forget-set identities; ``fit(images, identities)``, ``score``, ``predict``.

    ``identities[i]`` names the forget identity shown in ``images[i]``, or is ``None``/``""`` for anyone else; the
    others fix the standardization and, when ``fpr`` is set, a held-out ``calibration_fraction`` of them (each
    transformed ``n_augment`` times) calibrates the decision conformally (:mod:`classifiers.calibration`).

    ``metric`` (see ``METRICS``; the one used is ``metric_``): by default ``auto``, which with enough other people
    trains an embedding at fit time to tell every known person apart across random transforms, and with fewer fits
    LDA. Its error rates on synthetic MLLMU: docs/results.md and docs/classifier.md.

    ``query_views`` (1 to 4): a scored image is embedded as the mean of that many fixed views of it (itself,
    mirrored, a 88% centre crop, that crop mirrored), to steady the embedding of a cropped or recoloured photo. Every
    score goes through the same views (references are the plain images and their augmentations), so calibration
    stays exchangeable; it costs ``query_views`` encoder passes per image. Off by default: on synthetic MLLMU, 4
    views cut the misses on Test_Set-style images in a stand-alone check but not in the full pipeline of
    ``classifiers.training`` (docs/classifier.md).

    ``floor_quantile`` (``"auto"``: ``FLOOR_QUANTILE`` for an identity-embedding encoder, else none): a score for a
    forget identity below its floor (``floor_``, one per identity: that quantile of fresh transformed views of the
    forget images, raised for identities whose own views sit tighter, see ``FLOOR_SPREAD``) never flags.
    """

    def __init__(
        self,
        encoder: ImageEncoder | None = None,
        *,
        fpr: float | None = 0.01,
        metric: str = "auto",
        n_augment: int | None = None,
        calibration_fraction: float = 0.3,
        random_state: int = 0,
        query_views: int = 1,
        floor_quantile: float | str | None = "auto",
    ) -> None:
        self.encoder = encoder
        self.query_views = query_views
        self.fpr = fpr
        self.metric = metric
        self.n_augment = n_augment
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.floor_quantile = floor_quantile

    def fit(self, images: Sequence[Any], identities: Sequence[str | None]) -> ImageIdentityClassifier:
        if self.encoder is None or not isinstance(self.encoder, ImageEncoder):
            raise TypeError("ImageIdentityClassifier needs an image encoder with encode(images) -> array")
        if not isinstance(self.query_views, int) or not 1 <= self.query_views <= len(QUERY_VIEWS):
            raise ValueError(
                f"query_views must be an integer in [1, {len(QUERY_VIEWS)}], got {self.query_views!r}"
            )
        images, labels = list(images), [i or "" for i in identities]
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} identities")
        forget = sorted({i for i in labels if i})
        if not forget:
            raise ValueError("no forget identity among the labels: nothing to recognize")
        others = [k for k, i in enumerate(labels) if not i]
        if not others:
            raise ValueError("no images of other people: the decision cannot be calibrated or standardized")
        rng = np.random.default_rng(self.random_state)
        held = set()
        if self.fpr is not None:
            n_cal = int(round(len(others) * self.calibration_fraction))
            if n_cal < 1 or n_cal == len(others):
                raise ValueError(
                    f"calibration_fraction {self.calibration_fraction} leaves no images to calibrate on"
                )
            held = set(rng.choice(others, size=n_cal, replace=False).tolist())
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        base = [k for k in others if k not in held]
        self.metric_ = self.metric
        identity_encoder = bool(getattr(self.encoder, "identity_embedding", False))
        if self.metric == "auto":
            if identity_encoder:
                self.metric_ = "standardize"
            else:
                self.metric_ = "mlp" if len(base) >= MLP_MIN_OTHERS else "lda"
        n_augment = self.n_augment or AUGMENTATIONS[self.metric_]
        self.encoder_ = self.encoder
        refs, ref_ids = [], []
        for k, identity in enumerate(labels):
            if identity:
                refs += [images[k]] + [transform(images[k], rng) for _ in range(n_augment)]
                ref_ids += [identity] * (n_augment + 1)
        raw_refs = self._raw(refs)
        copies = n_augment if self.metric_ == "mlp" else max(1, n_augment // 2)
        if self.metric_ == "standardize":
            copies = min(copies, STANDARDIZE_COPIES)
        raw_base = self._raw(
            [img for k in base for img in [images[k], *(transform(images[k], rng) for _ in range(copies))]]
        )
        features = np.concatenate([raw_refs, raw_base])
        self.mean_ = features.mean(0)
        scale = features.std(0) + 1e-6
        groups = np.concatenate(
            [np.array([f"forget:{i}" for i in ref_ids]), np.repeat([f"other:{k}" for k in base], copies + 1)]
        )
        self.projection_ = (1.0 / scale).astype(np.float32)  # per-feature scale; a matrix for lda
        self.mlp_ = None
        if self.metric_ == "lda":
            from classifiers.discriminant import shrinkage_lda

            # scale-free: shrinkage_lda puts every feature on its own within-class spread first
            self.projection_ = shrinkage_lda(features, groups)
        elif self.metric_ == "mlp":
            from classifiers.invariant import fit_invariant_mlp

            classes = np.unique(groups, return_inverse=True)[1]
            self.mlp_ = fit_invariant_mlp(
                (features - self.mean_) * self.projection_, classes, seed=self.random_state
            )
        self.references_ = self._normalize(raw_refs)
        self.identities_ = np.array(forget)
        self.reference_owner_ = np.array([forget.index(i) for i in ref_ids])
        floor_quantile = self.floor_quantile
        if floor_quantile == "auto":
            floor_quantile = FLOOR_QUANTILE if identity_encoder else None
        self.floor_ = self._floor(
            [images[k] for k, i in enumerate(labels) if i], [i for i in labels if i], floor_quantile, rng
        )
        self.calibrator_ = None
        if held:
            cal = [transform(images[k], rng) for k in sorted(held) for _ in range(max(1, n_augment // 4))]
            self.calibrator_ = ConformalCalibrator(self.score(cal))
        return self

    def calibrate(self, negative_images: Sequence[Any]) -> ImageIdentityClassifier:
        """Calibrate on held-out images of other people (ideally transformed like the traffic to expect)."""
        self.calibrator_ = ConformalCalibrator(self.score(negative_images))
        return self

    def similarities(self, images: Sequence[Any]) -> np.ndarray:
        """``[N, n_identities]``: best cosine similarity of each image to each forget identity's references."""
        self._check_fitted()
        if not len(images):
            raise ValueError("no images to score")
        sims = self._embed_queries(images) @ self.references_.T
        out = np.full((sims.shape[0], len(self.identities_)), -1.0)
        for j in range(len(self.identities_)):
            out[:, j] = sims[:, self.reference_owner_ == j].max(1)
        return out

    def score(self, images: Sequence[Any]) -> np.ndarray:
        """Best similarity to any forget identity at or above that identity's floor (if there is one); -1 (never
        flagged) when none is."""
        sims = self.similarities(images)
        floor = getattr(self, "floor_", None)
        if floor is not None:
            sims = np.where(sims >= np.asarray(floor)[None, :], sims, -1.0)
        return sims.max(1)

    def _floor(
        self, images: Sequence[Any], owners: Sequence[str], quantile: float | None, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Per forget identity: the ``quantile`` quantile of fresh transformed views of all forget images, each
        scored against its own identity (``FLOOR_VIEWS`` per image), or the mean of the identity's own views less
        ``FLOOR_SPREAD`` standard deviations where that is higher; None when ``quantile`` is."""
        if quantile is None:
            return None
        if isinstance(quantile, str) or not 0 <= quantile < 1:
            raise ValueError(f"floor_quantile must be 'auto', None or in [0, 1), got {quantile!r}")
        views = [transform(img, rng) for img in images for _ in range(FLOOR_VIEWS)]
        owner = np.repeat([list(self.identities_).index(i) for i in owners], FLOOR_VIEWS)
        own = self.similarities(views)[np.arange(len(views)), owner]
        return identity_floors(own, owner, len(self.identities_), quantile)

    def identify(self, images: Sequence[Any]) -> list[str]:
        """The most similar forget identity per image (whether or not it is flagged)."""
        return [str(self.identities_[j]) for j in self.similarities(images).argmax(1)]

    def p_values(self, images: Sequence[Any]) -> np.ndarray:
        if getattr(self, "calibrator_", None) is None:
            raise NotFittedError(
                "this ImageIdentityClassifier is not calibrated; fit with fpr set or call calibrate()"
            )
        return self.calibrator_.p_values(self.score(images))

    def predict(self, images: Sequence[Any]) -> np.ndarray:
        if self.fpr is None:
            raise ValueError("predict needs fpr; use score() or p_values() for an uncalibrated classifier")
        return (self.p_values(images) <= self.fpr).astype(int)

    def _raw(self, images: Sequence[Any]) -> np.ndarray:
        raw = np.asarray(self.encoder_.encode(images), dtype=np.float32)
        if raw.ndim != 2 or raw.shape[0] != len(images):
            raise ValueError(f"the image encoder returned shape {raw.shape} for {len(images)} images")
        return raw

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        centred = raw - self.mean_
        # a vector scales each feature (standardize, mlp); a matrix projects (lda; older files store a diagonal)
        z = centred * self.projection_ if self.projection_.ndim == 1 else centred @ self.projection_
        if self.mlp_ is not None:
            from classifiers.invariant import apply_mlp

            z = apply_mlp(z, self.mlp_)
        return (z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    def _embed(self, images: Sequence[Any]) -> np.ndarray:
        return self._normalize(self._raw(images))

    def _embed_queries(self, images: Sequence[Any]) -> np.ndarray:
        """Unit embeddings of scored images: the mean over their ``query_views`` fixed views."""
        n = self.query_views
        if n <= 1:
            return self._embed(images)
        views = [view(image.convert("RGB")) for image in images for view in QUERY_VIEWS[:n]]
        mean = self._embed(views).reshape(len(images), n, -1).mean(1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "references_"):
            raise NotFittedError(
                "this ImageIdentityClassifier is not fitted yet; call fit(images, identities) first"
            )

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not hasattr(self.encoder_, "save"):
            raise TypeError(
                f"{type(self.encoder_).__name__} cannot be saved; use a VisionTowerEncoder or a PixelEncoder"
            )
        spec = self.encoder_.save(folder / "encoder")
        arrays = {
            "mean": self.mean_,
            "projection": self.projection_,
            "references": self.references_,
            "reference_owner": self.reference_owner_,
        }
        if self.calibrator_ is not None:
            arrays["calibration_negatives"] = self.calibrator_.negatives_
        if self.mlp_ is not None:
            arrays.update(self.mlp_)
        if self.floor_ is not None:
            arrays["floor"] = self.floor_
        save_arrays(folder / "references.safetensors", arrays)
        config = {
            "encoder": spec,
            "identities": self.identities_.tolist(),
            "fpr": self.fpr,
            "metric": self.metric,
            "metric_used": self.metric_,
            "n_augment": self.n_augment,
            "calibration_fraction": self.calibration_fraction,
            "random_state": self.random_state,
            "query_views": self.query_views,
            "floor_quantile": self.floor_quantile,
        }
        return write_meta(folder, self, config).parent

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, encoder: ImageEncoder | None = None
    ) -> ImageIdentityClassifier:
        folder = Path(folder)
        config = read_meta(folder, cls)
        arrays = load_arrays(folder / "references.safetensors")
        if encoder is None:
            kind = config["encoder"].get("kind")
            if kind == "pixel_cnn":
                from classifiers.pixels import PixelEncoder

                encoder = PixelEncoder.load(folder / "encoder", config["encoder"])
            elif kind == "vision_tower":
                encoder = VisionTowerEncoder.load(folder / "encoder", config["encoder"])
            else:
                raise ClassifierFileError(f"{folder}: unknown image encoder {config['encoder']!r}")
        model = cls(
            encoder,
            fpr=config["fpr"],
            metric=config["metric"],
            n_augment=config["n_augment"],
            calibration_fraction=config["calibration_fraction"],
            random_state=config["random_state"],
            query_views=config.get("query_views", 1),
            floor_quantile=config.get("floor_quantile"),
        )
        model.encoder_ = encoder
        model.mean_, model.projection_ = arrays["mean"], arrays["projection"]
        model.references_, model.reference_owner_ = arrays["references"], arrays["reference_owner"]
        model.identities_ = np.array(config["identities"])
        model.mlp_ = None
        model.metric_ = config.get("metric_used", config["metric"])  # files from before "auto" name it once
        if model.metric_ == "mlp":
            from classifiers.invariant import MLP_KEYS

            missing = [k for k in MLP_KEYS if k not in arrays]
            if missing:
                raise ClassifierFileError(f"{folder}: metric 'mlp' but the arrays {missing} are missing")
            model.mlp_ = {k: arrays[k] for k in MLP_KEYS}
        negatives = arrays.get("calibration_negatives")
        model.calibrator_ = ConformalCalibrator(negatives) if negatives is not None else None
        model.floor_ = arrays.get("floor")
        if model.floor_ is None and config.get("floor") is not None:  # files from before floors per identity
            model.floor_ = np.full(len(model.identities_), config["floor"], dtype=np.float32)
        if model.floor_ is not None and model.floor_.shape != model.identities_.shape:
            raise ClassifierFileError(
                f"{folder}: {model.floor_.size} floors for {len(model.identities_)} identities"
            )
        return model
