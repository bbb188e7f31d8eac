"""``eco-guard optimize``: learn the corruption settings on an MLLMU-Bench forget split, write them into the guard."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

HELP = "search the corruption strength (and family, n/k) so the forget set scores like a never-trained model"

INSTRUCTION = "Just give ONE letter representing the answer directly."
GENERATION_INSTRUCTION = "Answer the question based on your trained knowledge in one sentence in ENGLISH."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eco_guard.optimize import DEFAULT_OPTIMIZER, METRICS

    parser.add_argument(
        "--data", required=True, help="MLLMU-Bench root (local folder laid out like the hub) or hub id"
    )
    parser.add_argument("--forget", required=True, help="forget split, e.g. forget_5")
    parser.add_argument("--model", required=True, help="model alias (smollm2), folder or hub id")
    parser.add_argument(
        "--guard", required=True, help="guard folder: its config is read (if any) and updated"
    )
    parser.add_argument("--metric", default="mc_accuracy", choices=sorted(METRICS))
    parser.add_argument(
        "--target",
        default="0.25",
        help="a number in the metric's range (e.g. chance, 0.25), or a config of --data whose profiles the model "
        "never learned (scored unguarded, forget profiles excluded), e.g. Test_Set",
    )
    parser.add_argument("--tolerance", type=float, default=0.05, help="stop when |metric - target| <= this")
    parser.add_argument("--budget", type=int, default=30, help="maximum number of evaluations")
    parser.add_argument("--optimizer", default=DEFAULT_OPTIMIZER, help="nevergrad optimizer name")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search")
    parser.add_argument(
        "--strength-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="default: 0.01 1e4 on a log scale for noise families, 0.5 1 on a linear scale for substitute",
    )
    parser.add_argument(
        "--scale",
        choices=("log", "linear"),
        default=None,
        help="how the strength is searched (default: linear for substitute, a blend weight; else log)",
    )
    parser.add_argument(
        "--surrogate-faces",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="pictures of people the model never learned, for --image-corruption substitute (saved in the guard "
        "folder; default: the folder's own)",
    )
    parser.add_argument(
        "--search",
        choices=("strength", "image_strength"),
        default="strength",
        help="which strength to search: strength (prompt tokens, and images unless image_strength is set) or "
        "image_strength (image features only; use with --modality image and a scope holding image)",
    )
    parser.add_argument(
        "--corruption",
        default=None,
        help="start from this corruption family (e.g. substitute: names move toward a surrogate name and the "
        "answer keeps the real one); default: the guard folder's, else noise_first_n",
    )
    parser.add_argument(
        "--image-corruption",
        default=None,
        help="corruption family on image features (with --scope ... image)",
    )
    parser.add_argument(
        "--scope",
        nargs="+",
        default=None,
        help="token scope: any of prompt, spans, image (default: the folder's)",
    )
    parser.add_argument(
        "--surrogate-given-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="with substitute: the given names a forgotten name reads as (names typical of the people the model "
        "serves; saved in the guard's config; default: the folder's, else the built-in list)",
    )
    parser.add_argument(
        "--surrogate-surnames", nargs="+", default=None, metavar="NAME", help="the same, for surnames"
    )
    parser.add_argument("--corruptions", nargs="+", default=(), help="search the family among these names")
    parser.add_argument(
        "--dims-range", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"), help="search n/k"
    )
    parser.add_argument(
        "--fluency-weight", type=float, default=0.0, help="penalize babbling answers (0: off)"
    )
    parser.add_argument(
        "--options",
        choices=("text", "letter"),
        default="text",
        help="multiple choice: score the option texts, or the option letters after the listed options",
    )
    parser.add_argument(
        "--modality",
        choices=("text", "image", "all"),
        default=None,
        help="which questions (default: text-only for language models, all for multimodal ones)",
    )
    parser.add_argument("--max-items", type=int, default=None, help="use at most this many questions per set")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length for rouge_l")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.mllmu import load_config
    from eco_guard.config import CONFIG_NAME, GuardConfig
    from eco_guard.corruption import USES_TARGET
    from eco_guard.guard import EcoGuard, saved_image_surrogates
    from eco_guard.models import load_model
    from eco_guard.optimize import BLEND_RANGE, PLOT_NAME, TRACE_NAME, SearchSpace, optimize_guard

    model, processor = load_model(args.model)
    config = (
        GuardConfig.from_pretrained(args.guard) if Path(args.guard, CONFIG_NAME).is_file() else GuardConfig()
    )
    changes = {"corruption": args.corruption, "image_corruption": args.image_corruption, "scope": args.scope,
               "surrogate_given_names": args.surrogate_given_names, "surrogate_surnames": args.surrogate_surnames}  # fmt: skip
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    faces = args.surrogate_faces or saved_image_surrogates(args.guard)
    guard = EcoGuard(model, processor, config=config, image_surrogates=faces)
    modality = args.modality or ("all" if guard.multimodal else "text")
    forget_rows = load_config(args.data, args.forget)
    items = rows_to_items(forget_rows, args.metric, modality, args.options)[: args.max_items]
    if not items:
        raise ValueError(
            f"{args.forget} of {args.data} yields no {modality} questions for metric {args.metric}"
        )
    target: Any
    try:
        target = float(args.target)
    except ValueError:
        forget_ids = {str(r.get("ID")) for r in forget_rows}
        heldout_rows = [r for r in load_config(args.data, args.target) if str(r.get("ID")) not in forget_ids]
        target = rows_to_items(heldout_rows, args.metric, modality, args.options)[: args.max_items]
        if not target:
            raise ValueError(f"target set {args.target} has no profiles outside {args.forget}") from None
    family = config.image_corruption_name if args.search == "image_strength" else config.corruption
    scale = args.scale or ("linear" if USES_TARGET[family] and not args.corruptions else "log")
    default_range = BLEND_RANGE if scale == "linear" else (1e-2, 1e4)
    space = SearchSpace(
        strength=tuple(args.strength_range or default_range),
        corruptions=tuple(args.corruptions),
        dims=tuple(args.dims_range) if args.dims_range else None,
        parameter=args.search,
        scale=scale,
    )
    result = optimize_guard(
        guard,
        items,
        target=target,
        metric=args.metric,
        tolerance=args.tolerance,
        budget=args.budget,
        optimizer=args.optimizer,
        seed=args.seed,
        space=space,
        fluency_weight=args.fluency_weight,
        chat_template=None,
        max_new_tokens=args.max_new_tokens,
        output_dir=args.guard,
    )
    guard.save_settings(args.guard)
    best = result.best
    status = "within" if result.reached else "NOT within"
    print(
        f"{len(items)} forget questions, {len(result.trace)} evaluations ({result.optimizer}, seed {result.seed})\n"
        f"target {args.metric} = {result.target:.4f}; best {best.metric:.4f} ({status} tolerance {result.tolerance})\n"
        f"best parameters: {best.params}\n"
        f"wrote {Path(args.guard) / CONFIG_NAME}, {Path(args.guard) / TRACE_NAME}, {Path(args.guard) / PLOT_NAME}"
    )
    return 0 if result.reached else 1


def rows_to_items(
    rows: Iterable[Mapping[str, Any]], metric: str, modality: str, options: str = "text"
) -> list:
    """MLLMU-Bench rows -> ScoredItems: classification questions for ``mc_accuracy``, generation questions for
    ``answer_loglik`` / ``rouge_l``; image questions carry the profile's image."""
    from eco_guard.optimize import ScoredItem

    kinds = {"text": ("Pure_Text",), "image": ("Image_Textual",), "all": ("Image_Textual", "Pure_Text")}[
        modality
    ]
    items = []
    for row in rows:
        image = row.get("image")
        if image is None and row.get("images"):
            image = row["images"][0]
        if metric == "mc_accuracy":
            task = row.get("Classification_Task") or {}
            for kind in kinds:
                if kind == "Image_Textual" and image is None:
                    continue
                for q in task.get(f"{kind}_Questions", ()):
                    keys = sorted(q["Options"])
                    if q["Correct_Answer"] not in keys:
                        continue
                    listed = "\n".join(f"{k}: {q['Options'][k]}" for k in keys)
                    if options == "letter":
                        prompt, choices = f"{q['Question']}\n{listed}\n{INSTRUCTION}", tuple(keys)
                    else:
                        prompt, choices = q["Question"], tuple(q["Options"][k] for k in keys)
                    items.append(
                        ScoredItem(
                            prompt,
                            choices=choices,
                            correct=keys.index(q["Correct_Answer"]),
                            image=image if kind == "Image_Textual" else None,
                        )
                    )
        else:
            for q in row.get("Generation_Task") or ():
                if q.get("Type") not in kinds or (q.get("Type") == "Image_Textual" and image is None):
                    continue
                items.append(
                    ScoredItem(
                        f"{q['Question']}\n{GENERATION_INSTRUCTION}",
                        answer=q["Ground_Truth"],
                        image=image if q.get("Type") == "Image_Textual" else None,
                    )
                )
    return items
