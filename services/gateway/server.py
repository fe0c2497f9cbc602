"""The gateway's public services: Chat, Catalog and Account.

Every public call authenticates with billing, validates, and for chat places
a hold for the worst case before the upstream call, captures the real cost
afterwards and releases the rest (or all of it, when the upstream failed
before any output).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias, TypeVar, cast

import grpc
import orjson
from aiport.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    billing_pb2,
    billing_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    chat_pb2_grpc,
    messages_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    responses_pb2_grpc,
)
from google.api import httpbody_pb2

from services.common import requestctx, service_auth
from services.common.auth_failures import CLIENT_THROTTLED_HEADER
from services.common.billing_errors import capture_within_hold
from services.common.canonical_chat import from_chat_body
from services.common.catalog import (
    CLIP_FORMATS,
    Catalog,
    ImageModel,
    ReferenceClipRules,
    TextModel,
    VideoModel,
)
from services.common.grpc_server import MAX_MESSAGE_BYTES, ServicerContext, request_metadata
from services.common.money import micros_to_idr
from services.common.usage import Usage
from services.common.wire import (
    ANTHROPIC_MESSAGES,
    RETRY_AFTER_KEY,
    UPSTREAM_FAILURE_KEY,
    completed_events,
)
from services.gateway import bad_keys, call_state, errors, idempotency, key_refusals, sessions
from services.gateway.boundary import (
    add_response_header,
    anthropic_stream,
    anthropic_unary,
    public_stream,
    public_unary,
)
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.errors import PublicError
from services.gateway.generate_request import offered
from services.gateway.holds import HoldKey, HoldKind, HoldPurpose, new_call_id
from services.gateway.messages_render import message_id
from services.gateway.messages_request import parse_messages_request
from services.gateway.pricing import hold_micros, prompt_token_bound
from services.gateway.quotes import quote
from services.gateway.rate_limits import Limiter
from services.gateway.renderers import (
    ChatCompletionsRenderer,
    ClientRenderer,
    MessagesRenderer,
    ResponsesRenderer,
)
from services.gateway.responses_render import ResponseFrame, response_id
from services.gateway.responses_request import parse_responses_request
from services.gateway.settlement import (
    CLIENT_LEFT,
    OUTPUT_DELIVERED,
    STREAM_ENDED,
    Abandoned,
    ChatSettlement,
    Decision,
    Release,
    UpstreamFailed,
    UsageReported,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bounded waits on our own services; the upstream's own timeouts live in providers.
BILLING_TIMEOUT_SECONDS = 10.0
UPSTREAM_CALL_TIMEOUT_SECONDS = 900.0
# A chat's hold lives billing's default TTL (AIPORT_HOLD_TTL_SECONDS, one hour),
# longer than any call; billing's sweeper then releases it: the backstop if the
# gateway dies before settling. Operators (and the fault tests) set it there.
SETTLE_ATTEMPTS = 4
# Before looking up a hold whose authorization answer was lost.
LOST_HOLD_DELAY_SECONDS = 0.2
BEARER = "bearer "
ACCOUNTS_TIMEOUT_SECONDS = 5.0
SESSION_REFUSED = "The session has ended or is not valid. Log in again."
# The usage record's name for POST /v1/chat/completions.
CHAT_ENDPOINT = "chat.completions"
MESSAGES_ENDPOINT = "messages"
RESPONSES_ENDPOINT = "responses"
# What a whole text answer cost, in IDR (an exact decimal): what billing captured.
COST_HEADER = "x-aiport-cost-idr"
# The largest Messages body also sent natively: with its canonical copy (about as
# large) it stays well inside one gRPC message to providers.
NATIVE_BODY_MAX_BYTES = MAX_MESSAGE_BYTES // 4


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: str
    key_id: str
    request_id: str  # for correlation only: the client may choose it
    # Idempotency key of this call's hold (with its kind) and job: made here, never by
    # the client (a reused x-request-id must not share, or collide with, another call's).
    call_id: str
    scopes: tuple[str, ...] = ()
    # A person's email when the caller is the console's session ("" for a key):
    # the payer on a top-up's payment page and receipt.
    email: str = ""


def _trailer(exc: grpc.aio.AioRpcError, name: str) -> str | None:
    # At run time this is a sequence of (key, value) pairs; grpc-stubs says otherwise.
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _outcome_unknown(cause: BaseException | None) -> bool:
    """A billing call that may or may not have been carried out."""
    return isinstance(cause, grpc.aio.AioRpcError) and cause.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    )


def _is_upstream_failure(exc: grpc.aio.AioRpcError) -> bool:
    return _trailer(exc, UPSTREAM_FAILURE_KEY) is not None


def _retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    raw = _trailer(exc, RETRY_AFTER_KEY) or ""
    return int(raw) if raw.isascii() and raw.isdigit() else None


class Backends:
    """The gateway's clients for billing, providers and accounts (sessions), with
    error translation."""

    def __init__(
        self,
        billing: grpc.aio.Channel,
        providers: grpc.aio.Channel,
        accounts: grpc.aio.Channel | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.billing = billing_pb2_grpc.BillingStub(billing)
        # None: no rate limits (unit tests that are not about them).
        self.limiter = limiter
        self.providers = providers_pb2_grpc.ProvidersStub(providers)
        # None: no session auth (every caller needs an API key).
        self.accounts = None if accounts is None else accounts_pb2_grpc.AccountsStub(accounts)
        # Settlement tasks that must outlive a cancelled request.
        self._background: set[asyncio.Task[Any]] = set()

    async def billing_call(
        self,
        call: Callable[..., Awaitable[T]],
        request: object,
        expected: tuple[grpc.StatusCode, ...] = (),
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> T:
        """Call billing; codes in `expected` are re-raised for the caller to handle,
        anything else becomes a clean 503 (and a log line for the operator)."""
        try:
            if metadata:
                return await call(request, timeout=BILLING_TIMEOUT_SECONDS, metadata=metadata)
            return await call(request, timeout=BILLING_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in expected:
                raise
            log.error(
                "billing call failed",
                extra={"fields": {"code": exc.code().name, "detail": exc.details()}},
            )
            raise errors.service_unavailable(
                "Billing is temporarily unavailable. Please try again."
            ) from exc

    @staticmethod
    def api_key(context: ServicerContext) -> str:
        """The Bearer key of the call (401 when there is none)."""
        header = request_metadata(context, "authorization") or ""
        key = header[len(BEARER) :].strip()
        if header[: len(BEARER)].lower() != BEARER or not key:
            raise errors.unauthorized()
        return key

    @staticmethod
    def request_id(context: ServicerContext) -> str:
        """The call's request id: the one the server interceptor made current (the
        edge's x-request-id, cleaned), so logs, holds and every hop share it."""
        return requestctx.current() or requestctx.ensure(request_metadata(context, "x-request-id"))

    async def authenticate(self, context: ServicerContext) -> Caller:
        """The caller of a read or key-management method: an API key, or (without
        an Authorization header) the console's session metadata (sessions.py)."""
        if request_metadata(context, "authorization") is None:
            session = request_metadata(context, sessions.SESSION_METADATA)
            if session is not None:
                return await self._session_caller(context, session)
        key = self.api_key(context)
        # A key locked out by repeated failures is refused (429) before billing.
        attempt = bad_keys.begin(context.invocation_metadata(), context.peer(), key)
        try:
            principal = await self.billing_call(
                self.billing.Authenticate,
                billing_pb2.AuthenticateRequest(api_key=key),
                expected=(grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT),
                metadata=attempt.billing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise self._refused(attempt, exc) from exc
        await self.limit(principal)
        return Caller(
            principal.account_id,
            principal.key_id,
            self.request_id(context),
            new_call_id(),
            tuple(principal.scopes),
        )

    async def _session_caller(self, context: ServicerContext, token: str) -> Caller:
        resolved = await self._resolve_session(token)
        account_id = sessions.acting_account(resolved)
        if account_id is None:
            raise errors.unauthorized(SESSION_REFUSED)
        return Caller(
            account_id,
            "",
            self.request_id(context),
            new_call_id(),
            sessions.session_scopes(resolved.membership_role),
            email=resolved.user.email,
        )

    async def operator(self, context: ServicerContext) -> str:
        """The user id of the operator making an admin call. Operators act as
        people, through the console's session, so that every change names one:
        no session is a 401; an API key (even with a session) or a session whose
        user lacks the OPERATOR role is a 403."""
        session = request_metadata(context, sessions.SESSION_METADATA)
        if request_metadata(context, "authorization") is not None:
            raise errors.operators_only()
        if session is None:
            raise errors.unauthorized("Log in to the console as an operator.")
        resolved = await self._resolve_session(session)
        if not sessions.is_operator(resolved):
            raise errors.operators_only()
        return resolved.user.user_id

    async def _resolve_session(self, token: str) -> accounts_pb2.ResolvedSession:
        if self.accounts is None or not sessions.plausible_token(token):
            raise errors.unauthorized(SESSION_REFUSED)
        try:
            resolved: accounts_pb2.ResolvedSession = await self.accounts.ResolveSession(
                accounts_pb2.ResolveSessionRequest(session_token=token),
                timeout=ACCOUNTS_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                raise errors.unauthorized(SESSION_REFUSED) from exc
            log.error("accounts call failed", extra={"fields": {"code": exc.code().name}})
            raise errors.service_unavailable(
                "Accounts are temporarily unavailable. Please try again."
            ) from exc
        return resolved

    async def authorize_hold(
        self,
        context: ServicerContext,
        amount_micros: int,
        purpose: HoldPurpose,
        insufficient: Callable[[], PublicError],
        ttl_seconds: int = 0,
        claim: idempotency.ClientClaim | None = None,
    ) -> tuple[Caller, billing_pb2.Hold]:
        """Authenticate and reserve the worst-case cost in one billing call (the
        purpose's model names the revenue account the capture credits). With a
        client's Idempotency-Key (`claim`), billing claims it with the hold; a key
        already claimed places nothing and raises idempotency.Replay (its stored
        answer) or the 409/422 a repeat gets."""
        key = self.api_key(context)
        request_id = self.request_id(context)
        hold_key = HoldKey.new(purpose.kind)
        attempt = bad_keys.begin(context.invocation_metadata(), context.peer(), key)
        request = billing_pb2.AuthorizeHoldRequest(
            api_key=key,
            amount_micros=amount_micros,
            idempotency_key=str(hold_key),
            description=purpose.description(request_id),
            ttl_seconds=ttl_seconds,
            model=purpose.model,
            origin=billing_pb2.CallOrigin(
                endpoint=purpose.endpoint, request_id=request_id, job_id=purpose.job_id
            ),
            client_idempotency=None if claim is None else claim.to_proto(),
        )
        try:
            authorized: billing_pb2.AuthorizedHold = await self.billing_call(
                self.billing.AuthorizeHold,
                request,
                expected=(
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.PERMISSION_DENIED,  # the key's model allowlist
                ),
                metadata=attempt.billing_metadata(),
            )
        except asyncio.CancelledError:
            # No answer (this call was cancelled or its deadline passed): a hold may
            # exist that nobody knows the id of. Find it by its key and release it.
            self.settle_later(self.release_lost_hold(request, attempt))
            raise
        except PublicError as error:
            if _outcome_unknown(error.__cause__):
                self.settle_later(self.release_lost_hold(request, attempt))
            raise
        except grpc.aio.AioRpcError as exc:
            # The key's own controls (spend cap, allowlist, expiry) say why first.
            refused = key_refusals.public_error(exc, purpose)
            if refused is not None:
                raise refused from exc
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise insufficient() from exc
            raise self._refused(attempt, exc) from exc
        if authorized.HasField("earlier"):
            raise idempotency.answer_to(authorized.earlier)
        principal = authorized.principal
        try:
            await self.limit(principal)
        except BaseException:
            # Refused (or cancelled meanwhile): no money moves for this call, and a
            # client's Idempotency-Key it claimed is free for the retry.
            self.settle_later(self.release(authorized.hold.hold_id, "refused by a rate limit"))
            if claim is not None:
                self.settle_later(self.drop_claim(str(hold_key)))
            raise
        caller = Caller(
            principal.account_id,
            principal.key_id,
            request_id,
            hold_key.call_id,
            tuple(principal.scopes),
        )
        return caller, authorized.hold

    async def limit(self, principal: billing_pb2.Principal) -> None:
        """Apply the key's and account's rate limits to this call, once per call:
        the headers join its response, its lease goes back when it ends, and a
        refusal is raised (a 429). Checked after billing named the caller: a
        paid call's refusal then costs one release, and an admitted call (the
        common case) no extra billing round trip."""
        state = call_state.current()
        if self.limiter is None or state is None or state.limited or not principal.key_id:
            return
        state.limited = True
        admission = await self.limiter.admit(
            principal.account_id, principal.key_id, principal.rate_limits, time.time()
        )
        for name, value in admission.headers:
            add_response_header(name, value)
        lease, limiter = admission.lease, self.limiter
        if lease is not None:
            state.at_end(lambda: limiter.release(lease))
        if admission.refused is not None:
            raise admission.refused

    @staticmethod
    def _refused(attempt: bad_keys.Attempt, exc: grpc.aio.AioRpcError) -> PublicError:
        """A failed authentication: a 401, or a 429 when billing reports that this
        key or client is locked out (counted across every gateway replica)."""
        # grpc.aio.Metadata at run time: (key, value) pairs (grpc-stubs says otherwise).
        trailing = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
        if any(key == service_auth.REFUSED_TRAILER for key, _ in trailing):
            # Billing refused the gateway's own service token: our misconfiguration,
            # not the customer's key, so no strike against it.
            log.error("billing refused the gateway's service token")
            return errors.service_unavailable(
                "Billing is temporarily unavailable. Please try again."
            )
        wait = attempt.failed(trailing)
        return bad_keys.too_many_attempts(wait) if wait > 0 else errors.unauthorized()

    def settle_later(self, coro: Coroutine[object, object, T]) -> asyncio.Task[T]:
        """Run `coro` in a task of its own: cancelling the caller does not cancel it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def drain(self, seconds: float) -> None:
        """On shutdown: give settlements and relays in flight up to `seconds`."""
        pending = set(self._background)
        if pending:
            log.info("waiting for settlements", extra={"fields": {"tasks": len(pending)}})
            await asyncio.wait(pending, timeout=seconds)

    async def release_lost_hold(
        self, request: billing_pb2.AuthorizeHoldRequest, auth: bad_keys.Attempt
    ) -> None:
        """Release the hold of an AuthorizeHold whose answer was lost. The call is
        idempotent per key: asked again, billing returns the hold it placed (or
        places it now, if the first never arrived), which is then released.
        RESOURCE_EXHAUSTED means no hold has the key and none could be placed."""
        await asyncio.sleep(LOST_HOLD_DELAY_SECONDS)  # let a twin still in flight land
        key = request.idempotency_key
        # The same client, and never a second bad-key strike for one call.
        metadata = (*auth.billing_metadata(), (CLIENT_THROTTLED_HEADER, "1"))
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                authorized: billing_pb2.AuthorizedHold = await self.billing.AuthorizeHold(
                    request,
                    timeout=BILLING_TIMEOUT_SECONDS,
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                log.info(
                    "no hold to release for a lost authorization",
                    extra={"fields": {"idempotency_key": key, "code": exc.code().name}},
                )
                return
            hold_id = authorized.hold.hold_id
            if not hold_id:  # the client's key is another call's now: nothing of ours
                return
            await self.release(hold_id, "call ended before its hold was known")
            if request.HasField("client_idempotency"):
                await self.drop_claim(key)
            log.warning(
                "hold of a lost authorization released",
                extra={"fields": {"idempotency_key": key, "hold_id": hold_id}},
            )
            return
        log.error(
            "lost authorization not resolved; its hold (if any) is left to expire",
            extra={"fields": {"idempotency_key": key}},
        )

    async def _settle_shielded(
        self, name: str, call: Callable[[], Awaitable[T]], hold_id: str
    ) -> T | None:
        """Settle in a task of its own: a client leaving mid-capture cancels the
        request's task, and must not cancel the capture of what it already got.
        Billing's answer, or None when it refused or never answered."""
        return await asyncio.shield(self.settle_later(self._settle(name, call, hold_id)))

    async def _settle(self, name: str, call: Callable[[], Awaitable[T]], hold_id: str) -> T | None:
        # Capture and release are idempotent per hold, so retrying is safe.
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    log.error(
                        f"{name} refused",
                        extra={"fields": {"hold_id": hold_id, "detail": exc.details()}},
                    )
                    return None
                await asyncio.sleep(0.2 * 2**attempt)
        # The hold expires and is released by billing: the customer is not charged.
        log.error(f"{name} failed; hold left to expire", extra={"fields": {"hold_id": hold_id}})
        return None

    async def capture(
        self,
        hold_id: str,
        amount: int,
        description: str,
        provider: str = "",
        usage: Usage | None = None,
        latency_ms: int = 0,
    ) -> int:
        """Capture `amount` of the hold: what billing charged (the settled hold says;
        `amount` itself when billing's answer never came: the capture may yet land)."""
        request = billing_pb2.CaptureHoldRequest(
            hold_id=hold_id,
            amount_micros=amount,
            description=description,
            provider=provider,
            usage=usage.to_proto() if usage is not None else None,
            latency_ms=latency_ms,
        )
        settled = await self._settle_shielded(
            "capture",
            lambda: capture_within_hold(self.billing, request, BILLING_TIMEOUT_SECONDS, {}),
            hold_id,
        )
        return amount if settled is None else settled.captured_micros

    async def keep_answer(self, owner: str, answer: idempotency.StoredAnswer) -> None:
        """Store the answer of the call that claimed a client's key (`owner`: its
        hold's key), for repeats to replay. Never raises: if billing cannot be
        reached the claim stays in flight (repeats get 409) until it lapses."""
        request = billing_pb2.StoreIdempotentAnswerRequest(
            owner=owner,
            http_status=answer.http_status,
            content_type=answer.content_type,
            body=answer.body,
        )
        await self._settle_shielded(
            "storing an idempotent answer",
            lambda: self.billing.StoreIdempotentAnswer(request, timeout=BILLING_TIMEOUT_SECONDS),
            owner,
        )

    async def drop_claim(self, owner: str) -> None:
        """Free a client's key whose call failed before any money moved."""
        request = billing_pb2.DropIdempotencyClaimRequest(owner=owner)
        await self._settle_shielded(
            "dropping an idempotency claim",
            lambda: self.billing.DropIdempotencyClaim(request, timeout=BILLING_TIMEOUT_SECONDS),
            owner,
        )

    async def release(self, hold_id: str, reason: str, latency_ms: int = 0) -> None:
        request = billing_pb2.ReleaseHoldRequest(
            hold_id=hold_id, reason=reason, latency_ms=latency_ms
        )
        await self._settle_shielded(
            "release",
            lambda: self.billing.ReleaseHold(request, timeout=BILLING_TIMEOUT_SECONDS),
            hold_id,
        )


def _upstream_error(exc: grpc.aio.AioRpcError) -> PublicError:
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.invalid_request(exc.details() or "The upstream rejected the request.")
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.model_unavailable()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _is_upstream_failure(exc):
        # Every route answered 429: retryable, and nothing is charged.
        return errors.upstream_rate_limited(_retry_after(exc))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or _is_upstream_failure(exc):
        return errors.provider_error()
    return errors.service_unavailable("aiport is temporarily unavailable. Please try again.")


# The end of a relay's output (after its last message or error).
_END = None
RelayItem: TypeAlias = httpbody_pb2.HttpBody | PublicError | None


class _ProvidersBrokeProtocol(Exception):
    """Providers sent events in an order its contract rules out."""


class UpstreamCall:
    """A chat's call to providers, read by the relay as events (ChatCompletion's
    contract) and cancellable. A non-stream chat makes one unary CompleteChat call
    (a third of a one-message stream's gRPC work) and reads it as the stream's
    completion and usage events; providers older than this gateway (a rolling
    deploy) answer UNIMPLEMENTED, and the streaming form is used instead."""

    def __init__(
        self,
        providers: providers_pb2_grpc.ProvidersStub,
        request: providers_pb2.ChatCompletionRequest,
    ) -> None:
        self._providers = providers
        self._request = request
        self._call: grpc.aio.Call | None = None

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def events(self) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        if not self._request.stream:
            unary = self._providers.CompleteChat(
                self._request, timeout=UPSTREAM_CALL_TIMEOUT_SECONDS
            )
            self._call = unary
            try:
                done: providers_pb2.ChatCompleted = await unary
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
            else:
                for event in completed_events(done):
                    yield event
                return
        stream = self._providers.ChatCompletion(
            self._request, timeout=UPSTREAM_CALL_TIMEOUT_SECONDS
        )
        self._call = stream
        async for event in stream:
            yield event


class ChatRelay:
    """One chat's upstream call and the settlement of its hold, in a task of
    its own that the client cannot cancel.

    The relay reads the upstream's events and passes the output on; what each
    event means for the hold is decided by the call's settlement (a pure state
    machine, services/gateway/settlement.py), and the relay carries the decision
    out: a capture or a release in billing. A client that leaves (disconnects,
    or its deadline expires) only stops receiving: the upstream call goes on
    (bounded by its own timeout) and is settled when it ends."""

    def __init__(
        self,
        backends: Backends,
        call: ChatCall,
        hold: billing_pb2.Hold,
        upstream: UpstreamCall,
        fields: dict[str, object],
        started: float,
        renderer: ClientRenderer,
        idempotency_owner: str = "",
    ) -> None:
        self.backends = backends
        # With a client's Idempotency-Key: its claim's owner (the hold's key), and
        # the answer as it goes out, stored before its last part is sent.
        self.idempotency_owner = idempotency_owner
        self.record = idempotency.AnswerRecord() if idempotency_owner else None
        self.renderer = renderer
        self.started = started  # time.monotonic() when the request arrived
        self.call = call
        self.hold = hold
        self.upstream = upstream
        self.fields = fields
        self.settlement = ChatSettlement(call)
        self.provider = ""  # who served the call, once providers says (on its last event)
        # What the call was charged, once captured (µIDR): its x-aiport-cost-idr.
        self.cost_micros: int | None = None
        # Unbounded: the upstream's output is (max_tokens); it must never wait on a client.
        self.outbox: asyncio.Queue[RelayItem] = asyncio.Queue()

    def client_left(self) -> None:
        """The client is gone: what follows is settled, not delivered."""
        if self.settlement.client_gone:
            return
        self.settlement.handle(CLIENT_LEFT)
        while not self.outbox.empty():
            self.outbox.get_nowait()
        log.info(
            "client left; upstream call continues and will be settled",
            extra={"fields": {**self.fields, "chunks_so_far": self.settlement.chunks}},
        )

    def _send(self, item: RelayItem) -> None:
        if self.record is not None and isinstance(item, httpbody_pb2.HttpBody):
            self.record.add(item.content_type, item.data)  # kept whether or not delivered
        if not self.settlement.client_gone:
            self.outbox.put_nowait(item)

    async def _finish(self, item: httpbody_pb2.HttpBody | PublicError) -> None:
        """Send the answer's last part (or its error), after storing the whole answer
        for the client's Idempotency-Key: a repeat that follows the answer replays it
        and never meets the claim still in flight."""
        record = self.record
        if record is None:
            self._send(item)
            return
        failed = isinstance(item, PublicError)
        if not idempotency.keeps(record.started or self.settlement.chunks > 0, failed):
            # Failed before any output: the hold was released, so the key may run again.
            await self.backends.drop_claim(self.idempotency_owner)
            self._send(item)
            return
        self.record = None  # recorded here: _send must not add it twice
        if isinstance(item, PublicError) and not record.started:
            # Charged (output was produced) but nothing sent yet: the error answer.
            answer = idempotency.StoredAnswer(item.status, "application/json", item.body())
        else:
            if isinstance(item, PublicError):
                # After output the error goes in-band (relay_chat renders it the same way).
                record.add("text/event-stream", self.renderer.failure(item))
            else:
                record.add(item.content_type, item.data)
            answer = record.answer(200)
        await self.backends.keep_answer(self.idempotency_owner, answer)
        self._send(item)

    def _log_fields(self, **more: object) -> dict[str, object]:
        return {**self.fields, "client_left": self.settlement.client_gone, **more}

    async def run(self) -> None:
        settlement = self.settlement
        try:
            try:
                # A whole answer, held back until its usage is captured.
                completion: providers_pb2.ChatCompletionEvent | None = None
                async for event in self.upstream.events():
                    kind = event.WhichOneof("event")
                    if kind in ("chunk", "native_chunk"):
                        settlement.handle(OUTPUT_DELIVERED)
                        data = (
                            self.renderer.chunk(event.chunk)
                            if kind == "chunk"
                            else self.renderer.native_chunk(event.native_chunk)
                        )
                        if data:
                            self._send(
                                httpbody_pb2.HttpBody(content_type="text/event-stream", data=data)
                            )
                    elif kind in ("completion", "native_completion"):
                        completion = event
                    elif kind == "usage":
                        if not self.call.stream and completion is None:
                            raise _ProvidersBrokeProtocol("usage without the completion")
                        usage = Usage.from_proto(event.usage)
                        self.provider = event.provider
                        cost = await self._carry_out(settlement.handle(UsageReported(usage)))
                        self.cost_micros = cost
                        if completion is None:  # a stream: its chunks are all out
                            await self._finish(
                                httpbody_pb2.HttpBody(
                                    content_type="text/event-stream",
                                    data=self.renderer.stream_end(usage, cost),
                                )
                            )
                        else:
                            await self._finish(
                                httpbody_pb2.HttpBody(
                                    content_type="application/json",
                                    data=self.renderer.completion(
                                        completion.completion, usage, cost
                                    )
                                    if completion.HasField("completion")
                                    else self.renderer.native_completion(
                                        completion.native_completion, cost
                                    ),
                                )
                            )
                        return
                    elif kind == "failure":
                        # Output had started: providers estimated what it cost.
                        broke = event.failure
                        self.provider = event.provider
                        estimate = (
                            Usage.from_proto(broke.usage) if broke.HasField("usage") else None
                        )
                        await self._carry_out(
                            settlement.handle(UpstreamFailed(broke.message, estimate))
                        )
                        await self._finish(errors.provider_error(broke.message))
                        return
                decision = settlement.handle(STREAM_ENDED)
                failure = errors.service_unavailable("The call ended unexpectedly.")
            except grpc.aio.AioRpcError as exc:
                detail = f"{exc.code().name}: {exc.details()}"
                decision = settlement.handle(UpstreamFailed(detail))
                failure = _upstream_error(exc)
            except _ProvidersBrokeProtocol as exc:
                log.error("providers broke the protocol", extra={"fields": self._log_fields()})
                decision = settlement.handle(UpstreamFailed(f"providers sent {exc}"))
                failure = errors.service_unavailable("The call ended unexpectedly.")
            await self._carry_out(decision)
            # Before any output the edge answers with an error status; after, in-band.
            await self._finish(failure)
        except asyncio.CancelledError:
            # Only the gateway stopping cancels a relay: settle what is known.
            self._abandon("gateway stopping")
            raise
        except Exception:
            log.exception("chat relay failed", extra={"fields": self.fields})
            self.upstream.cancel()
            self._abandon("gateway error")
            await self._finish(errors.service_unavailable("The call ended unexpectedly."))
        finally:
            self._send(_END)

    async def _carry_out(self, decision: Decision | None) -> int:
        """Do what the settlement decided, in billing, and tell the operator. Returns
        what the call was charged (µIDR)."""
        if decision is None:
            return 0
        hold_id = self.hold.hold_id
        latency_ms = round((time.monotonic() - self.started) * 1000)
        if isinstance(decision, Release):
            await self.backends.release(hold_id, decision.reason, latency_ms)
            log.warning(
                decision.summary, extra={"fields": self._log_fields(detail=decision.reason)}
            )
            return 0
        charged = await self.backends.capture(
            hold_id,
            decision.amount_micros,
            decision.note,
            provider=self.provider,
            usage=decision.usage,
            latency_ms=latency_ms,
        )
        fields = self._log_fields(
            cost_micros=decision.amount_micros, note=decision.note, **asdict(decision.usage)
        )
        if decision.routine:
            log.info(decision.summary, extra={"fields": fields})
        else:
            log.warning(decision.summary, extra={"fields": fields})
        return charged

    def _abandon(self, why: str) -> None:
        """The relay cannot follow the call to its end (this task is being cancelled
        or has failed): settle what is known in a task of its own."""
        decision = self.settlement.handle(Abandoned(why))
        if decision is not None:
            self.backends.settle_later(self._carry_out(decision))


async def relay_chat(
    backends: Backends,
    context: ServicerContext,
    call: ChatCall,
    endpoint: str,
    renderer: Callable[[str, int], ClientRenderer],
    started: float,
    native: Callable[[str], providers_pb2.NativeRequest] | None = None,
    claim: idempotency.ClientClaim | None = None,
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """One text call, whatever client protocol it came in: hold, the upstream call
    in its relay, and the relay's output rendered by the protocol's renderer
    (made from the call's completion id and creation time). `native` makes the client's own request,
    for a route that speaks its protocol to pass through (providers.proto). `claim`: the
    client's Idempotency-Key; a repeat gets the first call's stored answer, whole."""
    completion_id = "chatcmpl-" + secrets.token_urlsafe(18)
    created = int(time.time())
    chat = from_chat_body(call.upstream_request)  # typed before any money moves
    amount = hold_micros(call)
    try:
        caller, hold = await backends.authorize_hold(
            context,
            amount,
            HoldPurpose(HoldKind.CHAT, call.model.id, endpoint=endpoint),
            lambda: errors.insufficient_quota(
                "Your IDR balance cannot cover this request "
                f"(it may cost up to {micros_to_idr(amount)} IDR). "
                "Top up, or lower max_tokens, to continue."
            ),
            claim=claim,
        )
    except idempotency.Replay as replay:
        yield replayed(replay.answer)
        return
    fields: dict[str, object] = {
        "request_id": caller.request_id,
        "account_id": caller.account_id,
        "model": call.model.id,
        "endpoint": endpoint,
        "stream": call.stream,
        "hold_id": hold.hold_id,
    }
    upstream = UpstreamCall(
        backends.providers,
        providers_pb2.ChatCompletionRequest(
            model=call.model.id,
            chat=chat,
            stream=call.stream,
            completion_id=completion_id,
            created_unix=created,
            request_id=caller.request_id,
            native=None if native is None else native(completion_id),
        ),
    )
    # No await since the hold was placed: from here the relay owns it.
    rendering = renderer(completion_id, created)
    owner = "" if claim is None else str(HoldKey(HoldKind.CHAT, caller.call_id))
    relay = ChatRelay(backends, call, hold, upstream, fields, started, rendering, owner)
    backends.settle_later(relay.run())
    finished = False
    sent = False
    try:
        while (item := await relay.outbox.get()) is not _END:
            if isinstance(item, PublicError):
                finished = True
                if not sent:
                    raise item  # the boundary answers it with its status
                # Headers are out: the protocol's in-band error event ends the stream.
                yield httpbody_pb2.HttpBody(
                    content_type="text/event-stream", data=rendering.failure(item)
                )
                return
            if not sent and not call.stream and relay.cost_micros is not None:
                # A whole answer is sent after its capture: the headers can say the cost.
                add_response_header(COST_HEADER, micros_to_idr(relay.cost_micros))
            sent = True
            yield item
        finished = True
    finally:
        if not finished:  # cancelled (client gone, deadline passed) or closed
            relay.client_left()


def replayed(answer: idempotency.StoredAnswer) -> httpbody_pb2.HttpBody:
    """A stored answer sent again: with Idempotent-Replayed, its status (the edge sets
    it from x-aiport-http-status), and as one message (a stream's events all at once).
    No cost header: a replay moves no money (the body says what the first call cost)."""
    add_response_header(idempotency.REPLAYED_HEADER, "true")
    add_response_header(errors.STATUS_HEADER, str(answer.http_status))
    return httpbody_pb2.HttpBody(content_type=answer.content_type, data=answer.body)


class ChatService(chat_pb2_grpc.ChatServicer):
    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    @public_stream
    async def CreateChatCompletion(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        started = time.monotonic()
        self.backends.api_key(context)  # no key at all: 401 before anything else
        call = parse_chat_request(request.data, self.catalog)
        claim = idempotency.claim_of(
            request_metadata(context, idempotency.HEADER), CHAT_ENDPOINT, request.data
        )
        model = call.model.id
        async for item in relay_chat(
            self.backends,
            context,
            call,
            CHAT_ENDPOINT,
            lambda completion_id, created: ChatCompletionsRenderer(completion_id, model, created),
            started,
            claim=claim,
        ):
            yield item


def _messages_passthrough(body: bytes) -> Callable[[str], providers_pb2.NativeRequest] | None:
    """The client's own Messages request, for a route that speaks Messages (Claude) to
    take instead of the canonical one, so signed thinking, cache_control and citations
    arrive intact. Beside the canonical copy it must fit one gRPC message: past the
    bound, every route gets the canonical request alone."""
    if len(body) > NATIVE_BODY_MAX_BYTES:
        return None
    return lambda completion_id: providers_pb2.NativeRequest(
        protocol=ANTHROPIC_MESSAGES, body=body, response_id=message_id(completion_id)
    )


class MessagesService(messages_pb2_grpc.MessagesServicer):
    """Anthropic's Messages API over the same text path (messages_request.py in,
    messages_render.py out). Every error leaves in Messages' shape."""

    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    @anthropic_stream
    async def CreateMessage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        started = time.monotonic()
        self.backends.api_key(context)
        call = parse_messages_request(request.data, self.catalog)
        claim = idempotency.claim_of(
            request_metadata(context, idempotency.HEADER), MESSAGES_ENDPOINT, request.data
        )
        model = call.model.id
        async for item in relay_chat(
            self.backends,
            context,
            call,
            MESSAGES_ENDPOINT,
            lambda completion_id, _created: MessagesRenderer(completion_id, model),
            started,
            _messages_passthrough(request.data),
            claim,
        ):
            yield item

    @anthropic_unary
    async def CountTokens(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> httpbody_pb2.HttpBody:
        self.backends.api_key(context)  # API keys only, as for a paid call
        await self.backends.authenticate(context)
        body = errors.json_object_body(request.data)
        body.pop("stream", None)
        # Not part of count_tokens' request; the model's cap applies.
        body.setdefault("max_tokens", 2**31 - 1)
        call = parse_messages_request(orjson.dumps(body), self.catalog)
        return httpbody_pb2.HttpBody(
            content_type="application/json",
            data=orjson.dumps({"input_tokens": prompt_token_bound(call)}),
        )


class ResponsesService(responses_pb2_grpc.ResponsesServicer):
    """OpenAI's Responses API over the same text path (responses_request.py in,
    responses_render.py out). Errors take OpenAI's shape, as chat's do; a stream
    that breaks after output ends with response.failed."""

    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    @public_stream
    async def CreateResponse(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        started = time.monotonic()
        self.backends.api_key(context)
        call = parse_responses_request(request.data, self.catalog)
        claim = idempotency.claim_of(
            request_metadata(context, idempotency.HEADER), RESPONSES_ENDPOINT, request.data
        )
        echo = call.echo
        async for item in relay_chat(
            self.backends,
            context,
            call.chat,
            RESPONSES_ENDPOINT,
            lambda completion_id, _created: ResponsesRenderer(
                ResponseFrame(response_id(completion_id), echo)
            ),
            started,
            claim=claim,
        ):
            yield item


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    @staticmethod
    def _model(model: TextModel) -> catalog_pb2.Model:
        return catalog_pb2.Model(
            id=model.id, object="model", created=model.created, owned_by=model.owned_by
        )

    @public_unary
    async def ListModels(
        self, request: catalog_pb2.ListModelsRequest, context: ServicerContext
    ) -> catalog_pb2.ModelList:
        await self.backends.authenticate(context)
        return catalog_pb2.ModelList(
            object="list", data=[self._model(m) for m in self.catalog.enabled_text_models()]
        )

    @public_unary
    async def GetModel(
        self, request: catalog_pb2.GetModelRequest, context: ServicerContext
    ) -> catalog_pb2.Model:
        await self.backends.authenticate(context)
        model = self.catalog.text_model(request.model)
        if model is None:
            raise errors.model_not_found(request.model)
        return self._model(model)

    @public_unary
    async def CreateQuote(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> catalog_pb2.Quote:
        self.backends.api_key(context)  # no key at all: 401 before anything else
        await self.backends.authenticate(context)
        found = quote(request.data, self.catalog)
        return catalog_pb2.Quote(
            object="quote",
            path=found.path,
            model=found.model,
            currency=self.catalog.currency,
            hold_idr=micros_to_idr(found.hold_micros),
            expected_cost_idr=micros_to_idr(found.expected_cost_micros),
            prompt_tokens=found.prompt_tokens,
            max_output_tokens=found.max_output_tokens,
            units=found.units,
            unit_price_idr=micros_to_idr(found.unit_price_micros) if found.units else "",
        )

    @public_unary
    async def GetPricing(
        self, request: catalog_pb2.GetPricingRequest, context: ServicerContext
    ) -> catalog_pb2.PriceList:
        return catalog_pb2.PriceList(
            object="list",
            currency=self.catalog.currency,
            data=[_price(m) for m in self.catalog.enabled_models()],
        )


def _price(model: TextModel | ImageModel | VideoModel) -> catalog_pb2.ModelPrice:
    out = catalog_pb2.ModelPrice(model=model.id, display_name=model.display_name)
    if isinstance(model, TextModel):
        out.modality = "text"
        out.text.CopyFrom(
            catalog_pb2.TextPrice(
                input_per_million_tokens_idr=micros_to_idr(model.input_micros_per_m),
                cached_input_per_million_tokens_idr=micros_to_idr(model.cached_input_micros_per_m),
                cache_write_per_million_tokens_idr=micros_to_idr(model.cache_write_micros_per_m),
                output_per_million_tokens_idr=micros_to_idr(model.output_micros_per_m),
                max_output_tokens=model.max_output_tokens,
                supports_reasoning=model.supports_reasoning,
            )
        )
    elif isinstance(model, ImageModel):
        out.modality = model.modality
        out.image_tiers.extend(
            catalog_pb2.ImageTierPrice(resolution=tier, per_image_idr=micros_to_idr(price))
            for tier, price in model.price_per_image.items()
        )
    else:
        out.modality = model.modality
        out.video_tiers.extend(
            catalog_pb2.VideoTierPrice(
                resolution=res,
                per_second_idr=micros_to_idr(price),
                per_second_with_reference_idr=micros_to_idr(
                    model.price_per_second_with_reference[res]
                )
                if res in model.price_per_second_with_reference
                else "",
            )
            for res, price in model.price_per_second.items()
        )
        out.min_billable_seconds_with_reference = model.min_billable_seconds_with_reference
    if isinstance(model, ImageModel | VideoModel):
        out.limits.CopyFrom(_limits(model))
    return out


def _limits(model: ImageModel | VideoModel) -> catalog_pb2.MediaLimits:
    allowed = offered(model)
    limits = catalog_pb2.MediaLimits(
        resolutions=allowed.resolutions,
        aspect_ratios=allowed.aspect_ratios,
        ratios=allowed.ratios,
        min_duration_seconds=allowed.min_duration_seconds,
        max_duration_seconds=allowed.max_duration_seconds,
        max_images=allowed.max_images,
        max_videos=allowed.max_videos,
        max_audios=allowed.max_audios,
    )
    if allowed.max_images:
        rules = model.reference_image
        limits.reference_image.CopyFrom(
            catalog_pb2.ReferenceImageLimits(
                min_side=rules.min_side,
                max_side=rules.max_side,
                max_pixels=rules.max_pixels,
                max_aspect=rules.max_aspect,
                max_bytes=rules.max_bytes,
                formats=rules.formats,
            )
        )
    if isinstance(model, VideoModel) and allowed.max_videos:
        limits.reference_video.CopyFrom(_clip_limits(model.reference_video, "video"))
    if isinstance(model, VideoModel) and allowed.max_audios:
        limits.reference_audio.CopyFrom(_clip_limits(model.reference_audio, "audio"))
    return limits


def _clip_limits(rules: ReferenceClipRules, kind: str) -> catalog_pb2.ReferenceClipLimits:
    return catalog_pb2.ReferenceClipLimits(
        formats=rules.formats or CLIP_FORMATS[kind],
        min_seconds=rules.min_seconds,
        max_seconds=rules.max_seconds,
        max_total_seconds=rules.max_total_seconds,
        max_bytes=rules.max_bytes,
        needs_visual=rules.needs_visual,
    )
