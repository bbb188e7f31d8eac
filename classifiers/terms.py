"""Forget-target span detector: where a request names a forget target, as written.

Names are matched on a normalized view of the text (case folded, diacritics removed, leetspeak digits read as
letters, punctuation and spacing ignored) that keeps a map back to the original characters, so every match is
returned as the exact surface string of the request (``"Jnae Doe's"``), which the guard then maps to the model's
own token positions (or :func:`token_mask` does, given the offsets of the tokenization the model receives).

Aliases of a target: its full name, first + last name, first name alone, last name alone, plus any given. Words
of four letters or more may carry one typo (insertion, deletion, substitution or swap of neighbours). A name
spelled letter by letter (``"J a n e D o e"``) or run together (``"JaneDoe"``) is found too. Aliases that would
fire on the negatives given to :meth:`TermDetector.fit` (other people's names, general prompts) are dropped, or
restricted to exact matches when only their typo-tolerant form fires. A first or last name alone is matched
exactly, without typos, when a common word of the language lies one typo away: "Sime" must not fire on "time".
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.persistence import read_meta, write_meta

logger = logging.getLogger(__name__)

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s"}
SPECIAL = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
TITLES = frozenset(["mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "mx"])
SCORES = {"full": 1.0, "full~": 0.95, "spelled": 0.95, "part": 0.9, "part~": 0.8}
MIN_FUZZY = 4
COMMON_WORDS = 50_000


@lru_cache(maxsize=4)
def common_words(language: str = "en", n: int = COMMON_WORDS) -> tuple[str, ...]:
    """The ``n`` most frequent words of ``language`` (wordfreq's lists, shipped with the package)."""
    from wordfreq import top_n_list

    return tuple(top_n_list(language, n))


@dataclass(frozen=True)
class Match:
    """One occurrence of a forget target's alias: the original text's ``[start, end)`` and how it matched."""

    identity: str
    start: int
    end: int
    surface: str
    kind: str

    @property
    def score(self) -> float:
        return SCORES[self.kind]


@lru_cache(maxsize=4096)
def fold_char(char: str) -> str:
    """Lower-case letters without diacritics ('' for anything that is not part of a word)."""
    lower = char.lower()
    if lower in SPECIAL:
        return SPECIAL[lower]
    if lower in LEET:
        return LEET[lower]
    base = "".join(c for c in unicodedata.normalize("NFKD", lower) if not unicodedata.combining(c))
    return base if base.isalpha() else ""


def fold(text: str) -> str:
    """The normalized form of a name: folded words joined by single spaces."""
    return " ".join(w for w, _, _ in _words(text))


def _words(text: str) -> list[tuple[str, int, int]]:
    """Folded words with their original ``[start, end)``. Leet symbols count as letters only inside a word that has
    a real letter ("J4ne" is "jane", "1990" is no word)."""
    out = []
    for m in re.finditer(r"[^\s\-_.,;:?\"'’()\[\]{}<>/\\*+=~^&#%]+", text):
        token = m.group()
        if not any(c.isalpha() for c in token):
            continue
        word, start = [], None
        for k, char in enumerate(token):
            folded = fold_char(char)
            if folded:
                if start is None:
                    start = m.start() + k
                word.append(folded)
                end = m.start() + k + 1
            elif word:
                out.append(("".join(word), start, end))
                word, start = [], None
        if word:
            out.append(("".join(word), start, end))
    return out


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def surfaces(matches: Iterable[Match]) -> tuple[str, ...]:
    """The distinct surface strings of ``matches``, in order."""
    return tuple(dict.fromkeys(m.surface for m in matches))


def typo_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits and swaps of neighbours), stopped early above 1."""
    if abs(len(a) - len(b)) > 1:
        return 2
    if a == b:
        return 0
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > 1:
            return 2
        prev2, prev = prev, cur
    return prev[-1]


@dataclass
class Alias:
    identity: str
    words: tuple[str, ...]
    full: bool
    fuzzy: bool = True


class TermDetector:
    """Find forget targets' names in text. ``fit(names)`` then ``find(text)`` / ``terms(text)`` / ``score(texts)``."""

    def __init__(self, *, typos: bool = True, partial_names: bool = True, spelled_out: bool = True) -> None:
        self.typos = typos
        self.partial_names = partial_names
        self.spelled_out = spelled_out

    def fit(
        self,
        names: Mapping[str, str | Sequence[str]] | Sequence[str],
        negatives: Iterable[str] = (),
        vocabulary: Iterable[str] | None = None,
    ) -> TermDetector:
        """``names``: identity -> name (or list of names and aliases), or a list of names (each its own identity).
        ``negatives``: texts that must not match (other people's names, prompts about others, general prompts).
        ``vocabulary``: the language's words (default :func:`common_words`); a name's word alone loses its typo
        tolerance where one of them is a typo away."""
        if isinstance(names, str):
            raise TypeError("names must be a list or a mapping, not a single string")
        if not isinstance(names, Mapping):
            names = {name: name for name in names}
        if not names:
            raise ValueError("no forget-target names given")
        self.aliases_: list[Alias] = []
        for identity, given in names.items():
            given = [given] if isinstance(given, str) else list(given)
            if not given or not all(isinstance(g, str) and fold(g) for g in given):
                raise ValueError(f"identity {identity!r} needs at least one non-empty name")
            self.aliases_ += self._aliases(str(identity), given)
        self._index()
        self._exact_near_words(common_words() if vocabulary is None else vocabulary)
        self._prune(negatives)
        return self

    def _aliases(self, identity: str, names: list[str]) -> list[Alias]:
        seen: dict[tuple[str, ...], Alias] = {}
        for k, name in enumerate(names):
            words = tuple(w for w in fold(name).split() if w not in TITLES)
            if not words:
                continue
            forms = [(words, True)]
            if k == 0 and len(words) > 2:
                forms.append(((words[0], words[-1]), True))
            if k == 0 and self.partial_names and len(words) > 1:
                forms += [((words[0],), False), ((words[-1],), False)]
            for form, full in forms:
                if form not in seen and (full or len(form[0]) >= 3):
                    seen[form] = Alias(identity, form, full)
        return list(seen.values())

    def _index(self) -> None:
        """Lookup from a word (or its one-letter deletions) to alias words: typo candidates without a scan."""
        self.alias_words_ = sorted({w for a in self.aliases_ for w in a.words})
        self._lookup: dict[str, set[str]] = defaultdict(set)
        for word in self.alias_words_:
            self._lookup[word].add(word)
            if len(word) >= MIN_FUZZY:
                for variant in _deletes(word):
                    self._lookup[variant].add(word)
        self._by_first: dict[str, list[Alias]] = defaultdict(list)
        for alias in self.aliases_:
            self._by_first[alias.words[0]].append(alias)
        self._compact = [
            (a, "".join(a.words)) for a in self.aliases_ if a.full and len("".join(a.words)) >= 7
        ]

    def _exact_near_words(self, vocabulary: Iterable[str]) -> None:
        """Partial aliases with a vocabulary word one typo away match exactly only (unseen phrasing would
        otherwise trigger them: the pruning below only sees the negatives it is given)."""
        partial = {a.words[0] for a in self.aliases_ if not a.full and a.fuzzy}
        if not partial or not self.typos:
            return
        near = set()
        for word in vocabulary:
            folded = fold(word)
            if folded and " " not in folded:
                near.update(t for t, d in self._candidates(folded).items() if d == 1 and t in partial)
        restricted = [a for a in self.aliases_ if not a.full and a.words[0] in near]
        for alias in restricted:
            alias.fuzzy = False
        if restricted:
            logger.info(
                "vocabulary: %d partial aliases made exact-only (a common word is one typo away)",
                len(restricted),
            )

    def _prune(self, negatives: Iterable[str]) -> None:
        dropped, exact_only = set(), set()
        for text in negatives:
            for match, alias in self._matches(text):
                key = (alias.identity, alias.words)
                if match.kind.endswith("~"):
                    exact_only.add(key)
                elif not alias.full:
                    dropped.add(key)
                else:
                    logger.warning(
                        "full name %r of %s occurs in a negative text", " ".join(alias.words), alias.identity
                    )
        for alias in self.aliases_:
            if (alias.identity, alias.words) in exact_only:
                alias.fuzzy = False
        self.aliases_ = [a for a in self.aliases_ if (a.identity, a.words) not in dropped]
        if dropped or exact_only:
            logger.info(
                "negatives: dropped %d partial aliases, %d made exact-only", len(dropped), len(exact_only)
            )
        self._index()

    # ------------------------------------------------------------ matching

    def find(self, text: str) -> list[Match]:
        """Non-overlapping matches, strongest first where they overlap, in text order."""
        self._check_fitted()
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        found = sorted(
            (m for m, _ in self._matches(text)), key=lambda m: (-m.score, -(m.end - m.start), m.start)
        )
        kept: list[Match] = []
        for m in found:
            if all(m.end <= k.start or m.start >= k.end for k in kept):
                kept.append(m)
        return sorted(kept, key=lambda m: m.start)

    def terms(self, text: str) -> tuple[str, ...]:
        """The distinct surface strings of all matches, in text order."""
        return surfaces(self.find(text))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, the strongest match's score (1.0 full name, lower for typos and partial names; 0 for none)."""
        return self.score_and_terms(texts)[0]

    def score_and_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """``score`` and ``terms`` of every text from one search (the guard needs both for each request)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        found = [self.find(t) for t in texts]
        return np.array([max((m.score for m in f), default=0.0) for f in found]), [surfaces(f) for f in found]

    def _matches(self, text: str) -> Iterable[tuple[Match, Alias]]:
        words = _words(text)
        candidates = [self._candidates(w) for w, _, _ in words]
        for i, cands in enumerate(candidates):
            for first in cands:
                for alias in self._by_first.get(first, ()):
                    n = len(alias.words)
                    if i + n > len(words):
                        continue
                    total = 0
                    for k, word in enumerate(alias.words):
                        d = candidates[i + k].get(word)
                        if d is None:
                            break
                        total += d
                    else:
                        if total and not alias.fuzzy:
                            continue
                        kind = ("full" if alias.full else "part") + ("~" if total else "")
                        yield self._match(text, alias, words[i][1], words[i + n - 1][2], kind), alias
        if self.spelled_out and self._compact:
            yield from self._spelled(text, words)

    def _candidates(self, word: str) -> dict[str, int]:
        out = {}
        keys = {word} | (_deletes(word) if self.typos and len(word) >= MIN_FUZZY - 1 else set())
        for key in keys:
            for target in self._lookup.get(key, ()):
                if target == word:
                    out[target] = 0
                elif (
                    self.typos
                    and len(target) >= MIN_FUZZY
                    and target not in out
                    and typo_distance(word, target) <= 1
                ):
                    out[target] = 1
        return out

    def _spelled(self, text: str, words: list[tuple[str, int, int]]) -> Iterable[tuple[Match, Alias]]:
        """Names written letter by letter or run together: matched on the concatenated words, at word bounds."""
        starts = {}
        joined = []
        offset = 0
        for k, (w, _, _) in enumerate(words):
            starts[offset] = k
            joined.append(w)
            offset += len(w)
        compact = "".join(joined)
        ends = {}
        offset = 0
        for k, (w, _, _) in enumerate(words):
            offset += len(w)
            ends[offset] = k
        for alias, form in self._compact:
            pos = compact.find(form)
            while pos >= 0:
                a, b = starts.get(pos), ends.get(pos + len(form))
                # As many words as the alias has is an ordinary match, found already.
                if a is not None and b is not None and b - a + 1 != len(alias.words):
                    yield self._match(text, alias, words[a][1], words[b][2], "spelled"), alias
                pos = compact.find(form, pos + 1)

    @staticmethod
    def _match(text: str, alias: Alias, start: int, end: int, kind: str) -> Match:
        possessive = re.match(r"['’]s\b|['’](?!\w)", text[end : end + 3])
        if possessive:
            end += possessive.end()
        return Match(alias.identity, start, end, text[start:end], kind)

    def _check_fitted(self) -> None:
        if not hasattr(self, "aliases_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this TermDetector is not fitted yet; call fit(names) first")

    # ------------------------------------------------------------ persistence

    def to_config(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "typos": self.typos,
            "partial_names": self.partial_names,
            "spelled_out": self.spelled_out,
            "aliases": [
                {"identity": a.identity, "words": list(a.words), "full": a.full, "fuzzy": a.fuzzy}
                for a in self.aliases_
            ],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TermDetector:
        detector = cls(
            typos=config["typos"], partial_names=config["partial_names"], spelled_out=config["spelled_out"]
        )
        detector.aliases_ = [
            Alias(a["identity"], tuple(a["words"]), bool(a["full"]), bool(a["fuzzy"]))
            for a in config["aliases"]
        ]
        detector._index()
        return detector

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return write_meta(folder, self, self.to_config()).parent

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TermDetector:
        return cls.from_config(read_meta(folder, cls))


def token_mask(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Bool per token: does the token's ``(start, end)`` character offset overlap any span? ``offsets`` must come
    from the very tokenization the model receives (e.g. ``return_offsets_mapping=True``)."""
    mask = np.zeros(len(offsets), dtype=bool)
    for k, (a, b) in enumerate(offsets):
        mask[k] = b > a and any(a < e and s < b for s, e in spans)
    return mask
