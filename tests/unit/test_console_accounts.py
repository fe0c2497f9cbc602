"""The console's account pages, pure parts: the session cookie, the client
address, form checks, accounts' and the gateway's refusals, the usage filters
and the CSV rows."""

from __future__ import annotations

import csv
import io
import json

import grpc
import pytest
from aiport.v1 import account_pb2
from google.protobuf import struct_pb2

from services.console import account_api, accounts_client, usage_view, web_forms


class Refusal(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, *trailers: tuple[str, str]) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details, None)


def test_the_session_cookie_is_httponly_lax_sitewide_and_secure_over_https() -> None:
    spec = web_forms.session_cookie(
        "tok", expires_at_unix=1_000_100, now_unix=1_000_000, secure=True
    )
    assert (spec.name, spec.value, spec.max_age) == ("aiport_session", "tok", 100)
    assert (spec.path, spec.httponly, spec.samesite, spec.secure) == ("/", True, "Lax", True)
    assert web_forms.session_cookie("t", 5, 10, False).max_age == 0
    assert web_forms.secure_cookies("https://aiport.id")
    assert web_forms.secure_cookies("HTTPS://aiport.id")
    assert not web_forms.secure_cookies("http://127.0.0.1:8080")


def test_the_client_address_is_the_edges_else_the_peer() -> None:
    header = web_forms.CLIENT_ADDRESS_HEADER
    assert web_forms.client_address({header: "203.0.113.9"}, "10.0.0.1") == "203.0.113.9"
    assert web_forms.client_address({header: " 2001:db8::1 "}, None) == "2001:db8::1"
    assert web_forms.client_address({header: "evil, 1.2.3.4"}, "10.0.0.1") == "10.0.0.1"
    assert web_forms.client_address({}, None) == "127.0.0.1"


def test_forms_name_the_field_at_fault() -> None:
    form = web_forms.credentials_form({"email": " ana@example.com ", "password": "short"}, True)
    assert form.values["email"] == "ana@example.com"
    assert form.errors == {"password": "form.password_short"}
    # Logging in does not judge the password's length (an old one may be shorter).
    assert web_forms.credentials_form({"email": "a@b.c", "password": "short"}, False).ok
    assert web_forms.credentials_form({}, False).errors == {
        "email": "form.required",
        "password": "form.required",
    }
    assert web_forms.credentials_form({"email": "nobody", "password": "x" * 12}, True).errors == {
        "email": "form.email"
    }
    form = web_forms.new_password_form(
        {"current_password": "", "new_password": "abc"}, ("current_password", "new_password")
    )
    assert form.errors == {
        "current_password": "form.required",
        "new_password": "form.password_short",
    }
    assert web_forms.key_name_form({"name": "  laptop "}).values == {"name": "laptop"}
    assert web_forms.key_name_form({"name": "a\x00b"}).errors == {"name": "form.key_name"}
    assert web_forms.key_name_form({"name": "x" * 101}).errors == {"name": "form.key_name"}
    assert web_forms.email_form({"email": ["not", "text"]}).errors == {"email": "form.required"}


def test_accounts_fields_map_to_the_pages_fields() -> None:
    assert web_forms.form_field("new_password", ("password",)) == "password"
    assert (
        web_forms.form_field("new_password", ("current_password", "new_password")) == "new_password"
    )
    assert web_forms.form_field("locale", ("email", "password")) == ""
    assert web_forms.field_message("en", "must be at least 10 characters") == (
        "Must be at least 10 characters."
    )
    assert web_forms.field_message("id", "must be at least 10 characters") == ""


def test_accounts_refusals_become_the_pages_refusals() -> None:
    field = accounts_client.refusal(
        Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "email: must look like a@b.c",
            ("x-aiport-field", "email"),
        )
    )
    assert isinstance(field, accounts_client.FieldError)
    assert (field.field, field.detail) == ("email", "must look like a@b.c")
    unauthenticated = Refusal(grpc.StatusCode.UNAUTHENTICATED, "incorrect email or password")
    assert isinstance(
        accounts_client.refusal(unauthenticated, logging_in=True), accounts_client.BadCredentials
    )
    assert isinstance(accounts_client.refusal(unauthenticated), accounts_client.SessionEnded)
    limited = accounts_client.refusal(
        Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", ("x-aiport-retry-after", "90"))
    )
    assert isinstance(limited, accounts_client.RateLimited) and limited.retry_after_seconds == 90
    assert isinstance(
        accounts_client.refusal(Refusal(grpc.StatusCode.FAILED_PRECONDITION, "")),
        accounts_client.NotVerified,
    )
    assert isinstance(
        accounts_client.refusal(Refusal(grpc.StatusCode.UNAVAILABLE, "")),
        accounts_client.AccountsUnavailable,
    )


def test_gateway_refusals_carry_the_public_status_and_param() -> None:
    body = {"error": {"message": "key_id is not an API key id", "param": "key_id"}}
    refused = account_api.refusal(
        Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            ("x-aiport-http-status", "400"),
            ("x-aiport-error", json.dumps(body)),
        )
    )
    assert isinstance(refused, account_api.ApiRefused)
    assert (refused.status, refused.param) == (400, "key_id")
    not_found = account_api.refusal(
        Refusal(grpc.StatusCode.NOT_FOUND, "", ("x-aiport-http-status", "404"))
    )
    assert isinstance(not_found, account_api.ApiRefused) and not_found.status == 404
    for error in (
        Refusal(grpc.StatusCode.UNAVAILABLE, "connect failed"),
        Refusal(grpc.StatusCode.UNAVAILABLE, "", ("x-aiport-http-status", "503")),
    ):
        assert isinstance(account_api.refusal(error), account_api.ApiUnavailable)


def test_usage_filters_are_whole_days_in_jakarta() -> None:
    filters = usage_view.parse_filters(
        {
            "from": "2026-03-01",
            "to": "2026-03-31",
            "model": "kimi-k2.6",
            "key_id": "key_" + "a" * 20,
        }
    )
    assert not filters.errors
    query = usage_view.usage_query(filters, 50, "Asia/Jakarta")
    # 1 Mar 00:00 WIB is 28 Feb 17:00 UTC; `to` includes all of 31 Mar.
    assert query.start_time == "1772298000"
    assert query.end_time == "1774976400"
    assert (query.model, query.key_id, query.limit) == ("kimi-k2.6", "key_" + "a" * 20, "50")
    assert filters.query_string(after="hold_x") == (
        "from=2026-03-01&to=2026-03-31&model=kimi-k2.6&key_id=key_" + "a" * 20 + "&after=hold_x"
    )


def test_bad_usage_filters_are_named_and_left_out() -> None:
    filters = usage_view.parse_filters(
        {"from": "2026-02-30", "to": "03/01/2026", "model": "a b", "key_id": "nope", "after": "x"}
    )
    assert filters.errors == {
        "from": "usage.bad_date",
        "to": "usage.bad_date",
        "model": "usage.bad_model",
        "key_id": "usage.bad_key",
    }
    assert filters.params(with_cursor=True) == {}
    backwards = usage_view.parse_filters({"from": "2026-03-02", "to": "2026-03-01"})
    assert backwards.errors == {"to": "usage.bad_range"} and backwards.end == ""


def test_month_start_is_in_the_users_zone() -> None:
    # 31 Mar 2026 20:00 UTC is already 1 Apr 03:00 in Jakarta.
    assert usage_view.month_start_unix(1774987200, "Asia/Jakarta") == 1774976400


def test_csv_rows_carry_every_column_and_defuse_formulas() -> None:
    entry = account_pb2.UsageEntry(
        id="hold_" + "b" * 20,
        created=1774976400,
        key_id=struct_pb2.Value(string_value="key_" + "c" * 20),
        key_name='=HYPERLINK("x")',
        model="kimi-k2.6",
        endpoint="chat.completions",
        request_id="req-1",
        job_id=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
        status="succeeded",
        cost_idr="12.5",
        input_tokens=7,
        cached_input_tokens=1,
        output_tokens=3,
        reasoning_tokens=2,
        latency_ms=struct_pb2.Value(number_value=250),
    )
    text = usage_view.csv_lines([list(usage_view.CSV_COLUMNS), usage_view.csv_row(entry)])
    assert text.endswith("\r\n")
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row == {
        "time": "2026-04-01T00:00:00+07:00",
        "request_id": "req-1",
        "key_id": "key_" + "c" * 20,
        "key_name": '\'=HYPERLINK("x")',
        "model": "kimi-k2.6",
        "endpoint": "chat.completions",
        "status": "succeeded",
        "input_tokens": "7",
        "cached_input_tokens": "1",
        "output_tokens": "3",
        "reasoning_tokens": "2",
        "cost_idr": "12.5",
        "latency_ms": "250",
        "job_id": "",
    }


@pytest.mark.parametrize("day", ["", "2026-13-01", "20260301"])
def test_day_start_refuses_what_is_not_a_date(day: str) -> None:
    with pytest.raises(ValueError):
        usage_view.day_start_unix(day)
