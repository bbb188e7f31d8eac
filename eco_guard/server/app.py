"""The guarded OpenAI-compatible HTTP server (FastAPI): classify each request, relay the unflagged ones to the vLLM
engine untouched, send the flagged ones (and image requests) as corrupted ``prompt_embeds``, answer in the OpenAI
format with names written back.

Per request: the API key (constant-time comparison), the body size (413), the fields (:mod:`.protocol`: 400 for any
that would bypass the classifier), then the classifier on the guard's worker thread (the event loop keeps serving), the flag
decision logged (request id, flagged, score, latency; the prompt only with ``log_prompts``). One request's error is
its own answer; the engine and the other requests never see it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.background import BackgroundTask

from eco_guard.core import GuardCore
from eco_guard.prompt_embeds import prepare_request
from eco_guard.requests import RequestError
from eco_guard.server import protocol
from eco_guard.server.protocol import ApiError, ParsedRequest

logger = logging.getLogger(__name__)

RELAYED_HEADERS = ("content-type",)
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


@dataclass
class ServerSettings:
    """What the HTTP face enforces; the engine's own options live with :class:`~.engine.EngineProcess`."""

    served_name: str
    api_key: str | None = None
    max_body_bytes: int = 8 << 20
    max_prompt_chars: int = 100_000
    log_prompts: bool = False
    request_timeout: float = 600.0


class Metrics:
    """Prometheus counters of this server (its own registry: two servers in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eco_guard_requests", "requests received", ["endpoint"], registry=self.registry
        )
        self.flagged = Counter(
            "eco_guard_flagged", "requests the guard flagged", ["endpoint"], registry=self.registry
        )
        self.errors = Counter(
            "eco_guard_errors", "error answers", ["endpoint", "status"], registry=self.registry
        )
        self.classifier = Histogram(
            "eco_guard_classifier_seconds",
            "classifier latency per request",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        for endpoint in ENDPOINTS:  # every series exists from the start, at 0
            self.requests.labels(endpoint)
            self.flagged.labels(endpoint)


def create_app(guard: GuardCore, engine_url: str, settings: ServerSettings, max_model_len: int) -> FastAPI:
    """The server's app over a running engine at ``engine_url`` (see :class:`~.engine.EngineProcess`)."""
    metrics = Metrics()
    client = httpx.AsyncClient(base_url=engine_url, timeout=settings.request_timeout)
    # The guard's work (classifier, tokenizers, embeddings) runs on one worker thread: fast tokenizers refuse
    # concurrent use of one instance ("Already borrowed"), and each call takes milliseconds.
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="eco-guard")

    async def on_guard(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="eco-guard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.metrics, app.state.client = metrics, client

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        metrics.errors.labels(request.url.path, str(err.status)).inc()
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("request to %s failed", request.url.path)
        error = ApiError(500, f"the server failed on this request ({type(err).__name__}); see its log")
        metrics.errors.labels(request.url.path, "500").inc()
        return JSONResponse(error.body(), status_code=500)

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            ok = (await client.get("/health", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            ok = False
        return JSONResponse({"status": "ok" if ok else "engine unavailable"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request, settings.api_key)
        return await relay(client, "GET", "/v1/models", None)

    async def guarded(request: Request, endpoint: str, parse, chat: bool) -> Response:
        request_id = uuid.uuid4().hex
        metrics.requests.labels(endpoint).inc()
        authorize(request, settings.api_key)
        body = await read_json(request, settings.max_body_bytes)
        parsed: ParsedRequest = parse(body)
        started = time.perf_counter()
        flags = await on_guard(guard.decide, parsed.requests)
        seconds = time.perf_counter() - started
        metrics.classifier.observe(seconds / len(parsed.requests))
        flagged = any(f.flagged for f in flags)
        if flagged:
            metrics.flagged.labels(endpoint).inc()
        logger.info(
            "request %s %s flagged=%s score=%.4f classifier_ms=%.1f%s",
            request_id,
            endpoint,
            flagged,
            max(f.score for f in flags),
            1e3 * seconds,
            f" prompt={json.dumps(body)[:2000]}" if settings.log_prompts else "",
        )
        if not flagged and not parsed.has_image:
            return counted(await relay(client, "POST", endpoint, body, request_id), endpoint)

        def prepare_all() -> tuple[list[Any], list[str]]:
            prepared = [
                prepare_request(guard, r, f, None if chat else False, max_model_len)
                for r, f in zip(parsed.requests, flags, strict=True)
            ]
            return prepared, [
                p.embeds_base64() if p.embeds is not None else _embed_plain(guard, p) for p in prepared
            ]

        try:
            prepared, embeds = await on_guard(prepare_all)
        except (ValueError, RequestError) as err:
            raise ApiError(400, str(err)) from None
        renames_of = protocol.restorer([p.renames for p in prepared], int(parsed.sampling.get("n", 1) or 1))
        engine_body = protocol.completion_body(parsed, settings.served_name, embeds)
        if parsed.stream:
            return counted(await relay_stream(client, engine_body, renames_of, chat, request_id), endpoint)
        try:
            answer = await client.post("/v1/completions", json=engine_body)
        except httpx.HTTPError as err:
            raise ApiError(503, f"the engine is unavailable ({type(err).__name__})") from None
        if answer.status_code != 200:
            return counted(_engine_error(answer, request_id), endpoint)
        payload = answer.json()
        out = (
            protocol.to_chat(payload, renames_of)
            if chat
            else protocol.restore_completion(payload, renames_of)
        )
        return JSONResponse(out, headers={"x-request-id": request_id})

    def counted(response: Response, endpoint: str) -> Response:
        if response.status_code >= 400:
            metrics.errors.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        parse = lambda body: protocol.parse_chat(  # noqa: E731
            body, multimodal=guard.multimodal, max_chars=settings.max_prompt_chars
        )
        return await guarded(request, "/v1/chat/completions", parse, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        parse = lambda body: protocol.parse_completion(body, max_chars=settings.max_prompt_chars)  # noqa: E731
        return await guarded(request, "/v1/completions", parse, chat=False)

    return app


def _embed_plain(guard: GuardCore, prepared: Any) -> str:
    """An unflagged prompt that travels with flagged ones in one completions request: its clean embeddings."""
    import torch

    with torch.no_grad():
        prepared.embeds = guard.model(prepared.ids[None])[0]
    return prepared.embeds_base64()


def authorize(request: Request, key: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <key>`` (compared in constant time)."""
    if key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(
            401, "a valid API key is required (Authorization: Bearer <key>)", kind="authentication_error"
        )


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 beyond ``limit`` bytes (declared or read), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None


async def relay(
    client: httpx.AsyncClient, method: str, path: str, body: Any, request_id: str = ""
) -> Response:
    """The engine's answer to the request as it came, streamed through (status, content type and bytes)."""
    try:
        upstream = await client.send(client.build_request(method, path, json=body), stream=True)
    except httpx.HTTPError as err:
        raise ApiError(503, f"the engine is unavailable ({type(err).__name__})") from None
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in RELAYED_HEADERS}
    if request_id:
        headers["x-request-id"] = request_id
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )


async def relay_stream(
    client: httpx.AsyncClient, body: dict[str, Any], renames_of, chat: bool, request_id: str
) -> Response:
    """A guarded request streamed: the engine's completion events converted as they come."""
    try:
        upstream = await client.send(client.build_request("POST", "/v1/completions", json=body), stream=True)
    except httpx.HTTPError as err:
        raise ApiError(503, f"the engine is unavailable ({type(err).__name__})") from None
    if upstream.status_code != 200:
        await upstream.aread()
        await upstream.aclose()
        return _engine_error(upstream, request_id)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in protocol.convert_stream(upstream.aiter_lines(), renames_of, chat=chat):
                yield event
        finally:
            await upstream.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-request-id": request_id})


def _engine_error(answer: httpx.Response, request_id: str) -> JSONResponse:
    """The engine refused a guarded request: its status and error message (never the prompt_embeds echoed)."""
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text[:500]
    error = ApiError(answer.status_code, f"the engine refused the request: {message}")
    return JSONResponse(error.body(), status_code=answer.status_code, headers={"x-request-id": request_id})
