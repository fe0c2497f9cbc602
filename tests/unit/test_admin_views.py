"""Operators' /v1/admin queries and bodies (pure): each 400 names its field, and
the account's shape shows who disabled it."""

from __future__ import annotations

from typing import Any

import pytest
from aiport.v1 import accounts_pb2, admin_pb2, billing_pb2

from services.gateway import account_views, admin_views
from services.gateway.errors import PublicError

ACCOUNT = "acct_" + "a" * 20
OPERATOR = "usr_" + "o" * 20


def refused(call: Any, *args: Any) -> PublicError:
    with pytest.raises(PublicError) as caught:
        call(*args)
    return caught.value


def test_lookup_takes_exactly_one_of_email_or_account_id() -> None:
    assert admin_views.lookup(admin_pb2.FindAccountQuery(email=" a@b.id ")).email == "a@b.id"
    assert admin_views.lookup(admin_pb2.FindAccountQuery(account_id=ACCOUNT)).account_id == ACCOUNT
    for query, param in (
        (admin_pb2.FindAccountQuery(), "email"),
        (admin_pb2.FindAccountQuery(email="a@b.id", account_id=ACCOUNT), "email"),
        (admin_pb2.FindAccountQuery(email="not-an-address"), "email"),
        (admin_pb2.FindAccountQuery(account_id="acct_short"), "account_id"),
    ):
        error = refused(admin_views.lookup, query)
        assert (error.status, error.param) == (400, param)


def test_a_path_that_is_not_an_account_id_is_404() -> None:
    assert admin_views.account_id_param(ACCOUNT) == ACCOUNT
    assert refused(admin_views.account_id_param, "acct_../x").status == 404


def test_an_adjustment_is_signed_exact_and_needs_a_reason_and_a_key() -> None:
    parsed = admin_views.adjustment(
        {"amount_idr": "-1250.5", "reason": " refund of a bad call ", "idempotency_key": "k-1"}
    )
    assert parsed == admin_views.Adjustment(-1_250_500_000, "refund of a bad call", "k-1")
    good = {"amount_idr": "10", "reason": "goodwill", "idempotency_key": "k"}
    for change, param in (
        ({"amount_idr": 10}, "amount_idr"),
        ({"amount_idr": "0"}, "amount_idr"),
        ({"amount_idr": "1.0000001"}, "amount_idr"),
        ({"amount_idr": "abc"}, "amount_idr"),
        ({"amount_idr": "1e13"}, "amount_idr"),
        ({"reason": "  "}, "reason"),
        ({"reason": "a\nb"}, "reason"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
        ({"note": "x"}, "note"),
    ):
        error = refused(admin_views.adjustment, {**good, **change})
        assert (error.status, error.param) == (400, param), change
    error = refused(admin_views.adjustment, {"amount_idr": "5", "reason": "x"})
    assert error.param == "idempotency_key"


def test_disabling_needs_a_reason_enabling_does_not() -> None:
    assert admin_views.disable_reason({"reason": "fraud report"}) == "fraud report"
    assert refused(admin_views.disable_reason, {}).param == "reason"
    admin_views.enable_body({})
    assert refused(admin_views.enable_body, {"why": "x"}).param == "why"


def test_the_account_shows_its_users_balance_and_who_disabled_it() -> None:
    user = accounts_pb2.User(
        user_id="usr_" + "c" * 20,
        email="c@example.id",
        email_verified=True,
        roles=[accounts_pb2.User.CUSTOMER],
        memberships=[
            accounts_pb2.Membership(billing_account_id=ACCOUNT, role=accounts_pb2.Membership.OWNER)
        ],
    )
    info = billing_pb2.AccountInfo(
        account_id=ACCOUNT,
        name="c",
        created_at_unix=1_700_000_000,
        disabled_at_unix=1_700_000_100,
        disabled_reason="fraud report",
        disabled_by=OPERATOR,
    )
    balance = billing_pb2.AccountBalance(
        account_id=ACCOUNT,
        balance_micros=1_500_000,
        held_micros=500_000,
        available_micros=1_000_000,
    )
    shown = admin_views.admin_account(info, balance, [user])
    assert shown.disabled and shown.disabled_by.string_value == OPERATOR
    assert (shown.balance.balance_idr, shown.balance.available_idr) == ("1.5", "1")
    assert [(u.email, u.role, u.operator) for u in shown.users] == [
        ("c@example.id", "owner", False)
    ]
    enabled = admin_views.admin_account(billing_pb2.AccountInfo(account_id=ACCOUNT), balance, [])
    assert not enabled.disabled
    assert enabled.disabled_by.WhichOneof("kind") == "null_value"


def test_only_operators_see_who_made_an_adjustment() -> None:
    page = billing_pb2.LedgerPage(
        entries=[
            billing_pb2.LedgerEntry(
                entry_id=7, kind="adjustment", amount_micros=5_000_000, actor=OPERATOR
            )
        ]
    )
    customer = account_views.statement(page)
    operator = account_views.statement(page, show_actor=True)
    assert customer.data[0].actor.WhichOneof("kind") == "null_value"
    assert operator.data[0].actor.string_value == OPERATOR
