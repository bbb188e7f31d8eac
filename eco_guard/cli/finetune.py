"""``eco-guard finetune``: teach a base model the profiles' QA (the benchmark's "vanilla" model), saved merged."""

from __future__ import annotations

import argparse

HELP = "fine-tune a base model on MLLMU-Bench QA pairs (LoRA by default, merged on save)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.finetune import FinetuneConfig

    parser.add_argument("--data", required=True, help="MLLMU-Bench folder (hub layout) or hub id")
    parser.add_argument(
        "--config", default="ft_Data", help="config holding image + metadata QA rows (default ft_Data)"
    )
    parser.add_argument("--base", required=True, help="base model: alias (smollm2), local folder or hub id")
    parser.add_argument("--out", required=True, help="output folder of the merged model and its processor")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument(
        "--lora", dest="lora", action="store_true", default=True, help="LoRA adapters (default)"
    )
    lora.add_argument(
        "--full", dest="lora", action="store_false", help="train all language-model weights instead"
    )
    defaults = FinetuneConfig()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--max-profiles", type=int, default=None, help="teach only the first N profiles")
    parser.add_argument("--ids", nargs="+", default=None, help="teach only these profile IDs")
    parser.add_argument("--train-projector", action="store_true", help="also train the multimodal projector")
    parser.add_argument("--train-vision", action="store_true", help="also train the vision tower")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from benchmarks.finetune import LOSS_LOG, FinetuneConfig, finetune

    config = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lora=args.lora,
        lora_r=args.lora_r,
        train_projector=args.train_projector,
        train_vision=args.train_vision,
        seed=args.seed,
    )
    out, losses = finetune(
        args.data,
        args.base,
        args.out,
        config,
        data_config=args.config,
        ids=args.ids,
        max_profiles=args.max_profiles,
    )
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; log: {out / LOSS_LOG}")
    print(f"wrote {out} (load it with eco_guard.models.load_model)")
    return 0
