"""The dashboard's data: the gateway's public Account methods (what /v1/balance,
/v1/usage and /v1/keys transcode), Jobs.ListJobs (GET /v1/jobs) and TopUps
(/v1/topups), called for
the logged-in person with the session token in `x-aiport-session` metadata.
The dashboard is a client of our own API: nothing it shows or changes bypasses it.

The gateway's refusals carry our public error (status and JSON body) in
trailing metadata; they come back here as ApiRefused with that status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Final, cast

import grpc
import orjson
from aiport.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    topups_pb2,
    topups_pb2_grpc,
)
from google.api import httpbody_pb2

from services.common import grpc_server
from services.common.logs import fields

log = logging.getLogger("console")

SESSION_METADATA: Final = "x-aiport-session"  # services/gateway/sessions.py
CALL_TIMEOUT_SECONDS: Final = 10.0
STATUS_TRAILER: Final = "x-aiport-http-status"
ERROR_TRAILER: Final = "x-aiport-error"


class ApiRefused(Exception):
    """The gateway's public error: its HTTP status, message and parameter."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.param = param


class ApiUnavailable(Exception):
    """The gateway did not answer: a 503 page."""


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    return {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in pairs}


def refusal(exc: grpc.aio.AioRpcError) -> Exception:
    """ApiRefused for the gateway's own public errors; ApiUnavailable for the rest
    (and for its 5xx). Pure: reads the trailers."""
    trailers = _trailers(exc)
    status = trailers.get(STATUS_TRAILER, "")
    if not status.isdigit():
        return ApiUnavailable(exc.code().name)
    code = int(status)
    if code >= 500:
        return ApiUnavailable(str(code))
    message, param = "", None
    try:
        error = json.loads(trailers.get(ERROR_TRAILER, "{}")).get("error", {})
        message = str(error.get("message") or "")
        param = error.get("param") if isinstance(error.get("param"), str) else None
    except (ValueError, AttributeError):
        pass
    return ApiRefused(code, message, param)


def _json_body(fields: dict[str, str]) -> httpbody_pb2.HttpBody:
    """A JSON request body, as the edge hands the gateway a POST's."""
    return httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(fields))


class AccountApi:
    def __init__(self, gateway_addr: str) -> None:
        self._channel = grpc_server.channel(gateway_addr)
        self._stub = account_pb2_grpc.AccountStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobsStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        self._topups = topups_pb2_grpc.TopUpsStub(self._channel)

    async def _call(
        self, name: str, request: object, session: str, stub: object | None = None
    ) -> object:
        if stub is None:
            stub = self._jobs if name == "ListJobs" else self._stub
        method = getattr(stub, name)
        try:
            return await method(
                request, timeout=CALL_TIMEOUT_SECONDS, metadata=((SESSION_METADATA, session),)
            )
        except grpc.aio.AioRpcError as exc:
            error = refusal(exc)
            if isinstance(error, ApiUnavailable):
                log.warning("gateway call failed", extra=fields(rpc=name, code=exc.code().name))
            raise error from exc

    async def balance(self, session: str) -> account_pb2.Balance:
        reply = await self._call("GetBalance", account_pb2.GetBalanceRequest(), session)
        return cast(account_pb2.Balance, reply)

    async def usage(self, session: str, query: account_pb2.UsageQuery) -> account_pb2.UsageList:
        return cast(account_pb2.UsageList, await self._call("ListUsage", query, session))

    async def summary(
        self, session: str, query: account_pb2.UsageSummaryQuery
    ) -> account_pb2.UsageReport:
        return cast(account_pb2.UsageReport, await self._call("SummarizeUsage", query, session))

    async def keys(self, session: str) -> account_pb2.KeyList:
        reply = await self._call("ListKeys", account_pb2.ListKeysRequest(), session)
        return cast(account_pb2.KeyList, reply)

    async def create_key(self, session: str, name: str) -> account_pb2.CreatedKey:
        return cast(
            account_pb2.CreatedKey,
            await self._call("CreateKey", _json_body({"name": name}), session),
        )

    async def revoke_key(self, session: str, key_id: str) -> account_pb2.Key:
        request = account_pb2.RevokeKeyRequest(key_id=key_id)
        return cast(account_pb2.Key, await self._call("RevokeKey", request, session))

    async def statement(
        self, session: str, query: account_pb2.StatementQuery
    ) -> account_pb2.Statement:
        """GET /v1/statement for the logged-in person's account."""
        return cast(account_pb2.Statement, await self._call("ListStatement", query, session))

    async def jobs(self, session: str, query: jobs_pb2.ListJobsRequest) -> jobs_pb2.JobList:
        """GET /v1/jobs for the logged-in person's account."""
        return cast(jobs_pb2.JobList, await self._call("ListJobs", query, session))

    async def set_balance_alert(self, session: str, threshold_idr: str) -> account_pb2.Balance:
        """POST /v1/balance/alert: the low-balance email's threshold ("0" turns it off)."""
        body = _json_body({"threshold_idr": threshold_idr})
        return cast(account_pb2.Balance, await self._call("SetBalanceAlert", body, session))

    # Top-ups (/v1/topups): payment orders, served by the gateway for the payments service.

    async def quote_topup(
        self, session: str, amount_idr: str, gateway: str
    ) -> topups_pb2.TopUpQuote:
        """GET /v1/topups/quote: the fee and total of a top-up through `gateway`."""
        query = topups_pb2.TopUpQuoteQuery(amount_idr=amount_idr, gateway=gateway)
        reply = await self._call("QuoteTopUp", query, session, self._topups)
        return cast(topups_pb2.TopUpQuote, reply)

    async def create_topup(self, session: str, amount_idr: str, gateway: str) -> topups_pb2.TopUp:
        """POST /v1/topups: a new payment order; send the person to its payment_url."""
        fields = {"amount_idr": amount_idr, **({"gateway": gateway} if gateway else {})}
        reply = await self._call("CreateTopUp", _json_body(fields), session, self._topups)
        return cast(topups_pb2.TopUp, reply)

    async def topups(self, session: str, query: topups_pb2.TopUpQuery) -> topups_pb2.TopUpList:
        """GET /v1/topups: the account's orders, newest first."""
        reply = await self._call("ListTopUps", query, session, self._topups)
        return cast(topups_pb2.TopUpList, reply)

    async def topup(self, session: str, topup_id: str) -> topups_pb2.TopUp:
        """GET /v1/topups/{id}: one of the account's orders (404 for anyone else's)."""
        request = topups_pb2.GetTopUpRequest(topup_id=topup_id)
        return cast(topups_pb2.TopUp, await self._call("GetTopUp", request, session, self._topups))

    async def topup_receipt(self, session: str, topup_id: str) -> topups_pb2.TopUpReceipt:
        """GET /v1/topups/{id}/receipt: the kwitansi of a paid order (409 before)."""
        request = topups_pb2.GetTopUpRequest(topup_id=topup_id)
        reply = await self._call("GetTopUpReceipt", request, session, self._topups)
        return cast(topups_pb2.TopUpReceipt, reply)

    # Operators (/v1/admin): the gateway checks the session's OPERATOR role.

    async def admin_find(
        self, session: str, query: admin_pb2.FindAccountQuery
    ) -> admin_pb2.AdminAccount:
        reply = await self._call("FindAccount", query, session, self._admin)
        return cast(admin_pb2.AdminAccount, reply)

    async def admin_statement(self, session: str, account_id: str) -> account_pb2.Statement:
        query = admin_pb2.AdminStatementQuery(account_id=account_id, limit="20")
        return cast(
            account_pb2.Statement, await self._call("ListStatement", query, session, self._admin)
        )

    async def admin_usage(self, session: str, account_id: str) -> account_pb2.UsageList:
        query = admin_pb2.AdminUsageQuery(account_id=account_id, limit="20")
        return cast(
            account_pb2.UsageList, await self._call("ListUsage", query, session, self._admin)
        )

    async def admin_jobs(self, session: str, account_id: str) -> jobs_pb2.JobList:
        query = admin_pb2.AdminJobsQuery(account_id=account_id, limit="20")
        return cast(jobs_pb2.JobList, await self._call("ListJobs", query, session, self._admin))

    async def admin_act(
        self, session: str, action: str, account_id: str, body: dict[str, str]
    ) -> admin_pb2.AdminAccount:
        """`action`: CreateAdjustment, DisableAccount or EnableAccount."""
        request = admin_pb2.AccountAction(
            account_id=account_id,
            body=_json_body(body),
        )
        return cast(admin_pb2.AdminAccount, await self._call(action, request, session, self._admin))

    async def close(self) -> None:
        await self._channel.close(None)
