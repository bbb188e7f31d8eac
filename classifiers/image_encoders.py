"""Image encoders: anything that turns RGB pictures into one vector each, for the image identity detector.

``tower``: the guarded MLLM's own vision tower (:class:`VisionTowerEncoder`); ``portrait``: the identity encoder
trained from pixels on synthetic portraits of people no benchmark draws (:class:`~classifiers.pixels.PixelEncoder`,
shipped in ``classifiers/assets/portrait_encoder``); or any function (:class:`CallableImageEncoder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

PORTRAIT_ENCODER = Path(__file__).resolve().parent / "assets" / "portrait_encoder"
"""The shipped portrait encoder (its recipe: ``python -m benchmarks.mllmu.portrait_encoder``)."""


@runtime_checkable
class ImageEncoder(Protocol):
    """Anything that turns RGB PIL images into one vector each."""

    def encode(self, images: Sequence[Any]) -> np.ndarray: ...


LAYERS = (0, -2, -1)
"""Hidden states read by default: the patch embeddings, the penultimate layer (what LLaVA feeds its language
model) and the last. The last layer alone was trained to tell the MLLM's own few people apart and drops what marks
new ones; with the earlier layers read too, fewer transformed forget photos are missed (measured in
docs/classifier.md)."""
THUMBNAIL = 12
"""Side of the raw-pixel thumbnail appended to the tower's features (0: none). Colour and layout survive crops,
flips and JPEG better than a small tower's four patch tokens (measured in docs/classifier.md)."""


class VisionTowerEncoder:
    """A Hugging Face vision model (e.g. ``llava.model.vision_tower``) + its image processor. The patch tokens of the
    chosen hidden layers (CLS dropped, as LLaVA's ``default`` feature strategy does) are pooled: ``"mean"`` over all
    patches, or ``"grid"``: averaged into a ``grid`` x ``grid`` map and flattened (keeps where things are). With
    ``thumbnail`` > 0, the image itself shrunk to ``thumbnail`` x ``thumbnail`` RGB pixels in [0, 1] is appended."""

    def __init__(
        self,
        tower: Any,
        image_processor: Any,
        *,
        layers: Sequence[int] = LAYERS,
        pooling: str = "grid",
        grid: int = 4,
        thumbnail: int = THUMBNAIL,
        batch_size: int = 32,
    ) -> None:
        if pooling not in ("mean", "grid"):
            raise ValueError(f"pooling must be 'mean' or 'grid', got {pooling!r}")
        self.tower = tower.eval()
        self.image_processor = getattr(image_processor, "image_processor", image_processor)
        self.layers = tuple(int(x) for x in layers)
        self.pooling, self.grid = pooling, int(grid)
        if int(thumbnail) < 0:
            raise ValueError(f"thumbnail must be >= 0 (0: none), got {thumbnail!r}")
        self.thumbnail = int(thumbnail)
        self.batch_size = batch_size

    @classmethod
    def from_mllm(cls, model: Any, processor: Any, **kwargs: Any) -> VisionTowerEncoder:
        """The vision tower of a LLaVA-family model (``model.model.vision_tower`` or ``model.vision_tower``)."""
        for owner in (getattr(model, "model", None), model):
            tower = getattr(owner, "vision_tower", None)
            if tower is not None:
                return cls(tower, processor, **kwargs)
        raise ValueError(f"{type(model).__name__} has no vision_tower")

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), self.batch_size):
                chunk = [img.convert("RGB") for img in images[lo : lo + self.batch_size]]
                pixels = self.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
                dtype = next(self.tower.parameters()).dtype
                hidden = self.tower(pixel_values=pixels.to(dtype), output_hidden_states=True).hidden_states
                pooled = [self._pool(hidden[k][:, 1:].float()) for k in self.layers]
                if self.thumbnail:
                    pooled.append(self._thumbnails(chunk))
                out.append(torch.cat(pooled, dim=-1).numpy())
        return np.concatenate(out)

    def _thumbnails(self, images: Sequence[Any]) -> Any:
        import torch

        side = (self.thumbnail, self.thumbnail)
        pixels = [np.asarray(img.resize(side), dtype=np.float32).reshape(-1) / 255.0 for img in images]
        return torch.from_numpy(np.stack(pixels))

    def _pool(self, patches: Any) -> Any:
        import torch

        if self.pooling == "mean":
            return patches.mean(1)
        n, tokens, dim = patches.shape
        side = int(round(tokens**0.5))
        if side * side != tokens:
            raise ValueError(f"grid pooling needs a square patch map, got {tokens} patch tokens")
        maps = patches.transpose(1, 2).reshape(n, dim, side, side)
        return torch.nn.functional.adaptive_avg_pool2d(maps, min(self.grid, side)).flatten(1)

    def save(self, folder: Path) -> dict[str, Any]:
        """The tower's weights and the processor's config, so references stay in the space they were made in."""
        self.tower.save_pretrained(folder / "vision_tower", safe_serialization=True)
        self.image_processor.save_pretrained(folder / "image_processor")
        return {
            "kind": "vision_tower",
            "layers": list(self.layers),
            "pooling": self.pooling,
            "grid": self.grid,
            "thumbnail": self.thumbnail,
            "batch_size": self.batch_size,
        }

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> VisionTowerEncoder:
        from transformers import AutoImageProcessor, AutoModel

        tower = AutoModel.from_pretrained(folder / "vision_tower")
        processor = AutoImageProcessor.from_pretrained(folder / "image_processor")
        return cls(
            tower,
            processor,
            layers=spec["layers"],
            pooling=spec["pooling"],
            grid=spec["grid"],
            thumbnail=spec.get("thumbnail", 0),  # files from before thumbnails existed
            batch_size=spec["batch_size"],
        )


class CallableImageEncoder:
    """Wrap ``fn(list of PIL images) -> array [N, D]``; cannot be saved (pass it again to ``from_pretrained``)."""

    def __init__(self, fn: Callable[[Sequence[Any]], Any]) -> None:
        self.fn = fn

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        return np.asarray(self.fn(list(images)), dtype=np.float32)


def image_encoder(spec: str, model: str = "demo") -> ImageEncoder:
    """``tower``: the vision tower of ``model`` (alias, folder or hub id); ``portrait``: the shipped portrait
    encoder; else the folder of a pixel encoder (``PixelEncoder.save``)."""
    if spec == "tower":
        from eco_guard.models import load_model

        return VisionTowerEncoder.from_mllm(*load_model(model))
    from classifiers.pixels import PixelEncoder

    folder = PORTRAIT_ENCODER if spec == "portrait" else Path(spec)
    if not folder.is_dir():
        raise ValueError(f"image encoder {spec!r}: not tower, portrait or a pixel encoder folder")
    return PixelEncoder.load(folder)
