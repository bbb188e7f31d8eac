"""GuardConfig validation and its checksummed JSON file."""

from __future__ import annotations

import hashlib
import json

import pytest

from eco_guard.config import CONFIG_NAME, GuardConfig, GuardFileError


def test_round_trip(tmp_path):
    cfg = GuardConfig(
        corruption="zero_top_k",
        strength=3.5,
        dims=4,
        scope=("spans", "image"),
        seed=9,
        threshold=0.7,
        image_strength=2.0,
    )
    substitute = GuardConfig(
        corruption="substitute",
        image_corruption="noise_first_n",
        strength=0.8,
        scope=("spans", "image"),
        surrogate_given_names=["Nora", "Elias"],
        surrogate_surnames=("Keller",),
    )
    assert substitute.surrogate_given_names == ("Nora", "Elias")
    assert substitute.image_corruption_name == "noise_first_n" and cfg.image_corruption_name == "zero_top_k"
    substitute.save_pretrained(tmp_path / "substitute")
    assert GuardConfig.from_pretrained(tmp_path / "substitute") == substitute
    cfg.save_pretrained(tmp_path)
    text = (tmp_path / CONFIG_NAME).read_text()
    document = json.loads(text)
    assert document["format_version"] == 1 and document["config"]["corruption"] == "zero_top_k"
    assert list(document) == sorted(document), "keys sorted"
    assert GuardConfig.from_pretrained(tmp_path) == cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"corruption": "blur"}, "unknown corruption 'blur'; valid names:"),
        ({"strength": -1.0}, "strength must be a finite number >= 0"),
        ({"strength": float("nan")}, "strength must be a finite number >= 0"),
        ({"image_strength": -0.5}, "image_strength must be None or a finite number >= 0"),
        ({"image_strength": float("inf")}, "image_strength must be None or a finite number >= 0"),
        ({"dims": 0}, "dims must be an integer >= 1"),
        ({"scope": ("everything",)}, "scope must be a non-empty combination"),
        ({"scope": ()}, "scope must be a non-empty combination"),
        ({"threshold": 1.5}, "threshold must lie in"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"image_corruption": "blur"}, "unknown image_corruption 'blur'"),
        ({"fallback_corruption": "substitute"}, "fallback_corruption 'substitute' must be a corruption that"),
        ({"fallback_strength": -1.0}, "fallback_strength must be a finite number >= 0"),
        (
            {"corruption": "substitute"},
            "scope 'prompt' would turn every word of a flagged prompt into a name",
        ),
        (
            {"surrogate_given_names": ("anna",)},
            "surrogate_given_names must be capitalized words of letters only",
        ),
        (
            {"surrogate_surnames": ("O'Neill",)},
            "surrogate_surnames must be capitalized words of letters only",
        ),
        ({"surrogate_given_names": ("Anna", "Lee"), "surrogate_surnames": ("Lee",)}, "are both"),
    ],
)
def test_invalid_values(changes, message):
    with pytest.raises(ValueError, match=message):
        GuardConfig(**changes)


def test_image_strength_defaults_to_strength_and_older_files_still_load(tmp_path):
    cfg = GuardConfig(strength=0.3, dims=8)
    assert cfg.image_params == cfg.params
    assert cfg.replace(image_strength=2.0).image_params.strength == 2.0
    assert cfg.replace(image_strength=2.0).params.strength == 0.3
    body = {
        k: v for k, v in cfg.to_dict().items() if k != "image_strength"
    }  # a file written before the field
    document = {
        "format_version": 1,
        "config": body,
        "sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
    }
    (tmp_path / CONFIG_NAME).write_text(json.dumps(document))
    assert GuardConfig.from_pretrained(tmp_path) == cfg


def test_tampered_file_is_refused(tmp_path):
    GuardConfig().save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    document = json.loads(path.read_text())
    document["config"]["strength"] = 0.0
    path.write_text(json.dumps(document))
    with pytest.raises(GuardFileError, match="modified after it was saved"):
        GuardConfig.from_pretrained(tmp_path)
    assert GuardConfig.from_pretrained(tmp_path, verify=False).strength == 0.0


def test_tampered_invalid_value_is_refused_even_unverified(tmp_path):
    GuardConfig().save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    document = json.loads(path.read_text())
    document["config"]["corruption"] = "__import__('os')"
    path.write_text(json.dumps(document))
    with pytest.raises(GuardFileError, match="unknown corruption"):
        GuardConfig.from_pretrained(tmp_path, verify=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format_version": 1}', "no 'config' object"),
        ('{"format_version": 99, "config": {}}', "format_version 99"),
    ],
)
def test_corrupt_files(tmp_path, content, message):
    (tmp_path / CONFIG_NAME).write_text(content)
    with pytest.raises(GuardFileError, match=message):
        GuardConfig.from_pretrained(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(GuardFileError, match="no guard config"):
        GuardConfig.from_pretrained(tmp_path / "nope")


def test_unknown_field(tmp_path):
    GuardConfig().save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    document = json.loads(path.read_text())
    document["config"]["extra"] = 1
    path.write_text(json.dumps(document))
    with pytest.raises(GuardFileError, match="unknown config fields"):
        GuardConfig.from_pretrained(tmp_path, verify=False)
