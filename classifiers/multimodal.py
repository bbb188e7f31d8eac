"""The classifier the guard calls: text, names and image combined, conformally calibrated per modality.

Per request, each detector gives a raw score: ``text`` (the text classifier's probability, except that a
forget-target name found by the span detector outranks any probability: ``1 + match score``) and, for requests with
an image, ``image`` (best similarity to a forget identity). Each raw score becomes a conformal p-value against
held-out negative requests of the same modality (text-only or image+text); with ``k`` detectors in that modality
the request's score is ``1 - min(1, k * min p)`` and it is flagged when ``score >= 1 - fpr``.

The text detector never fires below probability ``text_floor`` (default 0.5, the head's own boundary): when all
calibration negatives score near 0, their 1% quantile is a tiny number that any shift in prompt format (few-shot
turns, option lists) crosses. Requiring both conditions can only lower the false-positive rate.

The head alone (no forget name found in the text) gets ``text_head_share`` of the text detector's rate: its p-value
is divided by the share. A name match outranks every probability, so it needs none of the rate unless calibration
negatives match names too; the head, a linear read of a sentence embedding, is where text false alarms come from.
On 500 synthetic profiles the span detector found the name in every held-out and attacked forget prompt, while the
head caused every text false alarm (0.8-1.6% of held-out people's questions at the full rate); at a quarter of the
rate it stays a backstop for an obfuscation the span detector would miss. Dividing a p-value by a share <= 1 only
makes it larger, so the guarantee below holds as it is.

Guarantee (see :mod:`classifiers.calibration`): if the calibration negatives of a modality and a future negative
request of that modality are exchangeable, the request is flagged with probability at most ``fpr``. Since the
score is ``1 -`` a valid p-value, ``GuardConfig.threshold = 1 - a`` later picks any other rate ``a`` without
refitting. The false-negative rate is measured, not promised (``classifier_report.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError
from tqdm.auto import tqdm

from classifiers.calibration import ConformalCalibrator, min_negatives
from classifiers.image import ImageEncoder, ImageIdentityClassifier
from classifiers.persistence import load_arrays, read_meta, save_arrays, write_meta
from classifiers.terms import TermDetector
from classifiers.text import TextClassifier
from eco_guard.requests import Flag, PromptLike, Request, to_request

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
TEXT_HEAD_SHARE = 0.25
"""The share of the text detector's false-positive rate the head gets when no forget name is found (see above)."""


class MultimodalClassifier:
    """``flag(requests) -> list[Flag]`` from a fitted TextClassifier, TermDetector and (optionally)
    ImageIdentityClassifier; :meth:`calibrate` on held-out negative requests before use."""

    def __init__(
        self,
        text: TextClassifier,
        terms: TermDetector | None = None,
        image: ImageIdentityClassifier | None = None,
        *,
        fpr: float = 0.01,
        batch_size: int = 256,
        text_floor: float = 0.5,
        text_head_share: float = TEXT_HEAD_SHARE,
    ) -> None:
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}")
        if not 0 < text_head_share <= 1:
            raise ValueError(f"text_head_share must lie in (0, 1], got {text_head_share!r}")
        self.text_floor = float(text_floor)
        self.text_head_share = float(text_head_share)
        self.text, self.terms, self.image = text, terms, image
        self.fpr = fpr
        self.batch_size = batch_size
        self.calibrators_: dict[str, dict[str, ConformalCalibrator]] = {}

    def detectors(self, modality: str) -> tuple[str, ...]:
        return ("text", "image") if modality == "image" and self.image is not None else ("text",)

    # ------------------------------------------------------------ scoring

    def raw_scores(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        """Raw detector scores (``image`` is NaN for requests without one)."""
        return self._raw_and_terms(requests)[0]

    def _raw_and_terms(
        self, requests: Sequence[Request]
    ) -> tuple[dict[str, np.ndarray], list[tuple[str, ...]]]:
        """Raw detector scores and the forget-target names found in each request (one name search per text)."""
        texts = [r.classifier_text for r in requests]
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"request {i} has no text")
        text_scores = self.text.score(texts)
        terms: list[tuple[str, ...]] = [()] * len(texts)
        if self.terms is not None:
            names, terms = self.terms.score_and_terms(texts)
            text_scores = np.where(names > 0, 1.0 + names, text_scores)
        image_scores = np.full(len(requests), np.nan)
        rows = [i for i, r in enumerate(requests) if r.image is not None]
        if rows:
            if self.image is None:
                raise ValueError("a request has an image but this classifier has no image detector")
            images = []
            for i in rows:
                try:
                    images.append(requests[i].load_image())
                except (OSError, ValueError) as err:
                    raise type(err)(f"request {i}: {err}") from None
            image_scores[rows] = self.image.score(images)
        return {"text": text_scores, "image": image_scores}, terms

    def calibrate(self, negatives: Sequence[PromptLike]) -> MultimodalClassifier:
        """Fit the per-modality calibrators on held-out negative requests (none about a forget target, none used
        to fit the detectors), drawn like the traffic the guard will see."""
        requests = [to_request(r) for r in negatives]
        raw = self._raw_in_batches(requests, "calibrating")
        modality = np.array([_modality(r) for r in requests])
        self.calibrators_ = {}
        for m in MODALITIES:
            rows = modality == m
            if not rows.any():
                continue
            k = len(self.detectors(m))
            if rows.sum() < min_negatives(self.fpr, k):
                logger.warning(
                    "%s: %d calibration negatives; at least %d are needed to flag anything at fpr=%g",
                    m,
                    int(rows.sum()),
                    min_negatives(self.fpr, k),
                    self.fpr,
                )
            self.calibrators_[m] = {d: ConformalCalibrator(raw[d][rows]) for d in self.detectors(m)}
        return self

    def scores(self, requests: Sequence[PromptLike]) -> tuple[np.ndarray, list[str]]:
        """``(score, firing detector)`` per request: score is one minus the Bonferroni-adjusted p-value."""
        return self._scores_and_terms(requests)[:2]

    def _scores_and_terms(
        self, requests: Sequence[PromptLike]
    ) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
        if not self.calibrators_:
            raise NotFittedError(
                "this MultimodalClassifier is not calibrated; call calibrate(negative_requests)"
            )
        requests = [to_request(r) for r in requests]
        raw, terms = self._raw_and_terms(requests)
        out, sources = np.zeros(len(requests)), []
        for i, request in enumerate(requests):
            m = _modality(request)
            if m not in self.calibrators_:
                raise NotFittedError(
                    f"no calibration for {m} requests; calibrate on negatives of that modality too"
                )
            p = {d: float(c.p_values([raw[d][i]])[0]) for d, c in self.calibrators_[m].items()}
            if "text" in p:
                p["text"] = self._text_p(raw["text"][i], p["text"])
            best = min(p, key=p.get)
            out[i] = 1.0 - min(1.0, len(p) * p[best])
            sources.append(best)
        return out, sources, terms

    def _text_p(self, raw: float, p: float) -> float:
        """The text detector's p-value after the floor and the head's share (raw <= 1: no name was found)."""
        if raw < self.text_floor:
            return 1.0
        return p if raw > 1.0 else min(1.0, p / self.text_head_share)

    def flag(self, requests: Sequence[Request]) -> list[Flag]:
        """One Flag per request: flagged at the calibrated rate, score, which detector fired, name terms."""
        if isinstance(requests, (str, Request, Mapping)):
            raise TypeError("flag takes a list of requests; wrap a single request in [ ]")
        flags: list[Flag] = []
        for lo in range(0, len(requests), self.batch_size):
            chunk = [to_request(r) for r in requests[lo : lo + self.batch_size]]
            scores, sources, terms = self._scores_and_terms(chunk)
            for score, source, names in zip(scores, sources, terms, strict=True):
                flagged = bool(score >= 1.0 - self.fpr - 1e-12)
                flags.append(Flag(flagged, float(score), source if flagged else "", names))
        return flags

    def predict(self, requests: Sequence[PromptLike]) -> np.ndarray:
        return np.array([f.flagged for f in self.flag(requests)], dtype=int)

    def _raw_in_batches(self, requests: list[Request], desc: str) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {"text": [], "image": []}
        for lo in tqdm(range(0, len(requests), self.batch_size), desc=desc, leave=False):
            raw = self.raw_scores(requests[lo : lo + self.batch_size])
            for d in parts:
                parts[d].append(raw[d])
        return {d: np.concatenate(v) for d, v in parts.items()}

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        if not self.calibrators_:
            raise NotFittedError("calibrate the classifier before saving it")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.text.save_pretrained(folder / "text")
        if self.terms is not None:
            self.terms.save_pretrained(folder / "terms")
        if self.image is not None:
            self.image.save_pretrained(folder / "image")
        save_arrays(
            folder / "calibration.safetensors",
            {f"{m}.{d}": c.negatives_ for m, cs in self.calibrators_.items() for d, c in cs.items()},
        )
        config = {
            "fpr": self.fpr,
            "batch_size": self.batch_size,
            "text_floor": self.text_floor,
            "text_head_share": self.text_head_share,
            "terms": self.terms is not None,
            "image": self.image is not None,
            "calibrated": {m: sorted(cs) for m, cs in self.calibrators_.items()},
        }
        return write_meta(folder, self, config).parent

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, image_encoder: ImageEncoder | None = None
    ) -> MultimodalClassifier:
        """Load a saved classifier (checksums verified); ``image_encoder`` replaces an unsaveable one."""
        folder = Path(folder)
        config = read_meta(folder, cls)
        text = TextClassifier.from_pretrained(folder / "text")
        terms = TermDetector.from_pretrained(folder / "terms") if config["terms"] else None
        image = (
            ImageIdentityClassifier.from_pretrained(folder / "image", encoder=image_encoder)
            if config["image"]
            else None
        )
        # files written before the head had its own share gave it the whole rate
        model = cls(text, terms, image, fpr=config["fpr"], batch_size=config["batch_size"],
                    text_floor=config.get("text_floor", 0.5),
                    text_head_share=config.get("text_head_share", 1.0))  # fmt: skip
        arrays = load_arrays(folder / "calibration.safetensors")
        model.calibrators_ = {
            m: {d: ConformalCalibrator(arrays[f"{m}.{d}"]) for d in detectors}
            for m, detectors in config["calibrated"].items()
        }
        return model

    def describe(self) -> dict[str, Any]:
        """Per modality and detector: calibration negatives and the raw score above which it fires (for the text
        detector, ``head_threshold`` is the head's, when no name is found)."""
        out: dict[str, Any] = {}
        for m, cs in self.calibrators_.items():
            out[m] = {
                d: {"negatives": c.n, "threshold": c.threshold(self.fpr / len(cs))} for d, c in cs.items()
            }
            if "text" in cs:
                head = cs["text"].threshold(self.text_head_share * self.fpr / len(cs))
                out[m]["text"]["head_threshold"] = max(head, self.text_floor)
        return out


def _modality(request: Request) -> str:
    return "image" if request.image is not None else "text"
