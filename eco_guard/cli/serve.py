"""``eco-guard serve``: the guard as an OpenAI-compatible server in front of a vLLM engine (see docs/serving.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "serve the guarded model over the OpenAI API (vLLM engine behind, one command)"
PASSTHROUGH = True
"""Options this command does not know go to ``vllm serve`` unchanged (e.g. --tensor-parallel-size 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model alias (smollm2, demo), local folder or hub id")
    parser.add_argument(
        "--guard", default=None, help="guard folder (classifier, config); omit: nothing is flagged"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key-file", type=Path, default=None, help="file holding the API key clients must send"
    )
    parser.add_argument(
        "--served-model-name", default=None, help="the model name clients use (default: --model)"
    )
    parser.add_argument("--log-prompts", action="store_true", help="log prompt text with each flag decision")
    parser.add_argument("--max-body-bytes", type=int, default=8 << 20, help="larger request bodies get 413")
    parser.add_argument("--max-prompt-chars", type=int, default=100_000, help="longer prompts get 400")
    parser.add_argument(
        "--engine-port", type=int, default=None, help="the engine's loopback port (default: free)"
    )
    parser.add_argument("--engine-timeout", type=float, default=900.0, help="seconds to wait for the engine")
    parser.add_argument(
        "--guard-threads",
        type=int,
        default=1,
        help="torch threads for the guard's own work (classifier, embeddings); one leaves the cores to the engine",
    )
    parser.epilog = (
        "Any other option goes to `vllm serve` unchanged: --tensor-parallel-size, --data-parallel-size, "
        "--max-model-len, --dtype, --gpu-memory-utilization, --enforce-eager, ..."
    )


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from eco_guard.server.app import ServerSettings, create_app
    from eco_guard.server.engine import EngineProcess, check_engine_options
    from eco_guard.vllm_backend import guard_on_front_end

    options = check_engine_options(args.passthrough)
    if args.guard_threads < 1:
        raise ValueError(f"--guard-threads must be a positive integer, got {args.guard_threads}")
    # Idle OpenMP threads spin between the classifier's operations and take CPU time the engine needs; one
    # thread does a request's milliseconds of guard work without that.
    torch.set_num_threads(args.guard_threads)
    key = None
    if args.api_key_file is not None:
        key = args.api_key_file.read_text().strip()
        if not key:
            raise ValueError(f"{args.api_key_file} is empty: it must hold the API key")
    guard, engine_model = guard_on_front_end(args.model, args.guard)
    if guard.classifier is None:
        print("no classifier: every request is served unguarded (pass --guard with a trained guard folder)")
    name = args.served_model_name or str(args.model)
    engine = EngineProcess(engine_model, name, options, port=args.engine_port)
    engine.start(timeout=args.engine_timeout)
    try:
        import httpx

        card = httpx.get(f"{engine.url}/v1/models", timeout=30).json()["data"][0]
        settings = ServerSettings(name, key, args.max_body_bytes, args.max_prompt_chars, args.log_prompts)
        app = create_app(guard, engine.url, settings, int(card["max_model_len"]))
        print(
            f"eco-guard serving {name} on http://{args.host}:{args.port}/v1 (engine {engine.url})", flush=True
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        engine.stop()
    return 0
