"""The ledger's accounts and transaction kinds: names and rules, no I/O.

Every movement of money is one transaction whose postings sum to zero. A
posting adds its (signed) amount to one ledger account:

- per customer: `available` (spendable) and `held` (reserved by open holds);
  their sum is what we owe the customer (its balance); and `debt` (<= 0): what
  the customer owes us, when a top-up was reversed (refunded, charged back)
  after the money was spent;
- `revenue:<model>`: what captures earned, per model;
- `payments:<rail>`: clearing for money received through a payment rail
  (`payments:manual` for an operator's top-up of money received by hand);
- `promotions`: credit the operator gave away;
- `adjustments`: operator corrections, either way.

So a system account's balance is the mirror of what flowed out of it:
`payments:manual` is minus the money received by hand, revenue is positive.

A reversal gives a top-up back to its payment rail: `payments:<rail> +X`,
`available -min(available, X)`, `debt -(the rest)`. Held money is not touched.
A top-up repays debt first: `payments:<rail> -Y`, `debt +min(Y, owed)`,
`available +(the rest)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

AVAILABLE = "available"
HELD = "held"
DEBT = "debt"
CUSTOMER_ACCOUNTS = (AVAILABLE, HELD, DEBT)
PROMOTIONS = "promotions"
ADJUSTMENTS = "adjustments"
REVENUE_PREFIX = "revenue:"
PAYMENTS_PREFIX = "payments:"
# Revenue whose model the capture did not say (and, migrated, could not be read).
UNATTRIBUTED = "unattributed"
# The rail of an operator's top-up (aiportctl topup): money received by hand.
MANUAL_RAIL = "manual"
# accounts.disabled_by of billing's own suspension of an account that owes
# money (an operator's disable has their user id, or "").
DEBT_SUSPENSION = "billing:debt"


class Kind(StrEnum):
    TOPUP = "topup"
    PROMOTION = "promotion"
    ADJUSTMENT = "adjustment"
    # A top-up given back to its payment rail (a refund or a chargeback).
    REVERSAL = "reversal"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    EXPIRE = "expire"


# Credits: money enters the customer's `available` from one system account.
CREDIT_KINDS = (Kind.TOPUP, Kind.PROMOTION, Kind.ADJUSTMENT)


class ReversalReason(StrEnum):
    REFUND = "refund"
    CHARGEBACK = "chargeback"


def revenue_account(model: str) -> str:
    return REVENUE_PREFIX + (model or UNATTRIBUTED)


def payments_account(rail: str) -> str:
    return PAYMENTS_PREFIX + (rail or MANUAL_RAIL)


def credit_source(kind: Kind, rail: str = "") -> str:
    """The system account a credit of this kind comes from."""
    if kind is Kind.TOPUP:
        return payments_account(rail)
    if kind is Kind.PROMOTION:
        return PROMOTIONS
    if kind is Kind.ADJUSTMENT:
        return ADJUSTMENTS
    raise ValueError(f"{kind} is not a credit")


def address(customer_id: str, account: str) -> str:
    """A ledger account's full name: customer accounts carry their customer."""
    if account in CUSTOMER_ACCOUNTS:
        return f"customer:{customer_id}:{account}"
    return account


def assert_balanced(what: str, amounts: Iterable[int] | None) -> None:
    """The write path's own check on what the database says it posted: two legs
    or more (a movement without postings is the bug this catches), summing to zero."""
    legs = list(amounts or ())
    if len(legs) < 2:
        raise AssertionError(f"{what}: {len(legs)} postings; a movement needs two or more")
    if sum(legs) != 0:
        raise AssertionError(f"{what}: postings sum to {sum(legs)}, not zero")
