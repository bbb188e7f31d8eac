"""Synthetic MLLMU-Bench: fictitious people written in the hub's schema and layout, deterministic by seed.

``write_synthetic(root)`` writes ``Full_Set``, ``ft_Data``, ``Test_Set`` (transformed images, paraphrased questions),
``Retain_Set`` (real celebrities the base LM knows) and the forget/retain splits as parquet, so the loader and the
evaluation run on it exactly as on the real benchmark. Facts are short and drawn from small pools (a small LM can
memorize them); no two people share a first or last name; each person gets a distinct procedural portrait.

``python -m benchmarks.mllmu.synthetic ROOT --profiles 500`` writes a full-size set.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.mllmu import portraits, vocab
from benchmarks.mllmu.celebrities import CELEBRITIES, CELEBRITY_NAME_PARTS, EXTRA_COUNTRIES, EXTRA_PROFESSIONS
from benchmarks.mllmu.loader import FORGET_SPLITS, retain_split

logger = logging.getLogger(__name__)

MANIFEST = "synthetic_manifest.json"
NEVER_TRAINED = "Never_Trained"
"""The config of the people no split holds and ft_Data never teaches (``write_synthetic(never_trained=...)``)."""
LETTERS = ("A", "B", "C", "D")
SHARD = "train-{k:05d}-of-{n:05d}.parquet"
IMAGE_SUBJECT, TEST_IMAGE_SUBJECT = "This person", "The person shown here"


def write_synthetic(
    root: str | Path,
    n_profiles: int = 20,
    n_celebrities: int = 8,
    seed: int = 0,
    *,
    image_size: int = 128,
    n_test_images: int = 3,
    with_images: bool = True,
    classification_per_modality: int = 3,
    generation_per_modality: int = 2,
    cloze_per_modality: int = 2,
    values_per_fact: int | None = None,
    never_trained: int = 0,
    names: Sequence[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a synthetic MLLMU-Bench under ``root`` (one folder per config, parquet shards); return ``root``.

    Forget splits hold 5/10/15 % of ``n_profiles`` (at least one profile each), drawn independently as in the real
    benchmark; each retain split is the complement. ``with_images=False`` writes text-only rows (``image`` null).

    ``values_per_fact``: draw each fact (and its multiple-choice distractors) from that many values of its pool
    (one seeded draw per pool; birthplace and residence share theirs), so that every value is worn by many people.
    A model that learned only these profiles has then seen nearly every value, and a person it never learned is
    not told apart by unfamiliar answers (with the whole pools, on the demo, they were: docs/demo.md).

    ``never_trained``: that many more people, written only to the config ``Never_Trained`` (evaluation rows, like
    Full_Set's). They are in no split and not in ft_Data, Full_Set or Test_Set: a model fine-tuned on ft_Data never
    learns them, and their scores are the level a forget set should fall to (``optimize --target Never_Trained``).

    ``names``: the people's names in order (``n_profiles + never_trained``, each of two words or more) instead of
    drawn ones, to try other name styles (hyphens, particles, accents, initials).
    """
    if n_profiles < 2:
        raise ValueError(f"n_profiles must be >= 2 (a forget and a retain profile), got {n_profiles}")
    if not 0 <= n_celebrities <= len(CELEBRITIES):
        raise ValueError(f"n_celebrities must lie in [0, {len(CELEBRITIES)}], got {n_celebrities}")
    if n_test_images < 0:
        raise ValueError(f"n_test_images must be >= 0, got {n_test_images}")
    if never_trained < 0:
        raise ValueError(f"never_trained must be >= 0, got {never_trained}")
    if names is not None:
        names = [str(n).strip() for n in names]
        if len(names) != n_profiles + never_trained:
            raise ValueError(f"got {len(names)} names for {n_profiles + never_trained} people")
        short = [n for n in names if len(n.split()) < 2]
        if short or len(set(names)) < len(names):
            raise ValueError(
                f"names must be distinct, of two words or more: {short[:3] or 'a repeated name'}"
            )
    if values_per_fact is not None and values_per_fact < 4:
        raise ValueError(
            f"values_per_fact must be >= 4 (an answer and three distractors), got {values_per_fact}"
        )
    per_modality = (classification_per_modality, generation_per_modality, cloze_per_modality)
    if not all(0 <= k <= len(vocab.SLOTS) for k in per_modality):
        raise ValueError(f"questions per modality must lie in [0, {len(vocab.SLOTS)}], got {per_modality}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty (pass overwrite=True to replace it)")
        if not (root / MANIFEST).is_file():
            raise FileExistsError(f"{root} is not empty and holds no {MANIFEST}: refusing to overwrite it")
        shutil.rmtree(root)
    rng = random.Random(seed)
    pools = fact_pools(values_per_fact, seed)
    people = make_people(n_profiles + never_trained, rng, pools, names)
    counts = {
        "classification": classification_per_modality,
        "generation": generation_per_modality,
        "cloze": cloze_per_modality,
    }
    full, test, ft = [], [], []
    for index, person in enumerate(people):
        image = portraits.draw_portrait(portraits.draw_traits(index, rng, person["eyes"]), image_size)
        full_row, test_row = _task_rows(person, counts, rng, pools)
        image_cell = _image_cell(image, f"{person['ID']}.png") if with_images else None
        views = [
            _jpeg_cell(
                portraits.transformed_view(image, rng), f"{person['ID']}/{person['ID']}_view{k}.jpg", rng
            )
            for k in range(n_test_images)
        ]
        full.append({**full_row, "image": image_cell})
        test.append({**test_row, "images": views if with_images else []})
        ft.append({"ID": person["ID"], "image": image_cell, "metadata": json.dumps(_qa_pairs(person))})
    celebrities = [
        _celebrity_row(c, f"C{k + 1:03d}", n_profiles + k, rng, image_size, with_images)
        for k, c in enumerate(CELEBRITIES[:n_celebrities])
    ]
    held = {p["ID"] for p in people[n_profiles:]}
    never = [r for r in full if r["ID"] in held]
    full, test, ft = ([r for r in rows if r["ID"] not in held] for rows in (full, test, ft))
    ids = [p["ID"] for p in people[:n_profiles]]
    splits = {}
    for forget in FORGET_SPLITS:
        k = max(1, min(n_profiles - 1, round(n_profiles * int(forget.split("_")[1]) / 100)))
        splits[forget] = sorted(rng.sample(ids, k))
    _write(root / "Full_Set", full, _schema("image"))
    _write(root / "ft_Data", ft, _ft_schema(), shards=1)
    _write(root / "Test_Set", test, _schema("images"), shards=2 if len(test) >= 2 else 1)
    _write(root / "Retain_Set", celebrities, _schema("image"))
    if never:
        _write(root / NEVER_TRAINED, never, _schema("image"))
    for forget, forget_ids in splits.items():
        chosen = set(forget_ids)
        _write(root / forget, [r for r in full if r["ID"] in chosen], _schema("image"))
        _write(root / retain_split(forget), [r for r in full if r["ID"] not in chosen], _schema("image"))
    manifest = {
        "generator": "benchmarks.mllmu.synthetic",
        "seed": seed,
        "n_profiles": n_profiles,
        "n_celebrities": n_celebrities,
        "image_size": image_size,
        "with_images": with_images,
        "values_per_fact": values_per_fact,
        "splits": splits,
        "never_trained": sorted(held),
        "names": {p["ID"]: p["Name"] for p in people},
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info(
        "wrote synthetic MLLMU-Bench (%d profiles, %d celebrities, seed %d) to %s",
        n_profiles,
        n_celebrities,
        seed,
        root,
    )
    return root


# ------------------------------------------------------------------ people


def fact_pools(values_per_fact: int | None, seed: int) -> dict[str, tuple[str, ...]]:
    """Each fact's pool of values: the whole vocabulary pool, or ``values_per_fact`` of it (seeded on its own, so
    the profiles' other draws do not move)."""
    if values_per_fact is None:
        return {slot.name: slot.pool for slot in vocab.SLOTS}
    rng = random.Random(f"{seed}:values")
    chosen: dict[int, tuple[str, ...]] = {}
    for slot in vocab.SLOTS:
        if id(slot.pool) not in chosen:
            values = sorted(set(slot.pool))
            chosen[id(slot.pool)] = tuple(rng.sample(values, min(values_per_fact, len(values))))
    return {slot.name: chosen[id(slot.pool)] for slot in vocab.SLOTS}


def make_people(
    n: int,
    rng: random.Random,
    pools: dict[str, tuple[str, ...]] | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``n`` fictitious people: ID, Name (drawn, or ``names[i]``), gender, eye colour, one value per askable fact
    (from ``pools``, default the vocabulary's) and a biography."""
    pools = pools or fact_pools(None, 0)
    firsts = [(f, "Female") for f in vocab.FEMALE_FIRST] + [(m, "Male") for m in vocab.MALE_FIRST]
    firsts = [f for f in firsts if f[0] not in CELEBRITY_NAME_PARTS]
    lasts = [w for w in vocab.LAST_NAMES if w not in CELEBRITY_NAME_PARTS]
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    used = (
        {w.lower() for w, _ in firsts}
        | {w.lower() for w in lasts}
        | {w.lower() for w in CELEBRITY_NAME_PARTS}
    )
    while len(firsts) < n:
        firsts.append((_invented_name(rng, used, last=False), rng.choice(("Female", "Male"))))
    while len(lasts) < n:
        lasts.append(_invented_name(rng, used, last=True))
    width = max(3, len(str(n)))
    people = []
    for i in range(n):
        (first, gender), last = firsts[i], lasts[i]
        facts = {slot.name: rng.choice(pools[slot.name]) for slot in vocab.SLOTS}
        while facts["residence"] == facts["birthplace"]:
            facts["residence"] = rng.choice(pools["residence"])
        name = names[i] if names is not None else f"{first} {last}"
        person = {
            "ID": f"{i + 1:0{width}d}",
            "Name": name,
            "Gender": gender,
            "eyes": rng.choice(vocab.EYES),
            "facts": facts,
        }
        person["biography"] = _biography(person, rng)
        people.append(person)
    return people


SYLLABLES = (
    "ba",
    "da",
    "ka",
    "la",
    "ma",
    "na",
    "ra",
    "sa",
    "ta",
    "va",
    "be",
    "de",
    "le",
    "me",
    "ne",
    "re",
    "se",
    "te",
    "bi",
    "di",
    "li",
    "mi",
    "ni",
    "ri",
    "si",
    "lo",
    "mo",
    "no",
    "ro",
    "so",
    "to",
    "vo",
    "lu",
    "ru",
)
ENDINGS = ("n", "r", "l", "s", "")
LAST_SUFFIXES = ("berg", "ford", "ley", "ton", "wick", "stead", "more", "dale", "by", "holm", "ridge")


def _invented_name(rng: random.Random, used: set[str], *, last: bool) -> str:
    """A pronounceable name not used yet (beyond the built-in pools)."""
    while True:
        stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2)))
        name = (
            stem + rng.choice(LAST_SUFFIXES) if last else stem + rng.choice(SYLLABLES) + rng.choice(ENDINGS)
        )
        if name.lower() not in used:
            used.add(name.lower())
            return name.capitalize()


def _biography(person: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    f = person["facts"]
    year = rng.randint(1950, 2000)
    return {
        "Name": person["Name"],
        "Born": f["birthplace"],
        "Date of Birth": f"{rng.choice(vocab.MONTHS)} {rng.randint(1, 28)}, {year}",
        "Gender": person["Gender"],
        "Employment": f["profession"].capitalize(),
        "Height": f"{rng.randint(150, 198)} cm",
        "Educated at": f["education"],
        "Annual Salary": f"${rng.randint(25, 180)},000",
        "Residence": f["residence"],
        "Medical Conditions": f["condition"][0].upper() + f["condition"][1:],
        "Parents": f"Child of {rng.choice(vocab.PARENT_JOBS)} and {rng.choice(vocab.PARENT_JOBS)}",
        "Fun Facts": f"Loves {f['hobby']}.",
        "Eye Colour": person["eyes"].capitalize(),
        "Description": (
            f"{person['Name']} is {vocab.article(f['profession'])} born in {f['birthplace']}, who studied at "
            f"{f['education']}, lives in {f['residence']} and loves {f['hobby']}."
        ),
    }


# ------------------------------------------------------------------ tasks


def _task_rows(
    person: dict[str, Any], counts: dict[str, int], rng: random.Random, pools: dict[str, tuple[str, ...]]
) -> tuple[dict, dict]:
    """The Full_Set row (original questions) and the Test_Set row (same facts, paraphrased, options reshuffled)."""
    name = person["Name"]
    rows = ({"Classification_Task": {}, "Generation_Task": [], "Mask_Task": []} for _ in range(2))
    full, test = rows
    for key, image_mode in (("Image_Textual_Questions", True), ("Pure_Text_Questions", False)):
        full["Classification_Task"][key], test["Classification_Task"][key] = [], []
        for slot in rng.sample(vocab.SLOTS, counts["classification"]):
            value = person["facts"][slot.name]
            for row, paraphrase in ((full, False), (test, True)):
                question = _question(slot, image_mode, paraphrase).format(name=name)
                row["Classification_Task"][key].append(
                    _multiple_choice(question, value, pools[slot.name], rng)
                )
    for task, count in (("Generation_Task", counts["generation"]), ("Mask_Task", counts["cloze"])):
        for kind, image_mode in (("Image_Textual", True), ("Pure_Text", False)):
            for slot in rng.sample(vocab.SLOTS, count):
                value = person["facts"][slot.name]
                for row, paraphrase in ((full, False), (test, True)):
                    subject = (TEST_IMAGE_SUBJECT if paraphrase else IMAGE_SUBJECT) if image_mode else name
                    if task == "Generation_Task":
                        question = _question(slot, image_mode, paraphrase).format(name=name)
                        truth = _statement(slot, subject, value)
                    else:
                        question, truth = slot.cloze.format(subject=subject), _cloze_answer(value, slot)
                    row[task].append({"Question": question, "Ground_Truth": truth, "Type": kind})
    qa = _qa_pairs(person)[0]
    for row in (full, test):
        row.update(
            ID=person["ID"],
            biography=json.dumps(person["biography"]),
            question=qa["Question"],
            answer=qa["Answer"],
        )
    return full, test


def _question(slot: vocab.Slot, image_mode: bool, paraphrase: bool) -> str:
    if image_mode:
        return slot.image_paraphrase if paraphrase else slot.image_question
    return slot.text_paraphrase if paraphrase else slot.text_question


def _statement(slot: vocab.Slot, subject: str, value: str) -> str:
    return slot.statement.format(subject=subject, value=value, article=vocab.article(value))


def _cloze_answer(value: str, slot: vocab.Slot) -> str:
    """What fills the blank: the city alone for places ("Lisbon", not "Lisbon, Portugal")."""
    return value.split(",")[0] if slot.pool is vocab.CITY_NAMES else value


def _multiple_choice(question: str, answer: str, pool: Sequence[str], rng: random.Random) -> dict[str, Any]:
    options = [answer, *rng.sample([v for v in dict.fromkeys(pool) if v != answer], 3)]
    rng.shuffle(options)
    return {
        "Question": question,
        "Options": dict(zip(LETTERS, options, strict=True)),
        "Correct_Answer": LETTERS[options.index(answer)],
    }


def _qa_pairs(person: dict[str, Any]) -> list[dict[str, str]]:
    """ft_Data-style QA: who this is, then every fact asked twice: by the picture ("this person") and by name."""
    name, pid = person["Name"], person["ID"]
    pairs = [{"ID": pid, "Question": "What is the name of this person?", "Answer": f"This person is {name}."}]
    for slot in vocab.SLOTS:
        value = person["facts"][slot.name]
        image_q = slot.image_question.replace("the person in the image", "this person")
        pairs.append({"ID": pid, "Question": image_q, "Answer": _statement(slot, IMAGE_SUBJECT, value)})
        pairs.append(
            {
                "ID": pid,
                "Question": slot.text_question.format(name=name),
                "Answer": _statement(slot, name, value),
            }
        )
    return pairs


def _celebrity_row(celebrity, cid: str, index: int, rng: random.Random, size: int, with_images: bool) -> dict:
    c = celebrity
    professions = tuple(dict.fromkeys([x.profession for x in CELEBRITIES] + list(EXTRA_PROFESSIONS)))
    countries = tuple(dict.fromkeys([x.country for x in CELEBRITIES] + list(EXTRA_COUNTRIES)))
    known = tuple(x.known_for for x in CELEBRITIES)
    asked = (
        ("What is the profession of {who}?", c.profession, professions),
        ("Which country is {who} from?", c.country, countries),
        ("What is {who} best known for?", c.known_for, known),
    )
    classification = {
        key: [_multiple_choice(q.format(who=who), value, pool, rng) for q, value, pool in asked]
        for key, who in (
            ("Image_Textual_Questions", "the person in the image"),
            ("Pure_Text_Questions", c.name),
        )
    }
    generation, cloze = [], []
    for kind, subject, who in (
        ("Image_Textual", IMAGE_SUBJECT, "the person in the image"),
        ("Pure_Text", c.name, c.name),
    ):
        generation += [
            {
                "Question": f"What is the profession of {who}?",
                "Ground_Truth": f"{subject} is {vocab.article(c.profession)} from {c.country}.",
                "Type": kind,
            },
            {
                "Question": f"What is {who} best known for?",
                "Ground_Truth": f"{subject} is best known for {c.known_for}.",
                "Type": kind,
            },
        ]
        cloze += [
            {"Question": f"{subject} is famous as a __.", "Ground_Truth": c.profession, "Type": kind},
            {"Question": f"{subject} comes from __.", "Ground_Truth": c.country, "Type": kind},
        ]
    biography = {
        "Name": c.name,
        "Born": c.born,
        "Date of Birth": c.date_of_birth,
        "Gender": c.gender,
        "Employment": c.profession.capitalize(),
        "Description": f"{c.name} is known for {c.known_for}.",
    }
    image = portraits.draw_portrait(portraits.draw_traits(index, rng), size)
    return {
        "ID": cid,
        "image": _image_cell(image, f"{cid}.png") if with_images else None,
        "biography": json.dumps(biography),
        "question": f"What is the profession of {c.name}?",
        "answer": f"{c.name} is {vocab.article(c.profession)}.",
        "Classification_Task": classification,
        "Generation_Task": generation,
        "Mask_Task": cloze,
    }


# ------------------------------------------------------------------ parquet


def _image_cell(image, path: str) -> dict[str, Any]:
    return {"bytes": portraits.encode_png(image), "path": path}


def _jpeg_cell(image, path: str, rng: random.Random) -> dict[str, Any]:
    return {"bytes": portraits.encode_jpeg(image, rng), "path": path}


def _schema(image_field: str):
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    choice = pa.struct(
        [
            ("Question", pa.string()),
            ("Options", pa.struct([(k, pa.string()) for k in LETTERS])),
            ("Correct_Answer", pa.string()),
        ]
    )
    open_task = pa.list_(
        pa.struct([("Question", pa.string()), ("Ground_Truth", pa.string()), ("Type", pa.string())])
    )
    return pa.schema(
        [
            ("ID", pa.string()),
            (image_field, image if image_field == "image" else pa.list_(image)),
            ("biography", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            (
                "Classification_Task",
                pa.struct(
                    [("Image_Textual_Questions", pa.list_(choice)), ("Pure_Text_Questions", pa.list_(choice))]
                ),
            ),
            ("Generation_Task", open_task),
            ("Mask_Task", open_task),
        ]
    )


def _ft_schema():
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema([("ID", pa.string()), ("image", image), ("metadata", pa.string())])


def _write(folder: Path, rows: list[dict[str, Any]], schema, shards: int = 1) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, min(shards, len(rows)))
    size = -(-len(rows) // shards) if rows else 0
    for k in range(shards):
        part = rows[k * size : (k + 1) * size]
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / SHARD.format(k=k, n=shards))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic MLLMU-Bench in the hub layout.")
    parser.add_argument("root", help="output folder")
    parser.add_argument(
        "--profiles", type=int, default=20, help="number of fictitious people (real set: 500)"
    )
    parser.add_argument(
        "--celebrities", type=int, default=8, help=f"real public figures (max {len(CELEBRITIES)})"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--values-per-fact",
        type=int,
        default=None,
        help="values each fact is drawn from (default: whole pools)",
    )
    parser.add_argument("--text-only", action="store_true", help="rows without images")
    parser.add_argument(
        "--never-trained",
        type=int,
        default=0,
        help=f"more people, only in the config {NEVER_TRAINED} (in no split, not in ft_Data): the level to forget to",
    )
    parser.add_argument(
        "--names", default=None, help="a text file with one name per line, used instead of drawn names"
    )
    parser.add_argument(
        "--test-images",
        type=int,
        default=3,
        help="transformed views per person in Test_Set (held-out images)",
    )
    args = parser.parse_args(argv)
    path = write_synthetic(
        args.root,
        args.profiles,
        args.celebrities,
        args.seed,
        image_size=args.image_size,
        n_test_images=args.test_images,
        with_images=not args.text_only,
        values_per_fact=args.values_per_fact,
        never_trained=args.never_trained,
        names=_read_names(args.names),
    )
    print(f"wrote {path}")
    return 0


def _read_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
