"""The text classifier: a frozen sentence encoder plus a scikit-learn head, calibrated on held-out negatives."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
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

    ``early_exit=k`` adds a second head on the encoder's first ``k`` layers: a window whose early probability is
    below ``exit_threshold_`` stops there and scores that probability; the others go on through the remaining
    layers and score the full head's probability. The threshold is ``exit_margin`` times the lowest
    cross-validated early probability of any training prompt about a forget target, so no training positive would
    have stopped, with room to spare. It is only trusted where it was measured: windows longer than the longest
    training positive (``exit_max_tokens_``; a question buried in filler is diluted in the mean) always run every
    layer. Most short unrelated traffic stops early (fast); every prompt that could be positive is scored by the
    full head, so decisions stay the full encoder's. Calibration uses the same cascaded score, so the conformal
    guarantee holds as it is.
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
        early_exit: int | None = None,
        exit_margin: float = 0.5,
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
        self.early_exit = early_exit
        self.exit_margin = exit_margin

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
        if self.early_exit is not None:
            if not 0 < self.exit_margin <= 1:
                raise ValueError(f"exit_margin must lie in (0, 1], got {self.exit_margin!r}")
            early, embeds, owner = self._every_stage(texts)
        else:
            embeds, owner = self.encoder_.encode(texts)
        train_rows = ~held_out[owner]
        self.head_ = self._new_head().fit(embeds[train_rows], labels[owner][train_rows])
        self.classes_ = np.array([0, 1])
        self.exit_head_, self.exit_threshold_, self.exit_max_tokens_ = None, None, None
        if self.early_exit is not None:
            self._fit_exit(early[train_rows], labels[owner][train_rows], owner[train_rows])
            # window lengths tokenize once more; at fit time only, never when scoring
            lengths = self.encoder_.window_lengths(texts)
            self.exit_max_tokens_ = int(lengths[train_rows & (labels[owner] == 1)].max())
        self.calibrator_ = None
        if held_out.any():
            proba = self._window_proba(embeds[~train_rows])
            if self.exit_head_ is not None:
                early_proba = self._proba(self.exit_head_, early[~train_rows])
                stop = ~self._keep(early_proba, lengths[~train_rows])
                proba = np.where(stop, early_proba, proba)
            index = np.cumsum(held_out) - 1
            self.calibrator_ = ConformalCalibrator(
                max_by_owner(proba, index[owner[~train_rows]], int(held_out.sum()))
            )
        return self

    def _new_head(self) -> Any:
        head = clone(self.head) if self.head is not None else default_head()
        if not hasattr(head, "predict_proba"):
            raise TypeError(f"the head {type(head).__name__} has no predict_proba")
        return head

    def _fit_exit(self, early: np.ndarray, labels: np.ndarray, owner: np.ndarray) -> None:
        """The early head and its threshold: ``exit_margin`` x the lowest cross-validated early score (max over
        its windows) of a training positive; 5-fold, stratified, shuffled."""
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        folds = min(5, int(np.bincount(labels).min()))
        if folds < 2:
            raise ValueError("early exit needs at least 2 windows of each class to cross-validate its head")
        cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        positive = list(np.unique(labels)).index(1)
        held = cross_val_predict(self._new_head(), early, labels, cv=cv, method="predict_proba")[:, positive]
        _, text_index = np.unique(owner, return_inverse=True)
        per_text = max_by_owner(held, text_index, int(text_index.max()) + 1)
        is_positive = max_by_owner(labels.astype(float), text_index, int(text_index.max()) + 1) > 0
        self.exit_head_ = self._new_head().fit(early, labels)
        self.exit_threshold_ = float(self.exit_margin * per_text[is_positive].min())

    def _keep(self, early_proba: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Which windows go past the exit: early probability at or above the threshold, or longer than any
        training positive."""
        return (early_proba >= self.exit_threshold_) | (lengths > self.exit_max_tokens_)

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
        if getattr(self, "exit_head_", None) is not None:
            for proba, _, owner in self._cascade(X):
                out.append(max_by_owner(proba, owner, int(owner.max()) + 1))
            return np.concatenate(out)
        for _, embeds, owner in self.encoder_.iter_encode(X):
            out.append(max_by_owner(self._window_proba(embeds), owner, int(owner.max()) + 1))
        return np.concatenate(out)

    def goes_past_exit(self, X: Sequence[str]) -> np.ndarray:
        """Per prompt: whether any of its windows runs every layer (all do without early exit); decided, and
        computed, exactly as :meth:`score` does."""
        self._check_fitted()
        if getattr(self, "exit_head_", None) is None:
            return np.ones(len(X), dtype=bool)
        out = [
            max_by_owner(went_on.astype(float), owner, int(owner.max()) + 1) > 0
            for _, went_on, owner in self._cascade(X)
        ]
        return np.concatenate(out)

    def _cascade(self, X: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """With early exit, chunk by chunk: ``(window scores, went past the exit, owner)``."""

        def keep(early: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            return self._keep(self._proba(self.exit_head_, early), lengths)

        for _, early, final, went_on, owner in self.encoder_.iter_encode_staged(X, self.early_exit, keep):
            proba = self._proba(self.exit_head_, early)
            if went_on.any():
                proba[went_on] = self._window_proba(final[went_on])
            yield proba, went_on, owner

    def _every_stage(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(early, final, owner)`` of every window, all of them run through every layer."""
        parts = list(self.encoder_.iter_encode_staged(texts, self.early_exit, _go_on))
        early = np.concatenate([p[1] for p in parts])
        final = np.concatenate([p[2] for p in parts])
        return early, final, np.concatenate([p[4] + p[0] for p in parts])

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
        return self._proba(self.head_, embeds)

    @staticmethod
    def _proba(head: Any, embeds: np.ndarray) -> np.ndarray:
        return head.predict_proba(embeds)[:, list(head.classes_).index(1)]

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

    def _probe_scores(self) -> np.ndarray:
        """The full head's probe scores, then (with early exit) the early head's: loading must reproduce both."""
        texts = list(PROBE_TEXTS)
        if getattr(self, "exit_head_", None) is None:
            return self.score(texts)
        early, final, _ = self._every_stage(texts)
        return np.concatenate([self._window_proba(final), self._proba(self.exit_head_, early)])

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
        probe = self._probe_scores()
        arrays = {f"head.{k}": v for k, v in arrays.items()}
        arrays["probe_scores"] = probe
        if self.calibrator_ is not None:
            arrays["calibration_negatives"] = self.calibrator_.negatives_
        config = {
            "encoder": self.encoder_.spec(),
            "head": state,
            "fpr": self.fpr,
            "calibration_fraction": self.calibration_fraction,
            "random_state": self.random_state,
        }
        if getattr(self, "exit_head_", None) is not None:
            exit_state, exit_arrays = head_state(self.exit_head_)
            arrays.update({f"exit_head.{k}": v for k, v in exit_arrays.items()})
            config["early_exit"] = {
                "layer": self.early_exit,
                "margin": self.exit_margin,
                "threshold": self.exit_threshold_,
                "max_tokens": self.exit_max_tokens_,
                "head": exit_state,
            }
        save_arrays(folder / "head.safetensors", arrays)
        return write_meta(folder, self, config).parent

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, encoder: SentenceEncoder | None = None) -> TextClassifier:
        folder = Path(folder)
        config = read_meta(folder, cls)
        arrays = load_arrays(folder / "head.safetensors")
        spec = config["encoder"]
        exit_spec = config.get("early_exit")  # absent in files saved before early exit existed
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
            early_exit=exit_spec["layer"] if exit_spec else None,
            exit_margin=exit_spec["margin"] if exit_spec else 0.5,
        )
        model.encoder_ = encoder or model._make_encoder()
        head_arrays = {k.removeprefix("head."): v for k, v in arrays.items() if k.startswith("head.")}
        model.head_ = head_from_state(config["head"], head_arrays)
        model.exit_head_, model.exit_threshold_, model.exit_max_tokens_ = None, None, None
        if exit_spec:
            model.exit_max_tokens_ = int(exit_spec["max_tokens"])
            exit_arrays = {
                k.removeprefix("exit_head."): v for k, v in arrays.items() if k.startswith("exit_head.")
            }
            model.exit_head_ = head_from_state(exit_spec["head"], exit_arrays)
            model.exit_threshold_ = float(exit_spec["threshold"])
        model.classes_ = np.array([0, 1])
        negatives = arrays.get("calibration_negatives")
        model.calibrator_ = ConformalCalibrator(negatives) if negatives is not None else None
        probe = model._probe_scores()
        if probe.shape != arrays["probe_scores"].shape or not np.allclose(
            probe, arrays["probe_scores"], atol=0.02
        ):
            raise ClassifierFileError(
                f"{folder}: the encoder {spec['name_or_path']!r} does not reproduce the saved probe scores "
                f"({probe.round(3).tolist()} vs {arrays['probe_scores'].round(3).tolist()}); it is not the encoder "
                "this head was trained on"
            )
        return model


def _go_on(early: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.ones(len(early), dtype=bool)


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
