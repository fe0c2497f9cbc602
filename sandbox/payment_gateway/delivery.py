"""Notifications and callbacks sent the way the gateways send them: an HTTP POST of JSON,
retried after each of the configured delays while the receiver fails, the same body on
every retry, and every attempt kept so tests can wait on them.

Order: a notification to a URL waits until the previous one for the same payment and URL
has had its first answer, so `pending` arrives before `settlement` as it normally does;
retries then run on their own (out-of-order arrival is possible, as with the real ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
import orjson

from sandbox.payment_gateway.common import is_http_url
from sandbox.payment_gateway.xendit import xendit_time
from services.common.logs import fields

log = logging.getLogger("sandbox.payment_gateway")

ATTEMPT_LOG_SIZE = 5000
MAX_IN_FLIGHT = 10_000
MAX_REDIRECTS = 5
ANSWER_READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Notification:
    gateway: str  # "midtrans" | "xendit"
    key: str  # the merchant's id: order_id / external_id
    ref: str  # the gateway's id: transaction_id / invoice id
    url: str
    body: dict[str, object]
    headers: dict[str, str]
    # Retries the gateway makes after an answer with this HTTP status (None: no answer).
    retries_for: Callable[[int | None], int]
    follow_temporary_redirects: bool = False  # 307/308 re-POSTed to Location (Midtrans)


class Notifier:
    def __init__(self, delays: tuple[float, ...], timeout: float) -> None:
        self.delays = delays
        self.timeout = timeout
        self.attempts: deque[dict[str, object]] = deque(maxlen=ATTEMPT_LOG_SIZE)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[tuple[str, str, str], asyncio.Event] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def send(self, notification: Notification) -> None:
        delivery = next(self._ids)
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self._record(notification, delivery, 1, None, "sandbox: too many deliveries in flight")
            return
        chain = (notification.gateway, notification.ref, notification.url)
        previous = self._last.get(chain)
        first_answer = asyncio.Event()
        self._last[chain] = first_answer
        task = asyncio.create_task(self._deliver(notification, delivery, previous, first_answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        notification: Notification,
        delivery: int,
        previous: asyncio.Event | None,
        first_answer: asyncio.Event,
    ) -> None:
        chain = (notification.gateway, notification.ref, notification.url)
        try:
            if previous is not None:
                await previous.wait()
            attempt = 0
            while True:
                attempt += 1
                status, error = await self._post(notification)
                self._record(notification, delivery, attempt, status, error)
                first_answer.set()
                if status is not None and 200 <= status < 300:
                    return
                allowed = min(notification.retries_for(status), len(self.delays))
                if attempt > allowed:
                    return
                await asyncio.sleep(self.delays[attempt - 1])
        finally:
            first_answer.set()
            if self._last.get(chain) is first_answer:
                del self._last[chain]

    async def _post(self, notification: Notification) -> tuple[int | None, str | None]:
        assert self._session is not None, "Notifier.start() was not awaited"
        data = orjson.dumps(notification.body)
        headers = {"Content-Type": "application/json", **notification.headers}
        url = notification.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with self._session.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    await response.content.read(ANSWER_READ_LIMIT)
                    location = response.headers.get("Location", "")
                    if (
                        notification.follow_temporary_redirects
                        and response.status in (307, 308)
                        and location
                    ):
                        url = urljoin(url, location)
                        if not is_http_url(url):
                            return None, "redirect to a non-http(s) URL"
                        continue
                    return response.status, None
            except TimeoutError:
                return None, f"timeout after {self.timeout:g}s"
            except aiohttp.ClientError as exc:
                return None, f"{type(exc).__name__}: {exc}"[:300]
        return None, f"more than {MAX_REDIRECTS} redirects"

    def _record(
        self,
        notification: Notification,
        delivery: int,
        attempt: int,
        status: int | None,
        error: str | None,
    ) -> None:
        # Headers stay out: the Xendit callback token is one of them.
        self.attempts.append(
            {
                "delivery": delivery,
                "gateway": notification.gateway,
                "key": notification.key,
                "ref": notification.ref,
                "url": notification.url,
                "attempt": attempt,
                "status": status,
                "error": error,
                "at": xendit_time(time.time()),
                "body": notification.body,
            }
        )
        log.info(
            "notification",
            extra=fields(
                gateway=notification.gateway,
                key=notification.key,
                url=notification.url,
                delivery=delivery,
                attempt=attempt,
                status=status,
                error=error,
            ),
        )
