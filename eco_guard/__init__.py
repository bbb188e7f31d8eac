"""eco-guard: inference-time unlearning by embedding-corrupted prompts (ECO).

``import eco_guard`` stays light: the heavy parts load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GuardConfig": "eco_guard.config",
    "GuardFileError": "eco_guard.io",
    "EcoGuard": "eco_guard.guard",
    "Flag": "eco_guard.requests",
    "Request": "eco_guard.requests",
    "PromptClassifier": "eco_guard.requests",
    "CORRUPTIONS": "eco_guard.corruption",
    "CorruptionParams": "eco_guard.corruption",
    "apply_corruption": "eco_guard.corruption",
    "load_model": "eco_guard.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eco_guard' has no attribute {name!r}")
