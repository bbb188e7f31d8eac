"""Split-conformal calibration: exact p-values, thresholds, and the false-positive guarantee in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from classifiers.calibration import ConformalCalibrator, false_negative_rate, min_negatives


def test_p_values_and_threshold_agree() -> None:
    cal = ConformalCalibrator([0.1, 0.2, 0.3, 0.4])
    assert cal.p_values([0.35, 0.4, 0.5, 0.0]).tolist() == [2 / 5, 2 / 5, 1 / 5, 1.0]
    rng = np.random.default_rng(0)
    cal = ConformalCalibrator(rng.normal(size=999))
    scores = rng.normal(size=5000) * 2
    for alpha in (0.01, 0.05, 0.2):
        t = cal.threshold(alpha)
        assert np.array_equal(scores > t, cal.p_values(scores) <= alpha)


def test_false_positive_guarantee_holds_on_fresh_negatives() -> None:
    rng = np.random.default_rng(1)
    alpha, rates = 0.05, []
    for _ in range(300):
        cal = ConformalCalibrator(rng.standard_t(3, size=99))
        rates.append(float((cal.p_values(rng.standard_t(3, size=200)) <= alpha).mean()))
    assert np.mean(rates) <= alpha + 0.005  # exact in expectation: (floor(alpha * 100)) / 100
    assert np.mean(rates) >= alpha - 0.015  # and not needlessly conservative


def test_too_few_negatives_flags_nothing() -> None:
    assert min_negatives(0.01) == 99 and min_negatives(0.01, 2) == 199
    cal = ConformalCalibrator(np.arange(50.0))
    assert cal.threshold(0.01) == math.inf
    assert (cal.p_values([1e9]) > 0.01).all()


def test_errors_and_rates() -> None:
    with pytest.raises(NotFittedError):
        ConformalCalibrator().p_values([0.5])
    with pytest.raises(ValueError, match="at least one"):
        ConformalCalibrator([])
    with pytest.raises(ValueError, match="finite"):
        ConformalCalibrator([0.1, float("nan")])
    rate = false_negative_rate([True, True, False, True])
    assert rate.value == 0.25 and rate.errors == 1 and 0.25 < rate.upper95 < 1
    assert "people" not in rate.to_dict()


def test_errors_are_also_counted_by_person() -> None:
    """Six photos of one look-alike among 60 people's 600: the request-level bound treats them as six independent
    chances, the people-level bound as the one person they are."""
    from classifiers.calibration import false_positive_rate

    owners = [f"person {k // 10}" for k in range(600)]
    flags = [k < 6 for k in range(600)]
    rate = false_positive_rate(flags, owners)
    assert (rate.errors, rate.total, rate.people_with_errors, rate.people) == (6, 600, 1, 60)
    assert rate.value == 0.01 and rate.upper95 < 0.025 < rate.people_upper95 < 0.1
    assert rate.to_dict()["people_upper95"] == rate.people_upper95
    with pytest.raises(ValueError, match="owners for"):
        false_positive_rate(flags, owners[:-1])


def test_calibration_negatives_are_enough_to_flag_at_the_target_rate() -> None:
    """Few calibration people must still yield enough negatives per modality (else nothing can be flagged)."""
    from PIL import Image

    from classifiers.training import Profile, calibration_negatives

    people = [
        Profile(
            f"p{k}",
            f"Person Number{k}",
            [f"Where does Person Number{k} live?"],
            ["Where does this person live?"],
            Image.new("RGB", (32, 32), (10 * k, 80, 90)),
        )
        for k in range(3)
    ]
    rng = np.random.default_rng(0)
    for fpr in (0.05, 0.01):
        requests = calibration_negatives(
            people, ["What is the capital of Peru?"], rng, fpr=fpr, with_images=True
        )
        text = [r for r in requests if not (isinstance(r, dict) and "image" in r)]
        images = [r for r in requests if isinstance(r, dict) and "image" in r]
        assert len(text) >= 2 * min_negatives(fpr, 1)
        assert len(images) >= 2 * min_negatives(fpr, 2)
        assert {r["text"] for r in images} == {"Where does this person live?"}
    no_images = calibration_negatives(people, [], rng, fpr=0.01, with_images=False)
    assert not any(isinstance(r, dict) and "image" in r for r in no_images)


class _NumberText:
    """A stand-in text detector: the raw score is the number the prompt ends with."""

    def score(self, texts):
        return np.array([float(t.rsplit(" ", 1)[1]) for t in texts])


class _PixelImage:
    """A stand-in image detector: the raw score is the 24-bit colour of a 1x1 picture, in [0, 1)."""

    def score(self, images):
        return np.array(
            [(r * 65536 + g * 256 + b) / 2**24 for r, g, b in (im.getpixel((0, 0)) for im in images)]
        )


def _image_requests(image_scores, text_scores):
    from PIL import Image

    out = []
    for s, t in zip(image_scores, text_scores, strict=True):
        code = int(s * 2**24)
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        out.append({"text": f"Where does this person live? {t}", "image": Image.new("RGB", (1, 1), colour)})
    return out


@pytest.mark.parametrize("combine, expected", [("split", 0.02), ("bonferroni", 0.01)])
def test_split_combination_gives_a_quiet_detector_s_rate_to_the_other(combine, expected) -> None:
    """Image requests whose text detector stays below its floor: split calibration flags fresh negatives at the
    target rate (the image detector gets all of it), Bonferroni at half; a name in the text still flags."""
    from classifiers.multimodal import MultimodalClassifier, split_negatives

    fpr, rng = 0.02, np.random.default_rng(0)
    assert split_negatives(fpr) == 400
    classifier = MultimodalClassifier(_NumberText(), None, _PixelImage(), fpr=fpr, combine=combine)
    quiet = lambda n: rng.uniform(0, 0.4, n)  # noqa: E731  # below the text floor: the text p-value is 1
    classifier.calibrate(_image_requests(rng.uniform(size=1000), quiet(1000)) + ["hello 0.1"] * 200)
    assert ("image" in classifier.combined_) == (combine == "split")
    flagged = classifier.predict(_image_requests(rng.uniform(size=20000), quiet(20000)))
    assert expected - 0.006 <= flagged.mean() <= expected + 0.004
    named = classifier.flag(_image_requests([0.5, 0.5], [1.5, 0.2]))  # a name match: raw text score > 1
    assert named[0].flagged and named[0].source == "text" and not named[1].flagged
    described = classifier.describe()["image"]
    assert described["image"]["threshold"] == pytest.approx(1 - expected, abs=0.01)
