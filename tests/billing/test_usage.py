"""Usage records, written with the money they explain; named and scoped keys;
disabled accounts (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger, rules, usage
from services.billing.money import Money, Origin
from services.billing.rules import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated

from .helpers import IDR, funded_account

pytestmark = pytest.mark.usefixtures("check_invariants")

EVERYTHING = rules.check_usage_window(0, 0, "", "")


def key() -> str:
    return "req_" + rules.new_hold_id()


async def funded_key(
    engine: AsyncEngine, money: Money, amount: int, name: str = "app"
) -> tuple[str, str, str]:
    account_id = await funded_account(engine, money, amount)
    created = await ledger.create_api_key(engine, account_id, name=name)
    return account_id, created.api_key, created.key_id


async def paid_call(
    money: Money,
    api_key: str,
    *,
    model: str = "m-1",
    held: int = 2 * IDR,
    cost: int | None = IDR,
    endpoint: str = "chat.completions",
    request_id: str = "req-1",
) -> ledger.Hold:
    """A call: hold, then capture `cost` with its usage (None: released, a refund)."""
    _, hold = await money.authorize_hold(
        api_key,
        held,
        key(),
        model=model,
        default_ttl_seconds=60,
        origin=Origin(endpoint, request_id),
    )
    if cost is None:
        return await money.release(hold.id, "upstream failed", latency_ms=40)
    return await money.capture(
        hold.id,
        cost,
        "done",
        usage=rules.recorded_usage(
            prompt_tokens=100,
            cached_prompt_tokens=30,
            completion_tokens=50,
            reasoning_tokens=10,
            latency_ms=120,
        ),
    )


async def test_a_settled_call_is_one_record_with_its_origin_usage_and_cost(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key, key_id = await funded_key(engine, money, 10 * IDR, name="backend")
    captured = await paid_call(money, api_key, request_id="req-abc")
    refunded = await paid_call(money, api_key, cost=None, endpoint="image.generate")
    _, open_hold = await money.authorize_hold(api_key, IDR, key(), default_ttl_seconds=60)
    page = await usage.list_usage(engine, account_id, EVERYTHING)
    assert [r.id for r in page.records] == [open_hold.id, refunded.id, captured.id]
    assert page.next_after == ""
    newest, failed, done = page.records
    assert (newest.status, newest.cost_micros, newest.latency_ms) == ("in_progress", 0, None)
    assert (failed.status, failed.cost_micros, failed.endpoint) == ("refunded", 0, "image.generate")
    assert failed.latency_ms == 40
    assert (done.status, done.cost_micros, done.held_micros) == ("succeeded", IDR, 2 * IDR)
    assert (done.key_id, done.key_name, done.model) == (key_id, "backend", "m-1")
    assert (done.endpoint, done.request_id, done.latency_ms) == ("chat.completions", "req-abc", 120)
    assert (done.input_tokens, done.cached_input_tokens, done.output_tokens) == (100, 30, 50)
    assert done.reasoning_tokens == 10 and done.settled_at is not None


async def test_pages_filters_and_windows(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 100 * IDR)
    other = await ledger.create_api_key(engine, account_id, name="other")
    ids = [(await paid_call(money, api_key, model=f"m-{i % 2}")).id for i in range(5)]
    ids.append((await paid_call(money, other.api_key)).id)
    seen: list[str] = []
    after = ""
    while True:
        page = await usage.list_usage(engine, account_id, EVERYTHING, limit=2, after=after)
        seen += [r.id for r in page.records]
        if not page.next_after:
            break
        after = page.next_after
    assert seen == ids[::-1]
    only_m0 = rules.check_usage_window(0, 0, "m-0", "")
    assert len((await usage.list_usage(engine, account_id, only_m0)).records) == 3
    only_other = rules.check_usage_window(0, 0, "", other.key_id)
    assert [r.id for r in (await usage.list_usage(engine, account_id, only_other)).records] == [
        ids[-1]
    ]
    future = rules.check_usage_window(4_000_000_000, 0, "", "")
    assert (await usage.list_usage(engine, account_id, future)).records == []


async def test_another_accounts_record_is_no_cursor_and_no_filter_leaks(
    engine: AsyncEngine, money: Money
) -> None:
    mine, my_key, _ = await funded_key(engine, money, 10 * IDR)
    theirs, their_key, their_key_id = await funded_key(engine, money, 10 * IDR)
    their_call = await paid_call(money, their_key)
    await paid_call(money, my_key)
    with pytest.raises(InvalidArgument, match="after"):
        await usage.list_usage(engine, mine, EVERYTHING, after=their_call.id)
    by_their_key = rules.check_usage_window(0, 0, "", their_key_id)
    assert (await usage.list_usage(engine, mine, by_their_key)).records == []
    assert [r.id for r in (await usage.list_usage(engine, theirs, EVERYTHING)).records] == [
        their_call.id
    ]


async def test_summaries_by_day_model_and_key_add_up_to_the_records(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key, key_id = await funded_key(engine, money, 100 * IDR, name="k1")
    for i in range(4):
        await paid_call(money, api_key, model=f"m-{i % 2}", held=5 * IDR, cost=(i + 1) * IDR)
    await paid_call(money, api_key, model="m-0", cost=None)
    by_model = await usage.summarize_usage(engine, account_id, EVERYTHING, group_by="model")
    assert [(g.group, g.requests, g.cost_micros) for g in by_model.groups] == [
        ("m-1", 2, 6 * IDR),
        ("m-0", 3, 4 * IDR),
    ]
    assert (by_model.total_cost_micros, by_model.total_requests) == (10 * IDR, 5)
    by_key = await usage.summarize_usage(engine, account_id, EVERYTHING, group_by="key")
    assert [(g.group, g.key_name, g.requests) for g in by_key.groups] == [(key_id, "k1", 5)]
    by_day = await usage.summarize_usage(
        engine, account_id, EVERYTHING, group_by="day", time_zone="Asia/Jakarta"
    )
    assert len(by_day.groups) in (1, 2)  # a run across Jakarta's midnight splits
    assert sum(g.cost_micros for g in by_day.groups) == 10 * IDR
    merged: dict[str, int] = defaultdict(int)
    for group in by_day.groups:
        for model, cost in group.cost_micros_by_model.items():
            merged[model] += cost
    assert merged == {"m-0": 4 * IDR, "m-1": 6 * IDR}
    with pytest.raises(InvalidArgument, match="time_zone"):
        await usage.summarize_usage(engine, account_id, EVERYTHING, group_by="day", time_zone="X")
    with pytest.raises(InvalidArgument, match="group_by"):
        await usage.summarize_usage(engine, account_id, EVERYTHING, group_by="week")


async def test_usage_agrees_with_the_ledger_after_a_mixed_concurrent_run(
    engine: AsyncEngine, money: Money
) -> None:
    """Per model, what the records say was spent is what revenue received,
    and each record's cost is its capture's posting."""
    account_id, api_key, _ = await funded_key(engine, money, 1000 * IDR)

    async def one(i: int) -> None:
        cost = None if i % 5 == 0 else (i % 7) * IDR // 3
        await paid_call(money, api_key, model=f"m-{i % 3}", cost=cost)

    await asyncio.gather(*(one(i) for i in range(60)))
    records = (await usage.list_usage(engine, account_id, EVERYTHING, limit=1000)).records
    assert len(records) == 60
    spent: dict[str, int] = defaultdict(int)
    for record in records:
        spent[record.model] += record.cost_micros
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT p.account, sum(p.amount_micros) AS total FROM billing.postings p"
                    " JOIN billing.transactions t ON t.id = p.transaction_id"
                    " WHERE t.account_id = :a AND p.account LIKE 'revenue:%' GROUP BY 1"
                ),
                {"a": account_id},
            )
        ).all()
        per_hold = (
            await conn.execute(
                text(
                    "SELECT h.id FROM billing.holds h"
                    " LEFT JOIN billing.transactions t ON t.hold_id = h.id AND t.kind = 'capture'"
                    " LEFT JOIN billing.postings p ON p.transaction_id = t.id"
                    "  AND p.account LIKE 'revenue:%'"
                    " WHERE h.account_id = :a AND h.captured_micros <> COALESCE(p.amount_micros, 0)"
                ),
                {"a": account_id},
            )
        ).all()
    revenue = {row.account.removeprefix("revenue:"): int(row.total) for row in rows}
    assert revenue == {model: total for model, total in spent.items() if total}
    assert per_hold == []


async def test_odd_upstream_counts_never_stop_a_capture(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    _, hold = await money.authorize_hold(api_key, IDR, key(), default_ttl_seconds=60)
    odd = rules.recorded_usage(
        prompt_tokens=10, cached_prompt_tokens=50, completion_tokens=3, reasoning_tokens=9
    )
    captured = await money.capture(hold.id, IDR // 2, usage=odd)
    assert captured.captured_micros == IDR // 2
    (record,) = (await usage.list_usage(engine, account_id, EVERYTHING)).records
    assert (record.input_tokens, record.cached_input_tokens) == (10, 10)
    assert (record.output_tokens, record.reasoning_tokens) == (3, 3)


async def test_keys_have_names_scopes_and_a_last_use(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    plain = await ledger.create_api_key(engine, account_id, name="  ci  ")
    manager = await ledger.create_api_key(
        engine, account_id, name="ops", scopes=["manage", "inference", "manage"]
    )
    assert (plain.name, plain.scopes) == ("ci", ("inference",))
    assert manager.scopes == ("inference", "manage")
    with pytest.raises(InvalidArgument, match="scopes"):
        await ledger.create_api_key(engine, account_id, scopes=["admin"])
    with pytest.raises(InvalidArgument, match="name"):
        await ledger.create_api_key(engine, account_id, name="x" * 101)
    principal = await money.authenticate(manager.api_key)
    assert principal.scopes == ("inference", "manage")
    listed = {k.id: k for k in await ledger.list_api_keys(engine, account_id)}
    assert listed[manager.key_id].last_used_at is not None
    assert listed[plain.key_id].last_used_at is None
    assert listed[plain.key_id].name == "ci"


async def test_a_key_is_revoked_only_through_its_own_account(
    engine: AsyncEngine, money: Money
) -> None:
    mine = await funded_account(engine, money)
    theirs = await funded_account(engine, money)
    their_key = await ledger.create_api_key(engine, theirs)
    with pytest.raises(NotFound):
        await ledger.revoke_api_key(engine, their_key.key_id, mine)
    assert (await money.authenticate(their_key.api_key)).account_id == theirs
    revoked = await ledger.revoke_api_key(engine, their_key.key_id, theirs)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated):
        await money.authenticate(their_key.api_key)


async def test_a_disabled_account_stops_at_once_and_its_open_holds_still_settle(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    _, hold = await money.authorize_hold(api_key, IDR, key(), default_ttl_seconds=60)
    with pytest.raises(InvalidArgument, match="reason"):
        await ledger.set_account_disabled(engine, account_id, disabled=True)
    account = await ledger.set_account_disabled(
        engine, account_id, disabled=True, reason="chargeback"
    )
    assert account.disabled_at is not None and account.disabled_reason == "chargeback"
    with pytest.raises(Unauthenticated):
        await money.authenticate(api_key)
    with pytest.raises(Unauthenticated):
        await money.authorize_hold(api_key, IDR, key(), default_ttl_seconds=60)
    with pytest.raises(FailedPrecondition, match="disabled"):
        await money.place_hold(account_id, IDR, key())
    assert (await money.capture(hold.id, IDR // 4)).status == "captured"
    enabled = await ledger.set_account_disabled(engine, account_id, disabled=False)
    assert enabled.disabled_at is None and enabled.disabled_reason == ""
    assert (await money.authenticate(api_key)).account_id == account_id
