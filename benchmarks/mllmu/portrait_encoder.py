"""Train the identity encoder for the synthetic benchmark's portraits: ``python -m benchmarks.mllmu.portrait_encoder``.

It plays the part a face-recognition model plays for real photos: a :class:`classifiers.pixels.PixelEncoder` taught
to tell thousands of people apart across the Test_Set's kinds of transforms. Its people are drawn from an index
range and a seed no benchmark folder uses (the generator numbers its profiles and celebrities from 0), so no person
it learned is ever scored. The result (~1 MB) ships in ``classifiers/assets/portrait_encoder`` with the command and
the loss log that made it; ``eco-guard train-classifier --image-encoder portrait`` reads it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

from classifiers.image_encoders import PORTRAIT_ENCODER
from classifiers.pixels import MARGIN

ASSET = PORTRAIT_ENCODER
FIRST_INDEX = 100_000
"""Portrait index of the first person taught; synthetic benchmark folders use 0 up to their size."""


def draw_people(n: int, seed: int, size: int = 128) -> list:
    """``n`` portraits of people no benchmark folder holds."""
    from benchmarks.mllmu import portraits, vocab

    rng = random.Random(f"portrait-encoder:{seed}")
    return [
        portraits.draw_portrait(portraits.draw_traits(FIRST_INDEX + i, rng, rng.choice(vocab.EYES)), size)
        for i in range(n)
    ]


def build(
    out: Path,
    *,
    people: int,
    views: int,
    steps: int,
    margin: float,
    seed: int,
    command: str,
    progress: bool = True,
) -> Path:
    """Draw, train, save into ``out`` with ``recipe.json`` (the command, the settings, the loss log, the time)."""
    from classifiers.pixels import SCALE, train_pixel_encoder

    start = time.perf_counter()
    log: list[dict[str, float]] = []
    encoder = train_pixel_encoder(
        draw_people(people, seed),
        views=views,
        steps=steps,
        margin=margin,
        seed=seed,
        progress=progress,
        log=log,
    )
    encoder.save(out)
    recipe = {
        "command": command,
        "people": people,
        "views": views,
        "steps": steps,
        "margin": margin,
        "scale": SCALE,
        "threads": 1,
        "seed": seed,
        "first_index": FIRST_INDEX,
        "seconds": round(time.perf_counter() - start, 1),
        "loss": log,
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET, help=f"folder to write (default {ASSET})")
    parser.add_argument("--people", type=int, default=4000, help="identities taught")
    parser.add_argument("--views", type=int, default=10, help="transformed copies per portrait")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (batches of 128)")
    parser.add_argument(
        "--margin", type=float, default=MARGIN, help=f"the loss's cosine margin (default {MARGIN})"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    changed = [
        f" --{k} {getattr(args, k)}"
        for k in ("people", "views", "steps", "margin", "seed")
        if getattr(args, k) != parser.get_default(k)
    ]
    command = "python -m benchmarks.mllmu.portrait_encoder" + "".join(changed)
    folder = build(
        args.out,
        people=args.people,
        views=args.views,
        steps=args.steps,
        margin=args.margin,
        seed=args.seed,
        command=command,
    )
    print(f"portrait encoder: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
