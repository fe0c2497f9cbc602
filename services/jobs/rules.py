"""Job rules with no I/O: ids, what a finished job costs, limits and messages."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
TERMINAL = frozenset({"done", "failed"})
ACTIVE = ("pending", "processing")
# A job whose worker died this many times is failed and refunded rather than
# handed to yet another worker (a poison job must not loop forever).
MAX_ATTEMPTS = 3
PROVIDER_FAILED = "Provider failed. Please try again."
NOT_QUEUED = "The job could not be queued. Please try again."


def new_job_id() -> str:
    return "job_" + "".join(secrets.choice(_ALPHABET) for _ in range(26))


def timed_out_message(timeout_seconds: int) -> str:
    if timeout_seconds % 60 == 0:
        amount, unit = timeout_seconds // 60, "minute"
    else:
        amount, unit = timeout_seconds, "second"
    return f"Job timed out after {amount} {unit}{'' if amount == 1 else 's'}."


def cost_micros(
    *,
    units: int,
    estimated_units: int,
    min_billable_units: int,
    unit_price_micros: int,
    held_micros: int,
) -> int:
    """The charge for a finished job: the units the upstream produced (or, if it
    did not say, those asked for), at least the minimum, never above the hold."""
    billable = max(units if units > 0 else estimated_units, min_billable_units)
    return min(billable * unit_price_micros, held_micros)
