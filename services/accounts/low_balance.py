"""Low-balance alerts: billing says which accounts fell below the threshold their
people set (ClaimLowBalanceAlerts), and accounts mails every verified member of
each, in that member's language.

Every replica polls every AIPORT_LOW_BALANCE_POLL_SECONDS. Billing marks what
it hands out as alerted in the same statement and skips what another replica
holds, so each alert is mailed by one replica, once, until the balance is back
at or above the threshold. At most once, then: a claimed alert whose mail
fails is logged and not retried (a late alert is worth less than a duplicate
costs), and the next comes when the balance falls below again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common import pg
from services.common.logs import fields

from . import store
from .mail import Mailer, MailKind, compose_low_balance
from .service import MailSettings

log = logging.getLogger(__name__)

# Alerts claimed per call, and calls per poll (a poll stays bounded).
CLAIM_BATCH = 100
MAX_BATCHES_PER_POLL = 20


@dataclass(frozen=True, slots=True)
class Alert:
    account_id: str
    available_micros: int
    threshold_micros: int


# Claims up to `limit` alerts (billing's ClaimLowBalanceAlerts).
ClaimAlerts = Callable[[int], Awaitable[Sequence[Alert]]]


class LowBalanceAlerts:
    def __init__(
        self,
        pool: pg.Pool,
        *,
        mailer: Mailer,
        mail: MailSettings,
        claim: ClaimAlerts,
        batch: int = CLAIM_BATCH,
    ) -> None:
        self._pool = pool
        self._mailer = mailer
        self._mail = mail
        self._claim = claim
        self._batch = batch

    async def poll_once(self) -> int:
        """Claim what is due, batch by batch, and mail it; returns the mails queued."""
        mails = 0
        for _ in range(MAX_BATCHES_PER_POLL):
            alerts = await self._claim(self._batch)
            for alert in alerts:
                mails += await self._mail_members(alert)
            if len(alerts) < self._batch:
                break
        return mails

    async def _mail_members(self, alert: Alert) -> int:
        members = [m for m in await store.members_of(self._pool, alert.account_id) if m.verified]
        for member in members:
            message = compose_low_balance(
                to=member.email,
                sender=self._mail.sender,
                locale=member.locale,
                public_url=self._mail.public_url,
                available_micros=alert.available_micros,
                threshold_micros=alert.threshold_micros,
            )
            self._mailer.send_later(message, MailKind.LOW_BALANCE)
        # Ids and amounts only: never an address.
        log.info(
            "low-balance alert",
            extra=fields(
                account_id=alert.account_id,
                available_micros=alert.available_micros,
                threshold_micros=alert.threshold_micros,
                members=len(members),
            ),
        )
        return len(members)

    async def run_forever(self, interval_seconds: float) -> None:
        """Poll every `interval_seconds` until cancelled; errors (billing or the
        database away) are logged, never fatal."""
        log.info("low-balance alerts started", extra=fields(interval_seconds=interval_seconds))
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("low-balance poll failed; will retry")
            await asyncio.sleep(interval_seconds)
