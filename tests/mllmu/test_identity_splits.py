"""The forget-split study of the image identity detector, on a small synthetic set and the shipped encoder."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.mllmu.identity_splits import RULES, main, people_of, score_people, simulate
from benchmarks.mllmu.portrait_encoder import ASSET
from benchmarks.mllmu.synthetic import write_synthetic
from classifiers.pixels import PixelEncoder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("mllmu"), n_profiles=40, n_celebrities=2, n_test_images=3)


@pytest.fixture(scope="module")
def scores(folder):
    return score_people(people_of(folder), PixelEncoder.load(ASSET), references=8)


def test_every_photo_is_scored_against_every_person_and_is_nearest_its_own(scores) -> None:
    n = scores.test.shape[0]
    assert n == 40 and scores.test.shape == (40, 40, 3) and scores.portrait.shape == (40, 40)
    assert scores.fresh.shape == (40, 32)
    assert (scores.portrait.argmax(1) == np.arange(n)).all()  # a portrait is nearest its own references
    nearest = scores.test.argmax(1)  # [people, views]
    assert (nearest == np.arange(n)[:, None]).mean() >= 0.95


def test_splits_count_the_detector_s_errors(scores) -> None:
    result = simulate(scores, splits=50, forget=4, rate=0.05)
    assert result["fnr"] <= 0.1 and result["fpr"] <= 0.05, result
    assert 0 <= result["either_over"] <= 1 and result["either_over"] >= max(
        result["fnr_over"], result["fpr_over"]
    )
    # at a rate the calibration people cannot reach, nothing is flagged: every forget view missed, no false alarm
    unreachable = simulate(scores, splits=5, forget=4, rate=1e-4)
    assert unreachable["fnr"] == 1.0 and unreachable["fpr"] == 0.0
    with pytest.raises(ValueError, match="forget must lie"):
        simulate(scores, forget=30)
    with pytest.raises(ValueError, match="rule must be one of"):
        simulate(scores, forget=4, rule="median")


def test_the_command_prints_every_rule(folder, capsys) -> None:
    assert main([str(folder), str(folder), "--splits", "10", "--forget", "4", "--references", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == list(RULES) * 3  # two folders and their mean
    assert lines[-1].startswith("mean") and lines[1].startswith(folder.name)
