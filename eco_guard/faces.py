"""Surrogate faces: what ``image_corruption='substitute'`` moves a flagged picture's features toward.

They are the projected features of pictures of people the model never learned, the picture analogue of a
surrogate name. A flagged image moves toward the face least like it (deterministic, and never a face close to the
one it replaces). Saved checksummed in the guard folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from eco_guard import io

IMAGE_SURROGATES = "image_surrogates.safetensors"
NO_SURROGATE_FACES = (
    "image_corruption 'substitute' moves image features toward a surrogate face, and this guard has none: pass "
    "image_surrogates (pictures of people the model never learned) or set another image_corruption"
)


def check_faces(features: torch.Tensor, hidden: int) -> torch.Tensor:
    """``[faces, tokens, hidden]`` features as float32 on the CPU, or ValueError."""
    if features.dim() != 3 or features.shape[0] < 1 or features.shape[-1] != hidden:
        raise ValueError(
            f"image surrogates must be [faces, tokens, {hidden}] features, got {tuple(features.shape)}"
        )
    return features.detach().float().cpu().contiguous()


def least_similar(bank: torch.Tensor | None, feat: torch.Tensor) -> torch.Tensor:
    """The face of ``bank`` least like ``feat`` (``[1, tokens, hidden]``; mean features compared by cosine)."""
    if bank is None:
        raise ValueError(NO_SURROGATE_FACES)
    return bank[least_similar_index(bank, feat)][None].to(device=feat.device, dtype=feat.dtype)


def least_similar_index(bank: torch.Tensor, feat: torch.Tensor) -> int:
    """Which face of ``bank`` :func:`least_similar` picks for ``feat``."""
    bank = bank.to(device=feat.device, dtype=feat.dtype)
    if bank.shape[1:] != feat.shape[1:]:
        raise ValueError(
            f"image surrogates have {tuple(bank.shape[1:])} features per face, this image "
            f"{tuple(feat.shape[1:])}: they were taken with another model or processor"
        )
    similarity = torch.nn.functional.cosine_similarity(bank.mean(1), feat.mean(1), dim=-1)
    return int(similarity.argmin())


def save_faces(path: str | Path, features: torch.Tensor) -> Path:
    return io.save_arrays(path, {"features": features.detach().float().cpu().numpy()}, with_digests=True)


def load_faces(path: str | Path) -> torch.Tensor:
    """The faces' features saved by :func:`save_faces`, checked against their recorded sha256."""
    arrays = io.load_arrays(path, with_digests=True)
    if "features" not in arrays:
        raise io.GuardFileError(f"{path} holds no 'features': not an image-surrogates file")
    return torch.from_numpy(arrays["features"].copy())


def saved_faces(directory: str | Path) -> torch.Tensor | None:
    """The surrogate faces a guard folder holds (None when it holds none)."""
    path = Path(directory) / IMAGE_SURROGATES
    return load_faces(path) if path.is_file() else None
