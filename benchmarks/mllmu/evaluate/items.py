"""The questions of MLLMU-Bench as the reference asks them: the sets' rows (:func:`load_benchmark`), seeded
few-shot draws (:class:`ShotSampler`) and one :class:`Item` per question (:func:`build_items`)."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.mllmu import prompts
from benchmarks.mllmu.loader import (
    FORGET_SPLITS,
    has_config,
    load_config,
    retain_split,
    row_id,
)

logger = logging.getLogger(__package__)  # one logger for the package, named as before it became one


SETS = ("forget", "test", "retain", "celebrity")
MODALITIES = ("image_text", "text_only")
TASK_MODALITY = {"Image_Textual": "image_text", "Pure_Text": "text_only"}
CLASSIFICATION_MODALITY = {"Image_Textual_Questions": "image_text", "Pure_Text_Questions": "text_only"}
FEW_SHOT_SETS = {"classification": ("forget", "test", "retain"), "cloze": SETS}
"""Where the reference prepends few-shot examples (never to generation; not to celebrity classification)."""


@dataclass
class Item:
    """One question to ask: its prompt, image and reference, and where it came from."""

    set: str
    task: str
    modality: str
    id: str
    index: int
    question: str
    prompt: str
    reference: str
    image: Any = None
    image_ref: str | None = None
    options: dict[str, str] | None = None
    few_shot_ids: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> str | dict[str, Any]:
        return {"text": self.prompt, "image": self.image} if self.image is not None else self.prompt


@dataclass
class Benchmark:
    """The rows of every set, the few-shot source rows by ID, and which people are in the forget split."""

    sets: dict[str, list[dict[str, Any]]]
    shot_rows: dict[Any, dict[str, Any]]  # profile ID, or ("celebrity", ID)
    forget_ids: list[str]
    retain_ids: list[str]
    celebrity_ids: list[str]
    names: dict[str, str]


def load_benchmark(data_root: str | Path, forget: str = "forget_5") -> Benchmark:
    """Rows of the four sets. Split rows without task fields (training-style image + metadata) take their tasks
    from Full_Set by ID when it is there; otherwise they are scored as QA-only rows."""
    if forget not in FORGET_SPLITS:
        raise ValueError(f"unknown forget split {forget!r}; valid: {', '.join(FORGET_SPLITS)}")
    full = (
        {row_id(r, "Full_Set"): r for r in load_config(data_root, "Full_Set")}
        if has_config(data_root, "Full_Set")
        else {}
    )
    forget_rows = _with_tasks(load_config(data_root, forget), full, forget)
    retain_rows = _with_tasks(load_config(data_root, retain_split(forget)), full, retain_split(forget))
    forget_ids = [row_id(r, forget) for r in forget_rows]
    sets = {"forget": forget_rows, "retain": retain_rows, "test": [], "celebrity": []}
    if has_config(data_root, "Test_Set"):
        wanted = set(forget_ids)
        sets["test"] = [r for r in load_config(data_root, "Test_Set") if row_id(r, "Test_Set") in wanted]
    else:
        logger.warning("%s has no Test_Set: the test set is skipped", data_root)
    if has_config(data_root, "Retain_Set"):
        sets["celebrity"] = load_config(data_root, "Retain_Set")
    else:
        logger.warning("%s has no Retain_Set: the celebrity set is skipped", data_root)
    shot_rows = {**{row_id(r, "split"): r for r in forget_rows + retain_rows}, **full}
    celebrity_ids = [row_id(r, "Retain_Set") for r in sets["celebrity"]]
    shot_rows.update({("celebrity", i): r for i, r in zip(celebrity_ids, sets["celebrity"], strict=True)})
    names = {}
    for rows in (forget_rows, retain_rows, list(full.values())):
        for r in rows:
            name = (r.get("biography") or {}).get("Name")
            if name:
                names[row_id(r, "row")] = name
    return Benchmark(
        sets, shot_rows, forget_ids, [row_id(r, "retain") for r in retain_rows], celebrity_ids, names
    )


def _has_tasks(row: Mapping[str, Any]) -> bool:
    return any(row.get(k) for k in ("Classification_Task", "Generation_Task", "Mask_Task"))


def _with_tasks(
    rows: list[dict[str, Any]], full: Mapping[str, dict[str, Any]], split: str
) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        rid = row_id(row, f"{split} row {i}")
        if not _has_tasks(row) and rid in full:
            row = {**full[rid], **{k: v for k, v in row.items() if v is not None}}
        out.append(row)
    return out


# ------------------------------------------------------------------ items


class ShotSampler:
    """Seeded few-shot profile draws, one per (set, task), logged; the reference draws them unseeded."""

    def __init__(self, bench: Benchmark, seed: int, profiles: int, no_leak: bool) -> None:
        self.bench, self.seed, self.profiles, self.no_leak = bench, seed, profiles, no_leak
        self.log: dict[str, dict[str, list[str]]] = defaultdict(dict)

    def _candidates(self, set_name: str, no_leak: bool) -> tuple[list[Any], bool]:
        """Few-shot source keys and whether the drawn profiles are held out of scoring (they are in the scored set).

        Reference: the scored set's own profiles (held out). No leak: the retain people for forget, test and
        celebrity; the celebrities for retain (or held-out retain people when there are none): a forget-set person
        never appears in a prompt but their own questions.
        """
        b = self.bench
        celebrities = [("celebrity", i) for i in b.celebrity_ids]
        if not no_leak:
            scored = {
                "forget": b.forget_ids,
                "test": b.forget_ids,
                "retain": b.retain_ids,
                "celebrity": celebrities,
            }
            candidates, held_out = list(scored[set_name]), True
        elif set_name == "retain":
            candidates, held_out = (celebrities, False) if celebrities else (list(b.retain_ids), True)
        else:
            candidates, held_out = list(b.retain_ids), False
        return [c for c in candidates if c in b.shot_rows], held_out

    def draw(self, set_name: str, task: str) -> tuple[list[Mapping[str, Any]], set[str]]:
        """The few-shot source rows and the IDs to leave out of scoring."""
        if self.profiles <= 0 or set_name not in FEW_SHOT_SETS[task]:
            return [], set()
        candidates, held_out = self._candidates(set_name, self.no_leak)
        if held_out and len(candidates) <= self.profiles and not self.no_leak:
            logger.warning(
                "%s: too few profiles to give %d up for few-shot; drawing them as with no_leak",
                set_name,
                self.profiles,
            )
            candidates, held_out = self._candidates(set_name, True)
        rng = random.Random(f"{self.seed}:few-shot:{set_name}:{task}")
        chosen = rng.sample(sorted(candidates, key=str), min(self.profiles, len(candidates)))
        ids = [c[1] if isinstance(c, tuple) else c for c in chosen]
        self.log[set_name][task] = ids
        return [self.bench.shot_rows[c] for c in chosen], set(ids) if held_out else set()


def build_items(
    set_name: str,
    rows: Sequence[Mapping[str, Any]],
    sampler: ShotSampler,
    seed: int,
    modalities: Sequence[str],
    names: Mapping[str, str],
) -> list[Item]:
    """Every question of a set, in row order, with its few-shot prefix; QA-only rows become ``qa`` items."""
    items: list[Item] = []
    task_rows = [r for r in rows if _has_tasks(r)]
    if task_rows:
        items += _classification_items(set_name, task_rows, sampler, seed)
        items += _cloze_items(set_name, task_rows, sampler, seed)
        items += _generation_items(set_name, task_rows, seed)
    items += _qa_items(set_name, [r for r in rows if not _has_tasks(r)], names)
    kept = [
        it
        for it in items
        if it.modality in modalities and (it.modality == "text_only" or it.image is not None)
    ]
    if len(kept) < len(items):
        logger.info(
            "%s: %d image+text questions skipped (text-only model or rows without images)",
            set_name,
            len(items) - len(kept),
        )
    return kept


def _image(row: Mapping[str, Any], set_name: str, task: str, seed: int) -> tuple[Any, str | None]:
    """The row's image; for Test_Set rows a seeded choice among its transformed images."""
    rid = str(row.get("ID"))
    if row.get("images"):
        k = random.Random(f"{seed}:test-image:{task}:{rid}").randrange(len(row["images"]))
        return row["images"][k].convert("RGB"), f"Test_Set/{rid}/images[{k}]"
    if row.get("image") is not None:
        return row["image"].convert("RGB"), f"{set_name}/{rid}/image"
    return None, None


def _classification_items(set_name, rows, sampler, seed) -> list[Item]:
    shots, held_out = sampler.draw(set_name, "classification")
    shot_ids = tuple(str(r.get("ID")) for r in shots)
    items = []
    for row in rows:
        rid = str(row["ID"])
        if rid in held_out:
            continue
        image, image_ref = _image(row, set_name, "classification", seed)
        for key, modality in CLASSIFICATION_MODALITY.items():
            examples = [q for r in shots for q in (r.get("Classification_Task") or {}).get(key, [])]
            for k, q in enumerate((row.get("Classification_Task") or {}).get(key, [])):
                is_image = modality == "image_text"
                items.append(
                    Item(
                        set_name,
                        "classification",
                        modality,
                        rid,
                        k,
                        q["Question"],
                        prompts.classification_prompt(q["Question"], q["Options"], is_image, examples),
                        q["Correct_Answer"],
                        image if is_image else None,
                        image_ref if is_image else None,
                        dict(q["Options"]),
                        shot_ids,
                    )
                )
    return items


def _cloze_items(set_name, rows, sampler, seed) -> list[Item]:
    shots, held_out = sampler.draw(set_name, "cloze")
    shot_ids = tuple(str(r.get("ID")) for r in shots)
    examples = defaultdict(list)
    for r in shots:
        for q in r.get("Mask_Task") or []:
            examples[q["Type"]].append(q)
    items = []
    for row in rows:
        rid = str(row["ID"])
        if rid in held_out:
            continue
        image, image_ref = _image(row, set_name, "cloze", seed)
        for k, q in enumerate(row.get("Mask_Task") or []):
            modality, is_image = TASK_MODALITY[q["Type"]], q["Type"] == "Image_Textual"
            items.append(
                Item(
                    set_name,
                    "cloze",
                    modality,
                    rid,
                    k,
                    q["Question"],
                    prompts.cloze_prompt(q["Question"], is_image, examples[q["Type"]]),
                    q["Ground_Truth"],
                    image if is_image else None,
                    image_ref if is_image else None,
                    None,
                    shot_ids,
                )
            )
    return items


def _generation_items(set_name, rows, seed) -> list[Item]:
    items = []
    for row in rows:
        rid = str(row["ID"])
        image, image_ref = _image(row, set_name, "generation", seed)
        for k, q in enumerate(row.get("Generation_Task") or []):
            modality, is_image = TASK_MODALITY[q["Type"]], q["Type"] == "Image_Textual"
            items.append(
                Item(
                    set_name,
                    "generation",
                    modality,
                    rid,
                    k,
                    q["Question"],
                    prompts.generation_prompt(q["Question"], is_image),
                    q["Ground_Truth"],
                    image if is_image else None,
                    image_ref if is_image else None,
                )
            )
    return items


def _qa_items(set_name, rows, names) -> list[Item]:
    """QA-only rows: a question naming the person is text-only; one that does not ("this person") needs the image."""
    items = []
    for i, row in enumerate(rows):
        rid = row_id(row, f"{set_name} row {i}")
        name = (row.get("biography") or {}).get("Name") or names.get(rid)
        for k, qa in enumerate(row.get("metadata") or []):
            named = bool(name) and name.lower() in qa["Question"].lower()
            image = None if named or row.get("image") is None else row["image"].convert("RGB")
            modality = "text_only" if named or row.get("image") is None else "image_text"
            items.append(
                Item(
                    set_name,
                    "qa",
                    modality,
                    rid,
                    k,
                    qa["Question"],
                    prompts.qa_prompt(qa["Question"], image is not None),
                    qa["Answer"],
                    image,
                    f"{set_name}/{rid}/image" if image is not None else None,
                )
            )
    return items


def limit_items(items: list[Item], limit: int | None) -> list[Item]:
    """At most ``limit`` items per (task, modality), in order."""
    if limit is None:
        return items
    seen: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    for it in items:
        key = (it.task, it.modality)
        if seen[key] < limit:
            seen[key] += 1
            out.append(it)
    return out
