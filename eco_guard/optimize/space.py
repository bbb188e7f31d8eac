"""What nevergrad searches: a strength (log or linear scale), and optionally the corruption family and n / k."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from eco_guard.config import GuardConfig
from eco_guard.corruption import USES_DIMS, USES_STRENGTH, check_corruption

STRENGTH_FIELDS = ("strength", "image_strength")
BLEND_RANGE = (0.75, 1.0)
"""Where a ``substitute`` blend is searched by default. Below it the model reads a mix of two names and writes
hybrids of them that no write-back can restore; from its lower end up it reads the surrogate name alone (measured
on the demo MLLM: docs/demo.md)."""


@dataclass
class SearchSpace:
    """What nevergrad searches: a strength (log scale unless ``scale`` says linear), and optionally the corruption
    family and n / k.

    ``parameter`` names the strength searched: ``strength`` (prompt tokens; image features too unless the config
    sets ``image_strength``) or ``image_strength`` (image features only: search it on image questions whose text
    names nobody, after ``strength`` on text questions). ``corruptions`` with two or more names makes the family
    a choice; ``dims`` (low, high) searches n / k as an integer on a log scale. Whatever is not searched keeps the
    guard's current value.
    """

    strength: tuple[float, float] = (1e-2, 1e4)
    corruptions: tuple[str, ...] = ()
    dims: tuple[int, int] | None = None
    parameter: str = "strength"
    scale: str = "log"
    """How the strength is searched: ``log`` (noise scales span decades) or ``linear`` (a blend weight in
    [0, 1], as for ``substitute``, where 0.001 and 0.1 are the same nothing)."""

    def validate(self, config: GuardConfig) -> None:
        if self.parameter not in STRENGTH_FIELDS:
            raise ValueError(f"parameter must be one of {STRENGTH_FIELDS}, got {self.parameter!r}")
        if self.parameter == "image_strength" and "image" not in config.scope:
            raise ValueError(f"image_strength is searched but scope {config.scope} leaves images alone")
        if self.scale not in ("log", "linear"):
            raise ValueError(f"scale must be 'log' or 'linear', got {self.scale!r}")
        low, high = self.strength
        floor_ok = low > 0 if self.scale == "log" else low >= 0
        if not floor_ok or not low < high or not math.isfinite(high):
            sign = "<" if self.scale == "log" else "<="
            raise ValueError(
                f"strength bounds must satisfy 0 {sign} low < high < inf ({self.scale} scale), got {self.strength}"
            )
        for name in self.corruptions:
            check_corruption(name)
        if self.dims is not None:
            lo, hi = self.dims
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi):
                raise ValueError(f"dims bounds must be integers with 1 <= low < high, got {self.dims}")
        if not self.names(config):
            raise ValueError(
                f"nothing to search: corruption {config.corruption!r} reads neither strength nor dims"
            )

    def families(self, config: GuardConfig) -> tuple[str, ...]:
        if self.corruptions:
            return tuple(self.corruptions)
        return (config.image_corruption_name if self.parameter == "image_strength" else config.corruption,)

    def names(self, config: GuardConfig) -> list[str]:
        families = self.families(config)
        names = []
        if any(USES_STRENGTH[c] for c in families):
            names.append(self.parameter)
        if len(families) > 1:
            names.append("corruption")
        if self.dims is not None and any(USES_DIMS[c] for c in families):
            names.append("dims")
        return names

    def parametrization(self, config: GuardConfig, seed: int):
        """A seeded nevergrad ``Dict`` whose initial value is the guard's current setting (clipped to the bounds)."""
        import nevergrad as ng

        low, high = self.strength
        parts: dict[str, Any] = {}
        for name in self.names(config):
            if name in STRENGTH_FIELDS:
                current = getattr(config, name)
                current = config.strength if current is None else current
                if self.scale == "log":
                    init = current if low <= current <= high else math.sqrt(low * high)
                    parts[name] = ng.p.Log(lower=low, upper=high, init=init)
                else:
                    init = current if low <= current <= high else (low + high) / 2
                    parts[name] = ng.p.Scalar(lower=low, upper=high, init=init)
            elif name == "corruption":
                parts[name] = ng.p.Choice(list(self.families(config)))
            else:
                lo, hi = self.dims
                parts[name] = ng.p.Log(
                    lower=lo, upper=hi, init=min(max(config.dims, lo), hi)
                ).set_integer_casting()
        space = ng.p.Dict(**parts)
        space.random_state = np.random.RandomState(seed)
        return space
