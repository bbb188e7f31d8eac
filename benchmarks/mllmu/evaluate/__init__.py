"""Evaluate a (guarded or plain) model on MLLMU-Bench with the reference protocol; write results, samples, a table.

Sets: ``forget`` (the forget split), ``test`` (Test_Set rows of the forget people: transformed images, paraphrased
questions), ``retain`` (the paired retain split) and ``celebrity`` (Retain_Set, real people). Modalities:
``image_text`` (the picture carries the person) and ``text_only`` (the question names them).

The runner is any object with ``generate(prompts, flags=None, chat_template=False, **gen_kwargs) -> list[str]``
(greedy by default), optionally ``score(prompts, continuations, flags=None, chat_template=False)`` (summed
log-probabilities, for option log-probability classification), ``decide(requests) -> list[Flag]`` (the guard's
verdict, logged per sample) and ``multimodal`` (False: image+text questions are skipped). Prompts are raw reference
strings (``chat_template=False``); image prompts are ``{"text": ..., "image": PIL.Image}``.

Fixes of the reference's quirks (documented in provenance): few-shot profiles are drawn with a seeded RNG and logged;
``no_leak`` draws them from outside the scored set and the forget split; the Test_Set image is a seeded choice.

Modules: ``items`` (the questions), ``runner`` (asking, scoring, :func:`evaluate`), ``report`` (the outputs
and their provenance). Every public name is importable from ``benchmarks.mllmu.evaluate``.
"""

from __future__ import annotations

from benchmarks.mllmu.evaluate.items import (
    CLASSIFICATION_MODALITY,
    FEW_SHOT_SETS,
    MODALITIES,
    SETS,
    TASK_MODALITY,
    Benchmark,
    Item,
    ShotSampler,
    build_items,
    limit_items,
    load_benchmark,
)
from benchmarks.mllmu.evaluate.report import (
    METRIC_ORDER,
    PACKAGES,
    UNITS,
    git_revision,
    markdown_table,
    package_versions,
    write_outputs,
)
from benchmarks.mllmu.evaluate.runner import (
    OPTION_PREFIX,
    SAMPLE_METRICS,
    evaluate,
    run_items,
    score_item,
    summarize,
)

__all__ = [
    "Benchmark",
    "CLASSIFICATION_MODALITY",
    "FEW_SHOT_SETS",
    "Item",
    "METRIC_ORDER",
    "MODALITIES",
    "OPTION_PREFIX",
    "PACKAGES",
    "SAMPLE_METRICS",
    "SETS",
    "ShotSampler",
    "TASK_MODALITY",
    "UNITS",
    "build_items",
    "evaluate",
    "git_revision",
    "limit_items",
    "load_benchmark",
    "markdown_table",
    "package_versions",
    "run_items",
    "score_item",
    "summarize",
    "write_outputs",
]
