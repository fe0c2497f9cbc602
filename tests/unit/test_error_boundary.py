"""The gateway's one error boundary: on every public method, and what it turns
errors into (a catalog error as itself; anything unexpected logged and shown as the
edge's plain 500, or a 503 when a backend was unreachable)."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from google.api import httpbody_pb2

from services.common.grpc_server import ServicerContext
from services.gateway import (
    account_api,
    admin_api,
    errors,
    jobs_api,
    server,
    topups_api,
    typed_api,
)
from services.gateway.boundary import MARK, public_stream, public_unary
from services.gateway.errors import ERROR_HEADER, STATUS_HEADER

SERVICERS = [
    server.ChatService,
    server.MessagesService,
    server.ResponsesService,
    server.CatalogService,
    admin_api.AdminService,
    topups_api.TopUpsService,
    account_api.AccountService,
    jobs_api.GenerateService,
    jobs_api.JobsService,
    typed_api.TextService,
    typed_api.MediaService,
]


def rpc_names(servicer: type) -> list[str]:
    """The RPCs of the generated base class the servicer implements."""
    (base,) = (b for b in servicer.__mro__[1:] if b.__name__.endswith("Servicer"))
    return [name for name, _ in inspect.getmembers(base, inspect.isfunction)]


@pytest.mark.parametrize("servicer", SERVICERS, ids=lambda s: s.__name__)
def test_every_public_method_is_behind_the_boundary(servicer: type) -> None:
    names = rpc_names(servicer)
    assert names
    unguarded = [n for n in names if not getattr(getattr(servicer, n), MARK, False)]
    assert unguarded == []


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.trailing: dict[str, str] = {}
        self.code: grpc.StatusCode | None = None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = dict(metadata)

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        raise Aborted(message)

    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.trailing[ERROR_HEADER])["error"]
        return body


class Unreachable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="connect failed to 10.0.0.7:50051",
            debug_error_string="",
        )


class Methods:
    @public_unary
    async def Refuses(self, request: object, context: ServicerContext) -> str:
        raise errors.job_not_found()

    @public_unary
    async def Breaks(self, request: object, context: ServicerContext) -> str:
        raise KeyError("secret internals")

    @public_unary
    async def Unreachable(self, request: object, context: ServicerContext) -> str:
        raise Unreachable()

    @public_stream
    async def Stream(
        self, request: object, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        if request == "after":
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=b"data: 1\n\n")
        raise errors.provider_error()


async def call(method: str, request: object = None) -> Context:
    context = Context()
    with pytest.raises(Aborted):
        await getattr(Methods(), method)(request, cast(ServicerContext, context))
    return context


async def test_a_catalog_error_is_answered_as_itself() -> None:
    context = await call("Refuses")
    assert context.trailing[STATUS_HEADER] == "404"
    assert context.error()["code"] == "not_found"


async def test_an_unexpected_error_is_logged_and_answered_as_a_plain_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="services.gateway.boundary"):
        context = await call("Breaks")
    assert context.trailing[STATUS_HEADER] == "500"
    assert context.code == grpc.StatusCode.INTERNAL
    assert context.error() == {
        "message": "Internal error. Please try again.",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    assert "secret internals" not in json.dumps(context.trailing)
    (record,) = caplog.records
    assert record.exc_info is not None  # the operator gets the traceback


async def test_an_unreachable_backend_is_a_503_without_its_address() -> None:
    context = await call("Unreachable")
    assert context.trailing[STATUS_HEADER] == "503"
    assert "10.0.0.7" not in json.dumps(context.trailing)


async def test_a_stream_answers_before_output_and_goes_in_band_after() -> None:
    before = Context()
    with pytest.raises(Aborted):
        async for _ in Methods().Stream("before", cast(ServicerContext, before)):
            pass
    assert before.trailing[STATUS_HEADER] == "502"

    after = Context()
    items = [i async for i in Methods().Stream("after", cast(ServicerContext, after))]
    assert after.trailing == {}
    assert items[0].data == b"data: 1\n\n"
    assert items[1].data == errors.provider_error().sse_event()
