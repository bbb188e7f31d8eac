"""The demo MLLM shipped in ``eco_guard/assets/demo_mllm``: where it lives and how it loads.

SmolLM2 in a LLaVA frame with a small vision tower trained from scratch on synthetic portraits, then LoRA on the
profiles' QA. The artifact holds the recipe (``recipe.json``), the vision tower and projector weights and the LoRA
adapter; loading rebuilds the frame from the recipe and merges the adapter. How it is built:
``python -m benchmarks.demo_model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "demo_mllm"
RECIPE = "recipe.json"
VISION_WEIGHTS = "vision.safetensors"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 2


def has_artifact(folder: str | Path = ASSET_DIR) -> bool:
    folder = Path(folder)
    return all((folder / p).exists() for p in (RECIPE, VISION_WEIGHTS, ADAPTER_DIR))


def read_record(folder: str | Path = ASSET_DIR) -> dict[str, Any]:
    """The artifact's record: its recipe (``record["recipe"]``), trained and held-out IDs, timings."""
    path = Path(folder) / RECIPE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: not a demo model artifact (build one with python -m benchmarks.demo_model)"
        )
    record = json.loads(path.read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {record.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return record


def load_demo_model(folder: str | Path = ASSET_DIR) -> tuple[Any, Any]:
    """Rebuild the demo MLLM: SmolLM2 in the LLaVA frame, the trained vision tower and projector, LoRA merged."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from eco_guard.models import build_llava

    folder = Path(folder)
    recipe = read_record(folder)["recipe"]
    model, processor = build_llava(
        recipe.get("language_model", "smollm2"),
        image_size=recipe["image_size"],
        patch_size=recipe["patch_size"],
        vision_hidden=recipe["vision_hidden"],
        vision_layers=recipe["vision_layers"],
        seed=recipe.get("seed", 0),
    )
    state = load_file(folder / VISION_WEIGHTS)
    missing = [k for k in state if k not in model.state_dict()]
    if missing:
        raise ValueError(
            f"{folder / VISION_WEIGHTS} does not fit the recipe's model: unknown keys {missing[:3]}"
        )
    model.load_state_dict(state, strict=False)
    model = PeftModel.from_pretrained(model, folder / ADAPTER_DIR).merge_and_unload()
    return model.eval(), processor
