"""The demo's stage cache: a stage's output folder is stamped with the hash of its inputs and reused while it
matches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

STAGE_PREFIX = ".stage-"


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able inputs (settings, file digests)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """Hash of every file's name and bytes under ``folder`` (what a stage's output depends on)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(STAGE_PREFIX)):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached(folder: Path, key: str, stage: str = "output") -> bool:
    """Whether ``stage`` already wrote ``folder`` from the inputs hashed into ``key``."""
    stamp = folder / f"{STAGE_PREFIX}{stage}.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("key") == key


def mark(folder: Path, key: str, stage: str = "output") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{STAGE_PREFIX}{stage}.json").write_text(json.dumps({"key": key}) + "\n")
