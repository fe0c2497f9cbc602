"""The sandbox's DashScope image routes (aiohttp). The logic lives in sandbox/dashscope.py.

register(app) adds, to an app made by sandbox.server.create_app:

  POST /api/v1/services/aigc/image-generation/generation       create a task (async header)
  POST /api/v1/services/aigc/multimodal-generation/generation  generate synchronously
  GET  /api/v1/tasks/{task_id}                                  poll a task
  GET  /_sandbox/dashscope/files/{task_id}_{i}.png              a result (no auth, like OSS)
  GET / DELETE /_sandbox/dashscope/tasks                        test support

and DashScope's error shape ({"request_id", "code", "message"}) for everything under /api/v1/.
Create requests go to the shared request log, like every other protocol's.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from sandbox import dashscope, openai_chat
from sandbox.errors import ApiError, simulated_status

ASYNC_HEADER = "X-DashScope-Async"
TASKS_LIST_PATH = "/_sandbox/dashscope/tasks"
# [sim:hang] on the synchronous endpoint holds a request until the client leaves, not past this.
HANG_LIMIT_SECONDS = 3600.0


@dataclass
class DashScopeState:
    api_key: str
    log_request: Callable[[web.Request, object], None]
    tasks: dashscope.TaskStore = field(default_factory=dashscope.TaskStore)


STATE = web.AppKey("dashscope", DashScopeState)


def register(app: web.Application) -> None:
    """Add the DashScope routes and error shape to a sandbox app (once; a second call is a
    no-op, so it is safe both in server.PROTOCOL_MODULES and from a test)."""
    if STATE in app:
        return
    # Imported here, not at the top: server.py lists this module's register() among its
    # PROTOCOL_MODULES, and a module-level import would be circular.
    from sandbox import server

    app[STATE] = DashScopeState(api_key=app[server.API_KEY], log_request=server.log_request)
    app[server.ERROR_SHAPES][dashscope.ERROR_PREFIX] = dashscope.error_body
    app.router.add_post(dashscope.ASYNC_PATH, create_task)
    app.router.add_post(dashscope.SYNC_PATH, generate)
    app.router.add_get(dashscope.TASK_PATH, get_task)
    app.router.add_get(dashscope.FILES_PATH + "/{name}", get_file)
    app.router.add_get(TASKS_LIST_PATH, list_tasks)
    app.router.add_delete(TASKS_LIST_PATH, clear_tasks)


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _origin(request: web.Request) -> str:
    """Where the client reached us: result URLs point back the same way."""
    return f"{request.scheme}://{request.host}"


def _auth_error(request: web.Request, state: DashScopeState) -> ApiError | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return ApiError(401, "No API-key provided.", code="InvalidApiKey")
    if hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        return None
    return ApiError(401, "Invalid API-key provided.", code="InvalidApiKey")


async def _accepted(request: web.Request, asynchronous: bool) -> dashscope.ImageSpec:
    """Auth, header and body checks shared by both create endpoints; logs the request."""
    state = request.app[STATE]
    denied = _auth_error(request, state)
    try:
        body = openai_chat.parse_json(await request.read())
    except ApiError:
        if denied is not None:
            raise denied from None
        raise
    # Logged even with a wrong key: "which key did the gateway send?" is a question.
    state.log_request(request, dashscope.log_body(body))
    if denied is not None:
        raise denied
    dashscope.check_async_header(request.headers.get(ASYNC_HEADER), asynchronous)
    spec = dashscope.parse_create(body, asynchronous)
    if spec.directives.status is not None:
        raise simulated_status(spec.directives.status, spec.directives.retry_after)
    return spec


async def create_task(request: web.Request) -> web.Response:
    created_at = time.time()
    spec = await _accepted(request, asynchronous=True)
    task = dashscope.Task(id=dashscope.new_task_id(), spec=spec, created_at=created_at)
    request.app[STATE].tasks.add(task)
    return _json(dashscope.created_body(task))


async def generate(request: web.Request) -> web.StreamResponse:
    started = time.time()
    spec = await _accepted(request, asynchronous=False)
    found = spec.directives
    if found.delay:
        await asyncio.sleep(found.delay)
    if found.hang:
        await _hang(request)
        return web.Response(status=504, text="client gave up")
    if found.fail:
        raise ApiError(500, dashscope.FAILURE_MESSAGE, code="InternalError")
    # Kept (not listed by the task API) so its result URL can be fetched; dated from the
    # start of the request, so with a delay it is already SUCCEEDED.
    task = dashscope.Task(
        id=dashscope.new_task_id(), spec=spec, created_at=started, asynchronous=False
    )
    request.app[STATE].tasks.add(task)
    return _json(dashscope.sync_body(task, _origin(request) + dashscope.FILES_PATH))


async def _hang(request: web.Request) -> None:
    deadline = time.monotonic() + HANG_LIMIT_SECONDS
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


async def get_task(request: web.Request) -> web.Response:
    state = request.app[STATE]
    denied = _auth_error(request, state)
    if denied is not None:
        raise denied
    task_id = request.match_info["task_id"]
    task = state.tasks.get(task_id)
    if task is not None and not task.asynchronous:
        task = None  # a synchronous answer has no task to poll
    base = _origin(request) + dashscope.FILES_PATH
    return _json(dashscope.task_body(task, task_id[:128], time.time(), base))


async def get_file(request: web.Request) -> web.Response:
    """Result images, like DashScope's pre-signed OSS URLs: no Authorization needed."""
    name = request.match_info["name"]
    parsed = dashscope.parse_file_name(name)
    task = request.app[STATE].tasks.get(parsed[0]) if parsed else None
    if (
        parsed is None
        or task is None
        or parsed[1] >= task.spec.n
        or task.status(time.time()) != "SUCCEEDED"
    ):
        raise ApiError(404, f"No such file: {name[:80]}")
    # Deflating a few hundred KB is CPU work: keep the loop free for others.
    data = await asyncio.to_thread(dashscope.render, task, parsed[1])
    return web.Response(body=data, content_type="image/png")


async def list_tasks(request: web.Request) -> web.Response:
    """Every task kept, oldest first: {id, model, prompt, status, size, n, created_at}."""
    now = time.time()
    tasks = request.app[STATE].tasks.tasks.values()
    return _json([dashscope.summary(task, now) for task in tasks])


async def clear_tasks(request: web.Request) -> web.Response:
    request.app[STATE].tasks.clear()
    return web.Response(status=204)
