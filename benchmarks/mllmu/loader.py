"""Read MLLMU-Bench configs from a local folder laid out like the hub repository, or from the hub by id.

Every row comes back as a dict with the hub's field names verbatim; nested fields stored as JSON strings (``biography``,
``metadata``, and task fields in derived copies) are parsed, images become ``PIL.Image`` objects (decoded lazily).
Malformed rows raise :class:`DataFormatError` naming the file, the row and the field.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORGET_SPLITS = ("forget_5", "forget_10", "forget_15")
RETAIN_SPLITS = ("retain_95", "retain_90", "retain_85")
CONFIGS = ("Full_Set", "ft_Data", "Test_Set", "Retain_Set", *FORGET_SPLITS, *RETAIN_SPLITS)
"""Config names of the hub repository: Retain_Set holds the real celebrities; forget/retain are unlearning splits."""

TASK_TYPES = ("Image_Textual", "Pure_Text")
CLASSIFICATION_KEYS = ("Image_Textual_Questions", "Pure_Text_Questions")
OPEN_TASKS = ("Generation_Task", "Mask_Task")


class DataFormatError(ValueError):
    """A shard or row does not follow the MLLMU-Bench schema; the message names the file, the row and the field."""


def retain_split(forget: str) -> str:
    """The retain split paired with a forget split: ``forget_5`` -> ``retain_95``."""
    if forget not in FORGET_SPLITS:
        raise ValueError(f"unknown forget split {forget!r}; valid: {', '.join(FORGET_SPLITS)}")
    return f"retain_{100 - int(forget.split('_')[1])}"


def check_config(name: str) -> str:
    """A hub config name, or ValueError listing them."""
    if name not in CONFIGS:
        raise ValueError(f"unknown MLLMU-Bench config {name!r}; valid configs: {', '.join(CONFIGS)}")
    return name


def local_configs(root: str | Path) -> list[str]:
    """The configs a local folder holds: its subfolders with parquet shards (hub names or a user's own, e.g. a
    folder of people a model never learned)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.parquet")))


def is_local(root_or_hub_id: str | Path) -> bool:
    """A local folder (existing path, or anything that does not look like ``owner/name``)."""
    text = str(root_or_hub_id)
    if Path(text).exists():
        return True
    parts = text.split("/")
    return not (len(parts) == 2 and all(parts) and not text.startswith((".", "~")))


def shard_files(root: str | Path, name: str) -> list[Path]:
    """The parquet shards of config ``name`` under ``root`` (``root/name/**/*.parquet``), sorted. Any config
    name a local folder holds is read; the hub's names are the ones the evaluation looks for."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MLLMU-Bench folder {root} does not exist")
    folder = root / name
    if not name or Path(name).name != name or not folder.is_dir():
        raise FileNotFoundError(
            f"config folder {folder} is missing (configs present in {root}: "
            f"{', '.join(local_configs(root)) or 'none'})"
        )
    shards = sorted(folder.rglob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"config folder {folder} holds no parquet shards (*.parquet)")
    return shards


def has_config(root_or_hub_id: str | Path, name: str) -> bool:
    """Whether a local folder holds config ``name`` (hub ids are assumed to hold every hub config)."""
    if not is_local(root_or_hub_id):
        return name in CONFIGS
    folder = Path(root_or_hub_id).expanduser() / name
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def load_config(root_or_hub_id: str | Path, name: str) -> list[dict[str, Any]]:
    """All rows of config ``name`` (split ``train``) as dicts with the hub's field names, parsed and validated."""
    if is_local(root_or_hub_id):
        import pyarrow.parquet as pq

        rows = []
        for shard in shard_files(root_or_hub_id, name):
            try:
                table = pq.read_table(shard)
            except Exception as err:  # pyarrow raises several unrelated types for corrupt files
                raise DataFormatError(f"{shard}: not a readable parquet file ({err})") from None
            rows += [normalize_row(row, f"{shard}", i) for i, row in enumerate(table.to_pylist())]
        logger.info("loaded %d rows of %s from %s", len(rows), name, root_or_hub_id)
        return rows
    return _load_hub(str(root_or_hub_id), check_config(name))


def _load_hub(hub_id: str, name: str) -> list[dict[str, Any]]:
    import datasets

    try:
        data = datasets.load_dataset(hub_id, name=name, split="train")
    except Exception as err:  # offline, unknown repo or config: say what was tried
        raise FileNotFoundError(
            f"cannot load config {name!r} of hub dataset {hub_id!r} ({type(err).__name__}: {str(err)[:300]}); "
            "offline, pass a local folder laid out like the hub repository (one folder per config, parquet shards)"
        ) from None
    source = f"{hub_id}:{name}"
    return [normalize_row(dict(row), source, i) for i, row in enumerate(data)]


def split_people(root_or_hub_id: str | Path, split: str) -> dict[str, str]:
    """``{ID: biography["Name"]}`` for the people of a split (e.g. ``forget_5``), sorted by ID.

    Rows without a biography (training-style splits: image + metadata) take the name from ``Full_Set`` by ID.
    """
    rows = load_config(root_or_hub_id, split)
    ids = [row_id(row, f"{split} row {i}") for i, row in enumerate(rows)]
    names = {i: (row.get("biography") or {}).get("Name") for i, row in zip(ids, rows, strict=True)}
    missing = [i for i, n in names.items() if not n]
    if missing:
        full = {
            row_id(r, "Full_Set"): (r.get("biography") or {}).get("Name")
            for r in load_config(root_or_hub_id, "Full_Set")
        }
        for i in missing:
            if not full.get(i):
                raise DataFormatError(
                    f"{split}: no biography Name for profile ID {i!r} (not in {split} nor Full_Set)"
                )
            names[i] = full[i]
    return dict(sorted(names.items()))


def row_id(row: Mapping[str, Any], source: str) -> str:
    """The profile ID of a row: its ``ID`` field, else the ID inside its QA ``metadata``."""
    if row.get("ID") not in (None, ""):
        return str(row["ID"])
    for qa in row.get("metadata") or ():
        if isinstance(qa, Mapping) and qa.get("ID") not in (None, ""):
            return str(qa["ID"])
    raise DataFormatError(f"{source}: row has no 'ID' (neither the field nor an ID in 'metadata')")


# ------------------------------------------------------------------ row normalization


def normalize_row(row: Mapping[str, Any], source: str, index: int) -> dict[str, Any]:
    """Parse one raw row (parquet or ``datasets``) into the documented Python shapes; ``source`` names the file."""
    out = dict(row)
    where = f"{source} row {index}" + (f" (ID {row['ID']!r})" if row.get("ID") not in (None, "") else "")
    if out.get("ID") is not None:
        out["ID"] = str(out["ID"])
    if "image" in out:
        out["image"] = decode_image(out["image"], f"{where}, field 'image'")
    if "images" in out:
        images = (
            _json(out["images"], f"{where}, field 'images'")
            if isinstance(out["images"], str)
            else out["images"]
        )
        if images is None:
            out["images"] = []
        elif not isinstance(images, (list, tuple)):
            raise DataFormatError(
                f"{where}, field 'images': expected a list of images, got {type(images).__name__}"
            )
        else:
            out["images"] = [decode_image(x, f"{where}, field 'images'[{k}]") for k, x in enumerate(images)]
            out["images"] = [x for x in out["images"] if x is not None]
    if out.get("biography") is not None:
        bio = _json(out["biography"], f"{where}, field 'biography'")
        if not isinstance(bio, Mapping):
            raise DataFormatError(
                f"{where}, field 'biography': expected a JSON object, got {type(bio).__name__}"
            )
        out["biography"] = dict(bio)
    if out.get("metadata") is not None:
        out["metadata"] = _metadata(out["metadata"], f"{where}, field 'metadata'")
    if out.get("Classification_Task") is not None:
        out["Classification_Task"] = _classification(
            out["Classification_Task"], f"{where}, field 'Classification_Task'"
        )
    for task in OPEN_TASKS:
        if out.get(task) is not None:
            out[task] = _open_task(out[task], f"{where}, field '{task}'")
    return out


def decode_image(value: Any, where: str) -> Any:
    """A hub image cell (``{bytes, path}``, raw bytes, a PIL image or None) as a lazily decoded ``PIL.Image``."""
    from PIL import Image, UnidentifiedImageError

    if value is None or isinstance(value, Image.Image):
        return value
    data, path = None, None
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
    else:
        raise DataFormatError(f"{where}: expected {{bytes, path}} or bytes, got {type(value).__name__}")
    if data is None and not path:
        return None
    try:
        if data is not None:
            return Image.open(io.BytesIO(data))
        return Image.open(Path(path))
    except (UnidentifiedImageError, OSError) as err:
        raise DataFormatError(f"{where}: image cannot be decoded ({err})") from None


def _json(value: Any, where: str) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{where}: invalid JSON ({err.msg} at position {err.pos})") from None


def _text(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _items(value: Any, where: str) -> list[Mapping[str, Any]]:
    value = _json(value, where)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(f"{where}: expected a list, got {type(value).__name__}")
    for k, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise DataFormatError(f"{where}[{k}]: expected an object, got {type(item).__name__}")
    return list(value)


def _metadata(value: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for k, qa in enumerate(_items(value, where)):
        _text(qa, "Question", f"{where}[{k}]")
        _text(qa, "Answer", f"{where}[{k}]")
        out.append(dict(qa))
    return out


def _classification(value: Any, where: str) -> dict[str, list[dict[str, Any]]]:
    value = _json(value, where)
    if not isinstance(value, Mapping):
        raise DataFormatError(
            f"{where}: expected an object with {CLASSIFICATION_KEYS}, got {type(value).__name__}"
        )
    unknown = set(value) - set(CLASSIFICATION_KEYS)
    if unknown:
        raise DataFormatError(
            f"{where}: unknown keys {sorted(unknown)}; expected {list(CLASSIFICATION_KEYS)}"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for key in CLASSIFICATION_KEYS:
        questions = []
        for k, q in enumerate(_items(value.get(key), f"{where}.{key}")):
            at = f"{where}.{key}[{k}]"
            options = _json(q.get("Options"), f"{at}.Options")
            if not isinstance(options, Mapping):
                raise DataFormatError(f"{at}: 'Options' must be an object of letter -> text, got {options!r}")
            options = {str(letter): str(text) for letter, text in options.items() if text is not None}
            if len(options) < 2:
                raise DataFormatError(f"{at}: 'Options' needs at least two choices, got {options!r}")
            answer = q.get("Correct_Answer")
            if answer not in options:
                raise DataFormatError(
                    f"{at}: 'Correct_Answer' {answer!r} is not one of the options {sorted(options)}"
                )
            questions.append(
                {**q, "Question": _text(q, "Question", at), "Options": options, "Correct_Answer": answer}
            )
        out[key] = questions
    return out


def _open_task(value: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for k, item in enumerate(_items(value, where)):
        at = f"{where}[{k}]"
        _text(item, "Question", at)
        if not isinstance(item.get("Ground_Truth"), str):
            raise DataFormatError(f"{at}: 'Ground_Truth' must be a string, got {item.get('Ground_Truth')!r}")
        if item.get("Type") not in TASK_TYPES:
            raise DataFormatError(f"{at}: 'Type' must be one of {TASK_TYPES}, got {item.get('Type')!r}")
        out.append(dict(item))
    return out
