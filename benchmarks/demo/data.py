"""The demo's inputs: the synthetic benchmark and its never-trained twin, the guard's surrogate words and
faces, and the vanilla demo MLLM."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.demo.cache import cached, fingerprint, folder_digest, mark
from benchmarks.demo.settings import DemoSettings

logger = logging.getLogger(__package__)  # the demo's one logger, named as before it became a package

TWINS_FILE = "twins.json"


def write_split(source_root: Path, target_root: Path, name: str, ids: Sequence[str]) -> None:
    """Write config ``name`` under ``target_root`` holding the Full_Set rows of ``ids`` (schema kept)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from benchmarks.mllmu.loader import shard_files

    tables = [pq.read_table(s) for s in shard_files(source_root, "Full_Set")]
    import pyarrow as pa

    table = pa.concat_tables(tables)
    table = table.filter(pc.is_in(table["ID"], value_set=pa.array(list(ids), type=pa.string())))
    folder = target_root / name
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")


def surrogate_words(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The demo guard's surrogate words (``GuardConfig`` fields): the synthetic benchmark's own name pools, less
    every word of its profiles' and celebrities' names. A guarded request then reads about someone like the
    never-trained people, never about one the model knows. The guard's built-in words ("Lazarus", "Thaddeus")
    are not such a person: twins under them scored farther from the never-trained people under their own names
    than other draws of names from these pools (docs/demo.md)."""
    from benchmarks.mllmu.celebrities import CELEBRITY_NAME_PARTS
    from benchmarks.mllmu.vocab import FEMALE_FIRST, LAST_NAMES, MALE_FIRST

    taken = {word for name in names for word in name.split()} | set(CELEBRITY_NAME_PARTS)
    return {
        "surrogate_given_names": tuple(w for w in FEMALE_FIRST + MALE_FIRST if w not in taken),
        "surrogate_surnames": tuple(w for w in LAST_NAMES if w not in taken),
    }


def prepare_data(
    data: Any, out: Path, heldout: Sequence[str], rounds: int, tokenizer: Any, config: Any
) -> tuple[Path, Path, Any]:
    """The benchmark (retain split without the held-out profiles), its never-trained twin and the guard's config
    with the benchmark's :func:`surrogate_words`. The twin asks the forget people's questions in ``rounds`` rounds
    (``benchmarks.mllmu.twins.round_pairs``), round k about the k-th held-out person's photo under the name that
    guard k (``config.seed`` + k) reads; data and twin under ``out``."""
    from benchmarks.mllmu.loader import retain_split, split_people
    from benchmarks.mllmu.twins import round_pairs, twin_pairs
    from eco_guard.surrogates import Surrogates

    root, reference = out / "data", out / "reference"
    data_key = fingerprint(asdict(data))
    if not cached(root, data_key, "data"):
        data.write(root)
        mark(root, data_key, "data")
    manifest = json.loads((root / "synthetic_manifest.json").read_text())
    forget_ids = list(split_people(root, data.forget))
    if set(heldout) & set(forget_ids):
        raise ValueError(
            f"held-out profiles {sorted(set(heldout) & set(forget_ids))} are in the forget split"
        )
    config = config.replace(**surrogate_words(manifest["names"].values()))
    namers = [Surrogates.of(tokenizer, config.replace(seed=config.seed + k)) for k in range(rounds)]
    pairs = round_pairs(forget_ids, heldout, rounds)
    twin_names = {
        (f, n): namers[k // len(forget_ids)].name(manifest["names"][f]) for k, (f, n) in enumerate(pairs)
    }
    key = fingerprint(data_key, sorted(heldout), sorted(twin_names.items()), "test once")
    if cached(root, key) and cached(reference, key):
        return root, reference, config
    write_split(root, root, retain_split(data.forget), retain_ids_of(manifest, forget_ids, heldout))
    # the Test_Set row only fills the table: each never-trained person once is enough (a quarter of the time)
    write_reference(
        root,
        reference,
        data.forget,
        pairs,
        manifest,
        heldout,
        twin_names,
        test_pairs=twin_pairs(forget_ids, heldout),
    )
    mark(root, key)
    mark(reference, key)
    return root, reference, config


def retain_ids_of(
    manifest: Mapping[str, Any], forget_ids: Sequence[str], heldout: Sequence[str]
) -> list[str]:
    """The retain people: neither forget nor never-trained."""
    return [i for i in sorted(manifest["names"]) if i not in set(forget_ids) | set(heldout)]


def write_reference(
    root: Path,
    folder: Path,
    forget: str,
    pairs: Sequence[tuple[str, str]],
    manifest: Mapping[str, Any],
    heldout: Sequence[str],
    twin_names: Mapping[tuple[str, str], str] | None = None,
    test_pairs: Sequence[tuple[str, str]] | None = None,
) -> None:
    """``folder``: the benchmark in ``root`` with the twins of ``pairs`` in the ``forget`` split's place (under
    ``twin_names``, else the never-trained people's own names) and, with ``test_pairs``, in the Test_Set's (else
    ``root``'s own); the other configs are links to ``root``'s, and ``twins.json`` lists the pairs."""
    from benchmarks.mllmu.loader import retain_split
    from benchmarks.mllmu.twins import write_twins

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shared = ("Full_Set", "Retain_Set", "ft_Data") + (() if test_pairs else ("Test_Set",))
    for name in shared:
        (folder / name).symlink_to(Path(os.path.relpath(root / name, folder)))
    names = manifest["names"]
    write_twins(root, folder, {forget: "Full_Set"}, pairs, names, twin_names)
    if test_pairs:
        write_twins(root, folder, {"Test_Set": "Test_Set"}, test_pairs, names)
    chosen = twin_names or {}
    named = [[f, n, chosen.get((f, n), names[n])] for f, n in pairs]
    (folder / TWINS_FILE).write_text(json.dumps({"pairs": pairs, "named": named}, indent=1) + "\n")
    forget_ids = sorted({f for f, _ in pairs})
    write_split(root, folder, retain_split(forget), retain_ids_of(manifest, forget_ids, heldout))


def surrogate_faces(data: Any, n: int, draw: int = 0) -> list[Any]:
    """``n`` portraits drawn for nobody (indices past every profile and celebrity, their own seed; each ``draw``
    its own faces): faces the demo model never saw, for the guard's ``image_surrogates``."""
    import random

    from benchmarks.mllmu import portraits, vocab

    rng = random.Random(f"{data.seed}:surrogate-faces" + (f":{draw}" if draw else ""))
    first = data.n_profiles + data.n_celebrities + draw * n
    return [
        portraits.draw_portrait(
            portraits.draw_traits(first + k, rng, rng.choice(vocab.EYES)), data.image_size
        )
        for k in range(n)
    ]


def load_vanilla(settings: DemoSettings) -> tuple[Any, Any, Any, dict[str, Any], str]:
    """The demo MLLM (artifact, or trained into ``out/model`` when missing or ``retrain``): model, processor,
    recipe, record and the artifact's digest."""
    from benchmarks import demo_model

    artifact = Path(settings.artifact) if settings.artifact else demo_model.ASSET_DIR
    if settings.retrain or not demo_model.has_artifact(artifact):
        recipe = (
            demo_model.read_recipe(artifact)[0]
            if demo_model.has_artifact(artifact)
            else demo_model.DemoRecipe()
        )
        artifact = settings.out / "model"
        if settings.retrain or not demo_model.has_artifact(artifact):
            logger.info("training the demo model into %s (no artifact to reuse)", artifact)
            demo_model.build_demo_model(artifact, recipe, command="eco-guard demo --retrain")
    recipe, record = demo_model.read_recipe(artifact)
    model, processor = demo_model.load_demo_model(artifact)
    return model, processor, recipe, record, folder_digest(artifact)
