"""Classifier folders: readable JSON plus safetensors, a sha256 for every file, never pickle.

``classifier.json`` names the class (``{"class": "classifiers.text.TextClassifier", ...}``) so that
``eco_guard.guard.load_classifier`` can find its loader, holds the class's JSON config, and lists the checksum of
every other file in the folder (subfolders included), so a corrupted or tampered file is refused on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eco_guard.config import GuardFileError

META = "classifier.json"
FORMAT_VERSION = 1


class ClassifierFileError(GuardFileError):
    """A classifier folder is missing, of another format, of another class, or was modified after saving."""


def class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_meta(folder: str | Path, obj: Any, config: Mapping[str, Any]) -> Path:
    """Write ``classifier.json`` last, after every other file of ``folder`` is in place."""
    folder = Path(folder)
    body = json.loads(json.dumps(dict(config)))  # fail early on anything JSON cannot hold
    document = {
        "class": class_path(obj),
        "format_version": FORMAT_VERSION,
        "config": body,
        "config_sha256": _digest_json(body),
        "files": {name: _digest_file(folder / name) for name in _files(folder)},
    }
    path = folder / META
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def read_meta(folder: str | Path, expected: type) -> dict[str, Any]:
    """The verified config of a folder written by :func:`write_meta` for class ``expected``."""
    folder = Path(folder)
    path = folder / META
    if not path.is_file():
        raise ClassifierFileError(f"no classifier at {folder} ({META} is missing)")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClassifierFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ClassifierFileError(f"{path} has no 'config' object; not a classifier file")
    if document.get("format_version") != FORMAT_VERSION:
        raise ClassifierFileError(
            f"{path} has format_version {document.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    if document.get("class") != class_path(expected):
        raise ClassifierFileError(f"{path} holds a {document.get('class')!r}, not a {class_path(expected)!r}")
    if document.get("config_sha256") != _digest_json(document["config"]):
        raise ClassifierFileError(f"{path} was modified after it was saved (config sha256 mismatch)")
    listed = document.get("files")
    if not isinstance(listed, dict):
        raise ClassifierFileError(f"{path} has no file checksums")
    for name, digest in listed.items():
        file = folder / name
        if not file.is_file():
            raise ClassifierFileError(f"{folder}: file {name} is missing")
        if _digest_file(file) != digest:
            raise ClassifierFileError(f"{file} is corrupted or was modified after saving (sha256 mismatch)")
    return document["config"]


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ClassifierFileError(f"{path} is not a readable safetensors file: {err}") from None


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` but its own ``classifier.json`` (those of sub-classifiers are included)."""
    top = folder / META
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p != top)


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_json(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
