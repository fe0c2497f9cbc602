"""The payment gateways' HTTP APIs: one adapter per gateway, the same three
questions of each (make a payment page, what is this order's state, is this
notification authentic). The rest of the service never sees a gateway's field
names.

Every call is bounded in time and size; keys go in the Authorization header
only and are never logged; answers are checked before they are believed (the
order id must be ours, the amount must be readable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import httpx
import orjson

from services.common.logs import fields

from . import rules
from .config import GatewaySettings
from .rules import MICROS, Confirmed

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
MAX_ANSWER_BYTES = 256 * 1024
FINISH_PATH = "/dashboard/topup/"
WIB = timezone(timedelta(hours=7))


class GatewayUnavailable(Exception):
    """The gateway did not answer usefully; try again later."""


class GatewayRefused(Exception):
    """The gateway refused the request (our configuration or input is wrong)."""


@dataclass(frozen=True, slots=True)
class NewOrder:
    order_id: str
    total_micros: int
    payer_email: str
    payer_name: str
    expiry_minutes: int


@dataclass(frozen=True, slots=True)
class PaymentPage:
    url: str
    gateway_ref: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What the gateway's own API says now."""

    state: Confirmed
    raw_status: str
    amount_micros: int | None  # None when unknown (nothing paid yet)
    method: str = ""
    paid_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification, authentic, reduced to what it names."""

    order_id: str
    gateway_ref: str
    raw_status: str
    amount_micros: int | None


class PaymentGateway(Protocol):
    name: str

    async def create(
        self, order: NewOrder, public_url: str, notification_url: str
    ) -> PaymentPage: ...

    async def confirm(self, order_id: str, gateway_ref: str) -> Confirmation: ...

    def authentic(self, headers: dict[str, str], body: dict[str, Any]) -> Notice | None: ...


def iso_time(value: object) -> datetime | None:
    """Xendit's times: ISO 8601 with a zone ("2026-12-03T10:00:00.000Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def midtrans_time(value: object) -> datetime | None:
    """Midtrans' times: "2026-12-03 17:00:00", Jakarta time, no zone written."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=WIB)
    except ValueError:
        return None


async def _send(
    client: httpx.AsyncClient, gateway: str, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    try:
        response = await client.request(method, url, timeout=TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise GatewayUnavailable(f"{gateway}: {type(exc).__name__}") from exc
    if len(response.content) > MAX_ANSWER_BYTES:
        raise GatewayUnavailable(f"{gateway}: answer too large")
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        if response.status_code >= 500:
            raise GatewayUnavailable(f"{gateway}: HTTP {response.status_code}")
        raise GatewayUnavailable(f"{gateway}: HTTP {response.status_code}, not a JSON object")
    return response.status_code, body


class Midtrans:
    """Snap for the payment page; the Core API's status for the truth;
    notifications signed with SHA512(order_id+status_code+gross_amount+server key)."""

    name = "midtrans"

    def __init__(self, settings: GatewaySettings, client: httpx.AsyncClient) -> None:
        self._snap = settings.urls["snap"]
        self._api = settings.urls["api"]
        self._key = settings.secrets["server_key"]
        self._auth = httpx.BasicAuth(self._key, "")
        self._methods = list(settings.methods)
        self._client = client

    async def create(self, order: NewOrder, public_url: str, notification_url: str) -> PaymentPage:
        body: dict[str, Any] = {
            "transaction_details": {
                "order_id": order.order_id,
                "gross_amount": order.total_micros // MICROS,
            },
            "callbacks": {"finish": public_url + FINISH_PATH + order.order_id},
            "expiry": {"unit": "minutes", "duration": order.expiry_minutes},
        }
        if self._methods:
            body["enabled_payments"] = self._methods
        if order.payer_email:
            body["customer_details"] = {
                "email": order.payer_email,
                "first_name": order.payer_name[:50],
            }
        status, answer = await _send(
            self._client,
            self.name,
            "POST",
            self._snap + "/snap/v1/transactions",
            json=body,
            auth=self._auth,
            # Per transaction, so one Midtrans account can serve several deployments.
            headers={"X-Override-Notification": notification_url + "/webhooks/midtrans"},
        )
        if status >= 500:
            raise GatewayUnavailable(f"midtrans: HTTP {status}")
        token, url = answer.get("token"), answer.get("redirect_url")
        if status != 201 or not isinstance(token, str) or not isinstance(url, str):
            log.error(
                "midtrans refused a transaction",
                extra=fields(
                    order_id=order.order_id,
                    http_status=status,
                    error_messages=answer.get("error_messages"),
                ),
            )
            raise GatewayRefused(f"midtrans: HTTP {status}")
        return PaymentPage(url=url, gateway_ref=token, expires_at=None)

    async def confirm(self, order_id: str, gateway_ref: str) -> Confirmation:
        status, answer = await _send(
            self._client, self.name, "GET", f"{self._api}/v2/{order_id}/status", auth=self._auth
        )
        code = str(answer.get("status_code", ""))
        if code == "404" or (status == 404 and not answer.get("transaction_status")):
            # Midtrans knows no transaction until a payment method is chosen.
            return Confirmation(Confirmed.UNPAID, "not_found", None)
        if status >= 500 or code.startswith("5"):
            raise GatewayUnavailable(f"midtrans: status {code or status}")
        if status >= 400 or code in ("401", "403"):
            raise GatewayRefused(f"midtrans: status {code or status}")
        if answer.get("order_id") != order_id:
            raise GatewayUnavailable("midtrans: the status answer names another order")
        raw = str(answer.get("transaction_status", ""))
        state = rules.midtrans_state(raw, str(answer.get("fraud_status", "")))
        return Confirmation(
            state=state,
            raw_status=raw,
            amount_micros=rules.gateway_amount_micros(answer.get("gross_amount")),
            method=str(answer.get("payment_type", ""))[:40],
            paid_at=midtrans_time(answer.get("settlement_time"))
            if state is Confirmed.PAID
            else None,
        )

    def authentic(self, headers: dict[str, str], body: dict[str, Any]) -> Notice | None:
        if not rules.midtrans_signature_ok(body, self._key):
            return None
        return Notice(
            order_id=str(body["order_id"]),
            gateway_ref=str(body.get("transaction_id", "")),
            raw_status=str(body.get("transaction_status", "")),
            amount_micros=rules.gateway_amount_micros(body.get("gross_amount")),
        )


class Xendit:
    """Invoices for the payment page; the invoice re-fetched for the truth;
    callbacks carrying the account's verification token in x-callback-token."""

    name = "xendit"

    def __init__(self, settings: GatewaySettings, client: httpx.AsyncClient) -> None:
        self._api = settings.urls["api"]
        self._auth = httpx.BasicAuth(settings.secrets["secret_key"], "")
        self._token = settings.secrets["callback_token"]
        self._methods = list(settings.methods)
        self._client = client

    async def create(self, order: NewOrder, public_url: str, notification_url: str) -> PaymentPage:
        back = public_url + FINISH_PATH + order.order_id
        body: dict[str, Any] = {
            "external_id": order.order_id,
            "amount": order.total_micros // MICROS,
            "currency": "IDR",
            "description": "aiport balance top-up",
            "invoice_duration": order.expiry_minutes * 60,
            "success_redirect_url": back,
            "failure_redirect_url": back,
        }
        if self._methods:
            body["payment_methods"] = self._methods
        if order.payer_email:
            body["payer_email"] = order.payer_email
        status, answer = await _send(
            self._client, self.name, "POST", self._api + "/v2/invoices", json=body, auth=self._auth
        )
        if status >= 500:
            raise GatewayUnavailable(f"xendit: HTTP {status}")
        invoice_id, url = answer.get("id"), answer.get("invoice_url")
        if status != 200 or not isinstance(invoice_id, str) or not isinstance(url, str):
            log.error(
                "xendit refused an invoice",
                extra=fields(
                    order_id=order.order_id, http_status=status, error_code=answer.get("error_code")
                ),
            )
            raise GatewayRefused(f"xendit: HTTP {status}")
        return PaymentPage(
            url=url, gateway_ref=invoice_id, expires_at=iso_time(answer.get("expiry_date"))
        )

    async def confirm(self, order_id: str, gateway_ref: str) -> Confirmation:
        if not gateway_ref:
            return Confirmation(Confirmed.UNPAID, "no_invoice", None)
        status, answer = await _send(
            self._client,
            self.name,
            "GET",
            f"{self._api}/v2/invoices/{gateway_ref}",
            auth=self._auth,
        )
        if status >= 500:
            raise GatewayUnavailable(f"xendit: HTTP {status}")
        if status == 404:
            return Confirmation(Confirmed.UNPAID, "not_found", None)
        if status >= 400:
            raise GatewayRefused(f"xendit: HTTP {status}")
        if answer.get("external_id") != order_id:
            raise GatewayUnavailable("xendit: the invoice belongs to another order")
        raw = str(answer.get("status", ""))
        state = rules.xendit_state(raw)
        paid = answer.get("paid_amount") if state is Confirmed.PAID else answer.get("amount")
        method = answer.get("payment_channel") or answer.get("payment_method") or ""
        return Confirmation(
            state=state,
            raw_status=raw,
            amount_micros=rules.gateway_amount_micros(paid),
            method=str(method)[:40].lower(),
            paid_at=iso_time(answer.get("paid_at")) if state is Confirmed.PAID else None,
        )

    def authentic(self, headers: dict[str, str], body: dict[str, Any]) -> Notice | None:
        if not rules.xendit_token_ok(headers.get("x-callback-token"), self._token):
            return None
        order_id, invoice_id = body.get("external_id"), body.get("id")
        if not isinstance(order_id, str) or not isinstance(invoice_id, str):
            return None
        amount = body.get("paid_amount", body.get("amount"))
        return Notice(
            order_id, invoice_id, str(body.get("status", "")), rules.gateway_amount_micros(amount)
        )


def build(settings: GatewaySettings, client: httpx.AsyncClient) -> PaymentGateway:
    if settings.name == "midtrans":
        return Midtrans(settings, client)
    if settings.name == "xendit":
        return Xendit(settings, client)
    raise ValueError(f"unknown gateway {settings.name}")
