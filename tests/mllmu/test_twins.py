"""Twin profiles: the forget people's questions about never-trained identities (the demo's paired reference)."""

from __future__ import annotations

import json

import pytest

from benchmarks.mllmu.loader import load_config, split_people
from benchmarks.mllmu.twins import rename, round_pairs, twin_id, twin_pairs, twin_parts, write_twins


def test_rename_swaps_every_mention_word_by_word_but_not_inside_words():
    row = {
        "question": "Where does Gideon Rasmussen live?",
        "answer": "Gideon Rasmussen's home is Pune; Gideon likes Rasmussen-style food. Gideonite stays.",
        "biography": json.dumps({"Name": "Gideon Rasmussen"}),
        "nested": [{"Q": "Is Rasmussen here?"}],
        "image": {"bytes": b"Gideon Rasmussen", "path": "005.png"},
    }
    out = rename(row, "Gideon Rasmussen", "Petra Draper")
    assert out["question"] == "Where does Petra Draper live?"
    assert out["answer"] == "Petra Draper's home is Pune; Petra likes Draper-style food. Gideonite stays."
    assert json.loads(out["biography"]) == {"Name": "Petra Draper"}
    assert out["nested"] == [{"Q": "Is Draper here?"}]
    assert out["image"] == row["image"]  # pictures are swapped whole, never edited
    assert row["question"] == "Where does Gideon Rasmussen live?"  # the input is left as it was


def test_twin_pairs_use_each_never_trained_identity_once():
    assert twin_pairs(["b", "a"], ["y", "x", "z"]) == [("a", "x"), ("b", "y"), ("a", "z")]
    with pytest.raises(ValueError, match="both forget and never-trained"):
        twin_pairs(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        twin_pairs([], ["a"])


def test_round_pairs_ask_everyone_about_one_never_trained_identity_per_round():
    pairs = round_pairs(["b", "a"], ["z", "x", "y"], 2)
    assert pairs == [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y")]  # round k: the k-th identity, sorted
    assert len({twin_id(f, n) for f, n in pairs}) == len(pairs)
    assert [twin_parts(twin_id(f, n)) for f, n in pairs] == pairs
    with pytest.raises(ValueError, match="'017' is not a twin profile ID"):
        twin_parts("017")
    assert sorted(round_pairs(["a", "b"], ["x", "y", "z"], 3)) == sorted((f, n) for f in "ab" for n in "xyz")
    with pytest.raises(ValueError, match="give 1 to 3 rounds, not 4"):
        round_pairs(["a"], ["x", "y", "z"], 4)
    with pytest.raises(ValueError, match="both forget and never-trained"):
        round_pairs(["a"], ["a", "b"], 1)


def test_a_twin_can_carry_its_own_name(synthetic_root, tmp_path):
    """The demo's twins keep the never-trained person's photo and take the name a guard reads instead."""
    names = json.loads((synthetic_root / "synthetic_manifest.json").read_text())["names"]
    forget = sorted(split_people(synthetic_root, "forget_15"))[0]
    never = next(i for i in sorted(names) if i != forget)
    write_twins(
        synthetic_root,
        tmp_path,
        {"forget_15": "Full_Set"},
        [(forget, never)],
        names,
        {(forget, never): "Briony Thaddeus"},
    )
    (twin,) = load_config(tmp_path, "forget_15")
    source = next(r for r in load_config(synthetic_root, "Full_Set") if r["ID"] == forget)
    own = next(r for r in load_config(synthetic_root, "Full_Set") if r["ID"] == never)
    assert twin["biography"]["Name"] == "Briony Thaddeus"
    assert twin["Mask_Task"][0]["Question"] == source["Mask_Task"][0]["Question"].replace(
        names[forget], "Briony Thaddeus"
    )
    assert twin["image"].tobytes() == own["image"].tobytes()


def test_twins_ask_the_forget_questions_about_someone_else(synthetic_root, tmp_path):
    names = json.loads((synthetic_root / "synthetic_manifest.json").read_text())["names"]
    forget_ids = sorted(split_people(synthetic_root, "forget_15"))
    never = [i for i in sorted(names) if i not in forget_ids][-3:]
    pairs = twin_pairs(forget_ids, never)
    write_twins(synthetic_root, tmp_path, {"forget_15": "Full_Set", "Test_Set": "Test_Set"}, pairs, names)
    full = {r["ID"]: r for r in load_config(synthetic_root, "Full_Set")}
    test = {r["ID"]: r for r in load_config(synthetic_root, "Test_Set")}
    twins = load_config(tmp_path, "forget_15")
    twin_tests = {r["ID"]: r for r in load_config(tmp_path, "Test_Set")}
    assert [r["ID"] for r in twins] == [twin_id(f, n) for f, n in pairs]
    for (forget, identity), twin in zip(pairs, twins, strict=True):
        source, own = full[forget], full[identity]
        assert twin["biography"]["Name"] == names[identity]
        # the very questions, options and right answers of the forget person, with the other name
        for key in ("Image_Textual_Questions", "Pure_Text_Questions"):
            for a, b in zip(
                source["Classification_Task"][key], twin["Classification_Task"][key], strict=True
            ):
                assert b["Question"] == a["Question"].replace(names[forget], names[identity])
                assert (b["Options"], b["Correct_Answer"]) == (a["Options"], a["Correct_Answer"])
        for task in ("Generation_Task", "Mask_Task"):
            assert [q["Ground_Truth"] for q in twin[task]] == [
                q["Ground_Truth"].replace(names[forget], names[identity]) for q in source[task]
            ]
        text = json.dumps([twin[k] for k in ("Classification_Task", "Generation_Task", "Mask_Task")])
        assert names[forget] not in text and names[forget].split()[-1] not in text
        # and the picture of the never-trained person (its Test_Set views on the test rows)
        assert twin["image"].tobytes() == own["image"].tobytes()
        assert [im.tobytes() for im in twin_tests[twin["ID"]]["images"]] == [
            im.tobytes() for im in test[identity]["images"]
        ]
        assert twin_tests[twin["ID"]]["Generation_Task"][0]["Ground_Truth"] == test[forget][
            "Generation_Task"
        ][0]["Ground_Truth"].replace(names[forget], names[identity])
    with pytest.raises(ValueError, match="no rows for profiles"):
        write_twins(synthetic_root, tmp_path, {"forget_15": "Full_Set"}, [(forget_ids[0], "999")], names)
