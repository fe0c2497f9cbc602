"""The Ark content-generation task protocol over HTTP (BytePlus ModelArk Seedance, sandbox).

Implements services.providers.media.VideoTaskAdapter: submit a task, poll it, and
stream the result file. Bodies are built and parsed in video_task_translate (pure).

Result files live at the upstream's pre-signed URLs (Ark: TOS, valid 24 h), not
behind its API: they are fetched with a separate client that never sends our key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from services.providers.adapters.http import (
    api_client,
    download,
    raise_for_status,
    read_limited,
    result_client,
    upstream_failures,
)
from services.providers.adapters.video_task_translate import (
    TASKS_PATH,
    create_body,
    task_id_of,
    task_state,
    valid_task_id,
)
from services.providers.errors import UpstreamError
from services.providers.media import TaskState, VideoRequest
from services.providers.routes import Provider

MAX_TASK_ANSWER_BYTES = 1024 * 1024


class VideoTaskAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = api_client(provider)
        self.files = result_client(provider)

    @property
    def poll_interval_seconds(self) -> float:
        return self.provider.poll_interval_seconds

    async def close(self) -> None:
        await self.client.aclose()
        await self.files.aclose()

    async def submit(self, request: VideoRequest) -> str:
        """Create the task. Not idempotent upstream: a caller that retries after a
        timeout may create a second task, so persist the id as soon as it is back."""
        headers = {"Content-Type": "application/json"}
        if request.request_id:
            headers["X-Client-Request-Id"] = request.request_id
        http_request = self.client.build_request(
            "POST", TASKS_PATH, content=orjson.dumps(create_body(request)), headers=headers
        )
        with upstream_failures():
            response = await self.client.send(http_request, stream=True)
            try:
                await raise_for_status(response, self.provider)
                raw = await read_limited(response, MAX_TASK_ANSWER_BYTES)
            finally:
                await response.aclose()
            return task_id_of(raw)

    async def poll(self, task_id: str) -> TaskState:
        """The task's state. A task the upstream no longer knows (404) is a failed task;
        any other error means the upstream could not be asked (UpstreamError)."""
        if not valid_task_id(task_id):
            raise UpstreamError("failed", "not a valid upstream task id")
        with upstream_failures():
            response = await self.client.send(
                self.client.build_request("GET", f"{TASKS_PATH}/{task_id}"), stream=True
            )
            try:
                if response.status_code == 404:
                    return TaskState(
                        status="failed",
                        error="The upstream task no longer exists.",
                        extra={"upstream_status": "not_found"},
                    )
                # A poll is never the client's fault: every error is "failed".
                await raise_for_status(response, self.provider, client_fault_possible=False)
                raw = await read_limited(response, MAX_TASK_ANSWER_BYTES)
            finally:
                await response.aclose()
            return task_state(raw, self.provider.api_key)

    def download(self, url: str, max_bytes: int) -> AsyncIterator[bytes]:
        """The result file in pieces; UpstreamError once it passes max_bytes."""
        return download(self.files, url, max_bytes)
