"""``eco-guard classify``: flag each request of a JSONL file with the guard's classifier, streaming in batches."""

from __future__ import annotations

import argparse
import itertools
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


def batches(path: Path, size: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """The file's rows (:func:`~eco_guard.cli.generate.iter_rows`) in batches of ``size``."""
    from eco_guard.cli.generate import iter_rows

    rows = iter_rows(path)
    while batch := list(itertools.islice(rows, size)):
        yield batch


def classify_batch(classifier: Any, batch: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each input object plus ``flagged`` and ``score``, or ``error`` (flagged and score null) when that line
    cannot be classified; one bad line never costs the others their answer."""
    from eco_guard.cli.generate import PROMPT_KEYS
    from eco_guard.requests import Request, normalize

    results = [dict(row) for _, row in batch]
    live = [i for i, (_, row) in enumerate(batch) if "error" not in row]
    prompts = [{k: batch[i][1][k] for k in PROMPT_KEYS if k in batch[i][1]} for i in live]
    requests: dict[int, Request] = {}
    for i, request in zip(live, normalize(prompts, collect=True) if prompts else [], strict=True):
        if isinstance(request, Request):
            requests[i] = request
        else:
            results[i]["error"] = f"line {batch[i][0]}: {request}"
    try:
        flags = dict(zip(requests, classifier.flag(list(requests.values())), strict=True))
    except (ValueError, TypeError, OSError):
        flags = {}
        for i, request in requests.items():  # one by one: only the lines that fail get an error
            try:
                flags[i] = classifier.flag([request])[0]
            except (ValueError, TypeError, OSError) as err:
                results[i]["error"] = f"line {batch[i][0]}: {err}"
    for i, result in enumerate(results):
        flag = flags.get(i)
        result.update(
            flagged=None if flag is None else bool(flag.flagged),
            score=None if flag is None else float(flag.score),
        )
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
        for batch in batches(args.prompts, args.batch_size):
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
