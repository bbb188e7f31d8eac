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


def read_requests(path: Path, batch_size: int) -> Iterator[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Batches of ``(input object, prompt)``; image paths are relative to the JSONL file's folder."""
    batch = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON: {err}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object with 'text' or 'messages'")
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


def run(args: argparse.Namespace) -> int:
    from eco_guard.core import load_classifier
    from eco_guard.requests import to_request

    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if not args.prompts.is_file():
        raise FileNotFoundError(f"prompts file not found: {args.prompts}")
    classifier = load_classifier(args.guard)
    if classifier is None:
        raise FileNotFoundError(
            f"{args.guard} has no classifier (expected {args.guard}/classifier/classifier.json)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    total = flagged = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for batch in read_requests(args.prompts, args.batch_size):
            requests = []
            for number, _, prompt in batch:
                try:
                    requests.append(to_request(prompt))
                except (ValueError, TypeError) as err:
                    raise type(err)(f"{args.prompts}:{number}: {err}") from None
            try:
                flags = classifier.flag(requests)
            except (ValueError, FileNotFoundError, OSError) as err:
                first, last = batch[0][0], batch[-1][0]
                raise type(err)(f"{args.prompts} lines {first}-{last}: {err}") from None
            for (_, record, _), flag in zip(batch, flags, strict=True):
                out.write(
                    json.dumps({**record, "flagged": bool(flag.flagged), "score": float(flag.score)}) + "\n"
                )
                flagged += bool(flag.flagged)
            total += len(batch)
    print(f"classified {total} requests, flagged {flagged}; wrote {args.out}", file=sys.stderr)
    return 0
