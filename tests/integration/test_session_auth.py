"""The gateway's session callers, against the real stack: the console's
x-aiport-session metadata reads the /v1 account methods (and manages keys) for
the person's billing account; an ended or made-up session is a 401; a session
cannot make a paid call; and a client can never send the metadata through the
edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from aiport.v1 import (
    account_pb2,
    account_pb2_grpc,
    accounts_pb2,
    accounts_pb2_grpc,
    chat_pb2_grpc,
    generate_pb2_grpc,
)
from google.api import httpbody_pb2

from deploy.local.stack import Stack
from services.gateway.sessions import SESSION_METADATA

from .test_accounts import log_in, sign_up


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.config.dial_addr("gateway")) as chan:
        yield chan


def as_session(token: str) -> tuple[tuple[str, str], ...]:
    return ((SESSION_METADATA, token),)


def refused_status(call: grpc.RpcError) -> int:
    assert isinstance(call, grpc.Call)
    trailers = {str(k): str(v) for k, v in call.trailing_metadata() or ()}
    return int(trailers["x-aiport-http-status"])


def test_a_session_reads_and_manages_its_own_account_over_grpc(
    gateway: grpc.Channel, accounts: accounts_pb2_grpc.AccountsStub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    session = log_in(accounts, person)
    account = account_pb2_grpc.AccountStub(gateway)
    balance = account.GetBalance(
        account_pb2.GetBalanceRequest(), metadata=as_session(session.session_token), timeout=10
    )
    assert (balance.currency, balance.available_idr, balance.held_idr) == ("IDR", "0", "0")
    usage = account.ListUsage(
        account_pb2.UsageQuery(), metadata=as_session(session.session_token), timeout=10
    )
    assert list(usage.data) == []
    # An owner's session manages keys, for its own billing account.
    created = account.CreateKey(
        httpbody_pb2.HttpBody(content_type="application/json", data=b'{"name":"laptop"}'),
        metadata=as_session(session.session_token),
        timeout=10,
    )
    keys = account.ListKeys(
        account_pb2.ListKeysRequest(), metadata=as_session(session.session_token), timeout=10
    )
    assert [key.id for key in keys.data] == [created.id]

    # Logged out: the same token is refused.
    accounts.LogOut(accounts_pb2.SessionRequest(session_token=session.session_token))
    with pytest.raises(grpc.RpcError) as ended:
        account.GetBalance(
            account_pb2.GetBalanceRequest(), metadata=as_session(session.session_token), timeout=10
        )
    assert refused_status(ended.value) == 401


def test_a_made_up_session_is_401(gateway: grpc.Channel) -> None:
    account = account_pb2_grpc.AccountStub(gateway)
    for token in ("x" * 43, "not a token"):
        with pytest.raises(grpc.RpcError) as caught:
            account.GetBalance(account_pb2.GetBalanceRequest(), metadata=as_session(token))
        assert refused_status(caught.value) == 401


def test_a_session_cannot_make_a_paid_call(
    gateway: grpc.Channel, accounts: accounts_pb2_grpc.AccountsStub, mail_folder: Path
) -> None:
    session = log_in(accounts, sign_up(accounts, mail_folder)).session_token
    body = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]}
    request = httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode())
    chat = chat_pb2_grpc.ChatStub(gateway)
    with pytest.raises(grpc.RpcError) as caught:
        list(chat.CreateChatCompletion(request, metadata=as_session(session), timeout=10))
    assert refused_status(caught.value) == 401
    generate = generate_pb2_grpc.GenerateStub(gateway)
    image = {"model": "gpt-image-2", "prompt": "a cat"}
    with pytest.raises(grpc.RpcError) as caught:
        generate.GenerateImage(
            httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(image).encode()),
            metadata=as_session(session),
            timeout=10,
        )
    assert refused_status(caught.value) == 401


def test_a_client_sent_session_header_never_reaches_the_gateway(
    base_url: str, accounts: accounts_pb2_grpc.AccountsStub, mail_folder: Path
) -> None:
    session = log_in(accounts, sign_up(accounts, mail_folder)).session_token
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for path in ("/v1/balance", "/v1/usage", "/v1/keys"):
            response = http.get(path, headers={SESSION_METADATA: session})
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
    # The session itself is fine: only the edge kept it out.
    resolved = accounts.ResolveSession(accounts_pb2.ResolveSessionRequest(session_token=session))
    assert resolved.billing_account_id
