"""Twin profiles: a forget person's very questions, asked about someone the model never saw.

The usual never-trained reference is the model's score on *other* people it never learned. Their questions carry
other options, other right answers and other distractors, so two such groups differ by several answers per cell even
when the model knows neither; on the demo that is more than its 0.03 tolerance (docs/demo.md), so even a perfect
guard would fail it by chance.

A twin keeps every question, option and right answer of a forget person's row and swaps the identity alone for a
never-trained person's: the name in every string (full name, first or last name alone, possessives), the photo and
the Test_Set views. It is still the model's score on someone it never saw, but now paired with the forget set
question by question, so the comparison no longer depends on which questions were drawn.

A twin may also carry a name of its own (``write_twins(twin_names=)``): the demo names each twin after the
surrogate its guard reads, so guard and twin ask about one and the same unknown person (``round_pairs``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

IMAGE_FIELDS = ("image", "images")


def twin_pairs(forget_ids: Sequence[str], never_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(forget ID, never-trained ID) pairs, each never-trained identity once, the forget people in turn."""
    forget_ids, never_ids = sorted(forget_ids), sorted(never_ids)
    _check(forget_ids, never_ids)
    return [(forget_ids[k % len(forget_ids)], never) for k, never in enumerate(never_ids)]


def round_pairs(forget_ids: Sequence[str], never_ids: Sequence[str], rounds: int) -> list[tuple[str, str]]:
    """(forget ID, never-trained ID) pairs in ``rounds`` rounds: round k asks every forget person's questions
    about the k-th never-trained identity (sorted), the one guard k reads in the demo."""
    forget_ids, never_ids = sorted(forget_ids), sorted(never_ids)
    _check(forget_ids, never_ids)
    if not 1 <= rounds <= len(never_ids):
        raise ValueError(
            f"{len(never_ids)} never-trained profiles give 1 to {len(never_ids)} rounds, not {rounds}"
        )
    return [(forget, never_ids[k]) for k in range(rounds) for forget in forget_ids]


def twin_rounds(pairs: Sequence[Sequence[str]]) -> list[list[Sequence[str]]]:
    """``pairs`` (in rounds of one twin per forget person, as :func:`round_pairs` orders them) cut into rounds."""
    people = len({f for f, _ in pairs})
    return [list(pairs[k : k + people]) for k in range(0, len(pairs), people)]


def _check(forget_ids: Sequence[str], never_ids: Sequence[str]) -> None:
    if not forget_ids or not never_ids:
        raise ValueError("twin profiles need at least one forget and one never-trained profile")
    if set(forget_ids) & set(never_ids):
        raise ValueError(
            f"profiles {sorted(set(forget_ids) & set(never_ids))} are both forget and never-trained"
        )


TWIN_SEPARATOR = "-as-"


def twin_id(forget_id: str, never_id: str) -> str:
    """The twin's profile ID: unique per pair, so one never-trained identity can stand in for several people."""
    return f"{never_id}{TWIN_SEPARATOR}{forget_id}"


def twin_parts(twin: str) -> tuple[str, str]:
    """(forget ID, never-trained ID) of a :func:`twin_id`."""
    never_id, sep, forget_id = twin.partition(TWIN_SEPARATOR)
    if not sep:
        raise ValueError(f"{twin!r} is not a twin profile ID (never-trained ID{TWIN_SEPARATOR}forget ID)")
    return forget_id, never_id


def rename(value: Any, old: str, new: str) -> Any:
    """``value`` with every mention of ``old`` replaced by ``new`` (the full name, else its first or last word
    alone, by the other's), as whole words in nested dicts, lists and JSON strings alike; image fields are left
    alone."""
    old_words, new_words = old.split(), new.split()
    mapping = {old: new}  # the full name first: the regex tries the alternatives in this order
    if len(old_words) > 1:
        mapping[old_words[0]] = new_words[0]
        mapping[old_words[-1]] = new_words[-1]
    pattern = re.compile(r"\b(" + "|".join(re.escape(p) for p in mapping) + r")\b")

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub(lambda m: mapping[m.group(0)], v)
        if isinstance(v, Mapping):
            return {k: (x if k in IMAGE_FIELDS else walk(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def twin_row(
    row: Mapping[str, Any], name: str, identity: Mapping[str, Any], identity_name: str
) -> dict[str, Any]:
    """``row``'s questions and answers about ``identity``: its name in every string, its picture(s), and the
    pair's own ID (:func:`twin_id`)."""
    out = rename(dict(row), name, identity_name)
    out["ID"] = twin_id(str(row["ID"]), str(identity["ID"]))
    for key in IMAGE_FIELDS:
        if key in row:
            if key not in identity:
                raise ValueError(f"profile {identity['ID']} has no {key!r} to stand in for {row['ID']}'s")
            out[key] = identity[key]
    return out


def write_twins(
    source: Path,
    target: Path,
    configs: Mapping[str, str],
    pairs: Sequence[tuple[str, str]],
    names: Mapping[str, str],
    twin_names: Mapping[tuple[str, str], str] | None = None,
) -> None:
    """For each ``target config <- source config`` in ``configs``, write the twin rows of ``pairs`` (raw parquet
    rows: images stay encoded, the schema is kept). ``twin_names``: a pair's own name for its twin, instead of the
    never-trained person's (the name a guard reads for that forget person)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.mllmu.loader import shard_files

    for target_config, source_config in configs.items():
        table = pa.concat_tables([pq.read_table(s) for s in shard_files(source, source_config)])
        by_id = {str(r["ID"]): r for r in table.to_pylist()}
        missing = sorted({i for pair in pairs for i in pair} - set(by_id))
        if missing:
            raise ValueError(f"{source / source_config} has no rows for profiles {missing}")
        chosen = twin_names or {}
        rows = [twin_row(by_id[f], names[f], by_id[n], chosen.get((f, n), names[n])) for f, n in pairs]
        folder = target / target_config
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(rows, schema=table.schema), folder / "train-00000-of-00001.parquet"
        )
