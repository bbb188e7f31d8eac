"""Shared-prefix reuse in ``EcoGuard.generate``: the demo MLLM on the benchmark's few-shot questions, on vs off.

MLLMU-Bench prompts of one task open with the same solved examples, so a batch shares most of its tokens. The guard
runs that prefix once and reuses its KV cache (``share_prefix``, on by default). This prints, per task, the time of
both ways measured side by side (interleaved rounds, median), their ratio, and how many answers are identical, with
every request flagged as the classifier flags them (the person's name found in a text-only question, the photo
corrupted in an image one) and with none.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def main(per_task: int = 16, batch_size: int = 16, rounds: int = 2, new_tokens: int = 32) -> dict[str, float]:
    import torch

    from benchmarks import demo, demo_model
    from benchmarks.mllmu import evaluate as ev
    from eco_guard.config import GuardConfig
    from eco_guard.guard import EcoGuard
    from eco_guard.requests import Flag

    model, processor = demo_model.load_demo_model(demo_model.ASSET_DIR)
    recipe, _ = demo_model.read_recipe(demo_model.ASSET_DIR)
    config = GuardConfig(
        corruption="substitute",
        image_corruption="substitute",
        strength=0.85,
        dims=model.get_input_embeddings().embedding_dim,
        scope=("spans", "image"),
    )
    faces = demo.surrogate_faces(recipe.data, 8)
    guard = EcoGuard(model, processor, config=config, image_surrogates=faces)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe.data.write(root)
        bench = ev.load_benchmark(root, recipe.data.forget)
        sampler = ev.ShotSampler(bench, 0, 1, True)
        items = ev.build_items("retain", bench.sets["retain"], sampler, 0, ev.MODALITIES, bench.names)
        print(
            f"demo MLLM, {per_task} retain questions per task and modality, batch {batch_size}, "
            f"{new_tokens} new tokens, median of {rounds} interleaved rounds"
        )
        print(f"{'task':<26}{'flagged':>8}{'shared s':>10}{'full s':>9}{'ratio':>7}{'same':>8}")
        ratios, totals = {}, {True: 0.0, False: 0.0}
        with torch.inference_mode():
            for task in ("classification", "cloze", "generation"):
                for modality in ev.MODALITIES:
                    chosen = [it for it in items if it.task == task and it.modality == modality][:per_task]
                    requests = [it.request for it in chosen]
                    for flagged in (False, True):
                        flags = [
                            Flag(
                                flagged,
                                terms=(bench.names[it.id],) if flagged and modality == "text_only" else (),
                            )
                            for it in chosen
                        ]
                        times: dict[bool, list[float]] = {True: [], False: []}
                        answers: dict[bool, list[str]] = {}
                        for _ in range(rounds):
                            for share in (True, False):
                                guard.share_prefix = share
                                start = time.perf_counter()
                                answers[share] = guard.generate(
                                    requests,
                                    flags=flags,
                                    chat_template=False,
                                    batch_size=batch_size,
                                    max_new_tokens=new_tokens,
                                )
                                times[share].append(time.perf_counter() - start)
                        shared, full = statistics.median(times[True]), statistics.median(times[False])
                        totals[True], totals[False] = totals[True] + shared, totals[False] + full
                        same = sum(a == b for a, b in zip(answers[True], answers[False], strict=True))
                        ratios[f"{task}/{modality}/{int(flagged)}"] = full / shared
                        print(
                            f"{task + ' ' + modality:<26}{'all' if flagged else 'none':>8}{shared:>10.2f}"
                            f"{full:>9.2f}{full / shared:>7.2f}{f'{same}/{len(requests)}':>8}"
                        )
    print(
        f"all tasks: shared {totals[True]:.1f} s, full {totals[False]:.1f} s, "
        f"ratio {totals[False] / totals[True]:.2f}"
    )
    ratios["all"] = totals[False] / totals[True]
    return ratios


if __name__ == "__main__":
    main()
