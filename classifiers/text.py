"""The text classifier: a frozen sentence encoder plus a scikit-learn head, calibrated on held-out negatives."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError

from classifiers.calibration import ConformalCalibrator
from classifiers.encoders import SentenceEncoder, max_by_owner
from classifiers.heads import default_head, head_from_state, head_state
from classifiers.persistence import ClassifierFileError, load_arrays, read_meta, save_arrays, write_meta

logger = logging.getLogger(__name__)

PROBE_TEXTS = ("Where was the person in this profile born?", "What is the capital of France?")


class TextClassifier(ClassifierMixin, BaseEstimator):
    """Is a prompt about a forget target? Frozen encoder (default the real all-MiniLM-L6-v2) + head (default
    logistic regression; any scikit-learn classifier with ``predict_proba``).

    A prompt's score is the head's positive-class probability maximized over the prompt's windows, so a target
    named after 600 tokens of unrelated text still counts. ``fpr`` sets the decision: with it, ``fit`` holds out
    ``calibration_fraction`` of the negatives and :meth:`predict` flags at conformal p-value ``<= fpr`` (see
    :mod:`classifiers.calibration`; recalibrate on other negatives with :meth:`calibrate`). Without it, 0.5.
    """

    def __init__(
        self,
        encoder: str | SentenceEncoder = "minilm",
        head: Any = None,
        *,
        fpr: float | None = 0.01,
        calibration_fraction: float = 0.25,
        window: int = 128,
        overlap: int = 32,
        batch_size: int = 64,
        dtype: str = "auto",
        random_state: int = 0,
        layers: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.head = head
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.window = window
        self.overlap = overlap
        self.batch_size = batch_size
        self.dtype = dtype
        self.random_state = random_state
        self.layers = layers

    # ------------------------------------------------------------ fitting

    def fit(self, X: Sequence[str], y: Sequence[int] | np.ndarray) -> TextClassifier:
        """Fit the head on prompts ``X`` with labels ``y`` (1: about a forget target, 0: not)."""
        texts, labels = _check_xy(X, y)
        if self.fpr is not None and not 0 < self.fpr < 1:
            raise ValueError(f"fpr must lie in (0, 1) or be None, got {self.fpr!r}")
        self.encoder_ = self._make_encoder()
        rng = np.random.default_rng(self.random_state)
        held_out = np.zeros(len(texts), dtype=bool)
        if self.fpr is not None and self.calibration_fraction > 0:
            negatives = np.flatnonzero(labels == 0)
            n_cal = int(round(len(negatives) * self.calibration_fraction))
            if n_cal < 1 or n_cal == len(negatives):
                raise ValueError(
                    f"calibration_fraction {self.calibration_fraction} leaves no negatives to fit or calibrate"
                )
            held_out[rng.choice(negatives, size=n_cal, replace=False)] = True
        embeds, owner = self.encoder_.encode(texts)
        train_rows = ~held_out[owner]
        self.head_ = clone(self.head) if self.head is not None else default_head()
        self.head_.fit(embeds[train_rows], labels[owner][train_rows])
        if not hasattr(self.head_, "predict_proba"):
            raise TypeError(f"the head {type(self.head_).__name__} has no predict_proba")
        self.classes_ = np.array([0, 1])
        self.calibrator_ = None
        if held_out.any():
            scores = self._scores_from(embeds[~train_rows], owner[~train_rows], held_out)
            self.calibrator_ = ConformalCalibrator(scores)
        return self

    def calibrate(self, negatives: Sequence[str]) -> TextClassifier:
        """Calibrate the decision on held-out negative prompts (never the ones the head was fitted on)."""
        self._check_fitted()
        self.calibrator_ = ConformalCalibrator(self.score(negatives))
        return self

    # ------------------------------------------------------------ prediction

    def score(self, X: Sequence[str]) -> np.ndarray:
        """Positive-class probability per prompt, maximized over its windows."""
        self._check_fitted()
        out = []
        for _, embeds, owner in self.encoder_.iter_encode(X):
            out.append(max_by_owner(self._window_proba(embeds), owner, int(owner.max()) + 1))
        return np.concatenate(out)

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        p = self.score(X)
        return np.stack([1 - p, p], axis=1)

    def p_values(self, X: Sequence[str]) -> np.ndarray:
        """Conformal p-values against the calibration negatives (small: unlike any negative)."""
        self._check_fitted()
        if self.calibrator_ is None:
            raise NotFittedError(
                "this TextClassifier is not calibrated; fit with fpr set or call calibrate()"
            )
        return self.calibrator_.p_values(self.score(X))

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """1 for prompts flagged at the calibrated false-positive rate (0.5 probability when uncalibrated)."""
        if getattr(self, "calibrator_", None) is None or self.fpr is None:
            return (self.score(X) >= 0.5).astype(int)
        return (self.p_values(X) <= self.fpr).astype(int)

    def _window_proba(self, embeds: np.ndarray) -> np.ndarray:
        positive = list(self.head_.classes_).index(1)
        return self.head_.predict_proba(embeds)[:, positive]

    def _scores_from(self, embeds: np.ndarray, owner: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Scores of the texts selected by bool ``keep``, from their windows' embeddings."""
        index = np.cumsum(keep) - 1
        return max_by_owner(self._window_proba(embeds), index[owner], int(keep.sum()))

    def _make_encoder(self) -> SentenceEncoder:
        if isinstance(self.encoder, SentenceEncoder):
            return self.encoder
        return SentenceEncoder(
            self.encoder,
            window=self.window,
            overlap=self.overlap,
            batch_size=self.batch_size,
            dtype=self.dtype,
            layers=self.layers,
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError("this TextClassifier is not fitted yet; call fit(texts, labels) first")

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        """``classifier.json`` (encoder spec, head class and parameters) + ``head.safetensors`` (coefficients,
        calibration scores, probe outputs that loading must reproduce)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state, arrays = head_state(self.head_)
        probe = self.score(list(PROBE_TEXTS))
        arrays = {f"head.{k}": v for k, v in arrays.items()}
        arrays["probe_scores"] = probe
        if self.calibrator_ is not None:
            arrays["calibration_negatives"] = self.calibrator_.negatives_
        save_arrays(folder / "head.safetensors", arrays)
        config = {
            "encoder": self.encoder_.spec(),
            "head": state,
            "fpr": self.fpr,
            "calibration_fraction": self.calibration_fraction,
            "random_state": self.random_state,
        }
        return write_meta(folder, self, config).parent

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, encoder: SentenceEncoder | None = None) -> TextClassifier:
        folder = Path(folder)
        config = read_meta(folder, cls)
        arrays = load_arrays(folder / "head.safetensors")
        spec = config["encoder"]
        model = cls(
            spec["name_or_path"],
            None,
            fpr=config["fpr"],
            calibration_fraction=config["calibration_fraction"],
            window=spec["window"],
            overlap=spec["overlap"],
            batch_size=spec["batch_size"],
            dtype=spec["dtype"],
            random_state=config["random_state"],
            layers=spec.get("layers"),
        )
        model.encoder_ = encoder or model._make_encoder()
        head_arrays = {k.removeprefix("head."): v for k, v in arrays.items() if k.startswith("head.")}
        model.head_ = head_from_state(config["head"], head_arrays)
        model.classes_ = np.array([0, 1])
        negatives = arrays.get("calibration_negatives")
        model.calibrator_ = ConformalCalibrator(negatives) if negatives is not None else None
        probe = model.score(list(PROBE_TEXTS))
        if not np.allclose(probe, arrays["probe_scores"], atol=0.02):
            raise ClassifierFileError(
                f"{folder}: the encoder {spec['name_or_path']!r} does not reproduce the saved probe scores "
                f"({probe.round(3).tolist()} vs {arrays['probe_scores'].round(3).tolist()}); it is not the encoder "
                "this head was trained on"
            )
        return model


def _check_xy(X: Sequence[str], y: Sequence[int] | np.ndarray) -> tuple[list[str], np.ndarray]:
    if isinstance(X, str):
        raise TypeError("X must be a list of prompts, not a single string")
    texts = list(X)
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per prompt), got shape {labels.shape}")
    if len(texts) != labels.shape[0]:
        raise ValueError(f"X has {len(texts)} prompts but y has {labels.shape[0]} labels")
    if not set(np.unique(labels).tolist()) <= {0, 1}:
        raise ValueError(f"y must hold 0/1 labels, got values {sorted(set(np.unique(labels).tolist()))[:5]}")
    labels = labels.astype(int)
    if labels.min() == labels.max():
        raise ValueError("y needs both classes: forget-target prompts (1) and other prompts (0)")
    return texts, labels
