"""The sandbox's Anthropic Messages route: POST /v1/messages.

`register(app)` adds the route and Anthropic's error shape for its path prefix; the
answer logic is in sandbox.anthropic. sandbox.server is imported
inside the functions, not at module level: server.py lists `register` in its
PROTOCOL_MODULES, so a module-level import would be circular.
"""

from __future__ import annotations

import asyncio
import secrets

import orjson
from aiohttp import web

from sandbox import anthropic, openai_chat
from sandbox.errors import ApiError

MESSAGES_PATH = "/v1/messages"
_REGISTERED = web.AppKey("anthropic_messages_registered", bool)


def register(app: web.Application) -> None:
    """Serve Anthropic's Messages API on `app`. Idempotent, so a test may call it on an
    app whose create_app already did."""
    from sandbox import server

    if app.get(_REGISTERED):
        return
    app[_REGISTERED] = True
    app[server.ERROR_SHAPES][MESSAGES_PATH] = anthropic.error_body
    app.router.add_post(MESSAGES_PATH, messages)


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


async def messages(request: web.Request) -> web.StreamResponse:
    from sandbox import server

    denied = anthropic.auth_error(request.headers.get("x-api-key"), request.app[server.API_KEY])
    try:
        body = anthropic.parse_json(await request.read())
    except ApiError:
        # A bad key is reported first, even for a malformed body.
        if denied is not None:
            raise denied from None
        raise
    # Logged even when the key is wrong, with the headers this protocol authenticates by.
    server.log_request(request, anthropic.log_body(body))
    request.app[server.REQUEST_LOG][-1].update(
        {
            "x-api-key": request.headers.get("x-api-key"),
            "anthropic-version": request.headers.get("anthropic-version"),
        }
    )
    if denied is not None:
        raise denied
    anthropic.check_headers(request.headers.get("anthropic-version"), request.content_type)

    chat = anthropic.parse_request(body)
    if chat.directives.delay:
        await asyncio.sleep(chat.directives.delay)
    error = chat.directives.error(streaming=chat.stream)
    if error is not None:
        raise error

    plan = openai_chat.plan_answer(chat)
    message_id = "msg_sbx" + secrets.token_hex(12)
    if not chat.stream:
        return _json(anthropic.message_body(plan, message_id))
    pace = chat.directives.chunk_delay
    delay = request.app[server.CHUNK_DELAY] if pace is None else pace
    return await _send_stream(request, anthropic.stream_frames(plan, message_id), delay)


async def _send_stream(
    request: web.Request, frames: list[bytes], delay: float
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        for i, frame in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            await response.write(frame)  # one HTTP chunk per event: no buffering
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left; nothing to finish
    return response
