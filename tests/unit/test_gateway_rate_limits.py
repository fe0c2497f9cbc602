"""The gateway's own rate limits: which numbers apply, what the script's answer
means, the headers and the 429, what happens without Redis, and the boundary
sending a call's headers once (with its first message, or with its error)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import grpc
import pytest
from aiport.v1 import billing_pb2
from google.api import httpbody_pb2

from services.common.fixed_window import millis_left
from services.common.grpc_server import ServicerContext
from services.common.metrics import RATE_LIMIT_UNAVAILABLE
from services.gateway import call_state, rate_limits
from services.gateway.boundary import add_response_header, public_stream, public_unary
from services.gateway.errors import ERROR_HEADER, RETRY_AFTER_HEADER, STATUS_HEADER
from services.gateway.messages_render import anthropic_error
from services.gateway.rate_limits import (
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    Lease,
    Limits,
    Refused,
)

DEFAULTS = Limits(key_rpm=60, key_concurrent=5, account_rpm=100, account_concurrent=8)
LEASE = Lease("m", "k", "a")


def test_a_principals_non_zero_limits_replace_the_defaults() -> None:
    assert rate_limits.effective(DEFAULTS, billing_pb2.RateLimits()) == DEFAULTS
    own = billing_pb2.RateLimits(key_requests_per_minute=7, account_concurrent_requests=2)
    assert rate_limits.effective(DEFAULTS, own) == Limits(7, 5, 100, 2)


def test_defaults_come_from_the_environment_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert rate_limits.defaults_from_env() == rate_limits.DEFAULT_LIMITS
    monkeypatch.setenv("AIPORT_KEY_REQUESTS_PER_MINUTE", "3")
    monkeypatch.setenv("AIPORT_ACCOUNT_CONCURRENT_REQUESTS", "9")
    assert rate_limits.defaults_from_env() == Limits(
        3,
        rate_limits.DEFAULT_LIMITS.key_concurrent,
        rate_limits.DEFAULT_LIMITS.account_rpm,
        9,
    )
    monkeypatch.setenv("AIPORT_KEY_CONCURRENT_REQUESTS", "0")
    with pytest.raises(ValueError, match="rate limit"):
        rate_limits.defaults_from_env()


@pytest.mark.parametrize(
    ("millis", "text"),
    [(0, "0ms"), (20, "20ms"), (999, "999ms"), (1000, "1s"), (1001, "2s"), (59_500, "1m0s")],
)
def test_reset_reads_as_openai_writes_it(millis: int, text: str) -> None:
    assert rate_limits.reset_text(millis) == text
    assert rate_limits.reset_text(6 * 60_000) == "6m0s"


def test_the_headers_name_the_limit_the_client_meets_first() -> None:
    # The key has 60 - 10 = 50 left, the account 100 - 90 = 10: the account's.
    assert dict(rate_limits.rate_headers(DEFAULTS, 10, 90, 1500)) == {
        LIMIT_HEADER: "100",
        REMAINING_HEADER: "10",
        RESET_HEADER: "2s",
    }
    assert dict(rate_limits.rate_headers(DEFAULTS, 60, 60, 30))[REMAINING_HEADER] == "0"
    assert dict(rate_limits.rate_headers(DEFAULTS, 60, 60, 30))[LIMIT_HEADER] == "60"


def test_an_admitted_call_keeps_its_lease_and_gets_the_headers() -> None:
    now = 120.25  # 59.75 s before the minute turns
    admission = rate_limits.decide([0, 3, 3], DEFAULTS, now, LEASE)
    assert admission.refused is None and admission.lease == LEASE
    assert dict(admission.headers) == {
        LIMIT_HEADER: "60",
        REMAINING_HEADER: "57",
        RESET_HEADER: "1m0s",
    }
    assert millis_left(now, 60) == 59_750


@pytest.mark.parametrize(
    ("code", "named", "retry_after"),
    [
        (1, "this API key's limit of 60 requests per minute", "41"),
        (2, "this account's limit of 100 requests per minute", "41"),
        (3, "this API key's limit of 5 concurrent requests", "1"),
        (4, "this account's limit of 8 concurrent requests", "1"),
    ],
)
def test_a_refusal_is_a_retryable_429_naming_its_limit(
    code: int, named: str, retry_after: str
) -> None:
    # 40.5 s before the minute turns: the wait is rounded up.
    admission = rate_limits.decide([code, 60, 10], DEFAULTS, 79.5, LEASE)
    assert admission.lease is None
    error = admission.refused
    assert error is not None
    assert (error.status, error.code, error.type) == (
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    )
    assert named in error.message and error.should_retry is True
    assert dict(error.trailing_metadata())[RETRY_AFTER_HEADER] == retry_after
    # Messages answers it in Anthropic's shape, still a 429.
    shaped = anthropic_error(error)
    assert shaped.status == 429 and shaped.body().startswith(b'{"type":"error"')
    assert json.loads(shaped.body())["error"]["type"] == "rate_limit_error"


def test_without_redis_the_call_is_let_through_and_counted() -> None:
    def count(kind: str) -> float:
        return RATE_LIMIT_UNAVAILABLE.labels(kind, "let_through")._value.get()  # type: ignore[attr-defined, no-any-return]

    before = {k: count(k) for k in ("requests_per_minute", "concurrent_requests")}
    admission = rate_limits.unavailable(DEFAULTS, 30.0)
    assert admission.refused is None and admission.lease is None
    assert dict(admission.headers)[REMAINING_HEADER] == "60"
    for kind, value in before.items():
        assert count(kind) == value + 1


class _Redis:
    """A Redis that cannot be reached, as the client reports it."""

    def register_script(self, _: str) -> Any:
        async def run(**_: Any) -> Any:
            raise ConnectionRefusedError("connection refused")

        return run

    async def aclose(self) -> None:
        return None


def test_the_limiter_lets_calls_through_when_redis_is_unreachable() -> None:
    limiter = rate_limits.Limiter(cast(Any, _Redis()), "t", DEFAULTS)

    async def run() -> rate_limits.Admission:
        try:
            return await limiter.admit("acct", "key", billing_pb2.RateLimits(), 10.0)
        finally:
            await limiter.close()

    admission = asyncio.run(run())
    assert admission.refused is None and admission.lease is None


# -- the boundary sends a call's headers once ---------------------------------------------


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.initial: list[tuple[tuple[str, str], ...]] = []
        self.trailing: dict[str, str] = {}

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial.append(metadata)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = dict(metadata)

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(message)


HEADERS = ((LIMIT_HEADER, "60"), (REMAINING_HEADER, "59"), (RESET_HEADER, "1s"))


class Service:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.ended: list[str] = []

    def _limited(self) -> None:
        state = call_state.current()
        assert state is not None
        for name, value in HEADERS:
            add_response_header(name, value)
        state.at_end(lambda: self.ended.append("lease"))
        if self.fail:
            raise rate_limits.refusal(Refused.KEY_RPM, DEFAULTS, 3)

    @public_unary
    async def Unary(self, request: object, context: ServicerContext) -> str:
        self._limited()
        return "ok"

    @public_stream
    async def Stream(
        self, request: object, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        self._limited()
        yield httpbody_pb2.HttpBody(data=b"one")
        yield httpbody_pb2.HttpBody(data=b"two")


def test_a_unary_success_sends_the_headers_once_and_gives_the_lease_back() -> None:
    service, context = Service(fail=False), Context()

    async def call() -> str:
        return await service.Unary(None, cast(ServicerContext, context))

    assert asyncio.run(call()) == "ok"
    assert context.initial == [HEADERS] and service.ended == ["lease"]


def test_a_stream_sends_the_headers_with_its_first_message() -> None:
    service, context = Service(fail=False), Context()

    async def read() -> list[bytes]:
        return [m.data async for m in service.Stream(None, cast(ServicerContext, context))]

    assert asyncio.run(read()) == [b"one", b"two"]
    assert context.initial == [HEADERS] and service.ended == ["lease"]


def test_a_stream_whose_client_leaves_gives_the_lease_back() -> None:
    service, context = Service(fail=False), Context()

    async def leave() -> None:
        stream = cast(AsyncGenerator[Any], service.Stream(None, cast(ServicerContext, context)))
        await anext(stream)
        await stream.aclose()  # what grpc does when the client goes

    asyncio.run(leave())
    assert service.ended == ["lease"]


@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_a_refusal_carries_the_headers_in_its_trailers(kind: str) -> None:
    service, context = Service(fail=True), Context()

    async def call() -> None:
        ctx = cast(ServicerContext, context)
        if kind == "unary":
            await service.Unary(None, ctx)
        else:
            async for _ in service.Stream(None, ctx):
                pass

    with pytest.raises(Aborted):
        asyncio.run(call())
    assert context.initial == []  # trailers-only: the edge reads them as headers
    assert context.trailing[STATUS_HEADER] == "429"
    assert context.trailing[RETRY_AFTER_HEADER] == "3"
    assert context.trailing[LIMIT_HEADER] == "60"
    assert json.loads(context.trailing[ERROR_HEADER])["error"]["code"] == "rate_limit_exceeded"
    assert service.ended == ["lease"]
