"""Surrogate names: what the ``substitute`` corruption moves a forget target's name toward.

Noise on a name's tokens makes a model forget the person, but it also garbles the name, while a model that never
learned the person simply repeats it ("Anton Donovan has sinusitis."). ``substitute`` instead moves the name's token
embeddings toward those of a surrogate name, so the model reads about someone it has never heard of; the surrogate
words in its answer are then written back as the original ones (:func:`restore`).

Each word of the name is replaced by a surrogate word of the same token count, so positions, lengths and the rest of
the prompt are untouched; punctuation and digits stay. The choice depends on the word's text and the seed: the same
name gets the same surrogate in every request, turn and backend, after a space or at the start of a line alike
(a word of the same token count in both layouts is taken when there is one: a name's tokens differ in the two
layouts, and it would otherwise read as two different people; docs/demo.md), unless that surrogate is a word the
request already has (then the next one is taken, so that writing names back never rewrites a word the user wrote).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Sequence, Set

import torch

GIVEN_NAMES = (
    # most are one token in byte-level BPE vocabularies; none is also an everyday word
    "John", "Mary", "David", "James", "Sarah", "Robert", "Linda", "George", "Henry", "Carl", "Paul", "Ruth",
    "Anna", "Emma", "Ella", "Jane", "Joan", "Ian", "Tom", "Tim", "Amy", "Joe", "Beth", "Carol", "Chris", "Dan",
    "Fred", "Gary", "Jean", "Jim", "Karl", "Ken", "Lou", "Matt", "Neil", "Pete", "Phil", "Rob", "Ron", "Ross",
    "Ted", "Tony", "Troy", "Horace", "Lazarus", "Juno", "Ansel", "Barnaby", "Bertram", "Cosmo", "Cyril",
    "Eamon", "Godric", "Linus", "Lucan", "Mortimer", "Orrin", "Percival", "Silas", "Wystan", "Alaric",
    "Dashiell", "Thaddeus", "Albina", "Ariadne", "Briony", "Cressida", "Dulcie", "Eira", "Elowen", "Fenella",
    "Gwendolen", "Hester", "Isolde", "Jessamy", "Linnea", "Mabel", "Maud", "Odette", "Perdita", "Romilly",
    "Tamsin", "Winifred",
)  # fmt: skip
"""Preferred for every word of a name: a small model may read a surname-like word where a first name stood as a
place (an example with SmolLM2 in docs/demo.md)."""

SURNAMES = (
    # invented or rare surnames, for words no given name of the same token count can stand in for
    "Ashcombe", "Belisto", "Brackwell", "Corvell", "Crestwell", "Edevane", "Elsworth", "Fennimore", "Garrowby",
    "Hollace", "Karrow", "Kilbride", "Loxley", "Marrowick", "Morrowgate", "Nockley", "Ostrander", "Pellow",
    "Penhallow", "Quennell", "Quimby", "Ravensholm", "Renwycke", "Thistlewood", "Trevelyan", "Ulloway",
    "Vasquell", "Vantreece", "Wrenfield", "Ambleside", "Marchbanks", "Halloran", "Omondi", "Winterbourne",
    "Okoro",
)  # fmt: skip

SURROGATE_WORDS = GIVEN_NAMES + SURNAMES
"""The words surrogate names are made of: nobody in particular, none a word of the synthetic benchmark's name pools
(a test checks), capitalized, letters only."""

SPACE_MARKERS = ("Ġ", "▁", " ")
"""How byte-level BPE (GPT-2, Llama 3, SmolLM) and SentencePiece vocabularies mark a token that starts a word."""

_KINDS = ("spaced", "capital", "inner")
_LAYOUTS = ("spaced", "capital")
"""The two layouts of a capitalized word: after a space (one spaced token, then inner ones) and without one."""


class Surrogates:
    """A deterministic word -> surrogate-word map over token ids, for one tokenizer (see the module docstring).

    A word is a run of letter tokens that starts with a space marker or right after a token that is not letters (a
    capital inside the run stays in the word: "MacAllister"). It is replaced by a word of ``vocabulary`` with the same first-token kind and the same token
    count, chosen by a hash of its ids and the seed, from ``preferred`` words when one fits; when there is none,
    token by token by pieces of those words of the same kind."""

    def __init__(
        self,
        tokenizer,
        seed: int = 0,
        vocabulary: Sequence[str] = SURROGATE_WORDS,
        preferred: Sequence[str] = GIVEN_NAMES,
    ) -> None:
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self._kinds: dict[int, str | None] = {}
        pieces: dict[str, set[int]] = {kind: set() for kind in _KINDS}
        words: dict[tuple[str, int], set[tuple[int, ...]]] = {}
        preferred_ids: set[tuple[int, ...]] = set()
        self.forms: dict[str, dict[str, tuple[int, ...]]] = {}
        """word -> {layout: its ids}, for the words that have both layouts."""
        for word in dict.fromkeys(vocabulary):
            forms = {}
            for text in (" " + word, word):
                ids = tuple(int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"])
                kinds = [self.kind(i) for i in ids]
                if not ids or None in kinds or any(k != "inner" for k in kinds[1:]):
                    continue
                words.setdefault((kinds[0], len(ids)), set()).add(ids)
                forms[kinds[0]] = ids
                if word in preferred:
                    preferred_ids.add(ids)
                for i, kind in zip(ids, kinds, strict=True):
                    pieces[kind].add(i)
            if all(layout in forms for layout in _LAYOUTS):
                self.forms[word] = forms
        self.pieces = {kind: sorted(ids) for kind, ids in pieces.items()}
        self.words = {key: sorted(ids) for key, ids in words.items()}
        self.preferred = preferred_ids
        empty = [kind for kind, ids in self.pieces.items() if not ids]
        if empty:
            raise ValueError(
                f"the surrogate words ({len(vocabulary)}: {', '.join(list(vocabulary)[:4])}...) give this tokenizer "
                f"no {' or '.join(empty)} tokens to build surrogates from: add words of several tokens"
            )
        self._cache: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        self._texts: dict[tuple[int, ...], str] = {}

    @classmethod
    def of(cls, tokenizer, config) -> Surrogates:
        """The map a guard with ``config`` (a GuardConfig: its seed and surrogate words) reads."""
        given = tuple(config.surrogate_given_names) or GIVEN_NAMES
        surnames = tuple(config.surrogate_surnames) or SURNAMES
        return cls(tokenizer, seed=config.seed, vocabulary=given + surnames, preferred=given)

    def kind(self, token_id: int) -> str | None:
        """``spaced`` (starts a word), ``capital`` (a capitalized piece without a space marker), ``inner``, or None
        for a token with anything but letters (kept as it is), read from the token's decoded text, so that letters
        outside ASCII count ("José" is one token whose byte-level piece is "ĠJosÃ©"). Cached per id: every flagged prompt is walked whole
        to find the words a surrogate must avoid."""
        token_id = int(token_id)
        if token_id not in self._kinds:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            spaced = isinstance(piece, str) and piece.startswith(SPACE_MARKERS)
            letters = self.tokenizer.decode([token_id]).strip()
            if not letters or not all(_letter(c) for c in letters):
                self._kinds[token_id] = None
            elif spaced:
                self._kinds[token_id] = "spaced"
            else:
                self._kinds[token_id] = "capital" if letters[0].isupper() else "inner"
        return self._kinds[token_id]

    def text(self, ids: Sequence[int]) -> str:
        """A word's text, without its space marker (cached per ids)."""
        ids = tuple(int(i) for i in ids)
        if ids not in self._texts:
            self._texts[ids] = self.tokenizer.decode(list(ids)).strip()
        return self._texts[ids]

    def word(self, ids: Sequence[int], avoid: Set[str] = frozenset()) -> tuple[int, ...]:
        """The surrogate of one word's token ids: same length, never the word itself nor a word in ``avoid`` (the
        request's other words, so that writing the surrogate back cannot touch a word the request really has)."""
        order = self._order(tuple(int(i) for i in ids))
        return next((w for w in order if self.text(w) not in avoid), order[-1])

    def _layout(self, text: str) -> tuple[int, int]:
        return tuple(
            len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (" " + text, text)
        )

    def _order(self, ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The word's surrogate candidates in preference order (cached per word, not per request): given names,
        then surnames; within each, words of its token counts in both layouts first (one surrogate wherever the
        word stands), then of its count in this layout alone; last, piece by piece."""
        if ids not in self._cache:
            kind, text = self.kind(ids[0]), self.text(ids)
            draw = zlib.crc32(f"{self.seed}:{text if kind in _LAYOUTS else ids}".encode())
            both: list[str] = []
            if kind in _LAYOUTS:
                layout = self._layout(text)
                both = [
                    w for w in sorted(self.forms) if tuple(len(self.forms[w][k]) for k in _LAYOUTS) == layout
                ]
            candidates = self.words.get((kind, len(ids)), [])
            groups = [
                [self.forms[w][kind] for w in both if self.forms[w][kind] in self.preferred],
                [w for w in candidates if w in self.preferred],
                [self.forms[w][kind] for w in both if self.forms[w][kind] not in self.preferred],
                [w for w in candidates if w not in self.preferred],
            ]
            order: list[tuple[int, ...]] = []
            for group in groups:
                order += [group[(draw + k) % len(group)] for k in range(len(group))]
            pieces = []
            for k, i in enumerate(ids):  # last resort: piece by piece
                pool = [p for p in self.pieces[self.kind(i) or "inner"] if p != i] or [i]
                pieces.append(pool[zlib.crc32(f"{draw}:{k}".encode()) % len(pool)])
            order = [w for w in dict.fromkeys(order) if self.text(w) != text]
            self._cache[ids] = order + [tuple(pieces)]
        return self._cache[ids]

    def _words(self, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Positions of each masked word: a run of letter tokens that a space marker or a non-letter token starts.
        A capital right after a letter token goes on the word ("MacAllister", "DeShawn"): the answer writes it
        as one word, and only a whole surrogate word is written back."""
        words: list[list[int]] = []
        last = None
        for k in mask.nonzero(as_tuple=True)[0].tolist():
            kind = self.kind(int(ids[k]))
            if kind is None:
                last = None
                continue
            if last is None or k != last + 1 or kind == "spaced":
                words.append([])
            words[-1].append(k)
            last = k
        return words

    def _surrogates(self, ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[list[int], tuple[int, ...]]]:
        """(positions, surrogate ids) of each masked word; no surrogate is a word the request already has, and one
        word gets one surrogate in both layouts where its candidates allow."""
        every = torch.ones_like(mask, dtype=torch.bool)
        avoid = {self.text([int(ids[k]) for k in w]) for w in self._words(ids, every)}
        chosen: dict[str, str] = {}  # original text -> surrogate text
        out = []
        for positions in self._words(ids, mask):
            original = tuple(int(ids[k]) for k in positions)
            text = self.text(original)
            order = self._order(original)
            pick = next((w for w in order if self.text(w) == chosen.get(text)), None)
            if pick is None:
                pick = self.word(original, avoid)
                chosen.setdefault(text, self.text(pick))
                avoid.add(self.text(pick))  # two words of a request never share a surrogate
            out.append((positions, pick))
        return out

    def ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids`` with every masked word replaced by its surrogate (other tokens unchanged)."""
        out = ids.clone()
        for positions, surrogate in self._surrogates(ids, mask):
            out[positions] = torch.tensor(surrogate, dtype=ids.dtype)
        return out

    def name(self, text: str) -> str:
        """The surrogate of a whole name as a request reads it after a space ("Gideon Rasmussen" -> "Briony
        Thaddeus"): what a model asked about that surrogate person directly would read."""
        ids = torch.tensor(self.tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        return self.tokenizer.decode(self.ids(ids, torch.ones_like(ids, dtype=torch.bool)).tolist()).strip()

    def renames(self, ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[str, str]]:
        """(surrogate word, original word) for each masked word, longest surrogate first."""
        pairs: dict[str, str] = {}
        for positions, surrogate in self._surrogates(ids, mask):
            before = self.tokenizer.decode([int(ids[k]) for k in positions]).strip()
            after = self.tokenizer.decode(list(surrogate)).strip()
            if after and after != before:
                pairs.setdefault(after, before)
        return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def _letter(char: str) -> bool:
    """A letter, a combining mark, or a piece of a character a byte-level vocabulary splits over tokens ("Ł" is
    two tokens in GPT-2-style vocabularies, each decoding alone to U+FFFD)."""
    return char.isalpha() or unicodedata.category(char).startswith("M") or char == "\ufffd"


def restore(text: str, renames: Sequence[tuple[str, str]]) -> str:
    """Write each surrogate word of ``renames`` in ``text`` back as its original (whole words only)."""
    if not renames:
        return text
    table = dict(renames)
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(s) for s, _ in renames) + r")(?!\w)")
    return pattern.sub(lambda m: table[m.group(1)], text)
