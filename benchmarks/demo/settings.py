"""What a demo run does: :class:`DemoSettings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eco_guard.optimize import BLEND_RANGE


@dataclass
class DemoSettings:
    """What a demo run does; the defaults keep a cached run within minutes on two CPU cores."""

    out: Path = Path("runs/demo")
    artifact: Path | None = None
    retrain: bool = False
    limit: int | None = None
    max_new_tokens: int = 32
    batch_size: int = 16
    """Questions per generate call: of 8 and 16, 16 ran the demo's forget set faster on two CPU cores
    (docs/results.md)."""
    seed: int = 0
    budget: int = 8
    metric: str = "goals"
    """What the corruption search matches to the never-trained profiles: ``goals`` (the mean distance over the
    goal metrics: stated multiple choice, cloze and ROUGE-L, scored as the benchmark scores them) or one of
    ``eco_guard.optimize.METRICS`` on the generation questions (e.g. ``rouge_l``)."""
    fpr: float = 0.01
    combine: str = "bonferroni"
    """How an image request's two detectors share ``fpr`` (``classifiers.multimodal``)."""
    corruption: str = "substitute"
    """On the names' tokens: ``substitute`` moves them toward a surrogate name (the answer keeps the person's name,
    as a model that never learned them would; noise garbled the name, and open answers scored far below the
    never-trained reference: docs/demo.md)."""
    image_corruption: str = "substitute"
    """On the image features of "this person" questions: ``substitute`` moves them toward a surrogate face (a
    never-trained person's photo, see ``guard_seeds``), the picture analogue of a surrogate name; noise
    made every face read alike ("Cork, Ireland" for anyone) and answers worse than never-trained."""
    guard_seeds: int = 6
    """Guards scored on the forget set, paired with rounds of never-trained twins (common random numbers): guard
    k reads the k-th never-trained person's photo as its surrogate face and its own surrogate names
    (``GuardConfig.seed`` + k); round k asks the forget people's questions about that same identity (that photo,
    those names). Which unknown person is drawn then moves both sides alike, and the gap measures the guard alone;
    with independent draws, the draw of one unknown person moved a cell by more than the goal's tolerance
    (docs/demo.md). At most the number of never-trained people (8)."""
    dims: int | None = None
    """Dimensions the noise touches; None: all of them (isotropic noise on the image features, and on the names'
    tokens when ``corruption`` is a noise; ECO's single dimension needs a strength so large on this small model
    that answers stop being sentences before the person is forgotten)."""
    scope: tuple[str, ...] = ("spans", "image")
    strength_range: tuple[float, float] = (1e-3, 1.0)
    """Searched on a log scale for a noise family."""
    blend_range: tuple[float, float] = BLEND_RANGE
    """Searched on a linear scale for ``substitute`` (a blend weight: at 1 the surrogate alone is read; below
    ``BLEND_RANGE`` the answers mix the two names)."""
    initial_strength: float = 0.03
    strengths: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    blend_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    no_leak: bool = True
    """Few-shot examples from retain people (``evaluate(no_leak=True)``), the same person for the forget set and the
    never-trained reference. The reference protocol draws them from the scored set itself: a forget person
    (guarded too) against a never-trained one, whose facts the model copies in other proportions (both models
    answered most multiple-choice questions about the few-shot person), one draw per cell."""
    own_names: bool = False
    """Also check the guards against the never-trained people under their own names and photos, every one for every
    forget person (``own_name_check``; not a goal: the pairing cannot see whether a surrogate identity is a typical
    never-trained one, this can). It asks every forget person's questions about each never-trained person once
    more (its time: docs/results.md)."""
    logprob: bool = False
    """Also score multiple choice by option log-likelihood (``classification_logprob_acc``, no goal reads it): one
    more forward pass per option (its cost on two CPU cores: docs/results.md)."""
    timings: dict[str, float] = field(default_factory=dict)
