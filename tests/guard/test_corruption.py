"""Corruption registry: only masked positions change, determinism, and each family does what its docstring says."""

from __future__ import annotations

import pytest
import torch

from eco_guard.corruption import (
    CORRUPTIONS,
    USES_DIMS,
    USES_STRENGTH,
    USES_TARGET,
    CorruptionParams,
    apply_corruption,
    get_corruption,
)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    embeds = torch.randn(3, 7, 16)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[2, 1:6] = True  # row 1 untouched
    return embeds, mask


def params_for(name: str, strength: float, dims: int, like: torch.Tensor) -> CorruptionParams:
    """Corruptions that read a target get one (the guard supplies a surrogate name's embeddings)."""
    target = (
        torch.randn(like.shape, generator=torch.Generator().manual_seed(3)) if USES_TARGET[name] else None
    )
    return CorruptionParams(strength=strength, dims=dims, target=target)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_only_masked_positions_change(name, batch):
    embeds, mask = batch
    before = embeds.clone()
    out = apply_corruption(name, embeds, mask, params_for(name, 5.0, 3, embeds), seed=1)
    assert torch.equal(embeds, before), "input modified in place"
    assert out.shape == embeds.shape
    assert torch.equal(out[~mask], embeds[~mask])
    assert not torch.equal(out[mask], embeds[mask]), f"{name} changed nothing"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_deterministic_given_seed(name, batch):
    embeds, mask = batch
    params = params_for(name, 2.0, 4, embeds)
    a = apply_corruption(name, embeds, mask, params, seed=7)
    b = apply_corruption(name, embeds, mask, params, seed=7)
    assert torch.equal(a, b)


def test_substitute_blends_toward_the_target(batch):
    embeds, mask = batch
    target = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(5))
    full = apply_corruption("substitute", embeds, mask, CorruptionParams(1.0, target=target), seed=0)
    half = apply_corruption("substitute", embeds, mask, CorruptionParams(0.5, target=target), seed=9)
    none = apply_corruption("substitute", embeds, mask, CorruptionParams(0.0, target=target), seed=0)
    assert torch.equal(full[mask], target[mask]) and torch.equal(full[~mask], embeds[~mask])
    torch.testing.assert_close(half[mask], (embeds[mask] + target[mask]) / 2)
    assert torch.equal(none, embeds)
    with pytest.raises(ValueError, match="needs target embeddings"):
        apply_corruption("substitute", embeds, mask, CorruptionParams(1.0), seed=0)
    with pytest.raises(ValueError, match="does not match"):
        apply_corruption("substitute", embeds, mask, CorruptionParams(1.0, target=target[:, :3]), seed=0)


def test_noise_seed_matters_and_strength_scales(batch):
    embeds, mask = batch
    a = apply_corruption("noise_first_n", embeds, mask, CorruptionParams(1.0, 2), seed=1)
    b = apply_corruption("noise_first_n", embeds, mask, CorruptionParams(1.0, 2), seed=2)
    c = apply_corruption("noise_first_n", embeds, mask, CorruptionParams(10.0, 2), seed=1)
    assert not torch.equal(a, b)
    torch.testing.assert_close(c - embeds, 10 * (a - embeds))


def test_first_n_touches_only_first_dims(batch):
    embeds, mask = batch
    out = apply_corruption("noise_first_n", embeds, mask, CorruptionParams(100.0, 3), seed=0)
    diff = (out - embeds)[mask]
    assert (diff[:, :3] != 0).all() and (diff[:, 3:] == 0).all()


def test_top_k_picks_largest_magnitudes(batch):
    embeds, mask = batch
    out = apply_corruption("zero_top_k", embeds, mask, CorruptionParams(dims=2), seed=0)
    token = embeds[0, 3]
    top = token.abs().topk(2).indices
    assert (out[0, 3, top] == 0).all()
    keep = torch.ones(16, dtype=torch.bool)
    keep[top] = False
    assert torch.equal(out[0, 3, keep], token[keep])


def test_sign_flip_and_constants(batch):
    embeds, mask = batch
    flipped = apply_corruption("flip_sign_first_n", embeds, mask, CorruptionParams(dims=16), seed=0)
    assert torch.equal(flipped[mask], -embeds[mask])
    added = apply_corruption("add_constant", embeds, mask, CorruptionParams(strength=3.0, dims=1), seed=0)
    torch.testing.assert_close(added[mask][:, 0], embeds[mask][:, 0] + 3.0)
    sub = apply_corruption("subtract_constant", embeds, mask, CorruptionParams(strength=3.0, dims=1), seed=0)
    torch.testing.assert_close(sub[mask][:, 0], embeds[mask][:, 0] - 3.0)


def test_permutations_stay_inside_span(batch):
    embeds, mask = batch
    rev = apply_corruption("reverse", embeds, mask, CorruptionParams(), seed=0)
    assert torch.equal(rev[0, 2:5], embeds[0, 2:5].flip(0))
    shuf = apply_corruption("shuffle", embeds, mask, CorruptionParams(), seed=0)
    # the same multiset of vectors inside the span
    assert torch.equal(shuf[2, 1:6].sum(0), embeds[2, 1:6].sum(0)) or torch.allclose(
        shuf[2, 1:6].sum(0), embeds[2, 1:6].sum(0)
    )
    assert sorted(shuf[2, 1:6, 0].tolist()) == sorted(embeds[2, 1:6, 0].tolist())


def test_replace_noise_has_requested_scale():
    embeds = torch.zeros(1, 4000, 8)
    mask = torch.ones(1, 4000, dtype=torch.bool)
    out = apply_corruption("replace_noise", embeds, mask, CorruptionParams(strength=3.0), seed=0)
    assert abs(out.std().item() - 3.0) < 0.1


def test_registry_metadata_and_unknown_name():
    assert set(USES_STRENGTH) == set(USES_DIMS) == set(CORRUPTIONS)
    assert len(CORRUPTIONS) >= 13
    with pytest.raises(ValueError, match="unknown corruption 'gaussian'.*noise_first_n"):
        get_corruption("gaussian")


def test_shape_errors():
    with pytest.raises(ValueError, match="expected embeds"):
        apply_corruption(
            "zero_all", torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), CorruptionParams(), 0
        )


def test_half_precision_keeps_dtype(batch):
    embeds, mask = batch
    out = apply_corruption("noise_rand_n", embeds.bfloat16(), mask, CorruptionParams(5.0, 2), seed=0)
    assert out.dtype == torch.bfloat16
