"""Every kind billing puts on a customer's statement has a word on the
console's billing page, in both languages (an unknown key would fail the page)."""

from __future__ import annotations

import pytest

from services.billing.postings import CREDIT_KINDS, Kind
from services.console import i18n
from services.gateway.account_views import STATEMENT_KINDS

# The transactions billing.ledger_entries lists (migration 0006).
ON_THE_STATEMENT = (*CREDIT_KINDS, Kind.CAPTURE, Kind.REVERSAL)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("kind", ON_THE_STATEMENT)
def test_each_statement_kind_has_a_label(kind: Kind, lang: str) -> None:
    shown = STATEMENT_KINDS.get(kind.value, kind.value)
    assert i18n.translate(lang, f"billing.kind.{shown}").strip()


def test_a_reversal_is_named_as_such() -> None:
    assert i18n.translate("en", "billing.kind.reversal") == "Top-up reversed"
    assert i18n.translate("id", "billing.kind.reversal") == "Isi saldo dibatalkan"
