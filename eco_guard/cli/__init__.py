"""The ``eco-guard`` console script: one subcommand per module in this folder.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int`` and imports its
heavy dependencies (torch, transformers, vLLM, classifiers, benchmarks) inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS = {
    "demo": "eco_guard.cli.demo",
    "generate": "eco_guard.cli.generate",
    "train-classifier": "eco_guard.cli.train_classifier",
    "classify": "eco_guard.cli.classify",
    "optimize": "eco_guard.cli.optimize",
    "evaluate": "eco_guard.cli.evaluate",
    "finetune": "eco_guard.cli.finetune",
    "serve": "eco_guard.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eco-guard", description="Inference-time unlearning by corrupted prompts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        module.add_arguments(command)
        command.set_defaults(run=module.run, takes_passthrough=getattr(module, "PASSTHROUGH", False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not args.takes_passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.passthrough = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"eco-guard {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
