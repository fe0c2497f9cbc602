"""What the top-up tests ask of the database and the gateways' protocols."""

from __future__ import annotations

import hashlib

import psycopg


def topup_credits(conninfo: str, account_id: str) -> list[tuple[str, int]]:
    """The account's top-up transactions in billing's statement: (idempotency
    key, amount credited), oldest first."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, amount_micros FROM billing.ledger_entries"
            " WHERE account_id = %s AND kind = 'topup' ORDER BY id",
            (account_id,),
        ).fetchall()
    return [(str(key), int(amount)) for key, amount in rows]


def midtrans_signed(server_key: str, body: dict[str, str]) -> dict[str, str]:
    """A notification body with Midtrans' signature_key, as Midtrans signs it."""
    raw = body["order_id"] + body["status_code"] + body["gross_amount"] + server_key
    return {**body, "signature_key": hashlib.sha512(raw.encode()).hexdigest()}
