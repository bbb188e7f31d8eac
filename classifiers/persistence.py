"""Classifier folders: readable JSON plus safetensors, a sha256 for every file, never pickle.

``classifier.json`` names the class (``{"class": "classifiers.text.TextClassifier", ...}``) so that
``eco_guard.core.load_classifier`` can find its loader, holds the class's JSON config, and lists the checksum of
every other file in the folder (subfolders included), so a corrupted or tampered file is refused on load. The
format is :mod:`eco_guard.io`'s document; this module only adds the class check.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eco_guard import io

META = "classifier.json"
FORMAT_VERSION = 1
DIGEST_KEY = "config_sha256"


class ClassifierFileError(io.GuardFileError):
    """A classifier folder is missing, of another format, of another class, or was modified after saving."""


def class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_meta(folder: str | Path, obj: Any, config: Mapping[str, Any]) -> Path:
    """Write ``classifier.json`` last, after every other file of ``folder`` is in place."""
    return io.write_document(
        Path(folder) / META,
        config,
        version=FORMAT_VERSION,
        digest_key=DIGEST_KEY,
        header={"class": class_path(obj)},
        folder_files=True,
    )


def read_meta(folder: str | Path, expected: type) -> dict[str, Any]:
    """The verified config of a folder written by :func:`write_meta` for class ``expected``."""
    path = Path(folder) / META
    try:
        document = io.read_document(
            path, version=FORMAT_VERSION, what="classifier", digest_key=DIGEST_KEY, folder_files=True
        )
    except io.GuardFileError as err:
        raise ClassifierFileError(str(err)) from None
    if document.get("class") != class_path(expected):
        raise ClassifierFileError(f"{path} holds a {document.get('class')!r}, not a {class_path(expected)!r}")
    return document["config"]


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    io.save_arrays(path, arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    try:
        return io.load_arrays(path)
    except io.GuardFileError as err:
        raise ClassifierFileError(str(err)) from None
