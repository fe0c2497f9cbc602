"""The sandbox's aiohttp app: auth, access log, request log and the protocol routes.

All answer logic lives in the pure modules (openai_chat, directives, ...); this
module only moves bytes, sleeps when asked to, and drops connections on purpose.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import signal
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.logs import fields
from services.sandbox import openai_chat
from services.sandbox.errors import ApiError, openai_error_body

log = logging.getLogger("sandbox")

REQUEST_LOG_SIZE = 200
# Chat bodies may carry base64 images; aiohttp's 1 MiB default would 413 them.
MAX_BODY_BYTES = 64 * 1024 * 1024
# A stopping sandbox should not hold a test run hostage to a [sim:delay=600].
SHUTDOWN_SECONDS = 1.0

API_KEY = web.AppKey("api_key", str)
CHUNK_DELAY = web.AppKey("chunk_delay", float)
REQUEST_LOG: web.AppKey[deque[dict[str, Any]]] = web.AppKey("request_log")
# Per-request notes the access log line picks up (model, stream, dropped). A context
# variable, not request storage: each request runs in its own task (own context), and
# typed request keys (web.RequestKey) need a newer aiohttp than the project pins.
_notes: ContextVar[dict[str, Any]] = ContextVar("sandbox_notes")


def create_app(api_key: str, *, chunk_delay: float = 0.0) -> web.Application:
    app = web.Application(
        middlewares=[_access_log, _errors_as_openai], client_max_size=MAX_BODY_BYTES
    )
    app[API_KEY] = api_key
    app[CHUNK_DELAY] = chunk_delay
    app[REQUEST_LOG] = deque(maxlen=REQUEST_LOG_SIZE)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_sandbox/requests", list_requests)
    app.router.add_delete("/_sandbox/requests", clear_requests)
    return app


async def serve(host: str, port: int, api_key: str, chunk_delay: float = 0.0) -> None:
    """Run until SIGTERM/SIGINT, then close the listener and cut off open requests."""
    runner = web.AppRunner(
        create_app(api_key, chunk_delay=chunk_delay),
        access_log=None,  # _access_log writes our own JSON line instead
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening", extra=fields(addr=f"{host}:{port}", chunk_delay=chunk_delay))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    log.info("stopped")


# --- middlewares -----------------------------------------------------------------------


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(err: ApiError) -> web.Response:
    return _json(openai_error_body(err), err.status)


@web.middleware
async def _access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.monotonic()
    notes: dict[str, Any] = {}
    _notes.set(notes)
    status: int | None = None  # stays None if the request was cancelled (shutdown)
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log.info(
            "request",
            extra=fields(
                method=request.method,
                path=request.path,
                status=status,
                ms=round((time.monotonic() - start) * 1000, 1),
                **notes,
            ),
        )


@web.middleware
async def _errors_as_openai(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error, ours or aiohttp's (404, 405, 413), leaves in OpenAI's error shape."""
    try:
        return await handler(request)
    except ApiError as err:
        return _error(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(ApiError(exc.status, f"{exc.reason} ({request.method} {request.path})"))
    except Exception:
        log.exception("unexpected error", extra=fields(path=request.path))
        return _error(ApiError(500, "sandbox: internal error", type="server_error"))


def _auth_error(request: web.Request) -> ApiError | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        message = "You didn't provide an API key (Authorization: Bearer <key>)."
    elif hmac.compare_digest(key.strip().encode(), request.app[API_KEY].encode()):
        return None
    else:
        message = "Incorrect API key provided."
    return ApiError(401, message, code="invalid_api_key")


# --- OpenAI routes ---------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    denied = _auth_error(request)
    try:
        body = openai_chat.parse_json(await request.read())
    except ApiError:
        # A bad key is the first thing OpenAI reports, even for a malformed body.
        if denied is not None:
            raise denied from None
        raise
    # Logged even when the key is wrong: "which key did the gateway send?" is a question.
    request.app[REQUEST_LOG].append(
        {"path": request.path, "authorization": request.headers.get("Authorization"), "body": body}
    )
    if denied is not None:
        raise denied

    chat = openai_chat.parse_request(body)
    _notes.get({}).update(model=chat.model, stream=chat.stream)
    if chat.directives.delay:
        await asyncio.sleep(chat.directives.delay)
    error = chat.directives.error(streaming=chat.stream)
    if error is not None:
        raise error

    answer = openai_chat.plan_answer(chat)
    completion_id = "chatcmpl-sbx" + secrets.token_hex(12)
    created = int(time.time())
    if not chat.stream:
        return _json(openai_chat.completion_body(answer, completion_id, created))
    frames, drop = openai_chat.stream_frames(answer, completion_id, created)
    pace = chat.directives.chunk_delay
    return await _send_stream(
        request, frames, drop, request.app[CHUNK_DELAY] if pace is None else pace
    )


async def _send_stream(
    request: web.Request, frames: list[bytes], drop: bool, delay: float
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        for i, frame in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            # Each write goes straight to the socket as one HTTP chunk: no buffering.
            await response.write(frame)
        if drop:
            _drop(request)
            return response
        await response.write_eof()
    except ConnectionResetError:
        _notes.get({})["client_gone"] = True
    return response


def _drop(request: web.Request) -> None:
    """Close the socket mid-body: no terminating chunk, so the client sees a broken stream."""
    _notes.get({})["dropped"] = True
    if request.transport is not None:
        request.transport.close()


async def list_models(request: web.Request) -> web.Response:
    denied = _auth_error(request)
    if denied is not None:
        raise denied
    models = [
        {"id": model, "object": "model", "created": 1700000000, "owned_by": "sandbox"}
        for model in openai_chat.MODELS
    ]
    return _json({"object": "list", "data": models})


# --- test support ----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def list_requests(request: web.Request) -> web.Response:
    entries = request.app[REQUEST_LOG]
    return _json(list(entries))


async def clear_requests(request: web.Request) -> web.Response:
    request.app[REQUEST_LOG].clear()
    return web.Response(status=204)
