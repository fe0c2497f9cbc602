"""The payments schema. Each function is one statement; the caller owns the
transaction where several must commit together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from .rules import OrderStatus

Conn = AsyncConnection[DictRow]

_COLUMNS = (
    "id, account_id, gateway, status, amount_micros, fee_micros, payment_url, gateway_ref,"
    " payment_method, payer_email, payer_name, created_at, updated_at, expires_at, paid_at,"
    " credited_at, reversed_at, reversed_micros, flag, last_checked_at"
)


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    account_id: str
    gateway: str
    status: OrderStatus
    amount_micros: int
    fee_micros: int
    payment_url: str
    gateway_ref: str
    payment_method: str
    payer_email: str
    payer_name: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    credited_at: datetime | None
    reversed_at: datetime | None
    reversed_micros: int
    flag: str
    last_checked_at: datetime | None

    @property
    def total_micros(self) -> int:
        return self.amount_micros + self.fee_micros

    @property
    def owes_credit(self) -> bool:
        paid_once = (OrderStatus.PAID, OrderStatus.REFUNDED, OrderStatus.CHARGED_BACK)
        return self.status in paid_once and self.credited_at is None

    @property
    def owes_reversal(self) -> bool:
        taken_back = (OrderStatus.REFUNDED, OrderStatus.CHARGED_BACK)
        return self.status in taken_back and self.reversed_at is None


def _order(row: DictRow) -> Order:
    values: dict[str, Any] = dict(row)
    values["status"] = OrderStatus(values["status"])
    return Order(**values)


async def insert_order(
    conn: Conn,
    *,
    order_id: str,
    account_id: str,
    gateway: str,
    amount_micros: int,
    fee_micros: int,
    payer_email: str,
    payer_name: str,
    expiry_minutes: int,
) -> Order:
    cur = await conn.execute(
        f"""INSERT INTO payments.orders (id, account_id, gateway, status, amount_micros,
                fee_micros, payer_email, payer_name, expires_at)
            VALUES (%(id)s, %(account)s, %(gateway)s, 'awaiting_payment', %(amount)s, %(fee)s,
                %(email)s, %(name)s, now() + make_interval(mins => %(minutes)s))
            RETURNING {_COLUMNS}""",
        {
            "id": order_id,
            "account": account_id,
            "gateway": gateway,
            "amount": amount_micros,
            "fee": fee_micros,
            "email": payer_email,
            "name": payer_name,
            "minutes": expiry_minutes,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return _order(row)


async def set_payment_page(
    conn: Conn, order_id: str, url: str, gateway_ref: str, expires_at: datetime | None
) -> Order:
    cur = await conn.execute(
        f"""UPDATE payments.orders SET payment_url = %(url)s, gateway_ref = %(ref)s,
                expires_at = coalesce(%(expires)s, expires_at), updated_at = now()
            WHERE id = %(id)s RETURNING {_COLUMNS}""",
        {"id": order_id, "url": url, "ref": gateway_ref, "expires": expires_at},
    )
    row = await cur.fetchone()
    assert row is not None
    return _order(row)


async def get_order(conn: Conn, order_id: str, account_id: str | None = None) -> Order | None:
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM payments.orders
            WHERE id = %(id)s AND (%(account)s::text IS NULL OR account_id = %(account)s)""",
        {"id": order_id, "account": account_id},
    )
    row = await cur.fetchone()
    return None if row is None else _order(row)


async def lock_order(conn: Conn, order_id: str) -> Order | None:
    """The order, locked for this transaction; None if another holds it (it
    is being settled there) or it does not exist."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM payments.orders WHERE id = %(id)s FOR UPDATE SKIP LOCKED",
        {"id": order_id},
    )
    row = await cur.fetchone()
    return None if row is None else _order(row)


async def order_exists(conn: Conn, order_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM payments.orders WHERE id = %(id)s", {"id": order_id})
    return await cur.fetchone() is not None


async def save_confirmation(
    conn: Conn,
    order_id: str,
    *,
    status: OrderStatus,
    method: str,
    paid_at: datetime | None,
    flag: str,
) -> Order:
    cur = await conn.execute(
        f"""UPDATE payments.orders SET status = %(status)s,
                payment_method = CASE WHEN %(method)s = '' THEN payment_method ELSE %(method)s END,
                paid_at = CASE WHEN %(status)s IN ('paid', 'refunded', 'charged_back')
                               THEN coalesce(paid_at, %(paid_at)s, now()) ELSE paid_at END,
                flag = CASE WHEN %(flag)s = '' THEN flag ELSE %(flag)s END,
                last_checked_at = now(),
                updated_at = CASE WHEN status = %(status)s THEN updated_at ELSE now() END
            WHERE id = %(id)s RETURNING {_COLUMNS}""",
        {
            "id": order_id,
            "status": status.value,
            "method": method,
            "paid_at": paid_at,
            "flag": flag,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return _order(row)


async def mark_credited(conn: Conn, order_id: str) -> None:
    await conn.execute(
        "UPDATE payments.orders SET credited_at = now(), updated_at = now()"
        " WHERE id = %(id)s AND credited_at IS NULL",
        {"id": order_id},
    )


async def mark_reversed(conn: Conn, order_id: str, amount_micros: int) -> None:
    await conn.execute(
        "UPDATE payments.orders SET reversed_at = now(), reversed_micros = %(amount)s,"
        " updated_at = now() WHERE id = %(id)s AND reversed_at IS NULL",
        {"id": order_id, "amount": amount_micros},
    )


async def set_flag(conn: Conn, order_id: str, flag: str) -> None:
    await conn.execute(
        "UPDATE payments.orders SET flag = %(flag)s, updated_at = now() WHERE id = %(id)s",
        {"id": order_id, "flag": flag},
    )


async def record_notification(
    conn: Conn,
    *,
    gateway: str,
    order_id: str,
    raw_status: str,
    amount_micros: int | None,
    body: dict[str, Any],
) -> int:
    cur = await conn.execute(
        """INSERT INTO payments.notifications (gateway, order_id, raw_status, amount_micros, body)
           VALUES (%(gateway)s, %(order)s, %(status)s, %(amount)s, %(body)s) RETURNING id""",
        {
            "gateway": gateway,
            "order": order_id[:64],
            "status": raw_status[:40],
            "amount": amount_micros,
            "body": Jsonb(body, dumps=lambda v: orjson.dumps(v).decode()),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def finish_notifications(conn: Conn, order_id: str, up_to: int, outcome: str) -> None:
    await conn.execute(
        """UPDATE payments.notifications SET processed_at = now(), outcome = %(outcome)s
           WHERE order_id = %(order)s AND id <= %(up_to)s AND processed_at IS NULL""",
        {"order": order_id, "up_to": up_to, "outcome": outcome[:64]},
    )


async def latest_notification(conn: Conn, order_id: str) -> int:
    cur = await conn.execute(
        "SELECT coalesce(max(id), 0) AS id FROM payments.notifications WHERE order_id = %(o)s",
        {"o": order_id},
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row["id"])


async def due_orders(conn: Conn, recheck_seconds: int, limit: int) -> list[str]:
    """Orders the sweeper should settle: money owed either way, an unprocessed
    notification, or an open order not asked about for a while (a notification
    may never come)."""
    cur = await conn.execute(
        """SELECT id FROM (
             SELECT id, updated_at AS due FROM payments.orders
             WHERE (status = 'paid' AND credited_at IS NULL)
                OR (status IN ('refunded', 'charged_back') AND reversed_at IS NULL)
             UNION
             SELECT n.order_id, min(n.received_at) FROM payments.notifications n
             WHERE n.processed_at IS NULL GROUP BY n.order_id
             UNION
             SELECT id, coalesce(last_checked_at, created_at) FROM payments.orders
             WHERE status IN ('awaiting_payment', 'pending') AND payment_url <> ''
               AND coalesce(last_checked_at, created_at) < now() - make_interval(secs => %(every)s)
               AND created_at > now() - interval '7 days'
           ) due GROUP BY id ORDER BY min(due) LIMIT %(limit)s""",
        {"every": recheck_seconds, "limit": limit},
    )
    return [str(row["id"]) for row in await cur.fetchall()]


async def list_orders(
    conn: Conn,
    *,
    account_id: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
    status: str,
    flagged_only: bool,
) -> list[Order]:
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM payments.orders
            WHERE (%(account)s::text IS NULL OR account_id = %(account)s)
              AND (%(status)s = '' OR status = %(status)s)
              AND (NOT %(flagged)s OR flag <> '')
              AND (%(after_t)s::timestamptz IS NULL
                   OR (created_at, id) < (%(after_t)s, %(after_id)s))
            ORDER BY created_at DESC, id DESC LIMIT %(limit)s""",
        {
            "account": account_id,
            "status": status,
            "flagged": flagged_only,
            "after_t": after[0] if after else None,
            "after_id": after[1] if after else "",
            "limit": limit,
        },
    )
    return [_order(row) for row in await cur.fetchall()]


async def unknown_order_notifications(conn: Conn, limit: int) -> list[DictRow]:
    cur = await conn.execute(
        """SELECT gateway, order_id, raw_status, amount_micros, received_at
           FROM payments.notifications WHERE outcome = 'unknown_order'
           ORDER BY id DESC LIMIT %(limit)s""",
        {"limit": limit},
    )
    return list(await cur.fetchall())


async def schema_revision(conn: Conn) -> str | None:
    cur = await conn.execute(
        "SELECT to_regclass('payments.alembic_version') IS NOT NULL AS present"
    )
    row = await cur.fetchone()
    if row is None or not row["present"]:
        return None
    cur = await conn.execute("SELECT version_num FROM payments.alembic_version")
    found = await cur.fetchone()
    return None if found is None else str(found["version_num"])
