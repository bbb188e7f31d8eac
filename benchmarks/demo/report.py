"""What the demo shows: the markdown table, ``demo.png`` and :class:`DemoReport`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.demo.scoring import GOAL_METRICS, Goal, metric_of, rows_of


def table(vanilla: Mapping[str, Any], guarded: Mapping[str, Any] | None, reference: Mapping[str, Any]) -> str:
    """Markdown: one row per set and modality; vanilla / guarded / never-trained per goal metric (scale [0, 1])."""
    cols = [f"{m} {who}" for m in GOAL_METRICS for who in ("vanilla", "guarded", "never")]
    lines = [
        "| set | modality | n | flagged | " + " | ".join(cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for set_name, modality in rows_of(vanilla):
        values = vanilla["metrics"][set_name][modality]
        cells = []
        for metric in GOAL_METRICS:
            for source in (vanilla, guarded, reference):
                value = None if source is None else metric_of(source, set_name, modality, metric)
                cells.append("-" if value is None else f"{value:.3f}")
        flag = metric_of(guarded, set_name, modality, "flag_rate") if guarded else None
        lines.append(
            f"| {set_name} | {modality} | {values.get('n', '-')} | "
            f"{'-' if flag is None else f'{flag:.0%}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def figure(
    path: Path,
    sweep_rows: Sequence[Mapping[str, float]],
    vanilla: Mapping[str, Any],
    guarded: Mapping[str, Any] | None,
    reference: Mapping[str, Any],
    metric: str = "rougeL",
) -> Path:
    """Left: forget vs retain answer log-likelihood across corruption strength. Right: ``metric`` per set and
    modality, vanilla vs guarded (never-trained marked on the forget/test bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        if sweep_rows:
            positive = [r["strength"] for r in sweep_rows if r["strength"] > 0] or [1.0]
            log = max(positive) / min(positive) > 20  # noise strengths span decades; a blend weight does not
            floor = min(positive) / 3 if log else 0.0
            xs = [max(r["strength"], floor) for r in sweep_rows]
            left.plot(xs, [r["forget"] for r in sweep_rows], "o-", color="tab:red", label="forget (flagged)")
            left.plot(
                xs, [r["retain"] for r in sweep_rows], "s-", color="tab:blue", label="retain (classifier)"
            )
            if log:
                left.set_xscale("log")
            left.set_xlabel(
                f"corruption strength (0 plotted at {floor:.2g})" if log else "corruption strength"
            )
            left.set_ylabel("answer log-likelihood per token")
            left.set_title("knowledge vs corruption strength")
            left.legend()
        labels, v_bars, g_bars, r_marks = [], [], [], []
        for set_name, modality in rows_of(vanilla):
            labels.append(f"{set_name}\n{modality.replace('_', ' ')}")
            v_bars.append(metric_of(vanilla, set_name, modality, metric) or 0.0)
            g_bars.append((metric_of(guarded, set_name, modality, metric) or 0.0) if guarded else 0.0)
            r_marks.append(metric_of(reference, set_name, modality, metric))
        xs = range(len(labels))
        right.bar([x - 0.2 for x in xs], v_bars, width=0.4, label="vanilla", color="tab:gray")
        right.bar([x + 0.2 for x in xs], g_bars, width=0.4, label="guarded", color="tab:green")
        marked = [(x, r) for x, r in zip(xs, r_marks, strict=True) if r is not None]
        if marked:
            right.scatter(
                [x for x, _ in marked],
                [r for _, r in marked],
                marker="_",
                s=600,
                color="black",
                label="never-trained",
                zorder=3,
            )
        right.set_xticks(list(xs))
        right.set_xticklabels(labels, fontsize=7)
        right.set_ylabel(metric)
        right.set_title(f"{metric}: vanilla vs guarded")
        right.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


@dataclass
class DemoReport:
    table: str
    goals: list[Goal]
    results: dict[str, Any]
    figure: Path | None
    timings: dict[str, float]
    missing: list[str]
    checks: list[Goal] = field(default_factory=list)
    """Not goals: ``own_name_check`` (with ``DemoSettings.own_names``)."""
