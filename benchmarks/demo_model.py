"""The demo MLLM: a LLaVA-architecture model on the real SmolLM2-135M-Instruct that learned synthetic profiles.

Recipe (``python -m benchmarks.demo_model --out DIR``), deterministic by seed, on the CPU or a GPU:

1. *Vision*: the small CLIP tower and projector are trained from scratch, with the language model untouched, to
   write each training person's name into the image-token slots: the projected features of a portrait (and of
   transformed views of it, like Test_Set's) regress onto the language model's input embeddings of
   ``"{name}, {name}"``. The picture thereby reads as the person's name, which is what the benchmark's "this person"
   questions need; nothing but the portraits is needed and the language model is not run.
2. *Profiles*: LoRA on the language model's linear layers teaches the QA pairs of ``ft_Data`` (benchmarks.finetune:
   "this person" questions with the portrait, named questions as text), vision tower and projector frozen, plus
   ``practice_per_person`` multiple-choice and cloze examples per profile (:mod:`benchmarks.practice`).

Profiles listed as ``heldout`` are never shown in either stage: the demo scores the model on them as the
never-trained reference. The artifact is small (LoRA adapter + vision tower + projector in safetensors, the recipe
in JSON); :func:`load_demo_model` rebuilds the full model from SmolLM2 and it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.finetune import FinetuneConfig
from eco_guard.demo_mllm import (  # noqa: F401 (re-exported: the artifact this module builds)
    ADAPTER_DIR,
    ASSET_DIR,
    FORMAT_VERSION,
    RECIPE,
    VISION_WEIGHTS,
    has_artifact,
    load_demo_model,
    read_record,
)

logger = logging.getLogger(__name__)

VISION_LOG = "vision_log.jsonl"
PROFILE_LOG = "finetune_log.jsonl"
LEGACY_DATA = {
    "classification_per_modality": 3,
    "generation_per_modality": 2,
    "cloze_per_modality": 2,
    "values_per_fact": None,
}


@dataclass
class DemoData:
    """The synthetic profiles the demo model learns (``write_synthetic`` arguments) and who is held out."""

    n_profiles: int = 24
    n_celebrities: int = 6
    seed: int = 0
    image_size: int = 64
    forget: str = "forget_15"
    n_heldout: int = 8
    classification_per_modality: int = 6
    generation_per_modality: int = 4
    cloze_per_modality: int = 3
    """Questions per profile and modality: the benchmark's cells must be large enough that one answer does not
    move a score past the demo's 0.03 tolerance (docs/demo.md)."""
    values_per_fact: int | None = 8
    """Each fact drawn from 8 values, so the never-trained profiles' answers are values the model has seen, like
    the forget profiles' (with whole pools many were not; docs/demo.md, ``write_synthetic``)."""

    def write(self, root: str | Path, with_images: bool = True) -> Path:
        """The profiles, under ``root`` (``with_images=False``: the same people and questions, no pictures)."""
        from benchmarks.mllmu.synthetic import write_synthetic

        return write_synthetic(
            root,
            self.n_profiles,
            self.n_celebrities,
            self.seed,
            image_size=self.image_size,
            with_images=with_images,
            classification_per_modality=self.classification_per_modality,
            generation_per_modality=self.generation_per_modality,
            cloze_per_modality=self.cloze_per_modality,
            values_per_fact=self.values_per_fact,
        )

    def heldout_ids(self, root: str | Path) -> list[str]:
        """The never-trained profiles: the last ``n_heldout`` IDs outside the forget split."""
        from benchmarks.mllmu.loader import split_people

        forget = set(split_people(root, self.forget))
        everyone = sorted(json.loads((Path(root) / "synthetic_manifest.json").read_text())["names"])
        others = [i for i in everyone if i not in forget]
        if self.n_heldout >= len(others):
            raise ValueError(
                f"n_heldout={self.n_heldout} leaves no retain profile ({len(others)} outside {self.forget})"
            )
        return others[len(others) - self.n_heldout :]


@dataclass
class DemoRecipe:
    """Everything that determines the demo model; stored with the artifact."""

    data: DemoData = field(default_factory=DemoData)
    language_model: str | None = "smollm2"
    image_size: int = 64
    patch_size: int = 32
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_steps: int = 300
    vision_batch: int = 64
    vision_lr: float = 2e-3
    views_per_person: int = 24
    profiles: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(epochs=5, batch_size=16, lr=2e-3, max_length=192)
    )
    practice_per_person: int = 12
    practice_shot_share: float = 0.5
    """Practice examples preceded by solved examples about another profile, as the benchmark's prompts are (without
    them the model copied the solved answers; docs/demo.md)."""
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoRecipe:
        data = dict(data)
        # older artifacts wrote the generator's default question counts and whole value pools
        data["data"] = DemoData(**{**LEGACY_DATA, **data.get("data", {})})
        data["profiles"] = FinetuneConfig(**data.get("profiles", {}))
        data.setdefault("practice_shot_share", 0.0)  # artifacts from before solved examples had none
        return cls(**data)


# ------------------------------------------------------------------ stage 1: vision


def name_targets(model: Any, tokenizer: Any, names: Sequence[str], n_tokens: int) -> Any:
    """``[people, n_tokens, hidden]``: the input embeddings of ``"{name}, {name}"`` cut to ``n_tokens``."""
    import torch

    table = model.get_input_embeddings().weight.detach()
    rows = []
    for name in names:
        ids = tokenizer(f" {name}, {name}, {name}", add_special_tokens=False)["input_ids"][:n_tokens]
        rows.append(table[torch.tensor(ids)])
    return torch.stack(rows).float()


def portrait_views(images: Sequence[Any], views: int, seed: int) -> list[list[Any]]:
    """Each portrait plus ``views`` transformed views of it (the Test_Set's transformations), seeded."""
    from benchmarks.mllmu.portraits import transformed_view

    rng = random.Random(f"{seed}:views")
    return [
        [img.convert("RGB")] + [transformed_view(img.convert("RGB"), rng) for _ in range(views)]
        for img in images
    ]


def train_vision(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    names: Sequence[str],
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    views: int = 24,
    seed: int = 0,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> list[float]:
    """Train the vision tower and projector so a portrait's image tokens embed like its person's name (MSE on
    the language model's embedding scale); returns the per-step losses."""
    import torch
    from tqdm.auto import tqdm

    if len(images) != len(names) or not images:
        raise ValueError(f"need one portrait per name, got {len(images)} images and {len(names)} names")
    torch.manual_seed(seed)
    tokenizer = processor.tokenizer
    pixel_sets = []
    for group in portrait_views(images, views, seed):
        pixel_sets.append(processor.image_processor(group, return_tensors="pt")["pixel_values"])
    pixels = torch.cat(pixel_sets)
    owner = torch.cat([torch.full((len(p),), k) for k, p in enumerate(pixel_sets)])
    n_tokens = _image_tokens(model, pixels[:1])
    targets = name_targets(model, tokenizer, names, n_tokens)
    scale = targets.pow(2).mean()
    params = [p for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.05, 1 - s / steps))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    log = open(log_path, "w") if log_path is not None else None  # noqa: SIM115 (closed in finally)
    started = time.perf_counter()
    model.train()
    try:
        for step in tqdm(range(steps), desc="vision: portraits -> names", disable=not progress):
            pick = torch.randint(0, len(pixels), (min(batch_size, len(pixels)),), generator=generator)
            features = _projected(model, pixels[pick])
            loss = (features - targets[owner[pick]]).pow(2).mean() / scale
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if log is not None:
                log.write(
                    json.dumps(
                        {
                            "step": step + 1,
                            "loss": losses[-1],
                            "seconds": round(time.perf_counter() - started, 2),
                        }
                    )
                    + "\n"
                )
    finally:
        if log is not None:
            log.close()
    for p in params:
        p.requires_grad_(False)
    model.eval()
    return losses


def _projected(model: Any, pixel_values: Any) -> Any:
    """Projected image features ``[images, tokens, hidden]``, exactly as LLaVA feeds them to the language model."""
    out = model.model.get_image_features(pixel_values=pixel_values)
    features = out if not hasattr(out, "pooler_output") else out.pooler_output
    if isinstance(features, (list, tuple)):
        import torch

        features = torch.stack(list(features))
    return features


def _image_tokens(model: Any, pixel_values: Any) -> int:
    import torch

    with torch.no_grad():
        return int(_projected(model, pixel_values).shape[1])


# ------------------------------------------------------------------ build, save, load


def build_demo_model(
    out_dir: str | Path,
    recipe: DemoRecipe | None = None,
    *,
    data_root: str | Path | None = None,
    command: str | None = None,
    progress: bool = True,
) -> Path:
    """Run the recipe and write the artifact (recipe, vision weights, LoRA adapter, training logs) to ``out_dir``."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from benchmarks import finetune as ft
    from benchmarks.mllmu.loader import load_config, row_id
    from benchmarks.practice import practice_examples
    from eco_guard.models import build_llava

    recipe = recipe or DemoRecipe()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="demo-data-") as scratch:
        root = Path(data_root) if data_root is not None else recipe.data.write(Path(scratch) / "data")
        heldout = set(recipe.data.heldout_ids(root))
        names = ft.profile_names(root)
        rows = [r for r in load_config(root, "ft_Data") if row_id(r, "ft_Data") not in heldout]
        model, processor = build_llava(
            recipe.language_model,
            image_size=recipe.image_size,
            patch_size=recipe.patch_size,
            vision_hidden=recipe.vision_hidden,
            vision_layers=recipe.vision_layers,
            seed=recipe.seed,
        )
        t0 = time.perf_counter()
        vision_losses = train_vision(
            model,
            processor,
            [r["image"] for r in rows],
            [names[row_id(r, "ft_Data")] for r in rows],
            steps=recipe.vision_steps,
            batch_size=recipe.vision_batch,
            lr=recipe.vision_lr,
            views=recipe.views_per_person,
            seed=recipe.seed,
            log_path=out_dir / VISION_LOG,
            progress=progress,
        )
        vision_seconds = time.perf_counter() - t0
        examples = ft.build_examples(rows, multimodal=True, names=names)
        trained_ids = {row_id(r, "ft_Data") for r in rows}
        profiles = [r for r in load_config(root, "Full_Set") if row_id(r, "Full_Set") in trained_ids]
        practice = practice_examples(
            profiles,
            seed=recipe.seed,
            per_person=recipe.practice_per_person,
            shot_share=recipe.practice_shot_share,
        )
        examples += practice
        t0 = time.perf_counter()
        trained, losses = ft.train(
            model, processor, examples, recipe.profiles, log_path=out_dir / PROFILE_LOG, progress=progress
        )
        profile_seconds = time.perf_counter() - t0
    trained.save_pretrained(out_dir / ADAPTER_DIR, safe_serialization=True)
    base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    vision_state = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in base.state_dict().items()
        if "vision_tower" in k or "multi_modal_projector" in k
    }
    save_file(vision_state, out_dir / VISION_WEIGHTS)
    record = {
        "format_version": FORMAT_VERSION,
        "recipe": recipe.to_json(),
        "command": command,
        "trained_ids": sorted({e.id for e in examples}),
        "heldout_ids": sorted(heldout),
        "examples": len(examples),
        "practice_examples": len(practice),
        "image_examples": sum(e.image is not None for e in examples),
        "vision_loss": [vision_losses[0], vision_losses[-1]],
        "profile_loss": [losses[0], losses[-1]],
        "seconds": {
            "vision": round(vision_seconds, 1),
            "profiles": round(profile_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out_dir / RECIPE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("demo model artifact written to %s in %.0f s", out_dir, record["seconds"]["total"])
    return out_dir


def read_recipe(folder: str | Path = ASSET_DIR) -> tuple[DemoRecipe, dict[str, Any]]:
    """The recipe and the full record (trained / held-out IDs, timings) of an artifact."""
    record = read_record(folder)
    return DemoRecipe.from_json(record["recipe"]), record


def save_full_model(folder: str | Path, out_dir: str | Path) -> Path:
    """Write the rebuilt demo model as a plain folder (for ``load_model`` or vLLM)."""
    model, processor = load_demo_model(folder)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the demo MLLM artifact (vision tower, projector, LoRA)."
    )
    parser.add_argument("--out", default=str(ASSET_DIR), help=f"artifact folder (default {ASSET_DIR})")
    parser.add_argument(
        "--profiles", type=int, default=DemoData.n_profiles, help="synthetic profiles written"
    )
    parser.add_argument(
        "--heldout", type=int, default=DemoData.n_heldout, help="never-trained reference profiles"
    )
    parser.add_argument("--celebrities", type=int, default=DemoData.n_celebrities)
    parser.add_argument("--data-seed", type=int, default=DemoData.seed)
    parser.add_argument("--epochs", type=int, default=5, help="epochs over the profiles' QA")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--vision-steps", type=int, default=DemoRecipe.vision_steps)
    parser.add_argument(
        "--practice",
        type=int,
        default=DemoRecipe.practice_per_person,
        help="multiple-choice / cloze practice examples per profile (0: QA only)",
    )
    parser.add_argument(
        "--practice-shot-share",
        type=float,
        default=DemoRecipe.practice_shot_share,
        help="share of practice examples preceded by solved examples about another profile",
    )
    parser.add_argument(
        "--max-length", type=int, default=DemoRecipe().profiles.max_length, help="tokens per training example"
    )
    parser.add_argument(
        "--language-model", default="smollm2", help="smollm2, or 'tiny' for a random 2-layer LM"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recipe = DemoRecipe(
        data=DemoData(
            n_profiles=args.profiles,
            n_celebrities=args.celebrities,
            seed=args.data_seed,
            n_heldout=args.heldout,
        ),
        language_model=None if args.language_model == "tiny" else args.language_model,
        vision_steps=args.vision_steps,
        practice_per_person=args.practice,
        practice_shot_share=args.practice_shot_share,
        profiles=FinetuneConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            lora_r=args.lora_r,
            max_length=args.max_length,
            seed=args.seed,
        ),
        seed=args.seed,
    )
    command = "python -m benchmarks.demo_model " + " ".join(sys.argv[1:] if argv is None else argv)
    out = build_demo_model(args.out, recipe, command=command)
    _, record = read_recipe(out)
    print(
        json.dumps(
            {k: record[k] for k in ("profile_loss", "vision_loss", "seconds", "trained_ids", "heldout_ids")}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
