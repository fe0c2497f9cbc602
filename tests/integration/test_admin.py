"""Operators' /v1/admin against the real stack. An operator (granted with the
accounts admin token, as aiportctl does) calls the gateway with a console
session, as the console does (the edge keeps clients from sending one): finds a
customer by email, credits it with a reason (the transaction carries the
operator's id; a double submit moves money once), disables it (its key is a 401
at once through the edge) and enables it again. A customer's session, an API key
and no credentials at all are refused."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from aiport.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    billing_pb2,
    billing_pb2_grpc,
)
from google.api import httpbody_pb2

from deploy.local.stack import Stack
from services.gateway.sessions import SESSION_METADATA

from .test_accounts import Person, log_in, sign_up


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[admin_pb2_grpc.AdminStub]:
    with grpc.insecure_channel(stack.config.dial_addr("gateway")) as chan:
        yield admin_pb2_grpc.AdminStub(chan)


def as_session(token: str) -> tuple[tuple[str, str], ...]:
    return ((SESSION_METADATA, token),)


def body(**fields: str) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(fields).encode())


def refused_status(error: grpc.RpcError) -> int:
    assert isinstance(error, grpc.Call)
    trailers = {str(k): str(v) for k, v in error.trailing_metadata() or ()}
    return int(trailers["x-aiport-http-status"])


def operator(
    accounts: accounts_pb2_grpc.AccountsStub,
    accounts_admin: accounts_pb2_grpc.AccountsStub,
    mail_folder: Path,
) -> tuple[Person, str]:
    person = sign_up(accounts, mail_folder, email=f"op-{secrets.token_hex(4)}@example.co.id")
    accounts_admin.SetOperator(accounts_pb2.SetOperatorRequest(email=person.email, operator=True))
    return person, log_in(accounts, person).session_token


def actors(stack: Stack, account_id: str) -> list[tuple[object, ...]]:
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT kind, actor, description FROM billing.transactions"
            " WHERE account_id = %s AND kind = 'adjustment' ORDER BY id",
            (account_id,),
        ).fetchall()


def test_an_operator_finds_credits_disables_and_enables_a_customer(
    stack: Stack,
    base_url: str,
    admin: admin_pb2_grpc.AdminStub,
    accounts: accounts_pb2_grpc.AccountsStub,
    accounts_admin: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
    mail_folder: Path,
) -> None:
    op, op_session = operator(accounts, accounts_admin, mail_folder)
    customer = sign_up(accounts, mail_folder)
    account_id = customer.user.memberships[0].billing_account_id
    key = billing.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=account_id)).api_key
    meta = as_session(op_session)

    found = admin.FindAccount(admin_pb2.FindAccountQuery(email=customer.email), metadata=meta)
    assert found.id == account_id
    assert [u.email for u in found.users] == [customer.user.email]
    assert (found.balance.balance_idr, found.disabled) == ("0", False)
    by_id = admin.FindAccount(admin_pb2.FindAccountQuery(account_id=account_id), metadata=meta)
    assert by_id.id == account_id

    credit = admin_pb2.AccountAction(
        account_id=account_id,
        body=body(amount_idr="25000.5", reason="goodwill for an outage", idempotency_key="form-1"),
    )
    assert admin.CreateAdjustment(credit, metadata=meta).balance.balance_idr == "25000.5"
    # A double submit of the same form: the money moves once.
    assert admin.CreateAdjustment(credit, metadata=meta).balance.balance_idr == "25000.5"
    assert actors(stack, account_id) == [("adjustment", op.user.user_id, "goodwill for an outage")]
    statement = admin.ListStatement(
        admin_pb2.AdminStatementQuery(account_id=account_id), metadata=meta
    )
    assert [(e.kind, e.amount_idr, e.actor.string_value) for e in statement.data] == [
        ("adjustment", "25000.5", op.user.user_id)
    ]

    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        assert http.get("/v1/balance").json()["balance_idr"] == "25000.5"
        mine = http.get("/v1/statement").json()["data"]
        assert [(e["kind"], e["description"], e["actor"]) for e in mine] == [
            ("adjustment", "goodwill for an outage", None)
        ]

        disabled = admin.DisableAccount(
            admin_pb2.AccountAction(account_id=account_id, body=body(reason="fraud report")),
            metadata=meta,
        )
        assert disabled.disabled and disabled.disabled_by.string_value == op.user.user_id
        assert http.get("/v1/balance").status_code == 401
        enabled = admin.EnableAccount(admin_pb2.AccountAction(account_id=account_id), metadata=meta)
        assert not enabled.disabled
        assert http.get("/v1/balance").status_code == 200

    # Usage and jobs read (empty for a new customer).
    assert (
        list(admin.ListUsage(admin_pb2.AdminUsageQuery(account_id=account_id), metadata=meta).data)
        == []
    )
    assert (
        list(admin.ListJobs(admin_pb2.AdminJobsQuery(account_id=account_id), metadata=meta).data)
        == []
    )


def test_bad_input_names_its_field(
    admin: admin_pb2_grpc.AdminStub,
    accounts: accounts_pb2_grpc.AccountsStub,
    accounts_admin: accounts_pb2_grpc.AccountsStub,
    mail_folder: Path,
) -> None:
    _, session = operator(accounts, accounts_admin, mail_folder)
    customer = sign_up(accounts, mail_folder)
    account_id = customer.user.memberships[0].billing_account_id
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateAdjustment(
            admin_pb2.AccountAction(
                account_id=account_id, body=body(amount_idr="-5", idempotency_key="k")
            ),
            metadata=as_session(session),
        )
    assert refused_status(caught.value) == 400
    # A debit beyond what the account has available.
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateAdjustment(
            admin_pb2.AccountAction(
                account_id=account_id,
                body=body(amount_idr="-5", reason="typo", idempotency_key="k"),
            ),
            metadata=as_session(session),
        )
    assert refused_status(caught.value) == 400
    with pytest.raises(grpc.RpcError) as caught:
        admin.FindAccount(
            admin_pb2.FindAccountQuery(email=f"nobody-{secrets.token_hex(4)}@example.id"),
            metadata=as_session(session),
        )
    assert refused_status(caught.value) == 404


def test_customers_keys_and_strangers_are_refused(
    base_url: str,
    admin: admin_pb2_grpc.AdminStub,
    accounts: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
    mail_folder: Path,
) -> None:
    customer = sign_up(accounts, mail_folder)
    account_id = customer.user.memberships[0].billing_account_id
    session = log_in(accounts, customer).session_token
    with pytest.raises(grpc.RpcError) as caught:
        admin.FindAccount(
            admin_pb2.FindAccountQuery(account_id=account_id), metadata=as_session(session)
        )
    assert refused_status(caught.value) == 403
    key = billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(account_id=account_id, scopes=["inference", "manage"])
    ).api_key
    with httpx.Client(base_url=base_url, timeout=30) as http:
        paths = [
            ("GET", f"/v1/admin/accounts?account_id={account_id}"),
            ("GET", f"/v1/admin/accounts/{account_id}/statement"),
            ("POST", f"/v1/admin/accounts/{account_id}/enable"),
        ]
        for method, path in paths:
            keyed = http.request(method, path, headers={"Authorization": f"Bearer {key}"})
            assert keyed.status_code == 403, (path, keyed.text)
            assert keyed.json()["error"]["code"] == "operators_only"
            # A session header from a client never reaches the gateway: still nobody.
            stranger = http.request(method, path, headers={SESSION_METADATA: session})
            assert stranger.status_code == 401, (path, stranger.text)
