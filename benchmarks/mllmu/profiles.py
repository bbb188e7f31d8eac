"""MLLMU-Bench rows as the classifier's training material: each profile's name, questions and photo, with the
Test_Set's paraphrases and transformed photos held out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.mllmu.loader import load_config
from classifiers.training import Profile


def _field(row: dict[str, Any], name: str, default: Any) -> Any:
    value = row.get(name, default)
    if isinstance(value, str) and name != "image":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return default
    return default if value is None else value


def _questions(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(text-only questions, image+text questions)`` of a profile row, as the benchmark's prompts pose them."""
    text, image = [], []
    tasks = _field(row, "Classification_Task", {})
    for key, bucket in (("Pure_Text_Questions", text), ("Image_Textual_Questions", image)):
        for item in tasks.get(key, []) or []:
            options = item.get("Options") or {}
            if isinstance(options, str):
                options = json.loads(options)
            lines = [f"{k}: {v}" for k, v in sorted(options.items()) if v is not None]
            bucket.append("\n".join([item["Question"], *lines]))
    for task in ("Generation_Task", "Mask_Task"):
        for item in _field(row, task, []) or []:
            question = item["Question"].replace("__", "[Blank]")
            (image if item.get("Type") == "Image_Textual" else text).append(question)
    return text, image


def profiles_from_mllmu(root: Path, forget: str, retain: str) -> tuple[list, list, list]:
    """Forget, retain and celebrity profiles: Full_Set questions and images, with Test_Set paraphrases and
    transformed images as held-out material."""

    def ids(config: str) -> set[str]:
        return {str(r["ID"]) for r in load_config(root, config)}

    full = {str(r["ID"]): r for r in load_config(root, "Full_Set")}
    test = {str(r["ID"]): r for r in load_config(root, "Test_Set")}

    def profile(row: dict[str, Any], held: dict[str, Any] | None) -> Profile:
        name = _field(row, "biography", {}).get("Name")
        if not name:
            raise ValueError(f"profile {row.get('ID')!r} has no biography Name")
        text, image = _questions(row)
        held_text, held_image = _questions(held) if held else ([], [])
        images = (held or {}).get("images") or []
        return Profile(
            identity=str(row["ID"]),
            name=name,
            text_questions=text,
            image_questions=image,
            image=row.get("image"),
            held_out_text_questions=held_text,
            held_out_image_questions=held_image,
            held_out_images=list(images),
        )

    forget_ids, retain_ids = ids(forget), ids(retain)
    overlap = forget_ids & retain_ids
    if overlap:
        raise ValueError(f"{forget} and {retain} share profiles {sorted(overlap)[:5]}")
    missing = sorted((forget_ids | retain_ids) - set(full))
    if missing:
        raise ValueError(f"profiles {missing[:5]} of {forget}/{retain} are not in Full_Set")
    forget_people = [profile(full[i], test.get(i)) for i in sorted(forget_ids)]
    retain_people = [profile(full[i], test.get(i)) for i in sorted(retain_ids)]
    celebrities = [profile(r, None) for r in load_config(root, "Retain_Set")]
    return forget_people, retain_people, celebrities
