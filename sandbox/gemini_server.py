"""The sandbox's Gemini API routes (aiohttp handlers); the logic is in gemini.py.

  POST /v1beta/models/{model}:generateContent
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse

Auth as Google's: `x-goog-api-key: <key>` or `?key=<key>`. No key: 403 PERMISSION_DENIED;
a wrong key: 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID (as Google answers);
an Authorization header (an OAuth token to Google, never an API key): 401 UNAUTHENTICATED.
Streaming without alt=sse is a 400 (the sandbox does not speak the JSON-array stream), as is
any query parameter other than key / alt. Errors under /v1beta/ leave in Google's shape.
Requests are kept in the request log (GET /_sandbox/requests) as {path, authorization,
api_key, query, body}, inline data logged as its size only.

Wiring: sandbox.server calls register(app) from create_app (PROTOCOL_MODULES).
The server module is imported inside the functions, so either module may be imported first.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Any

import orjson
from aiohttp import web

from sandbox import gemini
from sandbox.errors import ApiError

PREFIX = "/v1beta/"
METHODS = ("generateContent", "streamGenerateContent")
_QUERY = frozenset({"key", "alt", "$alt"})
_REGISTERED = web.AppKey("gemini_registered", bool)


def register(app: web.Application) -> None:
    """Add the Gemini routes and error shape to the sandbox app (idempotent)."""
    from sandbox import server

    if app.get(_REGISTERED):
        return
    app[_REGISTERED] = True
    app[server.ERROR_SHAPES][PREFIX] = gemini.error_body
    app.router.add_post("/v1beta/models/{target}", generate_content)


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _api_key(request: web.Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def _auth_error(request: web.Request) -> ApiError | None:
    from sandbox import server

    if request.headers.get("Authorization"):
        return ApiError(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
            code="ACCESS_TOKEN_TYPE_UNSUPPORTED",
        )
    key = _api_key(request)
    if not key:
        return ApiError(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
        )
    if hmac.compare_digest(key.encode(), request.app[server.API_KEY].encode()):
        return None
    return ApiError(400, "API key not valid. Please pass a valid API key.", code="API_KEY_INVALID")


def _notes() -> dict[str, Any]:
    from sandbox import server

    return server._notes.get({})


async def generate_content(request: web.Request) -> web.StreamResponse:
    from sandbox import server

    model, _, method = request.match_info["target"].rpartition(":")
    if not model or method not in METHODS:
        raise ApiError(
            404,
            f"models/{request.match_info['target'][:80]} is not found for API version v1beta, "
            "or is not supported for this method.",
        )
    denied = _auth_error(request)
    try:
        body = gemini.parse_json(await request.read())
    except ApiError:
        if denied is not None:
            raise denied from None
        raise
    query = {k: v for k, v in request.query.items() if k != "key"}
    request.app[server.REQUEST_LOG].append(
        {
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "api_key": _api_key(request),
            "query": query,
            "body": gemini.log_body(body),
        }
    )
    if denied is not None:
        raise denied
    unknown = sorted(set(request.query) - _QUERY)
    if unknown:
        raise ApiError(
            400,
            f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot bind query '
            "parameter.",
        )
    stream = method == "streamGenerateContent"
    if stream and request.query.get("alt", request.query.get("$alt")) != "sse":
        raise ApiError(
            400, "sandbox: streamGenerateContent is served as server-sent events only (alt=sse)."
        )
    call = gemini.parse_request(model, body, stream)
    _notes().update(model=model, stream=stream, image=call.wants_image)
    if call.wants_image:
        return await _image(request, call)
    return await _text(request, call)


async def _text(request: web.Request, call: gemini.GeminiRequest) -> web.StreamResponse:
    from sandbox import server

    gemini.check_signatures(call)
    answer = gemini.answer_text(call)
    found = answer.plan.request.directives
    if found.delay:
        await asyncio.sleep(found.delay)
    error = found.error(streaming=call.stream)
    if error is not None:
        raise error
    response_id = secrets.token_urlsafe(16)
    if not call.stream:
        return _json(gemini.response_body(answer, response_id))
    frames, drop = gemini.stream_frames(answer, response_id)
    pace = found.chunk_delay
    return await server._send_stream(
        request, frames, drop, request.app[server.CHUNK_DELAY] if pace is None else pace
    )


async def _image(request: web.Request, call: gemini.GeminiRequest) -> web.StreamResponse:
    from sandbox import server

    answer = gemini.plan_image(call)
    found = answer.directives
    if found.delay:
        await asyncio.sleep(found.delay)
    error = found.error(streaming=False)
    if error is not None:
        raise error
    if found.hang:
        await server._hang(request)
        return web.Response(status=504, text="client gave up")
    # Deflating a few hundred KB per image is CPU work: keep the loop free for others.
    images = await asyncio.to_thread(gemini.render_images, answer)
    body = gemini.image_response_body(answer, images, secrets.token_urlsafe(16))
    if not call.stream:
        return _json(body)
    return await server._send_stream(request, [gemini.sse(body)], False, 0.0)
