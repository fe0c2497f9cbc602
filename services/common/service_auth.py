"""Service identity between our own processes: a per-caller token in gRPC metadata.

Billing moves money, so reaching its port is not enough: each caller presents
its own secret token in `x-aiport-service-token`, and billing allows each
caller only the methods it needs (`BILLING_CALLERS`). Network policies stay the
first layer; this one means a compromised pod or a misrouted port cannot mint
money with another service's rights.

Provisioning (deploy/k8s/README.md, deploy/local/stack.py):
- a caller reads its own token from AIPORT_SERVICE_TOKEN (or a file named by
  AIPORT_SERVICE_TOKEN_FILE) and sends it on its billing channel only;
- billing reads one token per caller from AIPORT_SERVICE_TOKEN_<CALLER>
  (GATEWAY, JOBS, ADMIN, ACCOUNTS, PAYMENTS), or a file named by AIPORT_SERVICE_TOKEN_<CALLER>_FILE,
  and refuses to start without them.
- the jobs service's JobState works the same way with tokens of its own:
  callers send AIPORT_JOBS_TOKEN, jobs reads AIPORT_JOBS_TOKEN_GATEWAY and
  AIPORT_JOBS_TOKEN_WORKER; and the accounts service's (ACCOUNTS_CALLERS).

Tokens are compared in constant time and never logged. Health checks need no
token (kubelets and load balancers have none).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-aiport-service-token"
# On a refusal: tells the caller its own token was refused (a misconfiguration to
# report as such, never to be mistaken for the refusal of a customer's API key).
REFUSED_TRAILER = "x-aiport-service-token-refused"
TOKEN_ENV = "AIPORT_SERVICE_TOKEN"
MIN_TOKEN_CHARS = 32
MAX_TOKEN_CHARS = 512
HEALTH_PREFIX = "/grpc.health.v1.Health/"
BILLING = "/aiport.v1.Billing/"

# Who may call which billing method. aiportctl (and the tests) run as "admin".
_GATEWAY = (
    "Authenticate",
    "AuthorizeHold",
    "CaptureHold",
    "ReleaseHold",
    # Clients' Idempotency-Key answers (services/gateway/idempotency.py).
    "StoreIdempotentAnswer",
    "DropIdempotencyClaim",
    "ClaimIdempotencyKey",
    "GetAccountBalance",
    # A customer's own records and keys (/v1/usage, /v1/statement, /v1/keys).
    "ListUsage",
    "ListLedger",
    "SummarizeUsage",
    "CreateApiKey",
    "ListApiKeys",
    "RevokeApiKey",
    "UpdateApiKey",
    # Operators' /v1/admin: only for a session the gateway resolved with accounts
    # to a user with the OPERATOR role (services/gateway/admin_api.py).
    "GetAccount",
    "Adjust",
    "SetAccountDisabled",
    # A customer's own low-balance alert (/v1/...: the dashboard's setting).
    "SetLowBalanceAlert",
)
_JOBS = ("CaptureHold", "ReleaseHold")
_ADMIN = (
    "CreateAccount",
    "GetAccountBalance",
    "TopUp",
    "Adjust",
    "CreateApiKey",
    "ListApiKeys",
    "RevokeApiKey",
    "Authenticate",
    "PlaceHold",
    "AuthorizeHold",
    "CaptureHold",
    "ReleaseHold",
    "StoreIdempotentAnswer",
    "DropIdempotencyClaim",
    "ClaimIdempotencyKey",
    "ListLedger",
    "SetAccountDisabled",
    "ListUsage",
    "SummarizeUsage",
    "GetAccount",
    "ReverseTopUp",
    "SetLowBalanceAlert",
    "ClaimLowBalanceAlerts",
    "UpdateApiKey",
    # Rate limits of a whole account are an operator's to set, never a customer's.
    "SetAccountRateLimits",
)
# The accounts service opens a billing account for each new user, and mails
# the low-balance alerts it claims (polled).
_ACCOUNTS = ("CreateAccount", "ClaimLowBalanceAlerts")
# The payments service credits paid orders and takes refunds and chargebacks
# back, and reads the account it pays into.
_PAYMENTS = ("TopUp", "ReverseTopUp", "GetAccountBalance", "GetAccount")
BILLING_CALLERS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(BILLING + m for m in _GATEWAY),
    "jobs": frozenset(BILLING + m for m in _JOBS),
    "admin": frozenset(BILLING + m for m in _ADMIN),
    "accounts": frozenset(BILLING + m for m in _ACCOUNTS),
    "payments": frozenset(BILLING + m for m in _PAYMENTS),
}

# The jobs service's JobState decides which hold a job captures: only the
# gateway creates jobs, only workers move them along. Separate tokens from
# billing's, so neither service holds a token that opens the other.
JOB_STATE = "/aiport.v1.JobState/"
JOBS_TOKEN_ENV = "AIPORT_JOBS_TOKEN"
JOBS_CALLERS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(
        JOB_STATE + m for m in ("CreateJob", "AbandonCreation", "GetJob", "ListJobs")
    ),
    "worker": frozenset(
        JOB_STATE + m
        for m in (
            "BeginLeasedAttempt",
            "RenewLease",
            "ReleaseLease",
            "RecordUpstreamTask",
            "GetJob",
        )
    ),
}
JOBS_CALLER_TOKEN_ENV: Mapping[str, str] = {
    "gateway": "AIPORT_JOBS_TOKEN_GATEWAY",
    "worker": "AIPORT_JOBS_TOKEN_WORKER",
}


# The accounts service (people and sessions): the console signs people up and in
# and finds users for operators; only aiportctl ("admin") grants the operator
# role; the gateway resolves the sessions the console passes on. Tokens of its
# own again: callers send AIPORT_ACCOUNTS_TOKEN, accounts reads
# AIPORT_ACCOUNTS_TOKEN_CONSOLE, _ADMIN and _GATEWAY.
ACCOUNTS = "/aiport.v1.Accounts/"
ACCOUNTS_TOKEN_ENV = "AIPORT_ACCOUNTS_TOKEN"
_ACCOUNTS_CONSOLE = (
    "SignUp",
    "ResendVerification",
    "VerifyEmail",
    "LogIn",
    "ResolveSession",
    "LogOut",
    "RequestPasswordReset",
    "ResetPassword",
    "ChangePassword",
    "FindUser",
    "ListMembers",
)
ACCOUNTS_CALLERS: Mapping[str, frozenset[str]] = {
    "console": frozenset(ACCOUNTS + m for m in _ACCOUNTS_CONSOLE),
    "admin": frozenset(ACCOUNTS + m for m in (*_ACCOUNTS_CONSOLE, "SetOperator")),
    # The gateway only learns whose session the console passed on (x-aiport-session).
    # And, for an operator's /v1/admin call, finds accounts' users.
    "gateway": frozenset(ACCOUNTS + m for m in ("ResolveSession", "FindUser", "ListMembers")),
}
ACCOUNTS_CALLER_TOKEN_ENV: Mapping[str, str] = {
    "console": "AIPORT_ACCOUNTS_TOKEN_CONSOLE",
    "admin": "AIPORT_ACCOUNTS_TOKEN_ADMIN",
    "gateway": "AIPORT_ACCOUNTS_TOKEN_GATEWAY",
}


# The payments service (top-up orders): the gateway acts for a customer's own
# orders (every request names the account it authenticated); only aiportctl
# ("admin") lists every account's orders and reconciles. Callers send
# AIPORT_PAYMENTS_TOKEN; payments reads AIPORT_PAYMENTS_TOKEN_GATEWAY and _ADMIN.
PAYMENTS = "/aiport.v1.Payments/"
PAYMENTS_TOKEN_ENV = "AIPORT_PAYMENTS_TOKEN"
_PAYMENTS_GATEWAY = ("Quote", "CreateOrder", "GetOrder", "ListOrders", "GetReceipt")
PAYMENTS_CALLERS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(PAYMENTS + m for m in _PAYMENTS_GATEWAY),
    "admin": frozenset(PAYMENTS + m for m in (*_PAYMENTS_GATEWAY, "Reconcile")),
}
PAYMENTS_CALLER_TOKEN_ENV: Mapping[str, str] = {
    "gateway": "AIPORT_PAYMENTS_TOKEN_GATEWAY",
    "admin": "AIPORT_PAYMENTS_TOKEN_ADMIN",
}

# Where billing reads each caller's token (or from the file named by NAME_FILE).
CALLER_TOKEN_ENV: Mapping[str, str] = {
    "gateway": "AIPORT_SERVICE_TOKEN_GATEWAY",
    "jobs": "AIPORT_SERVICE_TOKEN_JOBS",
    "admin": "AIPORT_SERVICE_TOKEN_ADMIN",
    "accounts": "AIPORT_SERVICE_TOKEN_ACCOUNTS",
    "payments": "AIPORT_SERVICE_TOKEN_PAYMENTS",
}


def check_token(token: str, what: str) -> str:
    token = token.strip()
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not all(
        "!" <= c <= "~" for c in token
    ):
        raise ValueError(f"{what}: a token is {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} printable chars")
    return token


def _read(name: str, environ: Mapping[str, str]) -> str | None:
    """A token from env var `name`, or from the file named by `name`_FILE."""
    value = environ.get(name, "").strip()
    path = environ.get(f"{name}_FILE", "").strip()
    if not value and path:
        value = Path(path).read_text().strip()
    return check_token(value, name) if value else None


def own_token(environ: Mapping[str, str] | None = None, name: str = TOKEN_ENV) -> str | None:
    """This process's token for calling billing (None: not configured)."""
    return _read(name, os.environ if environ is None else environ)


def caller_tokens(
    environ: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every caller's token, as billing (or, with JOBS_CALLER_TOKEN_ENV, jobs)
    needs them; ValueError if any is missing."""
    environ = os.environ if environ is None else environ
    names = CALLER_TOKEN_ENV if names is None else names
    tokens: dict[str, str] = {}
    for caller, name in names.items():
        token = _read(name, environ)
        if token is None:
            raise ValueError(f"{name} (or {name}_FILE) is not set")
        tokens[caller] = token
    if len(set(tokens.values())) != len(tokens):
        raise ValueError("each caller needs its own service token")
    return tokens


@dataclass(frozen=True, slots=True)
class Decision:
    caller: str | None
    code: grpc.StatusCode | None  # None: allowed
    message: str = ""


def decide(
    method: str,
    presented: str | None,
    tokens: Mapping[str, str],
    callers: Mapping[str, frozenset[str]],
) -> Decision:
    """Who presented this token, and may they call `method`? (pure)"""
    if method.startswith(HEALTH_PREFIX):
        return Decision(None, None)
    caller = None
    given = (presented or "").encode("utf-8", "replace")
    for name, token in tokens.items():
        # Every token is compared, so the time taken does not say which matched.
        if hmac.compare_digest(given, token.encode()) and presented:
            caller = name
    if caller is None:
        return Decision(None, grpc.StatusCode.UNAUTHENTICATED, "a valid service token is required")
    if method not in callers.get(caller, frozenset()):
        return Decision(caller, grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not call this")
    return Decision(caller, None)


def _presented(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == TOKEN_HEADER:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls without a caller's valid token (health checks excepted)."""

    def __init__(
        self, tokens: Mapping[str, str], callers: Mapping[str, frozenset[str]] = BILLING_CALLERS
    ) -> None:
        self._tokens = dict(tokens)
        self._callers = callers

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        method = handler_call_details.method
        decision = decide(
            method,
            _presented(handler_call_details.invocation_metadata),
            self._tokens,
            self._callers,
        )
        if decision.code is None:
            return await continuation(handler_call_details)
        # The token is never logged; the method and the caller (if known) are.
        log.warning(
            "service call refused",
            extra={"fields": {"method": method, "caller": decision.caller or "unknown"}},
        )
        code, message = decision.code, decision.message

        async def refuse(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(code, message, trailing_metadata=((REFUSED_TRAILER, "1"),))

        return grpc.unary_unary_rpc_method_handler(refuse)


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The token as call metadata (for grpc_server.channel: every call carries it)."""
    return ((TOKEN_HEADER, token),) if token else ()


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncTokenClient(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str | None) -> None:
        self._metadata = metadata(token)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        merged = (*(details.metadata or ()), *self._metadata)
        return continuation(
            _Details(
                details.method,
                details.timeout,
                merged,
                details.credentials,
                details.wait_for_ready,
                getattr(details, "compression", None),
            ),
            request,
        )


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """A sync channel whose every call presents `token` (aiportctl, make run, tests)."""
    return grpc.intercept_channel(channel, _SyncTokenClient(token))
