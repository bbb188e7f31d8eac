"""``eco-guard optimize``: learn the corruption settings on an MLLMU-Bench forget split, write them into the guard.

The forget questions are the ones ``eco-guard evaluate`` asks (reference prompts, the same seed's few-shot draws),
every one flagged and corrupted where serving corrupts it: the guard folder's classifier finds the names scope
``spans`` reads. The target is the same metric, measured unguarded on people the model never learned.
"""

from __future__ import annotations

import argparse

HELP = "search the corruption strength (and family, n/k) so the forget set scores like a never-trained model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.mllmu.search_metrics import FALLBACK_ORDER, SEARCH_METRICS
    from eco_guard.optimize import DEFAULT_OPTIMIZER

    parser.add_argument(
        "--data", required=True, help="MLLMU-Bench root (local folder laid out like the hub) or hub id"
    )
    parser.add_argument("--forget", required=True, help="forget split, e.g. forget_5")
    parser.add_argument("--model", required=True, help="model alias (smollm2), folder or hub id")
    parser.add_argument(
        "--guard",
        required=True,
        help="guard folder: its classifier finds the names scope spans corrupts; its config is read (if any) "
        "and updated",
    )
    parser.add_argument(
        "--metric",
        default=None,
        choices=list(SEARCH_METRICS),
        help=f"what the search matches (default: {FALLBACK_ORDER[0]}, else the first of "
        f"{', '.join(FALLBACK_ORDER[1:])} the forget split has questions for). "
        + "; ".join(f"{m.name}: {m.description}" for m in SEARCH_METRICS.values()),
    )
    parser.add_argument(
        "--target",
        required=True,
        help="the level to reach: a number in the metric's range; a config of --data holding people the model "
        "never learned (e.g. Never_Trained, written by the synthetic generator's --never-trained); or another "
        "folder of such people (a config folder, or a benchmark folder: its --forget config, else Full_Set). "
        "The forget people's own questions are asked unguarded about up to 8 of them (their photos; with "
        "substitute on the names, under the surrogate names the guard reads), so both sides answer the same "
        "questions about an unknown person",
    )
    parser.add_argument("--tolerance", type=float, default=0.05, help="stop when |metric - target| <= this")
    parser.add_argument("--budget", type=int, default=30, help="maximum number of evaluations")
    parser.add_argument("--optimizer", default=DEFAULT_OPTIMIZER, help="nevergrad optimizer name")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the search and, as evaluate's --seed, of the few-shot draws",
    )
    parser.add_argument("--few-shot", type=int, default=1, help="few-shot profiles per task, as evaluate's")
    parser.add_argument("--no-leak", action="store_true", help="as evaluate's --no-leak")
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
        "--modality",
        choices=("text", "image", "all"),
        default=None,
        help="which questions (default: text-only for language models, all for multimodal ones)",
    )
    parser.add_argument(
        "--max-items", type=int, default=None, help="use at most this many questions per side"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=50, help="greedy tokens per answer (evaluate's default: 50)"
    )
    parser.add_argument("--batch-size", type=int, default=16)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.mllmu import search_metrics as sm
    from eco_guard.config import CONFIG_NAME, GuardConfig
    from eco_guard.core import load_classifier
    from eco_guard.corruption import USES_TARGET
    from eco_guard.faces import saved_faces
    from eco_guard.guard import EcoGuard
    from eco_guard.models import load_model
    from eco_guard.optimize import (
        BLEND_RANGE,
        PLOT_NAME,
        TRACE_NAME,
        ScoredItem,
        SearchSpace,
        check_target,
        optimize_guard,
    )
    from eco_guard.requests import Request

    def load_picture(path: str):
        return Request(text=".", image=path).load_image()

    config = (
        GuardConfig.from_pretrained(args.guard) if Path(args.guard, CONFIG_NAME).is_file() else GuardConfig()
    )
    changes = {
        "corruption": args.corruption,
        "image_corruption": args.image_corruption,
        "scope": args.scope,
        "surrogate_given_names": args.surrogate_given_names,
        "surrogate_surnames": args.surrogate_surnames,
    }
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    classifier = load_classifier(args.guard)
    if classifier is None and "spans" in config.scope:
        raise ValueError(
            f"{args.guard} holds no classifier, and scope spans corrupts the names a classifier finds: train one "
            f"into the folder first (eco-guard train-classifier --out {args.guard}) or search --scope prompt"
        )
    if classifier is None:
        print(f"{args.guard} holds no classifier: each forget question is corrupted over its whole prompt")
    model, processor = load_model(args.model)
    faces = args.surrogate_faces or saved_faces(args.guard)
    guard = EcoGuard(model, processor, classifier=classifier, config=config, image_surrogates=faces)
    modality = args.modality or ("all" if guard.multimodal else "text")
    draws = {"seed": args.seed, "few_shot": args.few_shot, "no_leak": args.no_leak, "modality": modality}
    asked = sm.forget_questions(args.data, args.forget, **draws)
    if not asked:
        raise ValueError(f"{args.forget} of {args.data} has no {modality} questions")
    metric, note = sm.pick_metric(asked, args.metric)
    if note:
        print(f"{args.forget}: {note}")
    items = sm.questions(asked, metric)[: args.max_items]
    if not items:
        raise ValueError(f"{args.forget} of {args.data} yields no {modality} questions for metric {metric}")
    sizes = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    try:
        target, source = float(args.target), "given"
    except ValueError:
        pictures = [load_picture(p) for p in args.surrogate_faces or ()]
        target, source = sm.never_trained_level(
            guard, args.data, args.forget, args.target, metric, draws, sizes, args.max_items, pictures
        )
    check_target(metric, target, sm.metric_bounds(metric))
    print(f"target {metric} = {target:.4f} ({source})")
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
        [ScoredItem(it.prompt, image=it.image) for it in items],
        target=target,
        metric=sm.ForgetMetric(guard, items, metric, **sizes),
        tolerance=args.tolerance,
        budget=args.budget,
        optimizer=args.optimizer,
        seed=args.seed,
        space=space,
        fluency_weight=args.fluency_weight,
        chat_template=False,
        output_dir=args.guard,
    )
    guard.save_settings(args.guard)
    best = result.best
    status = "within" if result.reached else "NOT within"
    print(
        f"{len(items)} forget questions ({metric}), {len(result.trace)} evaluations ({result.optimizer}, seed "
        f"{result.seed})\ntarget {metric} = {result.target:.4f}; best {best.metric:.4f} ({status} tolerance "
        f"{result.tolerance})\nbest parameters: {best.params}\n"
        f"wrote {Path(args.guard) / CONFIG_NAME}, {Path(args.guard) / TRACE_NAME}, {Path(args.guard) / PLOT_NAME}"
    )
    return 0 if result.reached else 1
