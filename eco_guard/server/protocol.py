"""The OpenAI API as the guarded server accepts it: which fields a request may carry, how it becomes a guard Request,
how a guarded request becomes a vLLM completions request with ``prompt_embeds``, and how its answer (whole or
streamed) becomes an OpenAI answer with the forget targets' names written back.

Fields are accepted from an allow-list: a field that would reach the engine around the classifier (``prompt_embeds``,
token-id prompts, ``prompt_embeds`` content parts, custom chat templates) is refused with a 400, never forwarded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from eco_guard.requests import Request, to_request
from eco_guard.surrogates import restore

SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "stream",
    "stream_options",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "ignore_eos",
)
"""What a guarded request carries over to the engine's completions endpoint: the OpenAI sampling fields and vLLM's
sampling extras (none of them reaches the prompt)."""
CHAT_FIELDS = frozenset({"model", "messages", "max_completion_tokens", *SAMPLING_FIELDS})
COMPLETION_FIELDS = frozenset({"model", "prompt", *SAMPLING_FIELDS})
PART_TYPES = ("text", "image_url")
ROLE_ALIASES = {"developer": "system"}
IMAGE_SCHEMES = ("data", "file")


class ApiError(Exception):
    """An OpenAI-style error answer: HTTP ``status`` and ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }


@dataclass
class ParsedRequest:
    """A checked client request: the guard Requests it holds (one per prompt), its sampling fields."""

    requests: list[Request]
    sampling: dict[str, Any] = field(default_factory=dict)
    stream: bool = False

    @property
    def has_image(self) -> bool:
        return any(r.image is not None for r in self.requests)


def _check_fields(body: Any, allowed: frozenset[str], endpoint: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    refused = sorted(set(body) - allowed)
    if refused:
        raise ApiError(
            400,
            f"{endpoint} does not accept {', '.join(repr(k) for k in refused)} on this server (accepted: "
            f"{', '.join(sorted(allowed))}); prompt_embeds, token ids and templates never reach the engine",
            param=refused[0],
        )
    if not isinstance(body.get("stream", False), bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    return body


def _sampling(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The body's sampling fields, checked by vLLM's own request model (types) and here (ranges)."""
    try:
        _vllm_model(kind).model_validate(body)
    except Exception as err:  # pydantic's ValidationError, or vLLM's own validation error
        raise ApiError(400, f"invalid request: {_first_error(err)}") from None
    sampling = {k: body[k] for k in SAMPLING_FIELDS if k in body and k != "stream"}
    if "max_completion_tokens" in body:
        sampling["max_tokens"] = body["max_completion_tokens"]
    for name, low, high in RANGES:
        value = sampling.get(name)
        if value is not None and not (low <= value <= high):
            raise ApiError(400, f"'{name}' must lie in [{low}, {high}], got {value}", param=name)
    return sampling


RANGES = (
    ("max_tokens", 1, 1 << 20),
    ("n", 1, 16),
    ("temperature", 0.0, 2.0),
    ("top_p", 1e-9, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)


def _vllm_model(kind: str) -> Any:
    """vLLM's pydantic model of a chat or completions request (module paths of vLLM 0.32, then of 0.11)."""
    import importlib

    name = "ChatCompletionRequest" if kind == "chat" else "CompletionRequest"
    for module in (
        f"vllm.entrypoints.openai.{'chat_completion' if kind == 'chat' else 'completion'}.protocol",
        "vllm.entrypoints.openai.protocol",
    ):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"vLLM's {name} is not where eco-guard looks for it: install vllm >= 0.11.1")


def _first_error(err: Exception) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}"
    return str(err)[:300]


def parse_chat(body: Any, *, multimodal: bool, max_chars: int) -> ParsedRequest:
    """A ``/v1/chat/completions`` body as one guard Request (system and user turns read by the classifier, at
    most one image), or ApiError."""
    body = _check_fields(body, CHAT_FIELDS, "/v1/chat/completions")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "'messages' must be a non-empty list of {'role', 'content'} objects", param="messages"
        )
    turns, images = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
            raise ApiError(
                400,
                f"messages[{i}] must hold 'role' and 'content' (and optionally 'name')",
                param=f"messages[{i}]",
            )
        role = ROLE_ALIASES.get(message.get("role"), message.get("role"))
        turns.append({"role": role, "content": _content(message.get("content"), i, images)})
    if images and not multimodal:
        raise ApiError(400, "this model is text-only: a message holds an image", param="messages")
    if len(images) > 1:
        raise ApiError(400, f"at most one image per request, got {len(images)}", param="messages")
    _check_length(sum(len(t["content"]) for t in turns), max_chars)
    try:
        request = to_request({"messages": turns, **({"image": images[0]} if images else {})})
    except (ValueError, TypeError) as err:
        raise ApiError(400, str(err), param="messages") from None
    return ParsedRequest([request], _sampling(body, "chat"), body.get("stream", False))


def _content(content: Any, i: int, images: list[Any]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(
            400, f"messages[{i}].content must be a string or a list of parts", param=f"messages[{i}]"
        )
    texts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{k}]"
        if kind not in PART_TYPES:
            raise ApiError(
                400,
                f"{where}: part type {kind!r} is not accepted (accepted: {', '.join(PART_TYPES)})",
                param=where,
            )
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}: 'text' must be a string", param=where)
            texts.append(part["text"])
        else:
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(load_image_url(url, where))
    return "\n".join(texts)


def parse_completion(body: Any, *, max_chars: int) -> ParsedRequest:
    """A ``/v1/completions`` body: its prompt (a string, or a list of strings) as guard Requests, or ApiError."""
    body = _check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(
            400,
            "'prompt' must be a string or a list of strings (token-id prompts are not accepted: "
            "the classifier reads text)",
            param="prompt",
        )
    _check_length(max(len(p) for p in prompts), max_chars)
    try:
        requests = [to_request(p) for p in prompts]
    except (ValueError, TypeError) as err:
        raise ApiError(400, str(err), param="prompt") from None
    return ParsedRequest(requests, _sampling(body, "completion"), body.get("stream", False))


def _check_length(chars: int, max_chars: int) -> None:
    if chars > max_chars:
        raise ApiError(
            400, f"the prompt has {chars} characters; this server takes at most {max_chars}", param="messages"
        )


def load_image_url(url: Any, where: str) -> Any:
    """A ``data:image/...;base64,...`` URI or a ``file://`` URL as an RGB image; ApiError otherwise (no network
    fetch: a server must not be made to reach other hosts)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(url, str):
        raise ApiError(400, f"{where}: image_url must be a string or {{'url': string}}", param=where)
    scheme = urlparse(url).scheme
    if scheme not in IMAGE_SCHEMES:
        raise ApiError(
            400, f"{where}: image URLs must be data: URIs or file: URLs, not {scheme or 'this'}", param=where
        )
    try:
        if scheme == "data":
            header, _, payload = url.partition(",")
            if not header.endswith(";base64"):
                raise ApiError(400, f"{where}: a data URI image must be base64", param=where)
            source: Any = io.BytesIO(base64.b64decode(payload, validate=True))
        else:
            source = Path(unquote(urlparse(url).path))
            if not source.is_file():
                raise ApiError(400, f"{where}: no image file at {source}", param=where)
        with Image.open(source) as image:
            return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError) as err:
        raise ApiError(400, f"{where}: the image cannot be read ({err})", param=where) from None


# ------------------------------------------------------------------ guarded requests -> engine and back


def completion_body(parsed: ParsedRequest, model: str, embeds: Sequence[str]) -> dict[str, Any]:
    """The engine's ``/v1/completions`` body for guarded prompts (base64 ``prompt_embeds``, one per prompt)."""
    body = {"model": model, "prompt_embeds": list(embeds), **parsed.sampling}
    if parsed.stream:
        body["stream"] = True
    return body


def restorer(renames: Sequence[Sequence[tuple[str, str]]], n: int):
    """``choice index -> renames``: the engine numbers the choices of prompt p as ``p * n + j``."""
    return lambda index: renames[min(index // max(n, 1), len(renames) - 1)]


def to_chat(completion: Mapping[str, Any], renames_of) -> dict[str, Any]:
    """A vLLM completions answer as a chat completions answer, names written back."""
    choices = [
        {
            "index": c["index"],
            "message": {"role": "assistant", "content": restore(c["text"], renames_of(c["index"]))},
            "finish_reason": c.get("finish_reason"),
            "logprobs": None,
        }
        for c in completion["choices"]
    ]
    return {
        "id": "chatcmpl-" + str(completion["id"]).removeprefix("cmpl-"),
        "object": "chat.completion",
        "created": completion.get("created", int(time.time())),
        "model": completion["model"],
        "choices": choices,
        "usage": completion.get("usage"),
    }


def restore_completion(completion: dict[str, Any], renames_of) -> dict[str, Any]:
    for choice in completion["choices"]:
        choice["text"] = restore(choice["text"], renames_of(choice["index"]))
    return completion


WORD_TAIL = re.compile(r"\w+$")


class StreamRestorer:
    """Names written back in a stream: text is held back while it ends inside a word, since a surrogate name may
    arrive in pieces; a word is released, restored, once a non-word character or the end follows it."""

    def __init__(self, renames: Sequence[tuple[str, str]]) -> None:
        self.renames, self.pending = list(renames), ""

    def feed(self, text: str, final: bool = False) -> str:
        self.pending += text
        match = None if final else WORD_TAIL.search(self.pending)
        cut = match.start() if match else len(self.pending)
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return restore(ready, self.renames)


async def convert_stream(lines: AsyncIterator[str], renames_of, *, chat: bool) -> AsyncIterator[bytes]:
    """The engine's completions event stream as the client's: chat chunks (``chat``) or completion chunks, names
    written back; every event is ``data: <json>`` and the stream ends with ``data: [DONE]``."""
    restorers: dict[int, StreamRestorer] = {}
    started: set[int] = set()
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            yield _event(event)
            continue
        for choice in event.get("choices", []):
            index = choice["index"]
            restorer_ = restorers.setdefault(index, StreamRestorer(renames_of(index)))
            finished = choice.get("finish_reason") is not None
            choice["text"] = restorer_.feed(choice.get("text") or "", final=finished)
        if chat:
            for out in _chat_chunks(event, started):
                yield _event(out)
        else:
            yield _event(event)
    yield b"data: [DONE]\n\n"


def _chat_chunks(event: Mapping[str, Any], started: set[int]) -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-" + str(event["id"]).removeprefix("cmpl-"),
        "object": "chat.completion.chunk",
        "created": event.get("created", int(time.time())),
        "model": event["model"],
    }
    chunks = []
    for choice in event.get("choices", []):
        delta: dict[str, Any] = {"content": choice["text"]}
        if choice["index"] not in started:
            started.add(choice["index"])
            delta = {"role": "assistant", **delta}
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": choice["index"],
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason"),
                    }
                ],
            }
        )
    if event.get("usage") is not None and not event.get("choices"):
        chunks.append({**base, "choices": [], "usage": event["usage"]})
    return chunks


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
