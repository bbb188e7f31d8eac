"""The server's request checks and answer conversions, without an engine."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from eco_guard.server.protocol import (
    ApiError,
    StreamRestorer,
    completion_body,
    convert_stream,
    parse_chat,
    parse_completion,
    restorer,
    to_chat,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Where does Petra Draper live?"}]}


def data_uri(colour=(200, 10, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_chat_becomes_one_request_with_its_sampling():
    body = {
        **CHAT,
        "messages": [{"role": "developer", "content": "Be brief."}, *CHAT["messages"]],
        "max_completion_tokens": 7,
        "temperature": 0,
        "stream": True,
        "seed": 3,
    }
    parsed = parse_chat(body, multimodal=False, max_chars=1000)
    (request,) = parsed.requests
    assert request.classifier_text == "Be brief.\nWhere does Petra Draper live?"
    assert parsed.stream and parsed.sampling == {"max_tokens": 7, "temperature": 0, "seed": 3}
    assert completion_body(parsed, "m", ["AAA"]) == {
        "model": "m",
        "prompt_embeds": ["AAA"],
        "max_tokens": 7,
        "temperature": 0,
        "seed": 3,
        "stream": True,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**CHAT, "prompt_embeds": "AAAA"}, "does not accept 'prompt_embeds'"),
        ({**CHAT, "chat_template": "{{ x }}"}, "does not accept 'chat_template'"),
        (
            {
                **CHAT,
                "messages": [{"role": "user", "content": [{"type": "prompt_embeds", "prompt_embeds": "A"}]}],
            },
            "part type 'prompt_embeds' is not accepted",
        ),
        ({**CHAT, "messages": []}, "'messages' must be a non-empty list"),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
        ({**CHAT, "stream": "yes"}, "'stream' must be true or false"),
        ({**CHAT, "messages": [{"role": "user", "content": "x" * 50}]}, "at most 40"),
        (
            {
                **CHAT,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri()}}]}
                ],
            },
            "this model is text-only",
        ),
        ([1, 2], "must be a JSON object"),
        ({**CHAT, "temperature": "hot"}, "invalid request: temperature: Input should be a valid number"),
        ({**CHAT, "stop": 5}, "invalid request: stop"),
        ({**CHAT, "max_tokens": -1}, "'max_tokens' must lie in"),
        ({**CHAT, "n": 0}, "'n' must lie in"),
    ],
)
def test_chat_refusals_name_the_problem(body, message):
    with pytest.raises(ApiError, match=message) as caught:
        parse_chat(body, multimodal=False, max_chars=40)
    assert caught.value.status == 400 and caught.value.body()["error"]["message"]


def test_images_only_from_data_or_file_urls(tmp_path):
    def image_chat(url):
        part = {"type": "image_url", "image_url": {"url": url}}
        return {
            **CHAT,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Who is it?"}, part]}],
        }

    parsed = parse_chat(image_chat(data_uri()), multimodal=True, max_chars=1000)
    assert parsed.has_image and parsed.requests[0].image.getpixel((0, 0)) == (200, 10, 10)
    path = tmp_path / "face.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    assert parse_chat(image_chat(path.as_uri()), multimodal=True, max_chars=1000).requests[0].image.getpixel(
        (0, 0)
    ) == (1, 2, 3)
    for url, message in [
        ("http://example.com/a.png", "data: URIs or file: URLs, not http"),
        ((tmp_path / "none.png").as_uri(), "no image file at"),
        ("data:image/png;base64,@@@", "cannot be read"),
    ]:
        with pytest.raises(ApiError, match=message):
            parse_chat(image_chat(url), multimodal=True, max_chars=1000)
    two = image_chat(data_uri())
    two["messages"][0]["content"].append({"type": "image_url", "image_url": data_uri()})
    with pytest.raises(ApiError, match="at most one image per request, got 2"):
        parse_chat(two, multimodal=True, max_chars=1000)


def test_completions_take_text_prompts_only():
    assert [r.text for r in parse_completion({"model": "m", "prompt": ["a", "b"]}, max_chars=9).requests] == [
        "a",
        "b",
    ]
    for prompt in ([1, 2, 3], [[1, 2]], "", None):
        with pytest.raises(ApiError, match="'prompt' must be a string|empty prompt"):
            parse_completion({"model": "m", "prompt": prompt}, max_chars=9)
    with pytest.raises(ApiError, match="does not accept 'prompt_embeds'"):
        parse_completion({"model": "m", "prompt": "a", "prompt_embeds": "AAAA"}, max_chars=9)


def test_a_surrogate_split_across_stream_pieces_is_written_back_whole():
    restorer_ = StreamRestorer([("Briony", "Petra"), ("Thaddeus", "Draper")])
    pieces = ["Bri", "ony Thad", "deus lives", " in Lyon.", ""]
    out = [restorer_.feed(p, final=k == len(pieces) - 1) for k, p in enumerate(pieces)]
    assert "".join(out) == "Petra Draper lives in Lyon." and out[0] == ""


def test_engine_answers_become_chat_answers_with_names_back():
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": 0, "text": "Briony lives in Lyon.", "finish_reason": "stop"},
            {"index": 1, "text": "Briony who?", "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    chat = to_chat(completion, restorer([[("Briony", "Petra")]], n=2))
    assert (
        chat["object"] == "chat.completion"
        and chat["id"] == "chatcmpl-1"
        and chat["usage"]["total_tokens"] == 7
    )
    assert [c["message"]["content"] for c in chat["choices"]] == ["Petra lives in Lyon.", "Petra who?"]

    async def lines():
        for text, finish in (("Bri", None), ("ony is", None), (" here.", "stop")):
            event = {
                "id": "cmpl-2",
                "model": "m",
                "created": 1,
                "choices": [{"index": 0, "text": text, "finish_reason": finish}],
            }
            yield "data: " + json.dumps(event)
            yield ""
        yield "data: [DONE]"

    async def collect():
        return [e async for e in convert_stream(lines(), restorer([[("Briony", "Petra")]], 1), chat=True)]

    events = asyncio.run(collect())
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Petra is here."
    assert (
        chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[0]["object"] == "chat.completion.chunk"
    )


def test_engines_before_the_prompt_embeds_fix_are_refused():
    from eco_guard.server.engine import EngineError, check_engine_options, check_vllm

    assert check_vllm("0.32.0+cpu") == "0.32.0+cpu" and check_vllm("0.11.1")
    with pytest.raises(EngineError, match="CVE-2025-62164"):
        check_vllm("0.11.0")
    assert check_engine_options(["--tensor-parallel-size", "2", "--enforce-eager"]) == [
        "--tensor-parallel-size",
        "2",
        "--enforce-eager",
    ]
    with pytest.raises(ValueError, match="--port is set by eco-guard serve"):
        check_engine_options(["--port=9000"])
