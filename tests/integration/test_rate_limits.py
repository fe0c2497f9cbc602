"""The gateway's per-key and per-account rate limits, through the edge, on a
stack of its own with small limits (the shared stack keeps the defaults): the
headers on every answer, the 429 each client surface gets (and the openai SDK
honouring its retry-after), concurrency slots given back when a stream ends,
limits shared by every gateway replica, and calls let through while Redis is
unreachable (services/gateway/rate_limits.py says why).

The minute windows are fixed and aligned to the clock: a test that counts a
minute's calls first waits for a window with enough of it left."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import grpc
import httpx
import openai
import pytest
import redis
from aiport.v1 import account_pb2, account_pb2_grpc, billing_pb2, billing_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.stack import Stack, StackConfig
from services.common import service_auth, settings
from services.common.money import idr_to_micros
from services.gateway import rate_limits
from services.gateway.errors import STATUS_HEADER
from services.gateway.rate_limits import LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER
from tests.integration.conftest import REPLICAS, Account, assert_ledger_invariants
from tests.support.databases import drop_database, fresh_database_url
from tests.support.tcp_proxy import CuttableProxy

KEY_RPM = 4
KEY_CONCURRENT = 2
ACCOUNT_RPM = 6
ACCOUNT_CONCURRENT = 3
CHAT = "/v1/chat/completions"
HELLO = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]}
# A stream that stays open a while (20 words, 0.5 s apart) once its first word is read.
SLOW = {
    "model": "deepseek-v4-flash",
    "stream": True,
    "messages": [{"role": "user", "content": "slow [sim:tokens=20] [sim:chunk-delay=0.5]"}],
}
RESET_FORMAT = re.compile(r"\d+ms|\d+s|\d+m\d+s")


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[CuttableProxy]:
    real = urlsplit(settings.redis_url())
    proxy = CuttableProxy(real.hostname or "127.0.0.1", real.port or 6379)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def limited(redis_proxy: CuttableProxy) -> Iterator[Stack]:
    url = fresh_database_url("aiport_rl")
    config = StackConfig.on_free_ports(
        url, Path(tempfile.mkdtemp(prefix="aiport-rl-")), replicas=REPLICAS
    )
    # Redis through a proxy the tests can cut.
    config.redis_url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    config.extra_env.update(
        {
            "AIPORT_KEY_REQUESTS_PER_MINUTE": str(KEY_RPM),
            "AIPORT_KEY_CONCURRENT_REQUESTS": str(KEY_CONCURRENT),
            "AIPORT_ACCOUNT_REQUESTS_PER_MINUTE": str(ACCOUNT_RPM),
            "AIPORT_ACCOUNT_CONCURRENT_REQUESTS": str(ACCOUNT_CONCURRENT),
        }
    )
    stack = Stack(config)
    try:
        stack.start()
        yield stack
        # Refused paid calls released their holds: nothing open, nothing moved.
        assert_ledger_invariants(url)
    finally:
        stack.stop()
        drop_database(url)


@pytest.fixture(scope="module")
def billing_stub(limited: Stack) -> Iterator[billing_pb2_grpc.BillingStub]:
    with grpc.insecure_channel(limited.config.billing_addr) as chan:
        yield billing_pb2_grpc.BillingStub(
            service_auth.with_token(chan, limited.config.admin_token)
        )


@pytest.fixture(scope="module")
def real_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url())
    yield client
    client.close()


@pytest.fixture
def funded(billing_stub: billing_pb2_grpc.BillingStub) -> Account:
    account_id = billing_stub.CreateAccount(billing_pb2.CreateAccountRequest(name="rl")).account_id
    billing_stub.TopUp(
        billing_pb2.TopUpRequest(account_id=account_id, amount_micros=idr_to_micros("100000"))
    )
    key = billing_stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=account_id))
    return Account(account_id, key.api_key, key.key_id)


def second_key(billing_stub: billing_pb2_grpc.BillingStub, account: Account) -> str:
    reply = billing_stub.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(account_id=account.account_id)
    )
    return str(reply.api_key)


@pytest.fixture
def edge(limited: Stack, funded: Account) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=limited.config.base_url,
        headers={"Authorization": f"Bearer {funded.api_key}"},
        timeout=30,
    ) as c:
        yield c


def fresh_window(needed_seconds: float = 20.0) -> None:
    """Wait, if need be, for a minute with `needed_seconds` of it left."""
    left = 60 - time.time() % 60
    if left < needed_seconds:
        time.sleep(left + 0.05)


def rate_headers(response: httpx.Response) -> tuple[str, str, str]:
    h = response.headers
    return h[LIMIT_HEADER], h[REMAINING_HEADER], h[RESET_HEADER]


def assert_refused(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()["error"]
    assert (body["type"], body["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert limit in body["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-should-retry"] == "true"
    assert RESET_FORMAT.fullmatch(response.headers[RESET_HEADER])
    # None of the edge's internal signals leak.
    assert not any(name.startswith(("x-aiport-", "grpc-")) for name in response.headers)


def in_flight(real_redis: redis.Redis, stack: Stack, key_id: str) -> int:
    return int(real_redis.zcard(f"{stack.config.redis_prefix}:gw:flying:key:{key_id}"))


def wait_until(check: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_every_answer_carries_the_rate_headers(edge: httpx.Client) -> None:
    fresh_window()
    chat = edge.post(CHAT, json=HELLO)
    assert chat.status_code == 200, chat.text
    limit, remaining, reset = rate_headers(chat)
    assert (limit, remaining) == (str(KEY_RPM), str(KEY_RPM - 1))
    assert RESET_FORMAT.fullmatch(reset)
    # A read counts too, and a stream carries them in its first headers.
    models = edge.get("/v1/models")
    assert models.status_code == 200 and rate_headers(models)[1] == str(KEY_RPM - 2)
    with edge.stream("POST", CHAT, json={**HELLO, "stream": True}) as stream:
        assert stream.status_code == 200
        assert rate_headers(stream)[1] == str(KEY_RPM - 3)
        assert any(line == "data: [DONE]" for line in stream.iter_lines())
    # An error after the caller is known still tells the client where it stands.
    missing = edge.get("/v1/jobs/job_0000000000000000000000")
    assert missing.status_code == 404 and rate_headers(missing)[1] == "0"


def test_past_the_keys_minute_chat_messages_and_responses_answer_429(
    limited: Stack, funded: Account, edge: httpx.Client, billing_stub: billing_pb2_grpc.BillingStub
) -> None:
    fresh_window()
    before = billing_stub.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=funded.account_id)
    )
    statuses = [edge.post(CHAT, json=HELLO).status_code for _ in range(KEY_RPM)]
    assert statuses == [200] * KEY_RPM
    refused = edge.post(CHAT, json=HELLO)
    assert_refused(refused, f"API key's limit of {KEY_RPM} requests per minute")
    assert rate_headers(refused)[:2] == (str(KEY_RPM), "0")
    # The same key on Anthropic's surface: a 429 in Messages' own shape.
    messages = edge.post(
        "/v1/messages",
        headers={"anthropic-version": "2023-06-01"},
        json={"model": "deepseek-v4-flash", "max_tokens": 16, "messages": HELLO["messages"]},
    )
    assert messages.status_code == 429
    assert messages.json() == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Rate limit reached: this API key's limit of"
            f" {KEY_RPM} requests per minute.",
        },
    }
    assert messages.headers["retry-after"] and messages.headers[REMAINING_HEADER] == "0"
    # And on Responses, OpenAI's shape.
    responses = edge.post("/v1/responses", json={"model": "deepseek-v4-flash", "input": "hi"})
    assert_refused(responses, "requests per minute")
    # Refused calls moved no money: their holds were released.
    after = billing_stub.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=funded.account_id)
    )
    wait_until(
        lambda: (
            billing_stub.GetAccountBalance(
                billing_pb2.GetAccountBalanceRequest(account_id=funded.account_id)
            ).held_micros
            == 0
        ),
        "holds released",
    )
    assert after.balance_micros < before.balance_micros  # the four that ran were paid


def test_the_accounts_minute_spans_its_keys(
    limited: Stack, funded: Account, edge: httpx.Client, billing_stub: billing_pb2_grpc.BillingStub
) -> None:
    fresh_window()
    other = second_key(billing_stub, funded)
    assert [edge.get("/v1/models").status_code for _ in range(KEY_RPM)] == [200] * KEY_RPM
    with httpx.Client(
        base_url=limited.config.base_url, headers={"Authorization": f"Bearer {other}"}
    ) as second:
        ok = [second.get("/v1/models") for _ in range(ACCOUNT_RPM - KEY_RPM)]
        assert [r.status_code for r in ok] == [200] * (ACCOUNT_RPM - KEY_RPM)
        # The account's budget is the tighter one now: its headers say so.
        assert rate_headers(ok[-1])[:2] == (str(ACCOUNT_RPM), "0")
        assert_refused(
            second.get("/v1/models"), f"account's limit of {ACCOUNT_RPM} requests per minute"
        )


@contextlib.contextmanager
def open_streams(edge: httpx.Client, count: int) -> Iterator[contextlib.ExitStack]:
    """`count` slow streams, each past its first word, open until the stack closes."""
    # The readers are kept: one dropped would close its stream when collected.
    readers: list[Iterator[str]] = []
    with contextlib.ExitStack() as streams:
        for _ in range(count):
            response = streams.enter_context(edge.stream("POST", CHAT, json=SLOW))
            assert response.status_code == 200
            readers.append(response.iter_lines())
            assert next(line for line in readers[-1] if line.startswith("data: {"))
        yield streams


def test_the_keys_concurrency_refuses_one_more_stream_until_one_ends(
    limited: Stack, funded: Account, edge: httpx.Client, real_redis: redis.Redis
) -> None:
    fresh_window()
    with open_streams(edge, KEY_CONCURRENT) as streams:
        assert in_flight(real_redis, limited, funded.key_id) == KEY_CONCURRENT
        refused = edge.post(CHAT, json=SLOW)
        assert_refused(refused, f"API key's limit of {KEY_CONCURRENT} concurrent requests")
        assert refused.headers["retry-after"] == "1"
        streams.close()  # the clients leave: their slots go back
        wait_until(lambda: in_flight(real_redis, limited, funded.key_id) == 0, "slots given back")
    again = edge.post(CHAT, json=HELLO)
    assert again.status_code == 200, again.text
    # A finished call gives its slot back too (just after its answer: in the background).
    wait_until(lambda: in_flight(real_redis, limited, funded.key_id) == 0, "slot given back")


def test_a_refused_call_leaves_its_idempotency_key_free(
    limited: Stack, funded: Account, edge: httpx.Client, real_redis: redis.Redis
) -> None:
    """Its hold and its claim of the key both go back: the retry runs, not a 409."""
    fresh_window()
    once = {"Idempotency-Key": "refused-then-retried"}
    with open_streams(edge, KEY_CONCURRENT) as streams:
        assert_refused(
            edge.post(CHAT, json=HELLO, headers=once),
            f"API key's limit of {KEY_CONCURRENT} concurrent requests",
        )
        streams.close()
        wait_until(lambda: in_flight(real_redis, limited, funded.key_id) == 0, "slots given back")

    def retried() -> bool:
        answer = edge.post(CHAT, json=HELLO, headers=once)
        # The claim is dropped in the background just after the 429: a 409 until then.
        assert answer.status_code in (200, 409), answer.text
        return answer.status_code == 200 and "idempotent-replayed" not in answer.headers

    wait_until(retried, "the retry runs under the same key", seconds=5)


def test_the_openai_sdk_waits_as_told_and_retries(
    limited: Stack, funded: Account, edge: httpx.Client, real_redis: redis.Redis
) -> None:
    fresh_window()
    seen: list[tuple[int, float, str | None]] = []

    with open_streams(edge, KEY_CONCURRENT) as streams:
        # The SDK's own HTTP client (its httpx), observed by hooks.
        def on_response(response: Any) -> None:
            seen.append(
                (response.status_code, time.monotonic(), response.headers.get("retry-after"))
            )
            if response.status_code == 429:
                # Free the slots before the SDK's retry (it waits retry-after first).
                streams.close()
                wait_until(
                    lambda: in_flight(real_redis, limited, funded.key_id) == 0, "slots given back"
                )
                seen.append((0, time.monotonic(), None))

        def on_request(_: Any) -> None:
            seen.append((-1, time.monotonic(), None))

        with openai.DefaultHttpxClient(
            event_hooks={"request": [on_request], "response": [on_response]}, timeout=30
        ) as http_client:
            client = openai.OpenAI(
                base_url=f"{limited.config.base_url}/v1",
                api_key=funded.api_key,
                max_retries=2,
                http_client=http_client,
            )
            reply = client.chat.completions.with_raw_response.create(
                model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi"}]
            )
    assert reply.http_response.status_code == 200
    assert reply.headers[LIMIT_HEADER] == str(KEY_RPM)
    # request, 429 (retry-after 1), slots freed, request again, 200.
    assert [s for s, _, _ in seen] == [-1, 429, 0, -1, 200]
    assert seen[1][2] == "1"
    # The SDK slept the second the 429 asked for before asking again.
    assert seen[3][1] - seen[2][1] >= 0.9


def gateway_answer(addr: str, api_key: str) -> tuple[int, dict[str, str]]:
    """GetBalance straight at one gateway replica: its status and its rate headers."""
    with grpc.insecure_channel(addr) as chan:
        stub = account_pb2_grpc.AccountStub(chan)
        try:
            _, call = stub.GetBalance.with_call(
                account_pb2.GetBalanceRequest(),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=10,
            )
        except grpc.RpcError as exc:
            pairs = cast(Iterable[tuple[str, str]], cast(grpc.Call, exc).trailing_metadata())
            trailers = dict(pairs)
            return int(trailers[STATUS_HEADER]), trailers
        return 200, dict(cast(Iterable[tuple[str, str]], call.initial_metadata()))


def test_every_gateway_replica_counts_against_the_same_limit(
    limited: Stack, funded: Account
) -> None:
    fresh_window()
    gateways = [
        f"127.0.0.1:{limited.config.port(name)}" for name in limited.config.replica_names("gateway")
    ]
    assert len(gateways) == REPLICAS
    # Round robin: with two replicas, neither alone reaches the limit.
    answers = [gateway_answer(gateways[i % len(gateways)], funded.api_key) for i in range(KEY_RPM)]
    assert [status for status, _ in answers] == [200] * KEY_RPM
    assert [h[REMAINING_HEADER] for _, h in answers] == [
        str(KEY_RPM - n) for n in range(1, KEY_RPM + 1)
    ]
    refused = [gateway_answer(addr, funded.api_key) for addr in gateways]
    assert [status for status, _ in refused] == [429] * len(gateways)
    assert all(h[REMAINING_HEADER] == "0" for _, h in refused)


def unavailable_decisions(stack: Stack) -> float:
    total = 0.0
    for name, url in stack.metrics_urls().items():
        if not name.startswith("gateway"):
            continue
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            for sample in family.samples:
                if (
                    sample.name == "aiport_rate_limit_unavailable_total"
                    and sample.labels.get("decision") == "let_through"
                    and sample.labels.get("limit") == "requests_per_minute"
                ):
                    total += sample.value
    return total


def test_without_redis_calls_are_let_through_and_counted(
    limited: Stack, redis_proxy: CuttableProxy, edge: httpx.Client
) -> None:
    fresh_window()
    before = unavailable_decisions(limited)
    redis_proxy.cut()
    try:
        answers = [edge.post(CHAT, json=HELLO) for _ in range(KEY_RPM + 2)]
        assert [r.status_code for r in answers] == [200] * (KEY_RPM + 2)
        # Nothing counted: the limit, all of it left.
        assert {rate_headers(r)[:2] for r in answers} == {(str(KEY_RPM), str(KEY_RPM))}
        assert unavailable_decisions(limited) >= before + KEY_RPM + 2
    finally:
        redis_proxy.restore()
    # Back: the limits count again.
    wait_until(
        lambda: edge.get("/v1/models").headers[REMAINING_HEADER] != str(KEY_RPM), "Redis back"
    )


def test_a_dead_replicas_slots_expire_and_live_ones_are_renewed() -> None:
    """Against Redis directly (no stack): a lease nobody renews stops counting
    LEASE_SECONDS after it was taken, as when its replica died; renew() pushes
    a live one's expiry on."""
    one_slot = rate_limits.Limits(
        key_rpm=100, key_concurrent=1, account_rpm=100, account_concurrent=1
    )
    own = billing_pb2.RateLimits()

    async def run() -> None:
        prefix = f"aiport-test-{uuid.uuid4().hex[:8]}"
        dead = rate_limits.Limiter(rate_limits.redis_client(settings.redis_url()), prefix, one_slot)
        alive = rate_limits.Limiter(
            rate_limits.redis_client(settings.redis_url()), prefix, one_slot
        )
        try:
            taken = time.time() - rate_limits.LEASE_SECONDS - 1
            first = await dead.admit("acct", "key", own, taken)
            assert first.lease is not None
            # Still within the lease's life: the one slot is taken.
            busy = await alive.admit("acct", "key", own, taken + 1)
            assert busy.refused is not None and "concurrent" in busy.refused.message
            # Past it, with nobody renewing: the slot is free again.
            later = await alive.admit("acct", "key", own, time.time())
            assert later.refused is None and later.lease is not None
            client = rate_limits.redis_client(settings.redis_url())
            try:
                before = await client.zscore(later.lease.key_set, later.lease.member)
                await asyncio.sleep(0.01)
                await alive.renew()
                after = await client.zscore(later.lease.key_set, later.lease.member)
                assert before is not None and after is not None and after > before
                alive.release(later.lease)
                await alive.drain()
                assert await client.zcard(later.lease.key_set) == 0
                keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
        finally:
            await dead.close()
            await alive.close()

    asyncio.run(run())
