"""Embedding corruptions of the ECO paper, as pure functions.

Every corruption has the signature ``fn(embeds, mask, params, generator) -> embeds`` where

* ``embeds`` is a ``[B, T, D]`` float tensor of input embeddings,
* ``mask`` is a ``[B, T]`` bool tensor: only positions where it is True may change,
* ``params`` is a :class:`CorruptionParams` (``strength`` sigma, constant c or blend alpha, ``dims`` n or k, and
  for ``substitute`` the ``target`` embeddings the masked tokens move toward),
* ``generator`` is a CPU :class:`torch.Generator`; all randomness is drawn from it on the CPU in float32 and then
  moved to ``embeds``' device and dtype, so a seed gives the same corruption on every device and backend.

The input is never modified in place. Notation below: e is one masked token embedding, S the selected dimensions
(first n, n random, or the k of largest |e_d|), z ~ N(0, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class CorruptionParams:
    """Strength (sigma of the noise, the constant, or the blend), the number of dimensions (n or k) touched, and
    for corruptions that read one, the ``[B, T, D]`` target embeddings (the guard supplies a surrogate name's, or a
    surrogate face's features)."""

    strength: float = 100.0
    dims: int = 1
    target: torch.Tensor | None = field(default=None, compare=False, repr=False)


Corruption = Callable[[torch.Tensor, torch.Tensor, CorruptionParams, torch.Generator], torch.Tensor]

CORRUPTIONS: dict[str, Corruption] = {}
USES_STRENGTH: dict[str, bool] = {}
USES_DIMS: dict[str, bool] = {}
USES_TARGET: dict[str, bool] = {}


def register(
    name: str, *, strength: bool, dims: bool, target: bool = False
) -> Callable[[Corruption], Corruption]:
    """Add a corruption to the registry, recording which parameters it reads (the optimizer searches strength and
    dims; a ``target`` corruption reads what the guard supplies: a surrogate name's tokens, a surrogate face's
    features)."""

    def wrap(fn: Corruption) -> Corruption:
        if name in CORRUPTIONS:
            raise ValueError(f"corruption {name!r} is already registered")
        CORRUPTIONS[name] = fn
        USES_STRENGTH[name] = strength
        USES_DIMS[name] = dims
        USES_TARGET[name] = target
        return fn

    return wrap


def check_corruption(name: str, field: str = "corruption") -> str:
    """``name`` if it is registered, else ValueError naming ``field`` and listing the valid names."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown {field} {name!r}; valid names: {', '.join(sorted(CORRUPTIONS))}")
    return name


def get_corruption(name: str) -> Corruption:
    """Look a corruption up by name; an unknown name lists the valid ones."""
    return CORRUPTIONS[check_corruption(name)]


def apply_corruption(
    name: str, embeds: torch.Tensor, mask: torch.Tensor, params: CorruptionParams, seed: int
) -> torch.Tensor:
    """Apply corruption ``name`` with a fresh generator seeded by ``seed`` (deterministic, thread-safe)."""
    if embeds.dim() != 3 or mask.shape != embeds.shape[:2]:
        raise ValueError(
            f"expected embeds [B,T,D] and mask [B,T], got {tuple(embeds.shape)} and {tuple(mask.shape)}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    return get_corruption(name)(embeds, mask.to(device=embeds.device, dtype=torch.bool), params, generator)


# ---------------------------------------------------------------- helpers


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(
        device=like.device, dtype=like.dtype
    )


def _first_n(embeds: torch.Tensor, n: int) -> torch.Tensor:
    """[B, T, D] bool: the first n dimensions."""
    sel = torch.zeros(embeds.shape[-1], dtype=torch.bool, device=embeds.device)
    sel[: max(0, min(n, embeds.shape[-1]))] = True
    return sel.expand(embeds.shape)


def _rand_n(embeds: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """[B, T, D] bool: n dimensions drawn at random (the same for every token of the call)."""
    dim = embeds.shape[-1]
    chosen = torch.randperm(dim, generator=generator)[: max(0, min(n, dim))]
    sel = torch.zeros(dim, dtype=torch.bool)
    sel[chosen] = True
    return sel.to(embeds.device).expand(embeds.shape)


def _top_k(embeds: torch.Tensor, k: int) -> torch.Tensor:
    """[B, T, D] bool: per token, the k dimensions of largest magnitude."""
    k = max(0, min(k, embeds.shape[-1]))
    sel = torch.zeros_like(embeds, dtype=torch.bool)
    if k:
        sel.scatter_(-1, embeds.abs().topk(k, dim=-1).indices, True)
    return sel


def _where(mask: torch.Tensor, dims: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.unsqueeze(-1) & dims, new, old)


# ---------------------------------------------------------------- additive Gaussian noise: e_S <- e_S + sigma * z_S


@register("noise_first_n", strength=True, dims=True)
def noise_first_n(embeds, mask, params, generator):
    """e_d <- e_d + sigma * z_d for d in the first n dimensions (ECO's default: n=1, sigma ~ 100)."""
    noise = params.strength * _randn(tuple(embeds.shape), generator, embeds)
    return _where(mask, _first_n(embeds, params.dims), embeds + noise, embeds)


@register("noise_rand_n", strength=True, dims=True)
def noise_rand_n(embeds, mask, params, generator):
    """e_d <- e_d + sigma * z_d for n dimensions drawn uniformly without replacement."""
    dims = _rand_n(embeds, params.dims, generator)
    noise = params.strength * _randn(tuple(embeds.shape), generator, embeds)
    return _where(mask, dims, embeds + noise, embeds)


@register("noise_top_k", strength=True, dims=True)
def noise_top_k(embeds, mask, params, generator):
    """e_d <- e_d + sigma * z_d for the k dimensions of largest |e_d| of each token."""
    noise = params.strength * _randn(tuple(embeds.shape), generator, embeds)
    return _where(mask, _top_k(embeds, params.dims), embeds + noise, embeds)


# ---------------------------------------------------------------- zero-out: e_S <- 0


@register("zero_first_n", strength=False, dims=True)
def zero_first_n(embeds, mask, params, generator):
    """e_d <- 0 for d in the first n dimensions."""
    return _where(mask, _first_n(embeds, params.dims), torch.zeros_like(embeds), embeds)


@register("zero_top_k", strength=False, dims=True)
def zero_top_k(embeds, mask, params, generator):
    """e_d <- 0 for the k dimensions of largest |e_d|."""
    return _where(mask, _top_k(embeds, params.dims), torch.zeros_like(embeds), embeds)


@register("zero_all", strength=False, dims=False)
def zero_all(embeds, mask, params, generator):
    """e <- 0 (the whole embedding of every masked token)."""
    return torch.where(mask.unsqueeze(-1), torch.zeros_like(embeds), embeds)


# ---------------------------------------------------------------- sign flip: e_S <- -e_S


@register("flip_sign_first_n", strength=False, dims=True)
def flip_sign_first_n(embeds, mask, params, generator):
    """e_d <- -e_d for d in the first n dimensions."""
    return _where(mask, _first_n(embeds, params.dims), -embeds, embeds)


@register("flip_sign_top_k", strength=False, dims=True)
def flip_sign_top_k(embeds, mask, params, generator):
    """e_d <- -e_d for the k dimensions of largest |e_d|."""
    return _where(mask, _top_k(embeds, params.dims), -embeds, embeds)


# ---------------------------------------------------------------- constant shift: e_S <- e_S +/- c


@register("add_constant", strength=True, dims=True)
def add_constant(embeds, mask, params, generator):
    """e_d <- e_d + c for d in the first n dimensions (c = strength)."""
    return _where(mask, _first_n(embeds, params.dims), embeds + params.strength, embeds)


@register("subtract_constant", strength=True, dims=True)
def subtract_constant(embeds, mask, params, generator):
    """e_d <- e_d - c for d in the first n dimensions (c = strength)."""
    return _where(mask, _first_n(embeds, params.dims), embeds - params.strength, embeds)


# ---------------------------------------------------------------- replacement by noise: e <- sigma * z


@register("replace_noise", strength=True, dims=False)
def replace_noise(embeds, mask, params, generator):
    """e <- sigma * z: the masked tokens' embeddings are replaced by pure Gaussian noise."""
    noise = params.strength * _randn(tuple(embeds.shape), generator, embeds)
    return torch.where(mask.unsqueeze(-1), noise, embeds)


# ---------------------------------------------------------------- position permutations inside the masked span


def _permute_masked(
    embeds: torch.Tensor, mask: torch.Tensor, order: Callable[[int], torch.Tensor]
) -> torch.Tensor:
    out = embeds.clone()
    for row in range(embeds.shape[0]):
        pos = mask[row].nonzero(as_tuple=True)[0]
        if pos.numel() > 1:
            out[row, pos] = embeds[row, pos[order(pos.numel()).to(pos.device)]]
    return out


@register("shuffle", strength=False, dims=False)
def shuffle(embeds, mask, params, generator):
    """The masked tokens' embeddings trade places by a random permutation (per row, drawn from the generator)."""
    return _permute_masked(embeds, mask, lambda n: torch.randperm(n, generator=generator))


@register("reverse", strength=False, dims=False)
def reverse(embeds, mask, params, generator):
    """The masked tokens' embeddings are written in reverse order (per row)."""
    return _permute_masked(embeds, mask, lambda n: torch.arange(n - 1, -1, -1))


# ---------------------------------------------------------------- substitution: e <- e + alpha * (s - e)


@register("substitute", strength=True, dims=False, target=True)
def substitute(embeds, mask, params, generator):
    """e <- e + alpha * (s - e), alpha = strength, s = ``params.target`` at the same position: at alpha = 1 the
    masked tokens read as the target's tokens (the guard's surrogate name, :mod:`eco_guard.surrogates`), between 0
    and 1 a blend of both."""
    target = params.target
    if target is None:
        raise ValueError(
            "corruption 'substitute' needs target embeddings (the guard supplies a surrogate name's or face's)"
        )
    if tuple(target.shape) != tuple(embeds.shape):
        raise ValueError(
            f"substitute: target {tuple(target.shape)} does not match embeds {tuple(embeds.shape)}"
        )
    target = target.to(device=embeds.device, dtype=embeds.dtype)
    # lerp is exact at both ends: alpha = 1 gives the target's embeddings bit for bit
    return torch.where(mask.unsqueeze(-1), torch.lerp(embeds, target, float(params.strength)), embeds)
