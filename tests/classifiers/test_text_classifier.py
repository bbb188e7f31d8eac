"""The text classifier on the real all-MiniLM-L6-v2: windows, errors, persistence, pluggable heads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from classifiers.persistence import ClassifierFileError
from classifiers.prompts import filler
from classifiers.text import TextClassifier

pytestmark = pytest.mark.slow


def test_separates_held_out_paraphrases(fitted, people) -> None:
    text = fitted[0].text
    forget, retain, _ = people
    pos = text.score([q for p in forget for q in p.held_out_text_questions])
    neg = text.score([q for p in retain[-10:] for q in p.held_out_text_questions])
    auc = (pos[:, None] > neg[None, :]).mean()
    assert auc > 0.8, auc


def test_made_up_names_sharing_pieces_of_a_forget_name_are_not_flagged(fitted, people) -> None:
    """Held-out questions with the forget name swapped for a spliced decoy ("Netan" + "Deson" -> "Netson"): the head
    must read whole names, not sub-words (it was fitted on decoys from other questions and another seed)."""
    from classifiers.terms import fold
    from classifiers.training import Profile, decoy_questions

    text = fitted[0].text
    forget, retain, _ = people
    held_out = [Profile(p.identity, p.name, p.held_out_text_questions) for p in forget]
    decoys = decoy_questions(held_out, [p.name for p in retain], np.random.default_rng(123))
    forget_words = {fold(w) for p in forget for w in p.name.split()}
    assert len(decoys) >= 0.9 * sum(len(p.text_questions) for p in held_out)
    assert not any(set(fold(d).split()) & forget_words for d in decoys)
    real = text.score([q for p in held_out for q in p.text_questions])
    fake = text.score(decoys)
    # decoys may splice two forget names ("Netan" + "Memiwick" -> "Netawick"): the hardest negatives there are
    assert (real >= 0.5).mean() >= 0.9 and (fake < 0.5).mean() >= 0.85, (real, fake)
    assert (real[:, None] > fake[None, :]).mean() >= 0.97, "AUC, real vs decoy"


def test_long_prompt_has_no_blind_spot(fitted, people) -> None:
    text = fitted[0].text
    question = people[0][0].text_questions[0]
    rng = np.random.default_rng(0)
    padding = filler(700, rng)
    tokens = len(text.encoder_.tokenizer(padding)["input_ids"])
    assert tokens > 600
    alone, buried, only_filler = text.score([question, f"{padding}\n{question}", padding])
    # The window holding the question lifts the score well above filler alone (the question shares that window
    # with ~100 filler tokens, so it does not reach the score of the question alone).
    assert alone > 0.5 and buried > only_filler + 0.3


def test_bad_input(fitted) -> None:
    text = fitted[0].text
    with pytest.raises(ValueError, match="text 1 is empty"):
        text.score(["fine", "   "])
    with pytest.raises(TypeError, match="list"):
        text.score("a single string")
    unfitted = TextClassifier()
    with pytest.raises(NotFittedError):
        unfitted.score(["hello"])
    encoder = text.encoder_
    with pytest.raises(ValueError, match="1-D"):
        TextClassifier(encoder).fit(["a", "b"], [[0], [1]])
    with pytest.raises(ValueError, match="2 prompts but y has 3"):
        TextClassifier(encoder).fit(["a", "b"], [0, 1, 1])
    with pytest.raises(ValueError, match="both classes"):
        TextClassifier(encoder).fit(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        TextClassifier(encoder).fit(["a", "b"], [0, 2])


def test_save_load_roundtrip_and_tampering(fitted, tmp_path) -> None:
    text = fitted[0].text
    prompts = ["Where was Jane Doe born?", "What is the capital of Peru?"]
    text.save_pretrained(tmp_path)
    loaded = TextClassifier.from_pretrained(tmp_path, encoder=text.encoder_)
    np.testing.assert_allclose(loaded.score(prompts), text.score(prompts), atol=1e-6)
    weights = tmp_path / "head.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ClassifierFileError, match="sha256"):
        TextClassifier.from_pretrained(tmp_path, encoder=text.encoder_)


def test_pluggable_head_is_saved_without_pickle(fitted, people, tmp_path) -> None:
    from sklearn.linear_model import SGDClassifier

    forget, retain, _ = people
    pos = [q for p in forget for q in p.text_questions]
    neg = [q for p in retain[:20] for q in p.text_questions]
    head = SGDClassifier(loss="log_loss", random_state=0)
    model = TextClassifier(fitted[0].text.encoder_, head, fpr=0.1).fit(
        pos + neg, [1] * len(pos) + [0] * len(neg)
    )
    assert model.calibrator_ is not None and model.predict(pos).mean() > 0.5
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.joblib"))
    loaded = TextClassifier.from_pretrained(tmp_path, encoder=model.encoder_)
    assert type(loaded.head_) is SGDClassifier
    np.testing.assert_allclose(loaded.score(pos[:5]), model.score(pos[:5]), atol=1e-6)
    assert (loaded.predict(pos + neg) == model.predict(pos + neg)).all()
    meta = tmp_path / "classifier.json"
    meta.write_text(meta.read_text().replace("sklearn.linear_model", "os"))
    with pytest.raises(ClassifierFileError, match="modified"):
        TextClassifier.from_pretrained(tmp_path, encoder=model.encoder_)
    from classifiers.heads import head_from_state

    with pytest.raises(ValueError, match="refusing"):
        head_from_state({"class": "os.system", "params": {}, "attributes": {}}, {})


def test_encoder_cut_to_its_first_layers_is_saved_and_reloaded(people, tmp_path) -> None:
    """``layers=2`` keeps MiniLM's first two layers (other embeddings than the full encoder); a saved classifier
    reloads the same cut, or its probe scores would not match."""
    from classifiers.encoders import SentenceEncoder

    forget, retain, _ = people
    pos = [q for p in forget for q in p.text_questions]
    neg = [q for p in retain[:20] for q in p.text_questions]
    model = TextClassifier(fpr=None, layers=2).fit(pos + neg, [1] * len(pos) + [0] * len(neg))
    assert len(model.encoder_.model.encoder.layer) == 2 and model.encoder_.spec()["layers"] == 2
    full = SentenceEncoder("minilm")
    assert not np.allclose(model.encoder_.encode(pos[:3])[0], full.encode(pos[:3])[0], atol=1e-3)
    model.save_pretrained(tmp_path)
    loaded = TextClassifier.from_pretrained(tmp_path)
    assert len(loaded.encoder_.model.encoder.layer) == 2
    np.testing.assert_allclose(loaded.score(pos[:5]), model.score(pos[:5]), atol=1e-6)
    for bad in (0, 7, 2.5):
        with pytest.raises(ValueError, match="layers must be an integer in"):
            SentenceEncoder("minilm", layers=bad)


def test_a_prompt_scores_the_same_alone_and_in_any_batch(fitted, people) -> None:
    """A flag must not depend on the other requests batched with it (padding is masked; no per-batch statistics,
    which is why int8 dynamic quantization, whose activation scale is per batch, is not offered)."""
    text = fitted[0].text
    forget, retain, _ = people
    prompts = [q for p in forget[:2] + retain[:6] for q in p.text_questions]
    together = text.score(prompts)
    alone = np.array([text.score([p])[0] for p in prompts[:6]])
    reversed_batch = text.score(prompts[::-1])[::-1]
    # float32 agrees to ~1e-7; bfloat16 (on CPUs that have it) may round differently per padded shape; int8
    # dynamic quantization moved scores by up to 0.022
    np.testing.assert_allclose(alone, together[:6], atol=5e-3)
    np.testing.assert_allclose(reversed_batch, together, atol=5e-3)


def test_staged_encoding_equals_the_plain_encoder(fitted, people) -> None:
    """Early exit runs the same layers from where a window stopped: with every window going on, the embeddings
    are the plain encoder's, bit for bit; a window told to stop gets NaN final rows."""
    encoder = fitted[0].text.encoder_
    texts = [q for p in people[0][:2] for q in p.text_questions] + [filler(300, np.random.default_rng(1))]
    plain, owner = encoder.encode(texts)
    ((_, early, final, went_on, owner_staged),) = encoder.iter_encode_staged(
        texts, 2, lambda e, n: np.arange(len(e)) % 2 == 0
    )
    assert (owner_staged == owner).all() and len(owner) > len(texts)  # the filler spans several windows
    assert went_on.any() and not went_on.all()
    np.testing.assert_array_equal(final[went_on], plain[went_on])
    assert np.isnan(final[~went_on]).all() and not np.isnan(early).any()
    assert not np.allclose(early, plain, atol=1e-3)  # the early rows come from 2 layers, not 6
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match="exit_layer must be an integer"):
            list(encoder.iter_encode_staged(texts, bad, lambda e, n: np.ones(len(e), dtype=bool)))


def test_early_exit_keeps_the_full_encoders_decisions(fitted, people, tmp_path) -> None:
    """``early_exit=1``: prompts about a forget target never stop early; whatever goes on scores exactly what the
    full encoder scores; whatever stops scores below 0.5 under the full encoder too (same decision); and most
    unrelated prompts stop (the speed-up). The cascade reloads from disk with the same scores."""
    from classifiers.prompts import TEMPLATES, general_prompts

    half = len(TEMPLATES) // 2
    forget, retain, _ = people
    pos = [q for p in forget for q in p.text_questions]
    neg = [q for p in retain[:24] for q in p.text_questions + p.image_questions] + general_prompts(
        120, templates=slice(0, half)
    )
    labels = [1] * len(pos) + [0] * len(neg)
    encoder = fitted[0].text.encoder_
    full = TextClassifier(encoder, fpr=0.1).fit(pos + neg, labels)
    cascade = TextClassifier(encoder, fpr=0.1, early_exit=1).fit(pos + neg, labels)
    assert 0 < cascade.exit_threshold_ < 0.5
    held_pos = [q for p in forget for q in p.held_out_text_questions]
    held_neg = [q for p in retain[24:] for q in p.held_out_text_questions] + general_prompts(
        80, templates=slice(half, None)
    )
    assert cascade.goes_past_exit(held_pos).all()
    went_on = cascade.goes_past_exit(held_neg)
    assert (~went_on).mean() >= 0.3, f"only {(~went_on).mean():.0%} of unrelated prompts stopped early"
    plain, fast = full.score(held_pos + held_neg), cascade.score(held_pos + held_neg)
    on = np.concatenate([np.ones(len(held_pos), dtype=bool), went_on])
    # bfloat16 (on CPUs that have it) rounds a little differently for another batch shape: see the batch test
    np.testing.assert_allclose(fast[on], plain[on], atol=5e-3)
    assert (fast[~on] < cascade.exit_threshold_).all() and (plain[~on] < 0.5).all()
    cascade.save_pretrained(tmp_path)
    loaded = TextClassifier.from_pretrained(tmp_path, encoder=encoder)
    assert loaded.early_exit == 1 and loaded.exit_threshold_ == cascade.exit_threshold_
    np.testing.assert_allclose(loaded.score(held_pos + held_neg), fast, atol=1e-6)
    assert (loaded.predict(held_pos) == cascade.predict(held_pos)).all()
    meta = tmp_path / "classifier.json"
    meta.write_text(meta.read_text().replace('"layer": 1', '"layer": 2'))
    with pytest.raises(ClassifierFileError, match="modified"):
        TextClassifier.from_pretrained(tmp_path, encoder=encoder)
    with pytest.raises(ValueError, match="exit_margin"):
        TextClassifier(encoder, early_exit=1, exit_margin=0).fit(pos + neg, labels)


def test_questions_that_name_nobody_stay_below_the_head_boundary(fitted, people) -> None:
    """The head is fitted on named questions with the name swapped for "this person", "her", ...: a phrasing it
    never saw ("the person shown here", the synthetic Test_Set's) must not make a nameless question look like a
    forget target, while the same question naming the target still does."""
    from classifiers.training import REFERENCES, nameless_questions

    text = fitted[0].text
    forget = people[0]
    assert all("person shown here" not in r for r in REFERENCES)
    swapped = nameless_questions(forget, np.random.default_rng(0))
    assert swapped and not any(p.name in q for p in forget for q in swapped)
    assert all(q[0].isupper() for q in swapped)
    named = [q for p in forget for q in p.held_out_text_questions if p.name in q]
    unseen = [q.replace(p.name, "the person shown here") for p in forget for q in p.held_out_text_questions]
    assert (text.score(unseen) < 0.5).mean() >= 0.95
    assert (text.score(named) >= 0.5).mean() >= 0.9
