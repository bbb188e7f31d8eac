"""Session-wide fixtures: real models are loaded once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (model, tokenizer), float32, eval mode."""
    from eco_guard.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_llava():
    """A tiny random LLaVA-architecture model (2-layer LM on SmolLM2's tokenizer, 64 px CLIP tower) + processor."""
    from eco_guard.models import build_llava

    return build_llava(None, seed=0)
