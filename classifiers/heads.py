"""scikit-learn heads stored as plain arrays and JSON (never pickle or joblib).

A fitted estimator is saved as its class path, its ``get_params()`` and its learned attributes (names ending in
``_``): arrays go to safetensors, scalars and strings to JSON. Loading rebuilds the estimator from an allowed module
and sets the attributes back; the caller checks it reproduces stored probe outputs before trusting it.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import numpy as np

ALLOWED_MODULES = (
    "sklearn.linear_model",
    "sklearn.discriminant_analysis",
    "sklearn.svm",
    "sklearn.neural_network",
)


def default_head() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced")


def head_state(head: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(json_state, arrays)`` of a fitted head; a clear error for attributes that only pickle could hold."""
    cls = type(head)
    if not cls.__module__.startswith(ALLOWED_MODULES):
        raise TypeError(
            f"cannot save a {cls.__module__}.{cls.__name__} head; allowed modules: {ALLOWED_MODULES}"
        )
    params = head.get_params(deep=False)
    try:
        json.dumps(params)
    except TypeError as err:
        raise TypeError(f"cannot save the parameters of {cls.__name__} as JSON: {err}") from None
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in vars(head).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            for i, v in enumerate(value):
                arrays[f"{name}.{i}"] = v
            scalars[name] = {"list_of_arrays": len(value)}
        elif isinstance(value, (bool, int, float, str)) or value is None or isinstance(value, np.generic):
            scalars[name] = {"value": value.item() if isinstance(value, np.generic) else value}
        else:
            raise TypeError(
                f"cannot save head attribute {name} of type {type(value).__name__} without pickle"
            )
    state = {"class": f"{cls.__module__}.{cls.__name__}", "params": params, "attributes": scalars}
    return state, arrays


def head_from_state(state: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    module_name, _, class_name = state["class"].rpartition(".")
    if not module_name.startswith(ALLOWED_MODULES):
        raise ValueError(
            f"refusing to load head class {state['class']!r}; allowed modules: {ALLOWED_MODULES}"
        )
    head = getattr(importlib.import_module(module_name), class_name)(**state["params"])
    listed = set()
    for name, spec in state["attributes"].items():
        if "list_of_arrays" in spec:
            keys = [f"{name}.{i}" for i in range(spec["list_of_arrays"])]
            setattr(head, name, [arrays[k] for k in keys])
            listed.update(keys)
        else:
            setattr(head, name, spec["value"])
    for name, value in arrays.items():
        if name not in listed:
            setattr(head, name, value)
    return head
