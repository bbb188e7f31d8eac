"""Surrogate names (the ``substitute`` corruption): same token layout, deterministic, written back exactly, and on the
real SmolLM2 a flagged person is forgotten while the answer keeps their name."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks.mllmu import vocab
from benchmarks.mllmu.celebrities import CELEBRITY_NAME_PARTS
from eco_guard.config import GuardConfig
from eco_guard.guard import EcoGuard
from eco_guard.requests import Flag
from eco_guard.surrogates import GIVEN_NAMES, SURNAMES, SURROGATE_WORDS, Surrogates, restore

TEXT = "USER: Where does Pieter Underwood live? Is Anton Donovan-Petrov's home near Pieter's?"
NAMES = ("Pieter Underwood", "Anton Donovan-Petrov", "Pieter")


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


def name_mask(tokenizer, text: str, names) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(text, return_offsets_mapping=True)
    spans = [(m.start(), m.end()) for n in names for m in re.finditer(re.escape(n), text)]
    mask = torch.tensor([any(a < e and s < b for s, e in spans) for a, b in enc["offset_mapping"]])
    return torch.tensor(enc["input_ids"]), mask


def test_every_name_word_gets_a_surrogate_of_the_same_length(tokenizer):
    surrogates = Surrogates(tokenizer)
    ids, mask = name_mask(tokenizer, TEXT, NAMES)
    new = surrogates.ids(ids, mask)
    assert new.shape == ids.shape and torch.equal(new[~mask], ids[~mask])
    for k in mask.nonzero(as_tuple=True)[0].tolist():
        if surrogates.kind(int(ids[k])) is None:  # "-" and "'s" stay as they are
            assert new[k] == ids[k]
        else:
            assert surrogates.kind(int(new[k])) == surrogates.kind(int(ids[k]))
    text = tokenizer.decode(new, skip_special_tokens=True)
    for word in ("Pieter", "Underwood", "Anton", "Donovan", "Petrov"):
        assert word not in text
    assert "-" in text and "'s home" in text and text.startswith("USER: Where does ")
    # the same word maps to the same surrogate wherever it stands; renames write every one back
    renames = dict(surrogates.renames(ids, mask))
    assert len(renames) == 5 and sorted(renames.values()) == sorted(
        ["Pieter", "Underwood", "Anton", "Donovan", "Petrov"]
    )
    assert restore(text, list(renames.items())) == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_surrogate_is_never_a_word_the_request_has(tokenizer):
    """Writing names back must not rewrite the user's own words: a surrogate that the request already contains (or
    that another name of it got) is passed over for the next one."""
    surrogates = Surrogates(tokenizer)
    ids, mask = name_mask(tokenizer, "Where does Anton Donovan live?", ["Anton Donovan"])
    usual = dict(surrogates.renames(ids, mask))
    taken = next(s for s, original in usual.items() if original == "Anton")
    text = f"Did {taken} meet Anton Donovan? {taken} says so."
    ids, mask = name_mask(tokenizer, text, ["Anton Donovan"])
    renames = surrogates.renames(ids, mask)
    assert taken not in dict(renames) and len({s for s, _ in renames}) == 2
    written = tokenizer.decode(surrogates.ids(ids, mask), skip_special_tokens=True)
    assert restore(written, renames) == text


def test_a_whole_name_reads_as_the_guard_reads_it_in_a_request(tokenizer):
    """``name`` is what a flagged request's name becomes: the demo asks its never-trained twins about this person."""
    surrogates = Surrogates(tokenizer, seed=3)
    ids, mask = name_mask(tokenizer, "Where does Pieter Underwood live?", ["Pieter Underwood"])
    written = tokenizer.decode(surrogates.ids(ids, mask), skip_special_tokens=True)
    other = surrogates.name("Pieter Underwood")
    assert written == f"Where does {other} live?" and len(other.split()) == 2
    assert not {"Pieter", "Underwood"} & set(other.split())


def test_surrogates_are_deterministic_per_seed(tokenizer):
    ids, mask = name_mask(tokenizer, TEXT, NAMES)
    a, b = Surrogates(tokenizer, seed=0), Surrogates(tokenizer, seed=0)
    assert torch.equal(a.ids(ids, mask), b.ids(ids, mask))
    others = [Surrogates(tokenizer, seed=s).ids(ids, mask) for s in (1, 2, 3)]
    assert any(not torch.equal(o, a.ids(ids, mask)) for o in others)


def test_every_name_word_gets_a_given_name_when_one_of_its_length_exists(tokenizer):
    """A surname-like word where a first name stood reads as a place to a small model ("Ravensholm Rasmussen" ->
    "Ravensholme, England."), so given names come first; a surname only where no given name has the token count."""
    ids, mask = name_mask(tokenizer, TEXT, NAMES)
    contested = 0
    for seed in range(8):
        surrogates = Surrogates(tokenizer, seed=seed)
        for positions, surrogate in surrogates._surrogates(ids, mask):
            key = (surrogates.kind(int(ids[positions[0]])), len(positions))
            pool = surrogates.words.get(key, [])
            if any(w in surrogates.preferred for w in pool):
                assert surrogate in surrogates.preferred, (seed, tokenizer.decode(list(surrogate)))
                contested += any(w not in surrogates.preferred for w in pool)  # a surname was there too
    assert contested >= 8
    assert not set(GIVEN_NAMES) & set(SURNAMES)


def test_restore_replaces_whole_words_only() -> None:
    renames = [("Karlsson", "Donovan"), ("Karl", "Anton")]
    assert restore("Karl Karlsson lives in Karlsruhe; Karl's dog.", renames) == (
        "Anton Donovan lives in Karlsruhe; Anton's dog."
    )
    assert restore("nothing to do", []) == "nothing to do"


def test_surrogate_words_are_nobody_in_the_benchmark() -> None:
    """A surrogate must be someone the model never learned: no word of the synthetic profiles' or celebrities'
    names."""
    pools = {
        w.lower() for w in (*vocab.FEMALE_FIRST, *vocab.MALE_FIRST, *vocab.LAST_NAMES, *CELEBRITY_NAME_PARTS)
    }
    assert not pools & {w.lower() for w in SURROGATE_WORDS}
    assert all(w.isalpha() and w[0].isupper() for w in SURROGATE_WORDS)


def test_a_guard_reads_the_surrogate_words_of_its_config(tiny_llava):
    """A deployer names the kind of person a forgotten name reads as (the demo: the benchmark's own name pools);
    the map follows the config's words and seed, and words the tokenizer cannot build from fail at construction,
    not at a served request."""
    model, processor = tiny_llava
    words = {
        "surrogate_given_names": ("Nora", "Elias", "Ophelia", "Leopold", "Valeria", "Magnus"),
        "surrogate_surnames": ("Keller", "Montague", "Pennington", "Ishikawa"),
    }
    config = GuardConfig(corruption="substitute", strength=1.0, scope=("spans",), **words)
    guard = EcoGuard(model, processor, config=config)
    read = {guard.surrogates.name("Pieter Underwood")}
    for seed in range(1, 6):
        guard.config = config.replace(seed=seed)
        read.add(guard.surrogates.name("Pieter Underwood"))
        assert guard.surrogates.name("Pieter Underwood") == Surrogates.of(
            processor.tokenizer, guard.config
        ).name("Pieter Underwood")
    pool = set(words["surrogate_given_names"] + words["surrogate_surnames"])
    assert len(read) >= 2 and all(set(name.split()) <= pool for name in read), read
    guard.config = config.replace(surrogate_given_names=(), surrogate_surnames=())  # the built-in words again
    assert set(guard.surrogates.name("Pieter Underwood").split()) <= set(SURROGATE_WORDS)
    with pytest.raises(ValueError, match="surrogate words .* give this tokenizer no inner tokens"):
        EcoGuard(
            model,
            processor,
            config=config.replace(surrogate_given_names=("Tom",), surrogate_surnames=("Ann",)),
        )


@pytest.mark.slow
def test_a_flagged_celebrity_is_forgotten_and_keeps_their_name(smollm2):
    """Real SmolLM2 knows Albert Einstein; substituted, it answers about a stranger under his name, while the
    unflagged request in the same batch is answered exactly as by the unwrapped model."""
    model, tokenizer = smollm2
    guard = EcoGuard(
        model, tokenizer, config=GuardConfig(corruption="substitute", strength=1.0, scope=("spans",))
    )
    prompts = ["Who was Albert Einstein? Answer in one sentence.", "What is the capital of France?"]
    plain = guard.generate(prompts, max_new_tokens=24)
    assert "physic" in plain[0] and "Paris" in plain[1]
    flag = Flag(True, 1.0, "test", ("Albert Einstein",))
    guarded = guard.generate(prompts, flags=[flag, False], max_new_tokens=24)
    assert "Einstein" in guarded[0] and "physic" not in guarded[0] and "relativity" not in guarded[0]
    assert guarded[1] == plain[1]
    # at strength 1 the model reads exactly the surrogate's tokens: the same answer as the plain model given the
    # prompt with the surrogate name spelled out, written back
    request = guard.requests(prompts[:1])[0]
    batch = guard.encode([request])
    mask = guard.prompt_mask(batch.prompts[0], batch.ids[0], flag.terms)
    surrogate_ids = guard.surrogates.ids(batch.ids[0], mask)
    with torch.no_grad():
        out = model.generate(
            surrogate_ids[None],
            attention_mask=torch.ones_like(surrogate_ids[None]),
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=guard.pad_token_id,
        )
    spelled = tokenizer.decode(out[0, surrogate_ids.numel() :], skip_special_tokens=True)
    renames = guard.surrogates.renames(batch.ids[0], mask)
    assert {original for _, original in renames} == {"Albert", "Einstein"}
    assert restore(spelled, renames) == guarded[0]
    # scoring reads the same surrogate: the known continuation loses its lead
    facts = [
        "Albert Einstein is best known for his theory of",
        "Marie Curie is best known for her research on",
    ]
    options = [[" relativity", " cooking"], [" radioactivity", " cooking"]]
    names = [Flag(True, 1.0, "test", ("Albert Einstein",)), Flag(True, 1.0, "test", ("Marie Curie",))]
    known = guard.score(facts, options, chat_template=False)
    forgotten = guard.score(facts, options, flags=names, chat_template=False)
    for (k_fact, k_other), (f_fact, f_other) in zip(known, forgotten, strict=True):
        assert k_fact - k_other > 8 and f_fact < k_fact - 2 and f_fact - f_other < k_fact - k_other - 5
    # strength 0 is the plain model
    guard.config = guard.config.replace(strength=0.0)
    assert guard.generate(prompts, flags=[flag, False], max_new_tokens=24) == plain


def test_names_of_other_styles_are_written_back_whole(tokenizer):
    """Camel case, hyphens, apostrophes, particles and letters outside ASCII: every name of the request reads as
    a surrogate and comes back exactly, also where the answer runs its pieces together."""
    names = [
        "Anne-Marie MacAllister",
        "Siobhán O'Connor",
        "Łukasz Thanh",
        "María José de la Cruz",
        "DeShawn McKay",
    ]
    text = "USER: " + " and ".join(f"Where does {n} live?" for n in names)
    surrogates = Surrogates(tokenizer)
    ids, mask = name_mask(tokenizer, text, names)
    new = tokenizer.decode(surrogates.ids(ids, mask), skip_special_tokens=True)
    for word in ("MacAllister", "Siobhán", "Connor", "Łukasz", "Thanh", "José", "Cruz", "DeShawn", "McKay"):
        assert word not in new, word
    renames = surrogates.renames(ids, mask)
    assert restore(new, renames) == tokenizer.decode(ids, skip_special_tokens=True)
    camel = dict((o, s) for s, o in renames)
    assert (
        "MacAllister" in camel and "McKay" in camel
    )  # one word each, so an answer's "MacAllister" comes back
