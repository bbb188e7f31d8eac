"""The classifier the guard calls: text, names and image combined, conformally calibrated per modality.

Per request, each detector gives a raw score: ``text`` (the text classifier's probability, except that a
forget-target name found by the span detector outranks any probability: ``1 + match score``) and, for requests with
an image, ``image`` (best similarity to a forget identity). Each raw score becomes a conformal p-value against
held-out negative requests of the same modality (text-only or image+text). A modality with one detector scores
``1 - p``. With two (image+text), ``combine`` says how the p-values share the rate:

- ``bonferroni`` (default): score ``1 - min(1, k * min p)`` over the ``k`` detectors, all negatives for each.
- ``split`` (given ``split_negatives(fpr)`` negatives; else Bonferroni): the modality's negatives are split in two;
  the first half calibrates each detector, the second calibrates the smallest p-value itself, so the request's
  score is ``1 - p'`` with ``p'`` the conformal p-value of ``min p`` among the second half's. The image detector
  can thereby get the whole rate when the text one is quiet on pictures, where a union bound gives each half. Not
  the default: the calibration negatives are many views of a few people, so the rate the second half grants
  follows a few look-alikes. On synthetic MLLMU it granted the image detector more than the whole target rate and
  flagged more held-out people's photos than Bonferroni on the same detectors (docs/classifier.md).

A request is flagged when ``score >= 1 - fpr``.

The text detector never fires below probability ``text_floor`` (default 0.5, the head's own boundary): when all
calibration negatives score near 0, their 1% quantile is a tiny number that any shift in prompt format (few-shot
turns, option lists) crosses. Requiring both conditions can only lower the false-positive rate.

The head alone (no forget name found in the text) gets ``text_head_share`` of the text detector's rate: its p-value
is divided by the share. A name match outranks every probability, so it needs none of the rate unless calibration
negatives match names too; the head, a linear read of a sentence embedding, is where text false alarms come from.
On synthetic MLLMU the span detector found the name in every held-out and attacked forget prompt, while the head
caused every text false alarm (docs/classifier.md); at a quarter of the rate it stays a backstop for an obfuscation
the span detector would miss. Dividing a p-value by a share <= 1 only makes it larger, so the guarantee below holds
as it is.

Guarantee (see :mod:`classifiers.calibration`): if the calibration negatives of a modality and a future negative
request of that modality are exchangeable, the request is flagged with probability at most ``fpr``. For ``split``
this is split conformal: given the first half, ``min p`` is a fixed function of the request, and the second half
and the request are exchangeable. Since the score is ``1 -`` a valid p-value, ``GuardConfig.threshold = 1 - a``
later picks any other rate ``a`` without refitting. The false-negative rate is measured, not promised
(``classifier_report.json``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError
from tqdm.auto import tqdm

from classifiers import COMBINES
from classifiers.calibration import ConformalCalibrator, min_negatives
from classifiers.image import ImageIdentityClassifier
from classifiers.image_encoders import ImageEncoder
from classifiers.persistence import load_arrays, read_meta, save_arrays, write_meta
from classifiers.terms import TermDetector
from classifiers.text import TextClassifier
from eco_guard.requests import Flag, PromptLike, Request, to_request

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
TEXT_HEAD_SHARE = 0.25
"""The share of the text detector's false-positive rate the head gets when no forget name is found (see above)."""
SPLIT_PER_RATE = 4
"""Each half of a split modality holds at least ``SPLIT_PER_RATE / fpr`` negatives. The first half must resolve
p-values well below ``fpr``: a request above all of its negatives gets its smallest p-value, which about
``n2 / (n1 + 1)`` second-half negatives share; with ``n1 = n2 = 4 / fpr`` that is one, against the ``4`` the second
half may flag. With fewer negatives the modality falls back to ``bonferroni``."""


def split_negatives(fpr: float) -> int:
    """Negatives a ``split`` modality needs (both halves); below it, ``bonferroni`` is used."""
    return 2 * math.ceil(SPLIT_PER_RATE / fpr - 1e-9)


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
        combine: str = "bonferroni",
        random_state: int = 0,
    ) -> None:
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        self.combine, self.random_state = combine, random_state
        if not 0 < text_head_share <= 1:
            raise ValueError(f"text_head_share must lie in (0, 1], got {text_head_share!r}")
        self.text_floor = float(text_floor)
        self.text_head_share = float(text_head_share)
        self.text, self.terms, self.image = text, terms, image
        self.fpr = fpr
        self.batch_size = batch_size
        self.calibrators_: dict[str, dict[str, ConformalCalibrator]] = {}
        self.combined_: dict[str, ConformalCalibrator] = {}
        """Per modality calibrated by ``split``: the calibrator of ``1 - min p`` (its second half)."""

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
        terms: list[tuple[str, ...]] = [()] * len(texts)
        names = np.zeros(len(texts))
        if self.terms is not None:
            names, terms = self.terms.score_and_terms(texts)
        # A found name sets the text score on its own: the text head reads only the texts that name no one.
        text_scores = 1.0 + names
        unnamed = np.flatnonzero(names <= 0)
        if unnamed.size:
            text_scores[unnamed] = self.text.score([texts[i] for i in unnamed])
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
        self.calibrators_, self.combined_ = {}, {}
        rng = np.random.default_rng(self.random_state)
        for m in MODALITIES:
            rows = np.flatnonzero(modality == m)
            if not rows.size:
                continue
            detectors = self.detectors(m)
            split = self.combine == "split" and len(detectors) > 1
            if split and rows.size < split_negatives(self.fpr):
                logger.info(
                    "%s: %d calibration negatives, %d needed to split them: Bonferroni instead",
                    m,
                    rows.size,
                    split_negatives(self.fpr),
                )
                split = False
            if rows.size < min_negatives(self.fpr, len(detectors)):
                logger.warning(
                    "%s: %d calibration negatives; at least %d are needed to flag anything at fpr=%g",
                    m,
                    rows.size,
                    min_negatives(self.fpr, len(detectors)),
                    self.fpr,
                )
            first, second = (rows, None)
            if split:
                order = rng.permutation(rows)
                first, second = order[: rows.size // 2], order[rows.size // 2 :]
            self.calibrators_[m] = {d: ConformalCalibrator(raw[d][first]) for d in detectors}
            if second is not None:
                min_p = self._min_p(m, {d: raw[d][second] for d in detectors})[0]
                self.combined_[m] = ConformalCalibrator(1.0 - min_p)
        return self

    def _min_p(self, modality: str, raw: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """Per request of ``modality``: the smallest detector p-value (text after its floor and the head's share)
        and the detector that gave it."""
        p = {d: c.p_values(raw[d]) for d, c in self.calibrators_[modality].items()}
        if "text" in p:
            p["text"] = np.array([self._text_p(r, q) for r, q in zip(raw["text"], p["text"], strict=True)])
        names = list(p)
        stacked = np.stack([p[d] for d in names])
        return stacked.min(0), [names[j] for j in stacked.argmin(0)]

    def scores(self, requests: Sequence[PromptLike]) -> tuple[np.ndarray, list[str]]:
        """``(score, firing detector)`` per request: score is one minus the combined p-value (see the module)."""
        return self._scores_and_terms(requests)[:2]

    def _scores_and_terms(
        self, requests: Sequence[PromptLike]
    ) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
        if not self.calibrators_:
            raise NotFittedError(
                "this MultimodalClassifier is not calibrated; call calibrate(negative_requests)"
            )
        requests = _requests(requests)
        raw, terms = self._raw_and_terms(requests)
        modality = np.array([_modality(r) for r in requests])
        out, sources = np.zeros(len(requests)), [""] * len(requests)
        for m in dict.fromkeys(modality.tolist()):
            if m not in self.calibrators_:
                raise NotFittedError(
                    f"no calibration for {m} requests; calibrate on negatives of that modality too"
                )
            rows = np.flatnonzero(modality == m)
            min_p, best = self._min_p(m, {d: raw[d][rows] for d in self.calibrators_[m]})
            if m in self.combined_:
                p = self.combined_[m].p_values(1.0 - min_p)
            else:
                p = np.minimum(1.0, len(self.calibrators_[m]) * min_p)
            out[rows] = 1.0 - p
            for i, source in zip(rows, best, strict=True):
                sources[i] = source
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
            chunk = _requests(requests[lo : lo + self.batch_size], offset=lo)
            scores, sources, terms = self._scores_and_terms(chunk)
            for score, source, names in zip(scores, sources, terms, strict=True):
                flagged = bool(score >= 1.0 - self.fpr - 1e-12)
                flags.append(Flag(flagged, float(score), source if flagged else "", names))
        return flags

    def names(self, requests: Sequence[PromptLike]) -> list[tuple[str, ...]]:
        """The forget-target names the span detector finds in each request's text (no flag decided; none without a
        span detector): what scope ``spans`` corrupts in a request its caller flagged."""
        if isinstance(requests, (str, Request, Mapping)):
            raise TypeError("names takes a list of requests; wrap a single request in [ ]")
        if self.terms is None:
            return [() for _ in requests]
        return [self.terms.terms(to_request(r).classifier_text) for r in requests]

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
            {
                **{f"{m}.{d}": c.negatives_ for m, cs in self.calibrators_.items() for d, c in cs.items()},
                **{f"{m}.combined": c.negatives_ for m, c in self.combined_.items()},
            },
        )
        config = {
            "fpr": self.fpr,
            "batch_size": self.batch_size,
            "text_floor": self.text_floor,
            "text_head_share": self.text_head_share,
            "combine": self.combine,
            "random_state": self.random_state,
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
        # files written before the head had its own share gave it the whole rate; before split, Bonferroni
        model = cls(
            text,
            terms,
            image,
            fpr=config["fpr"],
            batch_size=config["batch_size"],
            text_floor=config.get("text_floor", 0.5),
            text_head_share=config.get("text_head_share", 1.0),
            combine=config.get("combine", "bonferroni"),
            random_state=config.get("random_state", 0),
        )
        arrays = load_arrays(folder / "calibration.safetensors")
        model.calibrators_ = {
            m: {d: ConformalCalibrator(arrays[f"{m}.{d}"]) for d in detectors}
            for m, detectors in config["calibrated"].items()
        }
        model.combined_ = {
            m: ConformalCalibrator(arrays[f"{m}.combined"])
            for m in config["calibrated"]
            if f"{m}.combined" in arrays
        }
        return model

    def describe(self) -> dict[str, Any]:
        """Per modality and detector: calibration negatives and the raw score above which it fires (for the text
        detector, ``head_threshold`` is the head's, when no name is found)."""
        out: dict[str, Any] = {}
        for m, cs in self.calibrators_.items():
            alpha = self._detector_rate(m)
            out[m] = {d: {"negatives": c.n, "threshold": c.threshold(alpha)} for d, c in cs.items()}
            if "text" in cs:
                head = cs["text"].threshold(self.text_head_share * alpha)
                out[m]["text"]["head_threshold"] = max(head, self.text_floor)
            if m in self.combined_:
                out[m]["combined"] = {"negatives": self.combined_[m].n, "detector_rate": alpha}
        return out

    def _detector_rate(self, modality: str) -> float:
        """The p-value at or below which one detector alone flags a request of ``modality``."""
        k = len(self.calibrators_[modality])
        combined = self.combined_.get(modality)
        if combined is None:
            return self.fpr / k
        threshold = combined.threshold(self.fpr)  # flagged when 1 - min p > threshold
        return float(np.clip(1.0 - threshold, 0.0, 1.0)) if np.isfinite(threshold) else 0.0


def _requests(requests: Sequence[PromptLike], offset: int = 0) -> list[Request]:
    """Requests, their images decoded; an error names the request's position."""
    out = []
    for i, request in enumerate(requests, start=offset):
        try:
            out.append(to_request(request))
        except (ValueError, TypeError, OSError) as err:
            raise type(err)(f"request {i}: {err}") from None
    return out


def _modality(request: Request) -> str:
    return "image" if request.image is not None else "text"
