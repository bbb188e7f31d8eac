"""What the guard writes to disk and reads back: versioned JSON documents with checksums, safetensors arrays, and
atomic writes (a reader sees the old file or the new one, never half of one). Nothing here unpickles.

A document is ``{"format_version": N, "config": {...}, <digest key>: sha256 of the config, ...}``; a folder's
document may also list the sha256 of every other file below it (``files``), so a file changed after saving is
refused on load. The guard config (``guard_config.json``), every classifier folder (``classifier.json``) and the
surrogate faces (``image_surrogates.safetensors``) are read and written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class GuardFileError(ValueError):
    """A guard file or folder is missing, unreadable, of another format version, or was modified after saving."""


# ------------------------------------------------------------------ atomic writes


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(raw)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ digests


def json_digest(body: Any) -> str:
    """sha256 of a JSON-able value, keys sorted (what a document's checksum covers)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ------------------------------------------------------------------ documents


def write_document(
    path: str | Path,
    config: Mapping[str, Any],
    *,
    version: int,
    digest_key: str = "sha256",
    header: Mapping[str, Any] | None = None,
    folder_files: bool = False,
) -> Path:
    """Write a versioned, checksummed JSON document (keys sorted), atomically. ``header``: more top-level keys;
    ``folder_files``: also list the sha256 of every other file below the document's folder (write it last)."""
    path = Path(path)
    body = json.loads(json.dumps(dict(config)))  # fail early on anything JSON cannot hold
    document = {
        **dict(header or {}),
        "format_version": version,
        "config": body,
        digest_key: json_digest(body),
    }
    if folder_files:
        document["files"] = {name: file_digest(path.parent / name) for name in _files_beside(path)}
    return atomic_write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def read_document(
    path: str | Path,
    *,
    version: int,
    what: str,
    digest_key: str = "sha256",
    verify: bool = True,
    folder_files: bool = False,
) -> dict[str, Any]:
    """A document written by :func:`write_document`, checked: its format version, its config's checksum (unless
    ``verify`` is False) and, with ``folder_files``, every listed file's. ``what`` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise GuardFileError(f"no {what} at {path}")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GuardFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise GuardFileError(f"{path} has no 'config' object; not a {what} file")
    if document.get("format_version") != version:
        raise GuardFileError(
            f"{path} has format_version {document.get('format_version')!r}; this eco-guard reads {version}"
        )
    if verify and document.get(digest_key) != json_digest(document["config"]):
        raise GuardFileError(f"{path} was modified after it was saved (sha256 mismatch)")
    if folder_files:
        listed = document.get("files")
        if not isinstance(listed, dict):
            raise GuardFileError(f"{path} has no file checksums")
        for name, digest in listed.items():
            file = path.parent / name
            if not file.is_file():
                raise GuardFileError(f"{path.parent}: file {name} is missing")
            if file_digest(file) != digest:
                raise GuardFileError(f"{file} is corrupted or was modified after saving (sha256 mismatch)")
    return document


def _files_beside(document: Path) -> list[str]:
    """Every file below the document's folder but the document itself and temporary files."""
    folder = document.parent
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p != document and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )


# ------------------------------------------------------------------ arrays


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], *, with_digests: bool = False) -> Path:
    """Arrays as safetensors, atomically; ``with_digests`` stores each array's sha256 in the file's metadata
    (for files no document lists)."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    metadata = {f"sha256:{k}": array_digest(v) for k, v in arrays.items()} if with_digests else None
    return atomic_write(path, save(arrays, metadata=metadata))


def load_arrays(path: str | Path, *, with_digests: bool = False) -> dict[str, np.ndarray]:
    """Arrays of a safetensors file; ``with_digests``: checked against the digests :func:`save_arrays` stored."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as err:
        raise GuardFileError(f"{path} is not a readable safetensors file: {err}") from None
    if with_digests:
        for key, value in arrays.items():
            recorded = metadata.get(f"sha256:{key}")
            if recorded is None:
                raise GuardFileError(f"{path} records no sha256 of {key!r} (not written by save_arrays)")
            if recorded != array_digest(value):
                raise GuardFileError(f"{path} does not match its recorded sha256: modified or corrupted")
    return arrays
