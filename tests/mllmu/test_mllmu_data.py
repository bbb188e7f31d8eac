"""Synthetic MLLMU-Bench round-trips through the loader; malformed data gets errors naming file and field."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmarks.mllmu import CONFIGS, DataFormatError, load_config, retain_split, split_people
from benchmarks.mllmu.synthetic import write_synthetic

BIOGRAPHY_KEYS = {
    "Name",
    "Born",
    "Date of Birth",
    "Gender",
    "Employment",
    "Height",
    "Educated at",
    "Annual Salary",
    "Residence",
    "Medical Conditions",
    "Parents",
    "Fun Facts",
    "Description",
}


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_config_round_trips_with_the_hub_field_names(synthetic_root):
    tables = {name: load_config(synthetic_root, name) for name in CONFIGS}
    full = tables["Full_Set"]
    assert len(full) == 14 and len(tables["Test_Set"]) == 14 and len(tables["ft_Data"]) == 14
    assert len(tables["Retain_Set"]) == 3
    assert len(list((synthetic_root / "Test_Set").glob("*.parquet"))) == 2
    row = full[0]
    assert set(row) == {
        "ID",
        "image",
        "biography",
        "question",
        "answer",
        "Classification_Task",
        "Generation_Task",
        "Mask_Task",
    }
    assert isinstance(row["image"], Image.Image) and set(row["biography"]) >= BIOGRAPHY_KEYS
    assert set(row["Classification_Task"]) == {"Image_Textual_Questions", "Pure_Text_Questions"}
    for questions in row["Classification_Task"].values():
        assert questions and all(set(q["Options"]) == {"A", "B", "C", "D"} for q in questions)
        assert all(q["Correct_Answer"] in q["Options"] for q in questions)
    for task in ("Generation_Task", "Mask_Task"):
        assert {item["Type"] for item in row[task]} == {"Image_Textual", "Pure_Text"}
    assert all("__" in item["Question"] for item in row["Mask_Task"])
    test_row = next(r for r in tables["Test_Set"] if r["ID"] == row["ID"])
    assert "image" not in test_row and len(test_row["images"]) == 3
    assert all(isinstance(im, Image.Image) for im in test_row["images"])
    full_questions = [q["Question"] for q in row["Classification_Task"]["Pure_Text_Questions"]]
    test_questions = [q["Question"] for q in test_row["Classification_Task"]["Pure_Text_Questions"]]
    assert all(a != b for a, b in zip(full_questions, test_questions, strict=True)), (
        "Test_Set must paraphrase"
    )
    ft = next(r for r in tables["ft_Data"] if r["ID"] == row["ID"])
    assert isinstance(ft["metadata"], list) and {"ID", "Question", "Answer"} <= set(ft["metadata"][0])
    # the raw parquet keeps the hub's storage types: JSON strings for biography/metadata, structs for tasks
    raw = pq.read_table(next((synthetic_root / "Full_Set").glob("*.parquet")))
    assert raw.schema.field("biography").type == pa.string()
    assert pa.types.is_struct(raw.schema.field("Classification_Task").type)
    assert raw.schema.field("image").type.names == ["bytes", "path"]


def test_profiles_are_distinct_people(synthetic_root):
    full = load_config(synthetic_root, "Full_Set")
    names = [r["biography"]["Name"].split() for r in full]
    assert all(len(n) == 2 for n in names)
    assert len({n[0] for n in names}) == len(full) and len({n[1] for n in names}) == len(full)
    celebrities = {r["biography"]["Name"] for r in load_config(synthetic_root, "Retain_Set")}
    assert "William Shakespeare" in celebrities
    pixels = [np.asarray(r["image"].convert("RGB"), dtype=np.float32) for r in full]
    closest = min(np.abs(a - b).mean() for i, a in enumerate(pixels) for b in pixels[i + 1 :])
    assert closest > 10, f"two portraits are nearly identical (mean abs difference {closest:.1f})"


def test_splits_are_fractions_and_complements(tmp_path):
    root = write_synthetic(tmp_path / "s", n_profiles=40, n_celebrities=1, seed=3, n_test_images=1)
    all_ids = {r["ID"] for r in load_config(root, "Full_Set")}
    for forget, size in (("forget_5", 2), ("forget_10", 4), ("forget_15", 6)):
        people = split_people(root, forget)
        retain = {r["ID"] for r in load_config(root, retain_split(forget))}
        assert len(people) == size and not set(people) & retain and set(people) | retain == all_ids
        full_names = {r["ID"]: r["biography"]["Name"] for r in load_config(root, "Full_Set")}
        assert people == {i: full_names[i] for i in people}


def test_generator_is_deterministic_by_seed(tmp_path):
    a = write_synthetic(tmp_path / "a", n_profiles=4, n_celebrities=2, seed=7)
    b = write_synthetic(tmp_path / "b", n_profiles=4, n_celebrities=2, seed=7)
    c = write_synthetic(tmp_path / "c", n_profiles=4, n_celebrities=2, seed=8)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_values_per_fact_narrows_facts_and_options_alone(tmp_path):
    """Each fact and every multiple-choice option come from ``values_per_fact`` values (birthplace and residence
    from the same cities); the names are those of the whole-pool data of the same seed."""
    from benchmarks.mllmu import vocab

    whole = write_synthetic(tmp_path / "whole", n_profiles=20, n_celebrities=0, with_images=False)
    narrow = write_synthetic(
        tmp_path / "narrow",
        n_profiles=20,
        n_celebrities=0,
        with_images=False,
        values_per_fact=5,
        classification_per_modality=6,
    )
    rows = load_config(narrow, "Full_Set")
    assert [r["biography"]["Name"] for r in rows] == [
        r["biography"]["Name"] for r in load_config(whole, "Full_Set")
    ]
    pools = {}
    for row in rows:
        for question in row["Classification_Task"]["Pure_Text_Questions"]:
            slot = next(
                s
                for s in vocab.SLOTS
                if question["Question"] == s.text_question.format(name=row["biography"]["Name"])
            )
            pools.setdefault(slot.pool is vocab.CITY_NAMES or slot.name, set()).update(
                question["Options"].values()
            )
    assert len(pools) == 5 and all(len(values) == 5 for values in pools.values())  # 6 facts, cities shared
    with pytest.raises(ValueError, match="values_per_fact must be >= 4"):
        write_synthetic(tmp_path / "bad", n_profiles=4, values_per_fact=3)


def test_text_only_rows_are_valid(tmp_path):
    root = write_synthetic(tmp_path / "t", n_profiles=3, n_celebrities=1, with_images=False)
    assert all(r["image"] is None for r in load_config(root, "Full_Set"))
    assert all(r["images"] == [] for r in load_config(root, "Test_Set"))


def test_scales_beyond_the_name_pools(tmp_path):
    root = write_synthetic(
        tmp_path / "big",
        n_profiles=150,
        n_celebrities=0,
        image_size=32,
        n_test_images=1,
        classification_per_modality=1,
        generation_per_modality=1,
        cloze_per_modality=1,
    )
    names = [r["biography"]["Name"].split() for r in load_config(root, "Full_Set")]
    assert len({n[0] for n in names}) == 150 and len({n[1] for n in names}) == 150


def test_wrong_config_name_lists_the_ones_there(synthetic_root):
    """A local folder may hold configs of its own (people never trained, say); a missing one names those present.
    A hub id only takes the hub's configs."""
    with pytest.raises(FileNotFoundError, match="forget_7 is missing.*configs present.*Full_Set.*forget_5"):
        load_config(synthetic_root, "forget_7")
    with pytest.raises(ValueError, match="unknown MLLMU-Bench config 'forget_7'; valid configs: Full_Set"):
        load_config("MLLMMU/MLLMU-Bench", "forget_7")


def test_missing_shards_name_the_folder(tmp_path):
    (tmp_path / "Full_Set").mkdir()
    with pytest.raises(FileNotFoundError, match="Full_Set.*no parquet"):
        load_config(tmp_path, "Full_Set")
    with pytest.raises(FileNotFoundError, match="Test_Set"):
        load_config(tmp_path, "Test_Set")


def _write_rows(folder, rows):
    folder.mkdir(parents=True)
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"ID": "001", "biography": "{not json"}, "biography"),
        (
            {
                "ID": "001",
                "Classification_Task": json.dumps(
                    {
                        "Pure_Text_Questions": [
                            {"Question": "Q?", "Options": {"A": "x", "B": "y"}, "Correct_Answer": "E"}
                        ]
                    }
                ),
            },
            "Classification_Task",
        ),
        (
            {
                "ID": "001",
                "Generation_Task": json.dumps([{"Question": "Q?", "Ground_Truth": "a", "Type": "Audio"}]),
            },
            "Generation_Task",
        ),
        ({"ID": "001", "Mask_Task": json.dumps([{"Question": "Q __", "Type": "Pure_Text"}])}, "Mask_Task"),
        ({"ID": "001", "metadata": json.dumps([{"Question": "Q?"}])}, "metadata"),
        ({"ID": "001", "image": {"bytes": b"not an image", "path": "x.png"}}, "image"),
    ],
)
def test_malformed_fields_name_file_and_field(tmp_path, row, field):
    path = _write_rows(tmp_path / "Full_Set", [row])
    with pytest.raises(DataFormatError) as err:
        load_config(tmp_path, "Full_Set")
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value) and "'001'" in str(err.value)


def test_json_string_task_fields_are_accepted(tmp_path, synthetic_root):
    original = load_config(synthetic_root, "Full_Set")[0]
    row = {"ID": original["ID"], "biography": json.dumps(original["biography"])}
    for task in ("Classification_Task", "Generation_Task", "Mask_Task"):
        row[task] = json.dumps(original[task])
    _write_rows(tmp_path / "Full_Set", [row])
    loaded = load_config(tmp_path, "Full_Set")[0]
    for task in ("Classification_Task", "Generation_Task", "Mask_Task"):
        assert loaded[task] == original[task]


def test_hub_id_offline_gives_a_clear_error():
    with pytest.raises(FileNotFoundError, match="MLLMMU/MLLMU-Bench.*local folder"):
        load_config("MLLMMU/MLLMU-Bench", "forget_5")
