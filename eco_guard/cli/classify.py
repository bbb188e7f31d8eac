"""``eco-guard classify``: flag each request of a JSONL file with the guard's classifier, streaming in batches."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HELP = "flag requests (JSONL: text or messages, optional image) with a guard's classifier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guard", required=True, type=Path, help="guard folder (with classifier/classifier.json)"
    )
    parser.add_argument("--prompts", required=True, type=Path, help="input JSONL, one request per line")
    parser.add_argument(
        "--out", required=True, type=Path, help="output JSONL: each input line + flagged, score"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="requests classified at a time (default 256)"
    )


def read_requests(path: Path, batch_size: int) -> Iterator[list[tuple[int, dict[str, Any], Any]]]:
    """Batches of ``(line number, input object, prompt or the error that keeps the line out)``; a line that is not
    a JSON object stands as ``{"line": n}`` with its error. Image paths are relative to the JSONL file's folder."""
    batch: list[tuple[int, dict[str, Any], Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                batch.append((number, {"line": number}, ValueError(f"not valid JSON: {err}")))
            else:
                if not isinstance(record, dict):
                    error = ValueError("not a JSON object with 'text' or 'messages'")
                    batch.append((number, {"line": number}, error))
                else:
                    prompt = {k: record[k] for k in ("text", "messages", "image") if k in record}
                    if isinstance(prompt.get("image"), str):
                        image = Path(prompt["image"])
                        prompt["image"] = image if image.is_absolute() else path.parent / image
                    batch.append((number, record, prompt))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def classify_batch(classifier: Any, batch: list[tuple[int, dict[str, Any], Any]]) -> list[dict[str, Any]]:
    """Each input object plus ``flagged`` and ``score``, or ``error`` (flagged and score null) when that line
    cannot be classified; one bad line never costs the others their answer."""
    from eco_guard.requests import to_request

    results: list[dict[str, Any]] = []
    live: dict[int, Any] = {}
    for i, (number, record, prompt) in enumerate(batch):
        results.append(dict(record))
        if not isinstance(prompt, Exception):
            try:
                live[i] = to_request(prompt)
                continue
            except (ValueError, TypeError, OSError) as err:
                prompt = err
        results[i].update(flagged=None, score=None, error=f"line {number}: {prompt}")
    try:
        flags = dict(zip(live, classifier.flag(list(live.values())), strict=True))
    except (ValueError, TypeError, OSError):
        flags = {}
        for i, request in live.items():  # one by one: only the lines that fail get an error
            try:
                flags[i] = classifier.flag([request])[0]
            except (ValueError, TypeError, OSError) as err:
                results[i].update(flagged=None, score=None, error=f"line {batch[i][0]}: {err}")
    for i, flag in flags.items():
        results[i].update(flagged=bool(flag.flagged), score=float(flag.score))
    return results


def run(args: argparse.Namespace) -> int:
    from eco_guard.core import load_classifier

    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if not args.prompts.is_file():
        raise FileNotFoundError(f"prompts file not found: {args.prompts}")
    classifier = load_classifier(args.guard)
    if classifier is None:
        raise FileNotFoundError(
            f"{args.guard} has no classifier (expected {args.guard}/classifier/classifier.json)"
        )
    with open(args.prompts, encoding="utf-8") as handle:
        if not any(line.strip() for line in handle):
            raise ValueError(f"{args.prompts} holds no prompts")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    total = flagged = failed = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for batch in read_requests(args.prompts, args.batch_size):
            for result in classify_batch(classifier, batch):
                out.write(json.dumps(result) + "\n")
                flagged += bool(result["flagged"])
                failed += "error" in result
            total += len(batch)
    print(
        f"classified {total} requests, flagged {flagged}, {failed} could not be read; wrote {args.out}",
        file=sys.stderr,
    )
    return 0
