"""The span detector finds forget-target names as written, and only them."""

from __future__ import annotations

import pytest
from sklearn.exceptions import NotFittedError

from classifiers.persistence import ClassifierFileError
from classifiers.terms import TermDetector, fold, token_mask, typo_distance

NAMES = {"p1": "Jane Marie Doe", "p2": "Émile Sørensen", "p3": "Kofi Okafor"}
OTHERS = ["Janet Smith", "John Doe", "Marcus Okafur"]


@pytest.fixture(scope="module")
def detector() -> TermDetector:
    return TermDetector().fit(NAMES, negatives=OTHERS + ["What is the capital of France?"])


@pytest.mark.parametrize(
    ("text", "surface"),
    [
        ("What is Jane Doe's job?", "Jane Doe's"),
        ("What is JANE MARIE DOE known for?", "JANE MARIE DOE"),
        ("where does jnae doe live", "jnae doe"),
        ("Where was Emile Sorensen born?", "Emile Sorensen"),
        ("Where was Émile Sørensen born?", "Émile Sørensen"),
        ("Tell me about the Sørensens' children.", "Sørensens'"),
        ("Tell me about Sweden and Kenya.", None),
        ("What does Okafor do?", "Okafor"),
        ("Is Kofi married?", "Kofi"),
        ("Who is K0fi 0kaf0r?", "K0fi 0kaf0r"),
        ("Who is J a n e   D o e?", "J a n e   D o e"),
        ("Who is JaneDoe?", "JaneDoe"),
        ("Emile Sorensenn's salary", "Emile Sorensenn's"),
    ],
)
def test_finds_surface_strings(detector: TermDetector, text: str, surface: str | None) -> None:
    terms = detector.terms(text)
    if surface is None:
        assert terms == ()
    else:
        assert terms == (surface,)
        assert surface in text  # exactly as written, so the guard can find it in the rendered prompt


def test_negatives_prune_colliding_aliases(detector: TermDetector) -> None:
    # "Doe" alone is another person's last name (John Doe): dropped; "Janet" must not fuzzily match "Jane".
    assert detector.terms("What does John Doe do?") == ()
    assert detector.terms("Where does Janet live?") == ()
    assert detector.terms("Marcus Okafur is a painter.") == ()  # one typo away from Okafor, but a known other
    assert detector.terms("Where does Jane live?") == ("Jane",)


def test_a_name_alone_keeps_no_typo_tolerance_next_to_a_common_word() -> None:
    """ "Sime" one typo from "time": on a held-out question no negative covered ("their free time"), a typo-tolerant
    first name fired (17% of retain image questions flagged on a 500-profile set). Near a common word a name's word
    alone matches exactly; the full name keeps its typos; words far from any common word keep theirs."""
    names = {"a": "Sime Varaby", "b": "Gutierrez Lodale"}
    detector = TermDetector().fit(names)
    assert detector.terms("What does this person enjoy in their free time?") == ()
    assert detector.terms("Some said the same.") == ()
    assert detector.terms("Where does Sime live?") == ("Sime",)
    assert detector.terms("Where does Simme Varaby live?") == ("Simme Varaby",)
    assert detector.terms("What does Gutierez do?") == ("Gutierez",)
    tolerant = TermDetector().fit(names, vocabulary=())
    assert tolerant.terms("What does this person enjoy in their free time?") == ("time",)


def test_unrelated_text_and_scores(detector: TermDetector) -> None:
    scores = detector.score(["How do I bake bread?", "Jane Marie Doe", "Jnae Doe", "Kofi"])
    assert scores[0] == 0.0
    assert scores[1] == 1.0 > scores[2] > 0
    assert 0 < scores[3] < 1.0


def test_token_mask_through_real_tokenizer_offsets(detector: TermDetector) -> None:
    from transformers import AutoTokenizer

    from eco_guard.models import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    text = "Please tell me where Émile Sørensen's family lives."
    enc = tokenizer(text, return_offsets_mapping=True)
    matches = detector.find(text)
    mask = token_mask([(m.start, m.end) for m in matches], enc["offset_mapping"])
    picked = tokenizer.decode([t for t, m in zip(enc["input_ids"], mask, strict=True) if m])
    assert picked.strip() == "Émile Sørensen's"


def test_guard_term_mask_covers_detector_terms(detector: TermDetector) -> None:
    from transformers import AutoTokenizer

    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.models import smollm2_dir

    class Stub:  # the guard only reads the config of the model to plan spans; no forward pass here
        config = type("C", (), {"vision_config": None})()

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    guard = EcoGuard(Stub(), tokenizer, config=GuardConfig(scope=("spans",)))
    request_text = "Where was jnae doe born?"
    prompt = guard.render(__import__("eco_guard.requests", fromlist=["Request"]).Request(text=request_text))
    ids = __import__("torch").tensor(tokenizer(prompt)["input_ids"])
    mask = guard.prompt_mask(prompt, ids, detector.terms(request_text))
    assert tokenizer.decode(ids[mask]).strip() == "jnae doe"


def test_fold_and_distance() -> None:
    assert fold("  Zoé  Ø'Brien-Łukasz ") == "zoe o brien lukasz"
    assert typo_distance("jane", "jnae") == 1
    assert typo_distance("jane", "jan") == 1
    assert typo_distance("jane", "joan") == 2


def test_errors_and_persistence(tmp_path, detector: TermDetector) -> None:
    with pytest.raises(NotFittedError):
        TermDetector().find("Jane Doe")
    with pytest.raises(ValueError, match="no forget-target names"):
        TermDetector().fit([])
    with pytest.raises(TypeError):
        TermDetector().fit("Jane Doe")
    detector.save_pretrained(tmp_path)
    loaded = TermDetector.from_pretrained(tmp_path)
    for text in ("Jane Doe's", "jnae doe", "Okafor", "John Doe"):
        assert loaded.terms(text) == detector.terms(text)
    meta = tmp_path / "classifier.json"
    meta.write_text(meta.read_text().replace('"jane"', '"joan"'))
    with pytest.raises(ClassifierFileError, match="modified"):
        TermDetector.from_pretrained(tmp_path)
