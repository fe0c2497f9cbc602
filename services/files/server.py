"""The files service's aiohttp app: serve blobs by key, nothing else.

Files go out through aiohttp's FileResponse (sendfile where the OS has it,
single Range requests, ETag / Last-Modified with conditional GETs); stat and
open run in a thread, so a slow disk never stalls the loop. The token in the
path is the only credential, so it never reaches the logs: a request's log line
names the kind of file, never the path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from services.common import http_service, metrics
from services.common.blobs import KINDS, LocalBlobStore, content_type_for
from services.common.logs import fields
from services.common.settings import env

log = logging.getLogger("files")

DEFAULT_ADDR: Final = "127.0.0.1:9200"
# Running downloads get this long to finish when the service stops, unless
# AIPORT_GRACE_SECONDS says otherwise (as for the gRPC services).
SHUTDOWN_SECONDS: Final = 5.0
CHUNK_BYTES: Final = 256 * 1024  # read size when sendfile is unavailable
ALLOWED_METHODS: Final = "GET, HEAD"

FILE_HEADERS: Final = {
    "Cache-Control": "private, max-age=86400",
}
# Every response, files and errors alike. The CSP sandbox keeps a file that a
# browser opens directly from running anything, whatever it turns out to be.
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Referrer-Policy": "no-referrer",
}

STORE = web.AppKey("store", LocalBlobStore)
# Set on SIGTERM: /healthz answers 503 so load balancers stop sending new downloads.
DRAINING = web.AppKey("draining", asyncio.Event)


def files_addr() -> str:
    """[AIPORT_FILES_ADDR] HOST:PORT, default 127.0.0.1:9200."""
    return env("AIPORT_FILES_ADDR", DEFAULT_ADDR)


def create_app(store: LocalBlobStore) -> web.Application:
    # No route takes a body; anything sent is refused before it is buffered.
    app = web.Application(middlewares=[_errors_as_json], client_max_size=4096)
    app[STORE] = store
    app[DRAINING] = asyncio.Event()
    app.router.add_get("/files/{kind}/{token}/{filename}", serve_file)  # HEAD too
    app.router.add_get("/healthz", healthz)
    app.on_response_prepare.append(_add_security_headers)
    return app


def make_runner(app: web.Application, shutdown_seconds: float = SHUTDOWN_SECONDS) -> web.AppRunner:
    """The runner `serve` uses: one JSON access-log line per request, after the
    response went out (so Range 206s and conditional 304s log their real status)."""
    return web.AppRunner(
        app,
        access_log_class=AccessLogger,
        access_log=log,
        shutdown_timeout=shutdown_seconds,
    )


async def serve(addr: str, store: LocalBlobStore) -> None:
    """Run until SIGTERM/SIGINT, then drain like the gRPC services (http_service)."""
    app = create_app(store)
    await http_service.serve_app(
        app,
        addr,
        make_runner=make_runner,
        draining=app[DRAINING],
        default_grace=SHUTDOWN_SECONDS,
        log=log,
        blob_dir=str(store.root),
    )


# --- handlers ------------------------------------------------------------------------------


async def serve_file(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    filename = info["filename"]
    path = await request.app[STORE].open_path(f"{info['kind']}/{info['token']}/{filename}")
    if path is None:
        raise web.HTTPNotFound()
    headers = {
        **FILE_HEADERS,
        "Content-Type": content_type_for(filename),
        # The filename passed key validation: [A-Za-z0-9._-] only, nothing to escape.
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    return web.FileResponse(path, chunk_size=CHUNK_BYTES, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    if request.app[DRAINING].is_set():
        return _json({"status": "draining"}, 503)
    return _json({"status": "ok"})


# --- errors, headers, access log -----------------------------------------------------------


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_response(status: int, message: str, type_: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    response = _json(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as {"error": {message, type, param, code}}, aiohttp's own too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return error_response(404, "No such file.", "invalid_request_error", "not_found")
        if exc.status == 405:
            response = error_response(
                405, "Method not allowed.", "invalid_request_error", "method_not_allowed"
            )
            response.headers["Allow"] = exc.headers.get("Allow", ALLOWED_METHODS)
            return response
        if exc.status == 413:
            return error_response(
                413, "Request body not allowed.", "invalid_request_error", "request_too_large"
            )
        return error_response(exc.status, exc.reason, "invalid_request_error", "bad_request")
    except Exception:
        log.exception("unexpected error")
        return error_response(500, "Internal error.", "server_error", "internal_error")


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


class AccessLogger(AbstractAccessLogger):
    """One JSON line per request: method, which route, the kind of file, status,
    bytes and time. Never the path: it carries the file's token."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route, kind = "other", None
        match_info = getattr(request, "match_info", None)
        if match_info is not None and match_info.route.resource is not None:
            canonical = match_info.route.resource.canonical
            if canonical.startswith("/files/"):
                route = "files"
                candidate = match_info.get("kind")
                kind = candidate if candidate in KINDS else None
            elif canonical == "/healthz":
                route = "healthz"
        metrics.HTTP_REQUESTS.labels(route, str(response.status)).inc()
        self.logger.info(
            "request",
            extra=fields(
                method=request.method,
                route=route,
                kind=kind,
                status=response.status,
                bytes=response.content_length,
                ms=round(time * 1000, 1),
            ),
        )
