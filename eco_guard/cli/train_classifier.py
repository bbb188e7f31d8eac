"""``eco-guard train-classifier``: fit the guard's prompt classifier on an MLLMU-Bench folder, write it into the
guard folder with ``classifier_report.json`` and print the report's table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "fit the prompt classifier (text, names, image) on MLLMU-Bench data and report its error rates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from classifiers import COMBINES  # a constant of the light package module

    parser.add_argument(
        "--data", required=True, type=Path, help="MLLMU-Bench folder (hub layout, parquet shards)"
    )
    parser.add_argument("--forget", default="forget_5", help="forget split (default forget_5)")
    parser.add_argument(
        "--retain", default=None, help="retain split (default: the complement, e.g. retain_95)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="guard folder; the classifier goes to OUT/classifier"
    )
    parser.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate (default 0.01)")
    parser.add_argument(
        "--text-encoder", default="minilm", help="HF encoder folder or alias (default minilm)"
    )
    parser.add_argument(
        "--text-layers",
        type=int,
        default=None,
        help="keep only the text encoder's first N layers (faster; default: all)",
    )
    parser.add_argument(
        "--text-early-exit",
        type=int,
        default=None,
        help="layer after which clearly unrelated prompts stop (a second head there; decisions stay the full "
        "encoder's; 0: off; default: classifiers.training.EARLY_EXIT_DEFAULT)",
    )
    parser.add_argument(
        "--text-head-share",
        type=float,
        default=None,
        help="share of the text false-positive rate the head gets when no forget name is found in the text "
        "(default: classifiers.multimodal.TEXT_HEAD_SHARE)",
    )
    parser.add_argument(
        "--model",
        default="demo",
        help="the guarded MLLM (folder, hub id or alias) whose vision tower encodes images (default: demo, the "
        "demo MLLM that learned the synthetic profiles' portraits)",
    )
    parser.add_argument(
        "--image-encoder",
        default="tower",
        help="what turns photos into vectors: tower (the --model's vision tower, default), portrait (the "
        "identity encoder trained on synthetic portraits of other people, classifiers/assets/portrait_encoder) "
        "or a folder written by classifiers.pixels.PixelEncoder.save",
    )
    parser.add_argument(
        "--combine",
        choices=COMBINES,
        default="bonferroni",
        help="how an image request's two detectors share the rate (classifiers.multimodal)",
    )
    parser.add_argument("--no-image", action="store_true", help="text detectors only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robustness-per-family", type=int, default=200, help="attacked prompts per family")


def run(args: argparse.Namespace) -> int:
    from classifiers.training import fit_classifier, summary_table
    from eco_guard.core import CLASSIFIER_DIR

    if not 0 < args.fpr < 1:
        raise ValueError(f"--fpr must lie in (0, 1), got {args.fpr}")
    if args.text_head_share is not None and not 0 < args.text_head_share <= 1:
        raise ValueError(f"--text-head-share must lie in (0, 1], got {args.text_head_share}")
    from benchmarks.mllmu.loader import retain_split
    from benchmarks.mllmu.profiles import profiles_from_mllmu
    from classifiers.image_encoders import image_encoder

    retain = args.retain or retain_split(args.forget)
    forget_people, retain_people, celebrities = profiles_from_mllmu(args.data, args.forget, retain)
    encoder = None if args.no_image else image_encoder(args.image_encoder, args.model)
    text_encoder = args.text_encoder
    if args.text_layers is not None:
        from classifiers.encoders import SentenceEncoder

        text_encoder = SentenceEncoder(args.text_encoder, layers=args.text_layers)
    options: dict[str, Any] = {}  # library defaults unless given
    if args.text_early_exit is not None:
        options["text_early_exit"] = args.text_early_exit or None
    if args.text_head_share is not None:
        options["text_head_share"] = args.text_head_share
    classifier, report = fit_classifier(
        forget_people,
        retain_people,
        celebrities,
        fpr=args.fpr,
        text_encoder=text_encoder,
        **options,
        image_encoder=encoder,
        combine=args.combine,
        seed=args.seed,
        robustness_per_family=args.robustness_per_family,
    )
    report["data"] = {"root": str(args.data), "forget": args.forget, "retain": retain, "seed": args.seed}
    folder = classifier.save_pretrained(args.out / CLASSIFIER_DIR)
    path = args.out / "classifier_report.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(summary_table(report))
    print(f"\nclassifier: {folder}\nreport: {path}")
    return 0
