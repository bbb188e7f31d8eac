"""The end-to-end demo: a multimodal model that learned fictitious people forgets some of them at inference time.

Steps, each written under ``out/`` and reused on the next run when its inputs are unchanged:

1. ``data/``: the synthetic MLLMU-Bench the demo model was trained on; ``reference/`` is the same benchmark with
   twins in the forget split's place: the forget people's questions about people the model never saw (their scores
   are the level a perfect guard should reach; ``benchmarks.mllmu.twins``), round k about the identity guard k
   reads: the k-th never-trained person's photo, the surrogate name of guard k's seed.
2. the vanilla demo MLLM (``benchmarks.demo_model``: the committed artifact, or trained when missing).
3. ``classifier/``: the prompt classifier (text + image identity), fitted on the forget split.
4. ``guard/``: the corruption strengths found by nevergrad so that the forget set scores like the never-trained
   profiles, one per modality (names' tokens for named questions, image features for "this person" ones).
5. ``results/{vanilla,never_trained,guarded}/``: the benchmark's evaluation, then the table, the goals (PASS / FAIL
   with the measured numbers) and ``demo.png``.

Modules: ``settings`` (:class:`DemoSettings`), ``cache`` (the stage stamps), ``data`` (steps 1-2), ``search``
(steps 3-4), ``scoring`` (the goals and the gaps behind them), ``report`` (table and figure), ``pipeline``
(:func:`run_demo`). Every public name is importable from ``benchmarks.demo``.
"""

from __future__ import annotations

from benchmarks.demo.cache import (
    STAGE_PREFIX,
    cached,
    fingerprint,
    folder_digest,
    mark,
)
from benchmarks.demo.data import (
    TWINS_FILE,
    load_vanilla,
    prepare_data,
    retain_ids_of,
    surrogate_faces,
    surrogate_words,
    write_reference,
    write_split,
)
from benchmarks.demo.pipeline import (
    evaluate_cached,
    evaluate_seeds,
    own_name_check,
    run_demo,
    timed,
)
from benchmarks.demo.report import (
    DemoReport,
    figure,
    table,
)
from benchmarks.demo.scoring import (
    FORGET_TOLERANCE,
    GOAL_METRICS,
    KEEP_TOLERANCE,
    MEMORIZED_MARGIN,
    MODALITY_ORDER,
    PERCENT_METRICS,
    SET_ORDER,
    Goal,
    forget_gaps,
    forget_item_scores,
    goals,
    mean_forget,
    metric_of,
    own_name_gaps,
    round_scores,
    rows_of,
    unit,
)
from benchmarks.demo.search import (
    SEARCHES,
    GoalGap,
    benchmark_items,
    fit_classifier,
    optimize,
    sweep,
)
from benchmarks.demo.settings import (
    DemoSettings,
)

__all__ = [
    "DemoReport",
    "DemoSettings",
    "FORGET_TOLERANCE",
    "GOAL_METRICS",
    "Goal",
    "GoalGap",
    "KEEP_TOLERANCE",
    "MEMORIZED_MARGIN",
    "MODALITY_ORDER",
    "PERCENT_METRICS",
    "SEARCHES",
    "SET_ORDER",
    "STAGE_PREFIX",
    "TWINS_FILE",
    "benchmark_items",
    "cached",
    "evaluate_cached",
    "evaluate_seeds",
    "figure",
    "fingerprint",
    "fit_classifier",
    "folder_digest",
    "forget_gaps",
    "forget_item_scores",
    "goals",
    "load_vanilla",
    "mark",
    "mean_forget",
    "metric_of",
    "optimize",
    "own_name_check",
    "own_name_gaps",
    "prepare_data",
    "retain_ids_of",
    "round_scores",
    "rows_of",
    "run_demo",
    "surrogate_faces",
    "surrogate_words",
    "sweep",
    "table",
    "timed",
    "unit",
    "write_reference",
    "write_split",
]
