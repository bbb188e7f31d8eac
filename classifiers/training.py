"""Fit the guard's classifier on profiles and measure it: error rates per modality and a robustness table.

People are split three ways so every reported rate is honest: the detectors are fitted on some other people,
calibrated on others, and false-positive rates are measured on a third group never seen before. Held-out rates use
paraphrased questions and transformed images (MLLMU-Bench's Test_Set) that no detector was fitted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers.attacks import FAMILIES
from classifiers.augment import transform
from classifiers.calibration import false_negative_rate, false_positive_rate, min_negatives
from classifiers.image import ImageIdentityClassifier
from classifiers.image_encoders import ImageEncoder
from classifiers.multimodal import TEXT_HEAD_SHARE, MultimodalClassifier, split_negatives
from classifiers.prompts import TEMPLATES, general_prompts
from classifiers.terms import TermDetector, fold, typo_distance
from classifiers.text import TextClassifier

logger = logging.getLogger(__name__)

CALIBRATION_DECOYS = 4
"""Decoys per forget question (training and held-out phrasings) among the calibration negatives."""
EARLY_EXIT_DEFAULT = 1
"""The text classifier's early exit (``TextClassifier(early_exit=...)``): after MiniLM's first layer, most
unrelated prompts stop."""


@dataclass
class Profile:
    """One person: questions that name them (text-only), questions about "this person" (sent with the image),
    and held-out paraphrases and transformed images of the same person."""

    identity: str
    name: str
    text_questions: list[str]
    image_questions: list[str] = field(default_factory=list)
    image: Any = None
    held_out_text_questions: list[str] = field(default_factory=list)
    held_out_image_questions: list[str] = field(default_factory=list)
    held_out_images: list[Any] = field(default_factory=list)


def split_people(
    people: Sequence[Profile], seed: int, fractions: tuple[float, float] = (0.5, 0.25)
) -> tuple[list, list, list]:
    """``(fit, calibrate, test)`` groups of people."""
    order = np.random.default_rng(seed).permutation(len(people))
    a = int(round(len(people) * fractions[0]))
    b = a + int(round(len(people) * fractions[1]))
    pick = [people[i] for i in order]
    return pick[:a], pick[a:b], pick[b:]


def fit_classifier(
    forget: Sequence[Profile],
    retain: Sequence[Profile],
    celebrities: Sequence[Profile] = (),
    *,
    fpr: float = 0.01,
    text_encoder: Any = "minilm",
    text_early_exit: int | None = EARLY_EXIT_DEFAULT,
    image_encoder: ImageEncoder | None = None,
    text_head_share: float = TEXT_HEAD_SHARE,
    combine: str = "bonferroni",
    seed: int = 0,
    robustness_per_family: int = 200,
) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Fit, calibrate and evaluate; returns the classifier and the report (``classifier_report.json``)."""
    if not forget or not retain:
        raise ValueError("need forget-set and retain-set profiles")
    rng = np.random.default_rng(seed)
    groups = {"retain": split_people(retain, seed), "celebrity": split_people(celebrities, seed + 1)}
    n = len(TEMPLATES)
    general = {
        "fit": general_prompts(templates=slice(0, n // 2), seed=seed),
        "calibrate": general_prompts(templates=slice(n // 2, 3 * n // 4), seed=seed),
        "test": general_prompts(templates=slice(3 * n // 4, n), seed=seed),
    }
    fit_people = groups["retain"][0] + groups["celebrity"][0]

    # Text head: forget questions vs other people's questions ("this person" ones too) and general prompts.
    positives = [q for p in forget for q in p.text_questions]
    negatives = [q for p in fit_people for q in p.text_questions + p.image_questions] + general["fit"]
    negatives += [q for p in forget for q in p.image_questions]  # the words alone do not identify anyone
    negatives += nameless_questions(list(forget) + fit_people, rng)
    negatives += decoy_questions(forget, [p.name for p in fit_people], rng)
    logger.info("text head: %d forget prompts, %d others", len(positives), len(negatives))
    text = TextClassifier(text_encoder, fpr=None, random_state=seed, early_exit=text_early_exit).fit(
        positives + negatives, [1] * len(positives) + [0] * len(negatives)
    )
    # Every retain and celebrity name is known at fit time: none of them may trigger a (fuzzy, partial) alias.
    known = [p.name for p in list(retain) + list(celebrities)]
    terms = TermDetector().fit({p.identity: p.name for p in forget}, negatives=known + negatives)
    image = None
    if image_encoder is not None and all(p.image is not None for p in forget):
        others = [p for p in fit_people if p.image is not None]
        image = ImageIdentityClassifier(image_encoder, fpr=None, random_state=seed).fit(
            [p.image for p in forget] + [p.image for p in others],
            [p.identity for p in forget] + [None] * len(others),
        )
    classifier = MultimodalClassifier(
        text, terms, image, fpr=fpr, text_head_share=text_head_share, combine=combine, random_state=seed
    )

    cal_people = groups["retain"][1] + groups["celebrity"][1]
    calibration = calibration_negatives(
        cal_people, general["calibrate"], rng, fpr=fpr, with_images=image is not None
    )
    # The hardest negatives: forget questions about made-up people whose names splice the forget names with the
    # calibration people's. A retain person whose name happens to look like a forget name has all their
    # questions near the text head's boundary at once; with these in calibration the head stays quiet for them.
    unseen = [Profile(p.identity, p.name, p.held_out_text_questions + p.text_questions) for p in forget]
    decoys = [
        d
        for _ in range(CALIBRATION_DECOYS)
        for d in decoy_questions(unseen, [p.name for p in cal_people], rng)
    ]
    calibration += decoys
    classifier.calibrate(calibration)

    report = {
        "fpr_target": fpr,
        "text_head_share": text_head_share,
        "combine": combine,
        "counts": {
            "forget_people": len(forget),
            "fit_people": len(fit_people),
            "calibration_people": len(cal_people),
            "test_people": len(groups["retain"][2]) + len(groups["celebrity"][2]),
            "text_head_prompts": len(positives) + len(negatives),
            "calibration_requests": len(calibration),
            "calibration_decoys": len(decoys),
        },
        "calibration": classifier.describe(),
        "aliases": len(terms.aliases_),
        "rates": evaluate(classifier, forget, groups, general["test"], rng),
        "robustness": robustness(
            classifier, forget, groups["retain"][2] + groups["celebrity"][2], rng, robustness_per_family
        ),
    }
    return classifier, report


REFERENCES = (
    "this person",
    "the person in the photo",
    "the person in this picture",
    "the individual pictured",
    "this individual",
    "the man in the image",
    "the woman in the image",
    "them",
    "him",
    "her",
)
"""Ways to point at someone without a name. The synthetic Test_Set's own phrasing ("the person shown here") is
left out on purpose, so the held-out image questions stay unseen."""


def nameless_questions(people: Sequence[Profile], rng: np.random.Generator) -> list[str]:
    """Negatives for the text head: the people's named questions with the name swapped for a reference that names
    nobody. Without them the head learned question shapes, not names, and fired on held-out people's image
    questions, which name nobody (docs/classifier.md)."""
    out = []
    for person in people:
        for question in person.text_questions:
            if person.name in question:
                text = question.replace(person.name, REFERENCES[int(rng.integers(len(REFERENCES)))])
                out.append(text[0].upper() + text[1:])
    return out


def decoy_name(name: str, pool: Sequence[str], forbidden: set[str], rng: np.random.Generator) -> str | None:
    """A made-up name whose every word splices a piece of ``name``'s word onto a piece of a ``pool`` word (other
    names' words of 3+ letters: "Netan Destead" + "Deson Wick" -> "Netson Dewick"); None when 20 draws all came
    too close to a ``forbidden`` word (a forget name's word, or one typo away from it, which must still be
    flagged)."""
    words = name.split()
    if not pool:
        return None
    for _ in range(20):
        out = []
        for word in words:
            other = pool[int(rng.integers(len(pool)))]
            if len(word) < 3:
                out.append(other)
                continue
            cut, cut2 = int(rng.integers(1, len(word) - 1)), int(rng.integers(1, len(other) - 1))
            spliced = word[:cut] + other[cut2:] if rng.random() < 0.5 else other[:cut2] + word[cut:]
            out.append(spliced[:1].upper() + spliced[1:].lower())
        if all(min(typo_distance(fold(w), f) for f in forbidden) > 1 for w in out):
            return " ".join(out)
    return None


def decoy_questions(forget: Sequence[Profile], others: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Negatives for the text head: each forget question with the person's name replaced by a decoy that shares
    pieces of it. Without them the head learns the names' sub-words, and flags another person whose name happens
    to share some (an example in docs/classifier.md)."""
    forbidden = {fold(w) for p in forget for w in p.name.split()}
    out = []
    for person in forget:
        # pieces of the other forget names too: "Netan" + "Memiwick" -> "Netawick" is nobody
        names = list(others) + [p.name for p in forget if p is not person]
        pool = [w for n in names for w in n.split() if len(w) >= 3]
        for question in person.text_questions:
            decoy = decoy_name(person.name, pool, forbidden, rng)
            if decoy is None:
                continue
            text = question.replace(person.name, decoy)
            for word, fake in zip(person.name.split(), decoy.split(), strict=True):
                text = text.replace(word, fake)
            out.append(text)
    return out


def calibration_negatives(
    people: Sequence[Profile],
    general: Sequence[str],
    rng: np.random.Generator,
    *,
    fpr: float,
    with_images: bool,
    margin: float = 2.0,
) -> list[Any]:
    """Negative requests drawn like the traffic: the calibration people's questions and paraphrases, general
    prompts, then (until ``margin`` times the count needed to flag anything at ``fpr``) the same questions under
    the attack families' wrappings; image requests are their "this person" questions (both phrasings, as for
    text) with their portraits, then transformed views of them, as many as that count asks. Few people with many views still calibrate the rate
    *for those people's kind of images*; the report counts both."""
    pool = [(p, q) for p in people for q in p.text_questions + p.held_out_text_questions]
    text: list[Any] = [q for _, q in pool] + list(general)
    needed = int(np.ceil(margin * min_negatives(fpr, 1)))
    families = list(FAMILIES.values())
    for i in range(max(0, needed - len(text)) if pool else 0):
        person, question = pool[int(rng.integers(len(pool)))]
        text.append(families[i % len(families)](question, person.name, rng))
    if len(text) < needed:
        logger.warning("only %d text calibration negatives (%d wanted for fpr=%g)", len(text), needed, fpr)
    if not with_images:
        return text
    pictured = [p for p in people if p.image is not None and p.image_questions]
    if not pictured:
        logger.warning("no calibration person has an image: image requests cannot be calibrated")
        return text
    # enough for a split calibration too (it halves them); more negatives steady the quantile either way
    wanted = int(np.ceil(max(margin * min_negatives(fpr, 2), 1.25 * split_negatives(fpr))))
    images = []
    for k in range(wanted):
        person, round_ = pictured[k % len(pictured)], k // len(pictured)
        views = [person.image, *person.held_out_images]  # the portrait itself, then its transformed copies
        view = views[round_] if round_ < len(views) else transform(person.image, rng)
        questions = person.image_questions + person.held_out_image_questions  # both phrasings, as for text
        images.append({"text": _pick(questions, rng), "image": view})
    return text + images


def evaluate(
    classifier: MultimodalClassifier,
    forget: Sequence[Profile],
    groups: dict[str, tuple[list, list, list]],
    general_test: Sequence[str],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """FNR on the forget set, FPR on test-group retain and celebrity people and general prompts; per modality,
    on the training questions and on held-out paraphrases / transformed images."""

    def flags(requests: list[Any]) -> list[bool]:
        return [f.flagged for f in classifier.flag(requests)] if requests else []

    def text_requests(people: Sequence[Profile], held_out: bool) -> tuple[list[str], list[str]]:
        pairs = [
            (q, p.name) for p in people for q in (p.held_out_text_questions if held_out else p.text_questions)
        ]
        return [q for q, _ in pairs], [who for _, who in pairs]

    def image_requests(people: Sequence[Profile], held_out: bool) -> tuple[list[dict[str, Any]], list[str]]:
        out, owners = [], []
        for p in people:
            if held_out:
                questions = p.held_out_image_questions or p.image_questions
                asked = [
                    {"text": _pick(questions, rng), "image": img} for img in p.held_out_images if questions
                ]
            else:
                asked = (
                    [{"text": q, "image": p.image} for q in p.image_questions] if p.image is not None else []
                )
            out += asked
            owners += [p.name] * len(asked)
        return out, owners

    def rate(kind: Callable, requests: tuple[list[Any], list[str]]) -> dict[str, Any]:
        return kind(flags(requests[0]), requests[1]).to_dict()

    rates: dict[str, Any] = {}
    modalities: dict[str, Callable] = {"text": text_requests}
    if classifier.image is not None:
        modalities["image"] = image_requests
    for modality, build in modalities.items():
        for held_out in (False, True):
            row = {"forget_fnr": rate(false_negative_rate, build(forget, held_out))}
            for group, (_, _, test) in groups.items():
                row[f"{group}_fpr"] = rate(false_positive_rate, build(test, held_out))
            if modality == "text" and not held_out:
                row["general_fpr"] = false_positive_rate(flags(list(general_test))).to_dict()
            rates.setdefault(modality, {})["held_out" if held_out else "train"] = row
    return rates


def robustness(
    classifier: MultimodalClassifier,
    forget: Sequence[Profile],
    others: Sequence[Profile],
    rng: np.random.Generator,
    per_family: int = 200,
) -> dict[str, Any]:
    """Per attack family: FNR on attacked forget questions and FPR on the same attack of other people's."""
    table = {}
    for family, attack in FAMILIES.items():
        rows = {}
        for label, people in (("fnr", forget), ("fpr", others)):
            pool = [(p, q) for p in people for q in (p.held_out_text_questions or p.text_questions)]
            if not pool:
                continue
            picks = rng.choice(len(pool), size=min(per_family, len(pool)), replace=False)
            prompts = [attack(pool[i][1], pool[i][0].name, rng) for i in picks]
            flagged = [f.flagged for f in classifier.flag(prompts)]
            rows[label] = (
                false_negative_rate(flagged) if label == "fnr" else false_positive_rate(flagged)
            ).to_dict()
        table[family] = rows
    return table


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report's rates and robustness."""

    def pct(entry: dict[str, Any] | None) -> str:
        if not entry or entry["rate"] is None:
            return "     -"
        return f"{100 * entry['rate']:5.1f}%"

    lines = [
        f"target FPR {100 * report['fpr_target']:.1f}%",
        "",
        f"{'modality':9} {'split':9} {'forget FNR':>10} "
        f"{'retain FPR':>10} {'celeb FPR':>10} {'general FPR':>11}",
    ]
    for modality, splits in report["rates"].items():
        for split, row in splits.items():
            lines.append(
                f"{modality:9} {split:9} {pct(row.get('forget_fnr')):>10} {pct(row.get('retain_fpr')):>10} "
                f"{pct(row.get('celebrity_fpr')):>10} {pct(row.get('general_fpr')):>11}"
            )
    notes = [
        f"{modality} {split} {name.replace('_', ' ')}: {e['errors']} of {e['n']} requests, from "
        f"{e['people_with_errors']} of {e['people']} people (people-level 95% bound {100 * e['people_upper95']:.1f}%)"
        for modality, splits in report["rates"].items()
        for split, row in splits.items()
        for name, e in row.items()
        if e and e.get("people") and e["errors"]
    ]
    if notes:
        lines += ["", "errors by person (one look-alike can account for all of their requests):", *notes]
    lines += ["", f"{'attack family':20} {'FNR':>7} {'FPR (others)':>13}"]
    for family, row in report["robustness"].items():
        lines.append(f"{family:20} {pct(row.get('fnr')):>7} {pct(row.get('fpr')):>13}")
    return "\n".join(lines)
