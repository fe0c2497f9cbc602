"""DashScope image generation over HTTP (Alibaba Cloud Model Studio: Wan 2.7, Z-Image; sandbox).

Implements services.providers.media.ImageAdapter. Which call a model takes, the bodies and
the answers are in dashscope_image_translate (pure); this module only moves bytes:

  Wan 2.7   create a task (X-DashScope-Async: enable), poll GET /tasks/{id} every
            provider.poll_interval_seconds until SUCCEEDED / FAILED / CANCELED / UNKNOWN
  Z-Image   one synchronous call (the only one its API reference documents)

then download the result from its pre-signed URL (OSS, valid 24 h) with a separate client
that never sends our key, capped in size, and sniff what the bytes really are.

Bounds on waiting. The worker already runs the whole job under a deadline; on top of that
generate() stops polling after POLL_BUDGET_FACTOR * provider.read_timeout_seconds (20 min
at the usual 300 s) or MAX_POLLS polls, whichever comes first, with UpstreamError("timeout").
A poll that fails (connection, timeout, 5xx, a malformed answer) is asked again, up to
MAX_POLL_ERRORS times in a row: the task lives on upstream whether or not one poll got
through. Creating a task is not idempotent upstream and is never retried here.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson

from services.common.logs import fields
from services.providers.adapters.dashscope_image_translate import (
    ASYNC_HEADER,
    TASKS_PATH,
    DashScopeCall,
    ImageTask,
    UnsupportedModel,
    build_call,
    error_message,
    image_url_of,
    poll_limit,
    task_id_of,
    task_state,
    valid_task_id,
)
from services.providers.adapters.http import (
    MAX_ERROR_BODY_BYTES,
    api_client,
    download,
    result_client,
    upstream_failures,
)
from services.providers.adapters.openai_images_translate import ImageRequestError, sniff_image
from services.providers.errors import (
    UpstreamError,
    client_input_error,
    error_code,
    retry_after_seconds,
    task_error,
)
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1024 * 1024  # a JSON answer carries URLs, never image bytes
# What we accept as a result file; the worker stores at most the same (IMAGE_RESULT_MAX_BYTES).
MAX_RESULT_BYTES = 64 * 1024 * 1024
POLL_BUDGET_FACTOR = 4.0
MAX_POLLS = 1000
MAX_POLL_ERRORS = 3


class DashScopeImageAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = api_client(provider)
        self.files = result_client(provider)
        self.poll_budget_seconds = provider.read_timeout_seconds * POLL_BUDGET_FACTOR
        self.max_polls = poll_limit(
            provider.poll_interval_seconds, self.poll_budget_seconds, MAX_POLLS
        )

    async def close(self) -> None:
        await self.client.aclose()
        await self.files.aclose()

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        try:
            call = build_call(request, self.provider)
        except UnsupportedModel as exc:
            raise UpstreamError("failed", str(exc)) from exc
        except ImageRequestError as exc:
            raise UpstreamError(
                "rejected", f"The upstream cannot do this: {exc}", reason=str(exc)
            ) from exc
        if call.asynchronous:
            task_id = await self.submit(call, request.request_id)
            url = await self.wait(task_id, request.request_id)
        else:
            url = await self.call_sync(call)
        data = await self.download(url, MAX_RESULT_BYTES)
        content_type = sniff_image(data)
        if content_type is None:
            raise UpstreamError("failed", "upstream result is not a PNG, JPEG or WEBP image")
        return GeneratedImage(data=data, content_type=content_type)

    # -- the API ---------------------------------------------------------------------------

    async def _post(self, call: DashScopeCall) -> bytes:
        headers = {"Content-Type": "application/json"}
        if call.asynchronous:
            headers[ASYNC_HEADER] = "enable"
        http_request = self.client.build_request(
            "POST", call.path, content=orjson.dumps(call.body), headers=headers
        )
        with upstream_failures():
            response = await self.client.send(http_request, stream=True)
            try:
                await self._raise_for_status(response)
                return await self._read(response, MAX_ANSWER_BYTES)
            finally:
                await response.aclose()

    async def submit(self, call: DashScopeCall, request_id: str = "") -> str:
        """Create the task; its id. Not idempotent upstream: a second call is a second task."""
        raw = await self._post(call)
        with upstream_failures():
            task_id = task_id_of(raw)
        log.info(
            "dashscope task created",
            extra=fields(provider=self.provider.name, task_id=task_id, job_id=request_id),
        )
        return task_id

    async def call_sync(self, call: DashScopeCall) -> str:
        """A synchronous generation; the result's URL."""
        raw = await self._post(call)
        with upstream_failures():
            return image_url_of(raw)

    async def poll(self, task_id: str) -> ImageTask:
        """One look at the task. Raises UpstreamError when the upstream could not be asked."""
        if not valid_task_id(task_id):
            raise UpstreamError("failed", "not a valid upstream task id")
        with upstream_failures():
            response = await self.client.send(
                self.client.build_request("GET", f"{TASKS_PATH}/{task_id}"), stream=True
            )
            try:
                # A poll is never the client's fault: every error is "failed".
                await self._raise_for_status(response, client_fault_possible=False)
                raw = await self._read(response, MAX_ANSWER_BYTES)
            finally:
                await response.aclose()
            return task_state(raw, self.provider.api_key)

    async def wait(self, task_id: str, request_id: str = "") -> str:
        """Poll until the task ends (bounded, see the module docstring); the result's URL."""
        deadline = time.monotonic() + self.poll_budget_seconds
        errors = 0
        for _ in range(self.max_polls):
            await asyncio.sleep(self.provider.poll_interval_seconds)
            try:
                state = await self.poll(task_id)
            except UpstreamError as exc:
                errors += 1
                log.warning(
                    "dashscope poll failed",
                    extra=fields(task_id=task_id, job_id=request_id, error=exc.message),
                )
                if errors >= MAX_POLL_ERRORS:
                    raise
                continue
            errors = 0
            if state.status == "succeeded":
                return state.image_url
            if state.status == "failed":
                log.warning(
                    "dashscope task failed",
                    extra=fields(
                        task_id=task_id,
                        job_id=request_id,
                        upstream_status=state.upstream_status,
                        code=state.code,
                    ),
                )
                raise task_error(state.code, state.reason, state.error)
            if time.monotonic() >= deadline:
                break
        raise UpstreamError("timeout", "the upstream task did not finish in time")

    async def download(self, url: str, max_bytes: int) -> bytes:
        """The result file; UpstreamError once it passes max_bytes."""
        return b"".join([piece async for piece in download(self.files, url, max_bytes)])

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    async def _read(response: httpx.Response, limit: int, what: str = "upstream answer") -> bytes:
        raw = bytearray()
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) > limit:
                raise UpstreamError("failed", f"{what} exceeds the size limit")
        return bytes(raw)

    async def _raise_for_status(
        self, response: httpx.Response, *, client_fault_possible: bool = True
    ) -> None:
        """http.raise_for_status for DashScope's error body ({"request_id", "code", "message"}):
        400/422 are the client's request ("rejected") when `client_fault_possible`; every
        other error (401/403 keys and permissions, 5xx) is "failed"; 429 is "rate_limited"."""
        if response.status_code < 400:
            return
        raw = b""
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) > MAX_ERROR_BODY_BYTES:
                break
        message = error_message(raw, self.provider.api_key)
        log.warning(
            "upstream error",
            extra=fields(
                provider=self.provider.name,
                status=response.status_code,
                upstream_message=message,
            ),
        )
        if client_fault_possible and response.status_code in (400, 422):
            raise client_input_error(error_code(raw), message)
        if response.status_code == 429:
            raise UpstreamError(
                "rate_limited", "upstream answered HTTP 429", retry_after_seconds(response.headers)
            )
        raise UpstreamError("failed", f"upstream answered HTTP {response.status_code}")
