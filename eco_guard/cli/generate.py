"""``eco-guard generate``: guarded answers for a JSONL file of prompts, with transformers or vLLM.

Each input line is a JSON object with ``text`` or ``messages``, optionally ``image`` (a path, relative to the input
file's folder) and ``"flag": true|false`` (overrides the classifier for that row). Each output line is the input
object plus ``output`` (the generated text, null on error), ``flagged`` and, for a row that could not be served,
``error``; one bad row never stops the others. Without ``--guard`` the default GuardConfig (ECO's usual
corruption) applies to rows flagged by override, so both backends can be compared with no trained classifier.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HELP = "generate guarded answers for a JSONL file of prompts (backend: hf or vllm)"

logger = logging.getLogger(__name__)

PROMPT_KEYS = ("text", "messages", "image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=("hf", "vllm"), default="hf", help="transformers or vLLM (default: hf)"
    )
    parser.add_argument("--model", default="smollm2", help="model alias, folder or hub id (default: smollm2)")
    parser.add_argument(
        "--guard", default=None, help="guard folder (config + classifier) from save_pretrained"
    )
    parser.add_argument("--prompts", required=True, type=Path, help="input JSONL, one prompt object per line")
    parser.add_argument("--out", required=True, type=Path, help="output JSONL")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--chat-template",
        choices=("auto", "on", "off"),
        default="auto",
        help="apply the tokenizer's chat template to text prompts (auto: when it has one)",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=16, help="hf backend: prompts per forward batch")
    parser.add_argument(
        "--max-model-len", type=int, default=1024, help="vllm backend: the engine's context length"
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", help="vllm backend: no compilation (faster start)"
    )


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    rows = read_rows(args.prompts)
    chat_template = {"auto": None, "on": True, "off": False}[args.chat_template]
    runner = build_runner(args)
    try:
        results = serve_rows(runner, rows, chat_template=chat_template, max_new_tokens=args.max_new_tokens)
    finally:
        if hasattr(runner, "shutdown"):
            runner.shutdown()
    write_rows(args.out, results)
    failed = sum(1 for r in results if r.get("error"))
    print(
        f"wrote {len(results)} rows to {args.out} ({sum(bool(r.get('flagged')) for r in results)} flagged, {failed} failed)"
    )
    return 0


def build_runner(args: argparse.Namespace) -> Any:
    """The guard for ``--backend``: an ``EcoGuard`` on a transformers model, or a ``GuardedLLM`` on a vLLM engine."""
    import torch

    dtype = getattr(torch, args.dtype)
    if args.backend == "vllm":
        from eco_guard.vllm_backend import GuardedLLM

        return GuardedLLM.from_pretrained(
            args.model,
            guard_dir=args.guard,
            dtype=args.dtype,
            embed_dtype=dtype,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
        )
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model

    model, processor = load_model(args.model, dtype=dtype)
    if args.guard is None:
        return HFRunner(EcoGuard(model, processor), args.batch_size)
    return HFRunner(EcoGuard.from_pretrained(args.guard, model, processor), args.batch_size)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The input objects (:func:`iter_rows`), all at once; an empty file is refused."""
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    rows = [row for _, row in iter_rows(path)]
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    return rows


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, input object)`` per non-blank line, streamed; a line that is not a JSON object becomes
    ``{"line": n, "error": ...}``, and an image path is made relative to the file's folder."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, {"line": number, "error": f"line {number}: not valid JSON: {err}"}
                continue
            if not isinstance(row, dict):
                error = f"line {number}: not a JSON object with 'text' or 'messages'"
                yield number, {"line": number, "error": error}
                continue
            if isinstance(row.get("image"), str) and not Path(row["image"]).is_absolute():
                row = {**row, "image": str(path.parent / row["image"])}
            yield number, row


def serve_rows(
    runner: Any, rows: Sequence[dict[str, Any]], *, chat_template: bool | None, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Each row plus ``output`` and ``flagged`` (and ``error`` when it could not be served)."""
    live, prompts, flags, results = [], [], [], []
    for i, row in enumerate(rows):
        results.append(dict(row))
        if "error" in row:
            results[i].update(output=None, flagged=False)
            continue
        flag = row.get("flag")
        if flag is not None and not isinstance(flag, bool):
            results[i].update(output=None, flagged=False, error=f"'flag' must be true or false, got {flag!r}")
            continue
        live.append(i)
        prompts.append({k: row[k] for k in PROMPT_KEYS if k in row})
        flags.append(flag)
    if live:
        outputs = runner.serve(
            prompts, flags, chat_template=chat_template, sampling_params={"max_new_tokens": max_new_tokens}
        )
        for i, out in zip(live, outputs, strict=True):
            results[i].update(output=out.text, flagged=out.flagged)
            if out.error:
                results[i]["error"] = out.error
    return results


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


class HFRunner:
    """``serve`` for the transformers guard: per-row validation, batched generation, per-row errors."""

    def __init__(self, guard: Any, batch_size: int) -> None:
        self.guard = guard
        self.batch_size = batch_size

    def serve(
        self,
        prompts: Sequence[Any],
        flags: Sequence[bool | None],
        *,
        chat_template: bool | None,
        sampling_params: dict,
    ) -> list[Any]:
        from eco_guard.requests import Request
        from eco_guard.vllm_backend import GuardedOutput

        outputs: list[Any] = [None] * len(prompts)
        ok, requests = [], []
        for i, request in enumerate(self.guard.requests(prompts, collect=True)):
            if isinstance(request, Request):
                ok.append(i)
                requests.append(request)
            else:
                outputs[i] = GuardedOutput(None, error=str(request))
        decisions = self.guard.decide(requests, [flags[i] for i in ok])
        if requests:
            texts = self.guard.generate(
                requests,
                decisions,
                chat_template=chat_template,
                batch_size=self.batch_size,
                **sampling_params,
            )
            for i, text, flag in zip(ok, texts, decisions, strict=True):
                outputs[i] = GuardedOutput(text, flag.flagged)
        return outputs
