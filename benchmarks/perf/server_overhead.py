"""The guarded server against the plain vLLM OpenAI server it stands in front of: the same engine, one run.

``eco-guard serve`` runs SmolLM2 with a guard folder trained on synthetic profiles (substitute on the names). 32
concurrent clients stream chat requests of about 64 prompt tokens that decode exactly 32 new tokens (``ignore_eos``):
straight to the engine (plain), through the guard with 0% flagged, and with 10% flagged (questions naming a forget
person); rounds interleaved, order rotated, medians kept. Also: time to first token p50 on each side, the guard's own
cost per request (classifier + embeddings, in-process, p50), and greedy answers of 50 prompts against
:class:`~eco_guard.vllm_backend.GuardedLLM` with the same guard folder.

Goals: throughput ratio >= 0.95 at 0% flagged, >= 0.90 at 10%; guard cost p50 <= 15 ms; >= 95% identical answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CLIENTS = 32
REQUESTS = 64
NEW_TOKENS = 32
REPEATS = 5
GOALS = {"0%": 0.95, "10%": 0.90}
GUARD_P50_MS = 15.0
ENGINE = ["--enforce-eager", "--max-model-len", "1024", "--dtype", "float32", "--seed", "0"]
FILLER = (
    "I am writing a short report for a class and would like a clear, friendly answer that a student can follow, "
    "with one concrete example."
)
TOPICS = [
    "the water cycle",
    "photosynthesis",
    "the printing press",
    "volcanoes",
    "the Roman Empire",
    "tides",
    "electric motors",
    "the immune system",
]


def build_guard(root: Path) -> tuple[Path, list[str]]:
    """A guard folder (classifier on 20 synthetic text-only profiles, substitute on the names) and its forget
    people's names."""
    from benchmarks.mllmu import load_config, write_synthetic
    from eco_guard.cli import main as cli
    from eco_guard.config import GuardConfig

    data = write_synthetic(root / "data", n_profiles=20, n_celebrities=2, with_images=False)
    guard = root / "guard"
    args = [
        "train-classifier",
        "--data",
        str(data),
        "--forget",
        "forget_10",
        "--out",
        str(guard),
        "--no-image",
    ]
    if cli([*args, "--robustness-per-family", "8"]) != 0:
        raise RuntimeError("train-classifier failed")
    GuardConfig(corruption="substitute", strength=1.0, scope=("spans",)).save_pretrained(guard)
    return guard, [r["biography"]["Name"] for r in load_config(data, "forget_10")]


def start_server(guard: Path, root: Path) -> tuple[subprocess.Popen, str, str]:
    import httpx

    from eco_guard.server.engine import free_port

    port, engine_port = free_port(), free_port()
    command = [
        str(Path(sys.executable).parent / "eco-guard"),
        "serve",
        "--model",
        "smollm2",
        "--guard",
        str(guard),
        "--port",
        str(port),
        "--engine-port",
        str(engine_port),
        *ENGINE,
    ]
    log = open(root / "serve.log", "wb")  # noqa: SIM115 (the server writes it until it stops)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        if process.poll() is not None:
            raise RuntimeError((root / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url, f"http://127.0.0.1:{engine_port}"
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the server did not start")


def prompts(people: list[str], flagged_share: float) -> list[str]:
    every = round(1 / flagged_share) if flagged_share else 0
    out = []
    for k in range(REQUESTS):
        if every and k % every == 0:
            subject = f"the life and work of {people[k % len(people)]}"
        else:
            subject = TOPICS[k % len(TOPICS)]
        out.append(f"Please explain {subject} in plain words. {FILLER} Request number {k}.")
    return out


async def round_(url: str, texts: list[str]) -> tuple[float, list[float]]:
    """Wall time of all requests at CLIENTS concurrency, and each request's time to first token."""
    import httpx

    gate = asyncio.Semaphore(CLIENTS)
    firsts: list[float] = []

    async def one(client: httpx.AsyncClient, text: str) -> None:
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": NEW_TOKENS,
            "min_tokens": NEW_TOKENS,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
        }
        async with gate:
            start = time.perf_counter()
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(await response.aread())
                first = None
                async for line in response.aiter_lines():
                    if first is None and line.startswith("data: {") and '"content"' in line:
                        first = time.perf_counter() - start
            firsts.append(first if first is not None else float("nan"))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=CLIENTS)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, t) for t in texts))
        return time.perf_counter() - start, firsts


def guard_cost(guard_dir: Path, texts: list[str]) -> dict[str, float]:
    """p50 of decide + embed per request, in-process, for unflagged and flagged chat requests, on one torch thread
    as ``eco-guard serve`` runs them (its ``--guard-threads`` default)."""
    import torch

    from eco_guard.prompt_embeds import prepare_request
    from eco_guard.vllm_backend import guard_on_front_end

    torch.set_num_threads(1)
    guard, _ = guard_on_front_end("smollm2", guard_dir)
    costs: dict[str, list[float]] = {"unflagged": [], "flagged": []}
    for text in texts * 2:
        start = time.perf_counter()
        request = guard.requests([[{"role": "user", "content": text}]])[0]
        flag = guard.decide([request])[0]
        if flag.flagged:
            prepare_request(guard, request, flag, None, 1024)
        costs["flagged" if flag.flagged else "unflagged"].append(1e3 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in costs.items() if v}


def same_as_guarded_llm(url: str, guard_dir: Path, people: list[str]) -> tuple[int, int, int, int]:
    """(identical unflagged, unflagged, identical flagged, flagged) greedy answers, server vs GuardedLLM."""
    from openai import OpenAI

    from eco_guard.vllm_backend import GuardedLLM

    questions = json.loads((Path(__file__).parents[2] / "tests" / "vllm" / "questions.json").read_text())[:25]
    named = [f"{t} {p}?" for p in people for t in ("Who is", "Where does one meet", "What is known about")]
    asks = questions + (named * 25)[:25]
    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    served = [
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": q}], temperature=0.0, max_tokens=NEW_TOKENS
        )
        .choices[0]
        .message.content
        for q in asks
    ]
    runner = GuardedLLM.from_pretrained(
        "smollm2", guard_dir=guard_dir, max_model_len=1024, dtype="float32", enforce_eager=True, seed=0
    )
    try:
        flags = [f.flagged for f in runner.decide(runner.guard.requests(asks))]
        offline = runner.generate(asks, max_new_tokens=NEW_TOKENS)
    finally:
        runner.shutdown()
    same = [a == b for a, b in zip(served, offline, strict=True)]
    plain = [s for s, f in zip(same, flags, strict=True) if not f]
    guarded = [s for s, f in zip(same, flags, strict=True) if f]
    return sum(plain), len(plain), sum(guarded), len(guarded)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        guard, people = build_guard(root)
        start = time.perf_counter()
        process, url, engine = start_server(guard, root)
        print(f"server + engine start: {time.perf_counter() - start:.0f} s", flush=True)
        try:
            modes = {
                "plain": (engine, prompts(people, 0.0)),
                "0%": (url, prompts(people, 0.0)),
                "10%": (url, prompts(people, 0.1)),
            }
            for target, texts in modes.values():  # warm-up
                asyncio.run(round_(target, texts[:CLIENTS]))
            walls: dict[str, list[float]] = {m: [] for m in modes}
            firsts: dict[str, list[float]] = {m: [] for m in modes}
            order = list(modes)
            for r in range(REPEATS):
                for mode in order[r % len(order) :] + order[: r % len(order)]:
                    wall, ttft = asyncio.run(round_(*modes[mode]))
                    walls[mode].append(wall)
                    firsts[mode] += ttft
            base = statistics.median(walls["plain"])
            print(
                f"{REQUESTS} chat requests x {NEW_TOKENS} new tokens, {CLIENTS} concurrent clients, median of "
                f"{REPEATS} interleaved rounds"
            )
            for mode in modes:
                wall = statistics.median(walls[mode])
                ratio, goal = base / wall, GOALS.get(mode)
                verdict = (
                    ""
                    if goal is None
                    else f", throughput ratio {ratio:.3f} (goal >= {goal:.2f}: "
                    + ("met)" if ratio >= goal else "MISSED)")
                )
                label = "plain vLLM server" if mode == "plain" else f"guarded, {mode} flagged"
                rounds = ", ".join(f"{w:.2f}" for w in walls[mode])
                print(
                    f"{label}: {wall:.2f} s (rounds {rounds}), time to first token p50 "
                    f"{1e3 * statistics.median(firsts[mode]):.0f} ms{verdict}"
                )
            cost = guard_cost(guard, prompts(people, 0.1)[:40])
            for kind, ms in cost.items():
                verdict = "met" if ms <= GUARD_P50_MS else "MISSED"
                print(
                    f"guard cost per request ({kind}): p50 {ms:.1f} ms (goal <= {GUARD_P50_MS:.0f}: {verdict})"
                )
            plain_same, plain_n, flagged_same, flagged_n = same_as_guarded_llm(url, guard, people)
            print(
                f"greedy answers identical to GuardedLLM: {plain_same}/{plain_n} unflagged, "
                f"{flagged_same}/{flagged_n} flagged (goal >= 95%)"
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)


if __name__ == "__main__":
    main()
