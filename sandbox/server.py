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
from collections import OrderedDict, deque
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox import (
    anthropic_server,
    dashscope_server,
    directives,
    gemini_server,
    media,
    openai_chat,
    openai_images,
    png,
    video_tasks,
)
from sandbox.errors import (
    ApiError,
    ark_error_body,
    error_headers,
    openai_error_body,
    simulated_status,
)
from services.common.logs import fields

log = logging.getLogger("sandbox")

REQUEST_LOG_SIZE = 200
# Chat bodies may carry base64 images and video tasks base64 videos (50 MB each, a third
# more as base64); aiohttp's 1 MiB default would 413 them.
MAX_BODY_BYTES = 256 * 1024 * 1024
# A stopping sandbox should not hold a test run hostage to a [sim:delay=600].
SHUTDOWN_SECONDS = 1.0
# [sim:hang] holds a request until the client leaves, but not past this.
HANG_LIMIT_SECONDS = 3600.0
# Images answered as URLs (response_format=url) are kept for the last this many.
FILE_STORE_SIZE = 200
SAMPLE_MP4 = Path(__file__).resolve().parent / "assets" / "sample.mp4"
ARK_PREFIX = "/api/v3/"

API_KEY = web.AppKey("api_key", str)
CHUNK_DELAY = web.AppKey("chunk_delay", float)
REQUEST_LOG: web.AppKey[deque[dict[str, Any]]] = web.AppKey("request_log")
TASKS = web.AppKey("tasks", video_tasks.TaskStore)
FILES: web.AppKey[OrderedDict[str, bytes]] = web.AppKey("files")
VIDEO = web.AppKey("video", bytes)
# Protocol modules register how their errors look, by path prefix.
ERROR_SHAPES: web.AppKey[dict[str, Callable[[ApiError], object]]] = web.AppKey("error_shapes")
# Which sandbox "provider" a request came through (routes.py `headers`), so a
# test can fail one route and let its fallback answer.
ROUTE_HEADER = "X-Sandbox-Route"

# Each protocol beyond OpenAI's lives in its own module with register(app).
PROTOCOL_MODULES: tuple[Callable[[web.Application], None], ...] = (
    anthropic_server.register,
    dashscope_server.register,
    gemini_server.register,
)
# Per-request notes the access log line picks up (model, stream, dropped). A context
# variable, not request storage: each request runs in its own task (own context), and
# typed request keys (web.RequestKey) need a newer aiohttp than the project pins.
_notes: ContextVar[dict[str, Any]] = ContextVar("sandbox_notes")


def create_app(api_key: str, *, chunk_delay: float = 0.0) -> web.Application:
    app = web.Application(
        middlewares=[_access_log, _errors_as_openai, _route_failures],
        client_max_size=MAX_BODY_BYTES,
    )
    shapes: dict[str, Callable[[ApiError], object]] = {ARK_PREFIX: ark_error_body}
    app[ERROR_SHAPES] = shapes
    app[API_KEY] = api_key
    app[CHUNK_DELAY] = chunk_delay
    app[REQUEST_LOG] = deque(maxlen=REQUEST_LOG_SIZE)
    app[TASKS] = video_tasks.TaskStore()
    app[FILES] = OrderedDict()
    app[VIDEO] = SAMPLE_MP4.read_bytes()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/images/generations", images_generations)
    app.router.add_post("/v1/images/edits", images_edits)
    app.router.add_post("/api/v3/contents/generations/tasks", create_task)
    app.router.add_get("/api/v3/contents/generations/tasks/{task_id}", get_task)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_sandbox/requests", list_requests)
    app.router.add_delete("/_sandbox/requests", clear_requests)
    app.router.add_get("/_sandbox/tasks", list_tasks)
    app.router.add_delete("/_sandbox/tasks", clear_tasks)
    app.router.add_get("/_sandbox/files/{name}", get_file)
    for register in PROTOCOL_MODULES:
        register(app)
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


def _error(
    err: ApiError, path: str = "", shapes: dict[str, Callable[[ApiError], object]] | None = None
) -> web.Response:
    for prefix, shape in (shapes or {}).items():
        if path.startswith(prefix):
            response = _json(shape(err), err.status)
            break
    else:
        response = _json(openai_error_body(err), err.status)
    response.headers.update(error_headers(err))
    return response


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
                # What our adapters sent, so a test can follow one request id here.
                request_id=request.headers.get("X-Request-Id"),
                status=status,
                ms=round((time.monotonic() - start) * 1000, 1),
                **notes,
            ),
        )


@web.middleware
async def _errors_as_openai(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error, ours or aiohttp's (404, 405, 413), leaves in the protocol's error shape:
    Ark's under /api/v3/, OpenAI's everywhere else."""
    path = request.path
    shapes = request.app[ERROR_SHAPES]
    try:
        return await handler(request)
    except ApiError as err:
        return _error(err, path, shapes)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(ApiError(exc.status, f"{exc.reason} ({request.method} {path})"), path, shapes)
    except Exception:
        log.exception("unexpected error", extra=fields(path=path))
        return _error(ApiError(500, "sandbox: internal error", type="server_error"), path, shapes)


@web.middleware
async def _route_failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`[sim:fail-route=LABEL]` in a body: the provider sending that route label
    answers 503, whatever protocol it speaks; other routes answer normally.
    JSON bodies only: reading a multipart body here would leave nothing for
    the handler's form parser (aiohttp does not replay it)."""
    label = request.headers.get(ROUTE_HEADER)
    if (
        label
        and request.method == "POST"
        and request.can_read_body
        and request.content_type == "application/json"
    ):
        body = await request.read()  # cached: the handler reads it again
        if b"[sim:fail-route=" in body:
            text = body.decode("utf-8", "replace")
            if label in directives.failing_routes(text):
                log_request(request, {"failed_route": label})
                raise ApiError(503, f"sandbox: route {label} is down", type="server_error")
    return await handler(request)


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
        {
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "route": request.headers.get(ROUTE_HEADER),
            "body": body,
        }
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
    if chat.directives.reset:
        _drop(request)  # no status line at all: the client sees a reset connection
        return web.Response()
    if chat.directives.malformed:
        content_type = "text/event-stream" if chat.stream else "application/json"
        return web.Response(body=b"{not: json", content_type=content_type)

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


# --- OpenAI Images --------------------------------------------------------------------


async def images_generations(request: web.Request) -> web.StreamResponse:
    denied = _auth_error(request)
    try:
        body = openai_chat.parse_json(await request.read())
    except ApiError:
        if denied is not None:
            raise denied from None
        raise
    log_request(request, body)
    if denied is not None:
        raise denied
    return await _answer_images(request, openai_images.parse_generation(body))


async def images_edits(request: web.Request) -> web.StreamResponse:
    """multipart/form-data (OpenAI's form: `image[]` file parts) or JSON with data: URLs."""
    denied = _auth_error(request)
    if request.content_type == "multipart/form-data":
        form = await request.post()
        text: dict[str, str] = {}
        files: list[openai_images.Upload] = []
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files.append(
                    openai_images.Upload(
                        name, value.filename, value.content_type, value.file.read()
                    )
                )
            else:
                text[name] = str(value)
        log_request(
            request,
            {
                **text,
                "files": [
                    {
                        "field": f.field,
                        "filename": f.filename,
                        "content_type": f.declared_type,
                        "sniffed": media.sniff(f.data),
                        "bytes": len(f.data),
                    }
                    for f in files
                ],
            },
        )
        if denied is not None:
            raise denied
        job = openai_images.parse_edit_form(text, files)
    elif request.content_type == "application/json":
        try:
            body = openai_chat.parse_json(await request.read())
        except ApiError:
            if denied is not None:
                raise denied from None
            raise
        log_request(request, _summarise_data_urls(body))
        if denied is not None:
            raise denied
        job = openai_images.parse_edit_json(body)
    else:
        if denied is not None:
            raise denied
        raise ApiError(
            400,
            "Unsupported content type: send multipart/form-data (or application/json).",
            code="invalid_content_type",
        )
    openai_images.check_edit_has_images(job)
    return await _answer_images(request, job)


async def _answer_images(request: web.Request, job: openai_images.ImageJob) -> web.StreamResponse:
    _notes.get({}).update(model=job.model, n=job.n, size=job.size_label)
    found = job.directives
    if found.delay:
        await asyncio.sleep(found.delay)
    error = found.error(streaming=False)
    if error is not None:
        raise error
    if found.hang:
        await _hang(request)
        return web.Response(status=504, text="client gave up")
    # Deflating a few hundred KB per image is CPU work: keep the loop free for others.
    images = await asyncio.to_thread(openai_images.render, job)
    urls = []
    if job.response_format == "url":
        store = request.app[FILES]
        for image in images:
            name = media.new_id("img")
            store[name] = image
            while len(store) > FILE_STORE_SIZE:
                store.popitem(last=False)
            urls.append(f"{_origin(request)}/_sandbox/files/{name}.png")
    return _json(openai_images.response_body(job, images, urls, int(time.time())))


async def _hang(request: web.Request) -> None:
    """Hold the request until the client hangs up (or HANG_LIMIT_SECONDS pass)."""
    _notes.get({})["hung"] = True
    deadline = time.monotonic() + HANG_LIMIT_SECONDS
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            _notes.get({})["client_gone"] = True
            return
        await asyncio.sleep(0.05)


def _summarise_data_urls(body: object) -> object:
    if isinstance(body, dict):
        return {k: _summarise_data_urls(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_summarise_data_urls(v) for v in body]
    if isinstance(body, str) and body.startswith("data:"):
        return media.data_url_summary(body)
    return body


# --- Ark video tasks -------------------------------------------------------------------


async def create_task(request: web.Request) -> web.Response:
    denied = _auth_error(request)
    try:
        body = openai_chat.parse_json(await request.read())
    except ApiError:
        if denied is not None:
            raise denied from None
        raise
    log_request(request, video_tasks.log_body(body))
    if denied is not None:
        raise denied
    spec = video_tasks.parse_create(body)
    _notes.get({}).update(model=spec.model)
    if spec.directives.status is not None:
        raise simulated_status(spec.directives.status)
    task = video_tasks.Task(id=media.new_id("cgt"), spec=spec, created_at=time.time())
    request.app[TASKS].add(task)
    _notes.get({})["task"] = task.id
    return _json({"id": task.id})


async def get_task(request: web.Request) -> web.Response:
    denied = _auth_error(request)
    if denied is not None:
        raise denied
    task_id = request.match_info["task_id"]
    task = request.app[TASKS].get(task_id)
    if task is None:
        raise ApiError(
            404, f"The specified task {task_id[:64]} is not found.", code="ResourceNotFound"
        )
    base = f"{_origin(request)}/_sandbox/files"
    return _json(video_tasks.task_body(task, time.time(), base))


async def get_file(request: web.Request) -> web.Response:
    """Result files, like Ark's pre-signed URLs: no Authorization needed."""
    stem, _, ext = request.match_info["name"].rpartition(".")
    stored = request.app[FILES].get(stem) if ext == "png" else None
    if stored is not None:
        return web.Response(body=stored, content_type="image/png")
    task = request.app[TASKS].get(stem)
    if task is not None and task.status(time.time()) == "succeeded":
        if ext == "mp4":
            video = media.retimed_mp4(request.app[VIDEO], task.spec.duration)
            return web.Response(body=video, content_type="video/mp4")
        if ext == "png" and task.spec.return_last_frame:
            width, height = png.fit(*video_tasks.output_size(task.spec.resolution, task.spec.ratio))
            frame = await asyncio.to_thread(png.render, width, height, task.spec.prompt)
            return web.Response(body=frame, content_type="image/png")
    raise ApiError(404, f"No such file: {request.match_info['name'][:80]}")


def _origin(request: web.Request) -> str:
    """Where the client reached us: result URLs point back the same way."""
    return f"{request.scheme}://{request.host}"


def log_request(request: web.Request, body: object) -> None:
    request.app[REQUEST_LOG].append(
        {
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "route": request.headers.get(ROUTE_HEADER),
            "body": body,
        }
    )


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


async def list_tasks(request: web.Request) -> web.Response:
    """Every video task still kept, oldest first: {id, model, prompt, status, created_at}."""
    now = time.time()
    tasks = request.app[TASKS].tasks.values()
    return _json([video_tasks.summary(task, now) for task in tasks])


async def clear_tasks(request: web.Request) -> web.Response:
    request.app[TASKS].clear()
    return web.Response(status=204)
