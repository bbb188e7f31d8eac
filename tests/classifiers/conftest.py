"""Fitted classifiers shared by this folder's tests (fitted once per session on the small fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def people():
    from clf_fixture import split

    return split(6, 40, 12, seed=0)


@pytest.fixture(scope="session")
def tower_encoder(tiny_llava):
    from classifiers.image_encoders import VisionTowerEncoder

    model, processor = tiny_llava
    return VisionTowerEncoder.from_mllm(model, processor)


@pytest.fixture(scope="session")
def fitted(people, tower_encoder):
    """(MultimodalClassifier, report) from the whole pipeline: real MiniLM, tiny LLaVA vision tower, fpr 0.1."""
    from classifiers.training import fit_classifier

    forget, retain, celebrities = people
    return fit_classifier(
        forget, retain, celebrities, fpr=0.1, image_encoder=tower_encoder, seed=0, robustness_per_family=24
    )
