"""``eco-guard train-classifier`` on a synthetic MLLMU-Bench folder, then ``eco-guard classify`` on its guard."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def classify(guard, requests, folder) -> list[dict]:
    """``eco-guard classify`` on ``requests`` (written as JSONL into ``folder``); its output lines."""
    from eco_guard.cli import main

    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = folder / "out.jsonl"
    assert (
        main(["classify", "--guard", str(guard), "--prompts", str(folder / "in.jsonl"), "--out", str(out)])
        == 0
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_train_then_classify(tmp_path, capsys) -> None:
    from benchmarks.mllmu.loader import load_config
    from benchmarks.mllmu.synthetic import write_synthetic
    from eco_guard.cli import main
    from eco_guard.core import load_classifier

    data = write_synthetic(tmp_path / "mllmu", n_profiles=40, n_celebrities=6, seed=1, image_size=64)
    guard = tmp_path / "guard"
    argv = [
        "train-classifier",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--out",
        str(guard),
        "--fpr",
        "0.2",
        "--robustness-per-family",
        "8",
        "--text-head-share",
        "0.5",
        "--combine",
        "split",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "forget FNR" in printed and "buried_600_tokens" in printed
    report = json.loads((guard / "classifier_report.json").read_text())
    assert report["data"]["retain"] == "retain_90"
    assert set(report["rates"]) == {"text", "image"}
    assert report["rates"]["text"]["held_out"]["forget_fnr"]["n"] > 0
    assert report["text_head_share"] == 0.5 and load_classifier(guard).text_head_share == 0.5
    # the split combination, asked for, is saved with its own calibrator (the default is Bonferroni)
    assert report["combine"] == "split" and load_classifier(guard).combine == "split"
    assert "combined" in report["calibration"]["image"]

    forget = load_config(data, "forget_10")
    name = forget[0]["biography"]["Name"]
    forget[0]["image"].save(tmp_path / "face.png")
    requests = [
        {"text": f"Where does {name} live?"},
        {"text": "What is this person's job?", "image": "face.png"},
        {"text": "What is the capital of Kenya?"},
    ]
    results = classify(guard, requests, tmp_path)
    assert [r["flagged"] for r in results] == [True, True, False]
    # a line that cannot be classified gets its own error; the others keep their answers
    bad = ["[1, 2]", "{bad json", json.dumps({"text": "Who?", "image": 5})]
    bad.append(json.dumps({"text": "What is this person's job?", "image": "missing.png"}))
    (tmp_path / "mixed.jsonl").write_text("\n".join([*bad, json.dumps(requests[2])]) + "\n")
    out = tmp_path / "mixed_out.jsonl"
    assert (
        main(
            ["classify", "--guard", str(guard), "--prompts", str(tmp_path / "mixed.jsonl"), "--out", str(out)]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    errors = [r.get("error", "") for r in rows]
    assert "line 1: not a JSON object" in errors[0] and "line 2: not valid JSON" in errors[1]
    assert "line 3: an image must be a file path or a PIL image, got int" in errors[2]
    assert "line 4: image file not found" in errors[3] and rows[3]["flagged"] is None
    assert rows[4] == {**requests[2], "flagged": False, "score": results[2]["score"]}
    (tmp_path / "empty.jsonl").write_text("\n")
    capsys.readouterr()
    assert (
        main(
            ["classify", "--guard", str(guard), "--prompts", str(tmp_path / "empty.jsonl"), "--out", str(out)]
        )
        == 2
    )
    assert "holds no prompts" in capsys.readouterr().err


def test_the_portrait_encoder_reads_the_photos(tmp_path) -> None:
    """``--image-encoder portrait``: the shipped identity encoder instead of the MLLM's tower, saved with the guard
    and read back by ``classify``."""
    from benchmarks.mllmu.loader import load_config
    from benchmarks.mllmu.synthetic import write_synthetic
    from classifiers.pixels import PixelEncoder
    from eco_guard.cli import main
    from eco_guard.core import load_classifier

    data = write_synthetic(tmp_path / "mllmu", n_profiles=40, n_celebrities=6, seed=2, image_size=64)
    guard = tmp_path / "guard"
    argv = [
        "train-classifier",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--out",
        str(guard),
        "--fpr",
        "0.2",
        "--robustness-per-family",
        "4",
        "--image-encoder",
        "portrait",
    ]
    assert main(argv) == 0
    assert isinstance(load_classifier(guard).image.encoder_, PixelEncoder)
    forget, retain = load_config(data, "forget_10"), load_config(data, "retain_90")
    for k, row in enumerate([forget[0], retain[0]]):
        row["image"].save(tmp_path / f"face{k}.png")
    requests = [{"text": "What is this person's job?", "image": f"face{k}.png"} for k in range(2)]
    results = classify(guard, requests, tmp_path)
    assert results[0]["flagged"] and results[0]["score"] > results[1]["score"]


def test_bad_arguments(tmp_path, capsys) -> None:
    from eco_guard.cli import main

    with pytest.raises(ValueError, match="not tower, portrait or a pixel encoder folder"):
        from classifiers.image_encoders import image_encoder

        image_encoder(str(tmp_path / "nowhere"), "demo")

    assert main(["train-classifier", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "g")]) == 2
    assert (
        main(["train-classifier", "--data", str(tmp_path), "--forget", "forget_7", "--out", str(tmp_path)])
        == 2
    )
    assert (
        main(["classify", "--guard", str(tmp_path), "--prompts", str(tmp_path / "x.jsonl"), "--out", "o"])
        == 2
    )
    share = [
        "train-classifier",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "g"),
        "--text-head-share",
        "0",
    ]
    capsys.readouterr()
    assert main(share) == 2
    assert "--text-head-share must lie in (0, 1]" in capsys.readouterr().err
