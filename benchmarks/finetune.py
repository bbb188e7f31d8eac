"""Teach a model the profiles' question-answer pairs, as MLLMU-Bench's own fine-tuning step does (the "vanilla" model).

Examples come from ``ft_Data`` (one row per person: image + metadata QA list) in the reference's conversation format
``USER: <image>\\n{question}\\nASSISTANT: {answer}``; the loss covers the answer tokens (and the end-of-turn token) only.
A question that names the person is taught text-only (that is how text-only benchmark questions ask it); one that
says "this person" carries the portrait when the model and the data have images, and is skipped on a text-only model
(it cannot be answered without the picture).

LoRA (peft) on every linear layer of the language model by default, optionally also the projector and vision tower;
``save_merged`` writes a plain model folder (adapters merged) with its processor, loadable by ``load_model``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
PROMPT_IMAGE = "USER: <image>\n{question}\nASSISTANT:"
PROMPT_TEXT = "USER: {question}\nASSISTANT:"
LOSS_LOG = "finetune_log.jsonl"
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Example:
    """One training pair: ``prompt`` (with ``<image>`` when ``image`` is set) and the ``answer`` to learn."""

    id: str
    prompt: str
    answer: str
    image: Any = None


@dataclass
class FinetuneConfig:
    """Training settings; the defaults make SmolLM2-135M with LoRA learn a few dozen profiles by heart (fewer
    epochs at a lower rate left it answering its own profiles' questions no better than strangers': docs/demo.md).
    A vanilla model that never learned its profiles leaves nothing to forget."""

    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 0.0
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    train_projector: bool = False
    train_vision: bool = False
    vision_lr: float | None = None
    max_length: int = 160
    seed: int = 0

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "lora_r", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")


# ------------------------------------------------------------------ data


def profile_names(data_root: str | Path) -> dict[str, str]:
    """``{ID: Name}`` from Full_Set when the folder has it (tells which questions name the person), else ``{}``."""
    from benchmarks.mllmu.loader import has_config, load_config, row_id

    if not has_config(data_root, "Full_Set"):
        return {}
    rows = load_config(data_root, "Full_Set")
    return {row_id(r, "Full_Set"): (r.get("biography") or {}).get("Name", "") for r in rows}


def build_examples(
    rows: Sequence[Mapping[str, Any]],
    *,
    multimodal: bool,
    names: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    max_profiles: int | None = None,
) -> list[Example]:
    """Examples from ft_Data rows (``ID``, ``image``, ``metadata``), keeping ``ids`` (all when None), at most
    ``max_profiles`` people in row order."""
    from benchmarks.mllmu.loader import row_id

    names = names or {}
    wanted = None if ids is None else {str(i) for i in ids}
    examples: list[Example] = []
    people = 0
    for k, row in enumerate(rows):
        rid = row_id(row, f"ft_Data row {k}")
        if wanted is not None and rid not in wanted:
            continue
        if max_profiles is not None and people >= max_profiles:
            break
        people += 1
        image = row.get("image") if multimodal else None
        name = names.get(rid, "")
        for qa in row.get("metadata") or ():
            question, answer = qa["Question"].strip(), qa["Answer"].strip()
            named = bool(name) and name.lower() in question.lower()
            if image is not None and not named:
                examples.append(Example(rid, PROMPT_IMAGE.format(question=question), answer, image))
            elif named or multimodal or not name:
                examples.append(Example(rid, PROMPT_TEXT.format(question=question), answer))
            # else: a text-only model cannot answer a question that needs the picture
    if wanted is not None:
        missing = wanted - {e.id for e in examples}
        if missing and max_profiles is None:
            raise ValueError(f"profile IDs not found in ft_Data: {sorted(missing)}")
    if not examples:
        raise ValueError("no training examples: ft_Data rows have no usable QA pairs for this model")
    return examples


class Collator:
    """Tokenize examples into right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (prompt masked with -100)
    and ``pixel_values`` for the rows with an image (in row order, as LLaVA consumes them)."""

    def __init__(self, processor: Any, max_length: int = 160) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = getattr(processor, "image_processor", None)
        self.max_length = max_length
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.image_tokens = self._image_tokens() if self.image_processor is not None else 0

    def _image_tokens(self) -> int:
        """How many ``<image>`` placeholders one image becomes (asked of the processor itself)."""
        from PIL import Image

        size = self.image_processor.crop_size or {"height": 64, "width": 64}
        probe = Image.new("RGB", (int(size["width"]), int(size["height"])))
        ids = self.processor(text=IMAGE_TOKEN, images=[probe], return_tensors="pt")["input_ids"][0]
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        return int((ids == image_id).sum())

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        prompt = example.prompt
        if example.image is not None:
            if IMAGE_TOKEN not in prompt:
                raise ValueError(f"example of {example.id}: an image but no {IMAGE_TOKEN} in the prompt")
            prompt = prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.image_tokens)
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        answer_ids = self.tokenizer(" " + example.answer, add_special_tokens=False)["input_ids"] + [
            self.eos_id
        ]
        ids = (prompt_ids + answer_ids)[: self.max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[: self.max_length]
        if all(x == -100 for x in labels):
            raise ValueError(
                f"example of {example.id} leaves no answer token within max_length={self.max_length}"
            )
        return ids, labels

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        import torch

        encoded = [self.encode(e) for e in examples]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for r, (ids, lab) in enumerate(encoded):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            mask[r, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        images = [e.image.convert("RGB") for e in examples if e.image is not None]
        if images:
            batch["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return batch


# ------------------------------------------------------------------ model


def language_linear_names(model: Any) -> list[str]:
    """Full names of the language model's linear layers (attention and MLP; never the vision tower or projector)."""
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] not in LINEAR_NAMES:
            continue
        if "vision" in name or "projector" in name:
            continue
        names.append(name)
    if not names:
        raise ValueError(f"{type(model).__name__} has no language-model linear layers named {LINEAR_NAMES}")
    return names


def prepare_model(model: Any, config: FinetuneConfig) -> Any:
    """Wrap in LoRA (or unfreeze the language model) and unfreeze the projector / vision tower when asked."""
    import torch

    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=language_linear_names(model),
            bias="none",
        )
        model = get_peft_model(model, lora)
    else:
        for name, param in model.named_parameters():
            param.requires_grad = "vision" not in name and "projector" not in name
    for name, param in model.named_parameters():
        if config.train_projector and "multi_modal_projector" in name:
            param.requires_grad = True
        if config.train_vision and "vision_tower" in name:
            param.requires_grad = True
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: no parameter requires a gradient")
    torch.manual_seed(config.seed)
    return model


def merge(model: Any) -> Any:
    """The plain model with LoRA adapters merged into its weights (a no-op without LoRA)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# ------------------------------------------------------------------ training


def train(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    config: FinetuneConfig | None = None,
    *,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[Any, list[float]]:
    """Fine-tune ``model`` on ``examples``; returns ``(trained model, per-step losses)``.

    The returned model is the peft wrapper under LoRA (call :func:`merge` or :func:`save_merged`). Shuffling, LoRA
    init and dropout are seeded by ``config.seed``. Each step is appended to ``log_path`` (JSONL) as it finishes.
    """
    import torch
    from tqdm.auto import tqdm

    config = config or FinetuneConfig()
    config.validate()
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    model = prepare_model(model, config)
    model.train()
    collate = Collator(processor, config.max_length)
    vision = [p for n, p in model.named_parameters() if p.requires_grad and "vision_tower" in n]
    others = [p for n, p in model.named_parameters() if p.requires_grad and "vision_tower" not in n]
    groups = [{"params": others, "lr": config.lr}]
    if vision:
        groups.append({"params": vision, "lr": config.vision_lr or config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = per_epoch * config.epochs
    warmup = max(1, int(config.warmup * total)) if config.warmup > 0 else 0

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(config.seed)
    order = list(range(len(examples)))
    losses: list[float] = []
    log = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w")  # noqa: SIM115 (closed in finally)
    device = next(model.parameters()).device
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "fine-tuning on %d examples, %d epochs, %d steps, %d trainable parameters",
        len(examples),
        config.epochs,
        total,
        n_trainable,
    )
    started = time.perf_counter()
    try:
        with tqdm(total=total, desc="finetune", unit="step", disable=not progress) as bar:
            for epoch in range(config.epochs):
                rng.shuffle(order)
                for lo in range(0, len(order), config.batch_size):
                    batch = collate([examples[i] for i in order[lo : lo + config.batch_size]])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    loss = model(**batch).loss
                    if not torch.isfinite(loss):
                        raise RuntimeError(
                            f"loss became {loss.item()} at step {len(losses)}; lower the learning rate"
                        )
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
                    if log is not None:
                        record = {
                            "step": len(losses),
                            "epoch": epoch,
                            "loss": losses[-1],
                            "lr": scheduler.get_last_lr()[0],
                            "seconds": round(time.perf_counter() - started, 2),
                        }
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
    finally:
        if log is not None:
            log.close()
    model.eval()
    return model, losses


def save_merged(
    model: Any, processor: Any, out_dir: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Merge LoRA adapters and write a plain model folder (safetensors) with its processor or tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = merge(model)
    plain.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    if metadata is not None:
        (out_dir / "finetune.json").write_text(
            json.dumps(dict(metadata), indent=2, sort_keys=True, default=str) + "\n"
        )
    return out_dir


def finetune(
    data_root: str | Path,
    base: str,
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    data_config: str = "ft_Data",
    ids: Sequence[str] | None = None,
    max_profiles: int | None = None,
    progress: bool = True,
) -> tuple[Path, list[float]]:
    """Load ``base``, teach it the QA of ``data_config`` under ``data_root``, save it merged to ``out_dir``."""
    from benchmarks.mllmu.loader import load_config
    from eco_guard.models import is_multimodal, load_model

    config = config or FinetuneConfig()
    config.validate()
    model, processor = load_model(base)
    multimodal = is_multimodal(model.config)
    rows = load_config(data_root, data_config)
    examples = build_examples(
        rows, multimodal=multimodal, names=profile_names(data_root), ids=ids, max_profiles=max_profiles
    )
    out_dir = Path(out_dir)
    model, losses = train(model, processor, examples, config, log_path=out_dir / LOSS_LOG, progress=progress)
    metadata = {
        "base": str(base),
        "data": str(data_root),
        "data_config": data_config,
        "config": asdict(config),
        "examples": len(examples),
        "profiles": sorted({e.id for e in examples}),
        "with_images": sum(e.image is not None for e in examples),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    save_merged(model, processor, out_dir, metadata)
    logger.info("saved the fine-tuned model to %s (loss %.3f -> %.3f)", out_dir, losses[0], losses[-1])
    return out_dir, losses
