"""Payment orders, end to end: create one and its payment page, take in the
gateways' notifications, and settle each order against what its gateway
confirms, moving money through billing exactly once.

Settling an order (`settle`) is the one place orders change, and it always
runs inside a transaction holding the order's row lock (SKIP LOCKED: a replica
that finds it taken leaves the order to the holder, and the sweeper comes back
for anything left). Inside it: ask the gateway, apply the state machine
(rules.next_step), then pay what is owed — a credit for a paid order not yet
credited, a reversal for a refunded or charged-back one — each a billing call
with a key derived from gateway and order id. Billing refuses a second credit
for the same key, so a crash after billing answered and before our commit
repeats the call harmlessly. If billing cannot be reached, the order's new
state still commits and the money stays owed: the sweeper pays it when billing
is back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from services.common import metrics, pg
from services.common.logs import fields

from . import rules, store
from .config import PaymentsConfig
from .gateways import (
    Confirmation,
    GatewayRefused,
    GatewayUnavailable,
    NewOrder,
    PaymentGateway,
)
from .rules import Confirmed, Money, OrderStatus, PaymentError
from .store import Order

log = logging.getLogger("payments")

SWEEP_BATCH = 50
MAX_LIST = 100
FLAG_AMOUNT_MISMATCH = "amount_mismatch"
FLAG_LEDGER_REFUSED = "ledger_refused"

NOTIFICATIONS = metrics.PAYMENT_NOTIFICATIONS
MONEY_MOVED = metrics.PAYMENT_MONEY
FLAGGED = metrics.PAYMENT_FLAGS


class LedgerUnavailable(Exception):
    """Billing did not answer: the money stays owed and is paid later."""


class LedgerRefused(Exception):
    """Billing refused the movement (e.g. the same key with another amount)."""


class Ledger(Protocol):
    async def credit(self, order: Order, key: str) -> None: ...

    async def reverse(self, order: Order, key: str, chargeback: bool) -> None: ...


class NotFound(Exception):
    pass


class Unavailable(Exception):
    """A payment gateway or the database could not be reached."""


@dataclass(frozen=True, slots=True)
class Quote:
    gateway: str
    amount_micros: int
    fee_micros: int
    limits: rules.Limits

    @property
    def total_micros(self) -> int:
        return self.amount_micros + self.fee_micros


@dataclass(frozen=True, slots=True)
class Finding:
    order: Order
    gateway_status: str
    problem: str
    action: str


class Payments:
    def __init__(
        self,
        pool: pg.Pool,
        config: PaymentsConfig,
        gateways: dict[str, PaymentGateway],
        ledger: Ledger,
        recheck_seconds: int = 60,
    ) -> None:
        self._pool = pool
        # Open orders are asked about again after this long without news.
        self._recheck_seconds = recheck_seconds
        self._config = config
        self._gateways = gateways
        self._ledger = ledger
        self._tasks: set[asyncio.Task[None]] = set()

    # Orders.

    def _gateway(self, name: str) -> PaymentGateway:
        name = name or self._config.default_gateway
        gateway = self._gateways.get(name)
        if gateway is None:
            offered = ", ".join(sorted(self._gateways)) or "none"
            raise PaymentError(f"gateway must be one of: {offered}", "gateway")
        return gateway

    def quote(self, amount_micros: int, gateway: str) -> Quote:
        chosen = self._gateway(gateway)
        amount = self._config.limits.check(amount_micros)
        if amount % rules.MICROS:
            raise PaymentError("amount_idr must be a whole number of rupiah", "amount_idr")
        fee = self._config.gateways[chosen.name].fee.of(amount)
        return Quote(chosen.name, amount, fee, self._config.limits)

    async def create_order(
        self, account_id: str, amount_micros: int, gateway: str, payer_email: str, payer_name: str
    ) -> Order:
        quote = self.quote(amount_micros, gateway)
        order_id = rules.new_order_id()
        async with self._pool.connection() as conn:
            order = await store.insert_order(
                conn,
                order_id=order_id,
                account_id=account_id,
                gateway=quote.gateway,
                amount_micros=quote.amount_micros,
                fee_micros=quote.fee_micros,
                payer_email=payer_email[:254],
                payer_name=payer_name[:100],
                expiry_minutes=self._config.expiry_minutes,
            )
        new = NewOrder(
            order_id, order.total_micros, payer_email, payer_name, self._config.expiry_minutes
        )
        try:
            page = await self._gateways[quote.gateway].create(
                new, self._config.public_url, self._config.notification_url
            )
        except (GatewayUnavailable, GatewayRefused) as exc:
            async with self._pool.connection() as conn:
                await store.save_confirmation(
                    conn, order_id, status=OrderStatus.FAILED, method="", paid_at=None, flag=""
                )
            log.warning(
                "payment page not created",
                extra=fields(order_id=order_id, gateway=quote.gateway, error=str(exc)),
            )
            raise Unavailable(f"{quote.gateway} did not create a payment page; try again") from exc
        async with self._pool.connection() as conn:
            order = await store.set_payment_page(
                conn, order_id, page.url, page.gateway_ref, page.expires_at
            )
        log.info(
            "top-up order created",
            extra=fields(
                order_id=order_id,
                account_id=account_id,
                gateway=quote.gateway,
                amount_micros=quote.amount_micros,
            ),
        )
        return order

    async def get_order(self, order_id: str, account_id: str | None) -> Order:
        rules.check_order_id(order_id)
        async with self._pool.connection() as conn:
            order = await store.get_order(conn, order_id, account_id)
        if order is None:
            raise NotFound(f"top-up {order_id} not found")
        return order

    async def list_orders(
        self, account_id: str | None, limit: int, after: str, status: str, flagged_only: bool
    ) -> tuple[list[Order], str]:
        if status and status not in {s.value for s in OrderStatus}:
            raise PaymentError("status is not a top-up status", "status")
        limit = limit or 20
        if not 1 <= limit <= MAX_LIST:
            raise PaymentError(f"limit must be between 1 and {MAX_LIST}", "limit")
        cursor = None
        if after:
            rules.check_order_id(after, "after")
            async with self._pool.connection() as conn:
                anchor = await store.get_order(conn, after, account_id)
            if anchor is None:
                raise PaymentError("after is not a top-up of this account", "after")
            cursor = (anchor.created_at, anchor.id)
        async with self._pool.connection() as conn:
            orders = await store.list_orders(
                conn,
                account_id=account_id,
                limit=limit + 1,
                after=cursor,
                status=status,
                flagged_only=flagged_only,
            )
        more = len(orders) > limit
        orders = orders[:limit]
        return orders, orders[-1].id if more and orders else ""

    # Notifications.

    async def notification(
        self, gateway_name: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, str]:
        """(HTTP status, message) for a gateway's notification. 200 only once it
        is recorded; settling it happens after the answer."""
        gateway = self._gateways.get(gateway_name)
        if gateway is None:
            return 404, "this payment gateway is not enabled"
        notice = gateway.authentic(headers, body)
        if notice is None:
            NOTIFICATIONS.labels(gateway_name, "refused").inc()
            log.warning(
                "notification refused: signature or token does not verify",
                extra=fields(
                    gateway=gateway_name,
                    order_id=str(body.get("order_id") or body.get("external_id") or "")[:64],
                ),
            )
            return 401, "signature or token does not verify"
        async with self._pool.connection() as conn, conn.transaction():
            known = await store.order_exists(conn, notice.order_id)
            notification_id = await store.record_notification(
                conn,
                gateway=gateway_name,
                order_id=notice.order_id,
                raw_status=notice.raw_status,
                amount_micros=notice.amount_micros,
                body=body,
            )
            if not known:
                await store.finish_notifications(
                    conn, notice.order_id, notification_id, "unknown_order"
                )
        if not known:
            NOTIFICATIONS.labels(gateway_name, "unknown_order").inc()
            log.warning(
                "notification for an order we never made (kept for an operator)",
                extra=fields(gateway=gateway_name, order_id=notice.order_id[:64]),
            )
            return 200, "recorded"
        NOTIFICATIONS.labels(gateway_name, "recorded").inc()
        log.info(
            "notification recorded",
            extra=fields(gateway=gateway_name, order_id=notice.order_id, status=notice.raw_status),
        )
        self._settle_soon(notice.order_id)
        return 200, "recorded"

    def _settle_soon(self, order_id: str) -> None:
        task = asyncio.create_task(self._settle_logged(order_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_logged(self, order_id: str) -> None:
        try:
            await self.settle(order_id)
        except Exception:  # the sweeper retries; the log says why
            log.exception(
                "settling failed; the sweeper will retry", extra=fields(order_id=order_id)
            )

    async def drain(self, seconds: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    # Settling.

    async def settle(self, order_id: str) -> Order | None:
        """Bring one order in line with its gateway, and pay what is owed.
        None when another replica holds the order right now."""
        async with pg.transaction(self._pool) as conn:
            order = await store.lock_order(conn, order_id)
            if order is None:
                return None
            seen = await store.latest_notification(conn, order_id)
            gateway = self._gateways.get(order.gateway)
            if gateway is None:
                return order  # a gateway switched off: left for an operator
            try:
                confirmed = await gateway.confirm(order.id, order.gateway_ref)
            except (GatewayUnavailable, GatewayRefused) as exc:
                log.warning(
                    "gateway status unavailable; retried later",
                    extra=fields(order_id=order_id, gateway=order.gateway, error=str(exc)),
                )
                return order
            order, outcome = await self._apply(conn, order, confirmed)
            order = await self._pay_owed(conn, order)
            if seen:
                await store.finish_notifications(conn, order_id, seen, outcome)
            return order

    async def _apply(
        self, conn: store.Conn, order: Order, confirmed: Confirmation
    ) -> tuple[Order, str]:
        step = rules.next_step(order.status, confirmed.state)
        flag = step.flag
        if step.money is Money.CREDIT and confirmed.amount_micros != order.total_micros:
            # A paid amount that is not what we asked for is never credited by a rule.
            flag = FLAG_AMOUNT_MISMATCH
            step = rules.Step(order.status, Money.NONE, flag)
            log.error(
                "gateway confirms an amount that differs from the order; not credited",
                extra=fields(
                    order_id=order.id,
                    gateway=order.gateway,
                    order_total_micros=order.total_micros,
                    confirmed_micros=confirmed.amount_micros,
                ),
            )
        if flag and flag != order.flag:
            FLAGGED.labels(order.gateway, flag).inc()
        updated = await store.save_confirmation(
            conn,
            order.id,
            status=step.status,
            method=confirmed.method,
            paid_at=confirmed.paid_at,
            flag=flag,
        )
        if updated.status is not order.status:
            log.info(
                "top-up order changed",
                extra=fields(
                    order_id=order.id,
                    gateway=order.gateway,
                    before=order.status.value,
                    after=updated.status.value,
                    gateway_status=confirmed.raw_status,
                ),
            )
        return updated, flag or f"{confirmed.state.value}->{updated.status.value}"

    async def _pay_owed(self, conn: store.Conn, order: Order) -> Order:
        credited = order.credited_at is not None
        try:
            if order.owes_credit:
                await self._ledger.credit(
                    order, rules.billing_key(order.gateway, order.id, Money.CREDIT)
                )
                await store.mark_credited(conn, order.id)
                credited = True
                MONEY_MOVED.labels(order.gateway, "credit").inc()
                log.info(
                    "top-up credited",
                    extra=fields(
                        order_id=order.id,
                        account_id=order.account_id,
                        amount_micros=order.amount_micros,
                    ),
                )
            if order.owes_reversal and credited:
                chargeback = order.status is OrderStatus.CHARGED_BACK
                await self._ledger.reverse(
                    order, rules.billing_key(order.gateway, order.id, Money.REVERSE), chargeback
                )
                await store.mark_reversed(conn, order.id, order.amount_micros)
                MONEY_MOVED.labels(order.gateway, "reversal").inc()
                log.warning(
                    "top-up taken back",
                    extra=fields(
                        order_id=order.id,
                        account_id=order.account_id,
                        amount_micros=order.amount_micros,
                        reason=order.status.value,
                    ),
                )
        except LedgerUnavailable as exc:
            log.warning(
                "billing unavailable; the money stays owed and is paid later",
                extra=fields(order_id=order.id, error=str(exc)),
            )
        except LedgerRefused as exc:
            await store.set_flag(conn, order.id, FLAG_LEDGER_REFUSED)
            FLAGGED.labels(order.gateway, FLAG_LEDGER_REFUSED).inc()
            log.error(
                "billing refused an order's money", extra=fields(order_id=order.id, error=str(exc))
            )
        refreshed = await store.get_order(conn, order.id)
        assert refreshed is not None
        return refreshed

    async def sweep_once(self) -> int:
        async with self._pool.connection() as conn:
            due = await store.due_orders(conn, self._recheck_seconds, SWEEP_BATCH)
        for order_id in due:
            try:
                await self.settle(order_id)
            except Exception:
                log.exception("sweep could not settle an order", extra=fields(order_id=order_id))
        return len(due)

    async def sweep_forever(self, every_seconds: float) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("payments sweep failed; retrying")
            await asyncio.sleep(every_seconds)

    # Operators.

    async def reconcile(self, apply: bool, limit: int) -> tuple[list[Finding], int]:
        """Every order whose gateway state and ledger may disagree: asks the
        gateway about each non-final order and lists what is wrong; `apply`
        settles them (the same settle as notifications)."""
        limit = max(1, min(limit or 500, 5000))
        async with self._pool.connection() as conn:
            orders = await store.list_orders(
                conn, account_id=None, limit=limit, after=None, status="", flagged_only=False
            )
        findings: list[Finding] = []
        for order in orders:
            gateway = self._gateways.get(order.gateway)
            if gateway is None:
                continue
            try:
                confirmed = await gateway.confirm(order.id, order.gateway_ref)
            except (GatewayUnavailable, GatewayRefused) as exc:
                findings.append(Finding(order, "", f"gateway unavailable: {exc}", "none"))
                continue
            problem = _disagreement(order, confirmed)
            if not problem:
                continue
            action = "none"
            if apply and not order.flag:
                settled = await self.settle(order.id)
                action = "settled" if settled is not None else "busy"
            findings.append(Finding(order, confirmed.raw_status, problem, action))
        return findings, len(orders)

    async def unknown_notifications(self, limit: int) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            return [dict(r) for r in await store.unknown_order_notifications(conn, limit)]


def _disagreement(order: Order, confirmed: Confirmation) -> str:
    if order.flag:
        return f"flagged: {order.flag}"
    if order.owes_credit:
        return "paid but not credited"
    if order.owes_reversal:
        return f"{order.status.value} but not taken back"
    step = rules.next_step(order.status, confirmed.state)
    if step.status is not order.status or step.money is not Money.NONE:
        return f"gateway says {confirmed.state.value}, we say {order.status.value}"
    if confirmed.state is Confirmed.PAID and confirmed.amount_micros != order.total_micros:
        return "paid amount differs from the order"
    return ""
