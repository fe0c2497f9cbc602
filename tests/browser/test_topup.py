"""A top-up in a real browser, as a person clicks it (issue 14): choose
Rp 50.000, see the fee and the total, pay on the payment sandbox's page
(Midtrans Snap by QRIS; a Xendit invoice by e-wallet), come back to the order
page that follows the payment until it is paid, the new balance, the receipt
(kwitansi) and its PDF, and the top-up on the billing page.

The payment pages are the sandbox's, on an origin of their own: the way there
and back must not raise a console error either (the console's CSP)."""

from __future__ import annotations

import re
from pathlib import Path

from aiport.v1 import accounts_pb2_grpc

from deploy.local.stack import Stack
from tests.browser.conftest import Album, Tab
from tests.browser.test_journey import log_in, new_email, sign_up_in_browser
from tests.integration.test_accounts import sign_up

AMOUNT = "50000"
AMOUNT_SHOWN = "Rp 50.000"  # the console's rupiah, as services/console/money prints it
FREE = "Rp 0"  # config/payments.yaml: the operator absorbs the gateways' fees
IN_WORDS = "lima puluh ribu rupiah"
PAID = '#topup-order[data-status="paid"]'
# Where the gateways send the browser back: the order page (Snap adds its query).
BACK = re.compile(r"/dashboard/topup/[^/?]+(\?.*)?$")


def review_50000(tab: Tab) -> None:
    """From the top-up form to the review of Rp 50.000: nothing paid yet."""
    tab.open("/dashboard/topup")
    assert tab.text("#topup-available") == FREE
    tab.click('form#topup-form button.preset[value="50000"]')
    assert tab.page.url.endswith("/dashboard/topup/review")
    assert tab.text("#review-amount") == AMOUNT_SHOWN


def quote_row(tab: Tab, gateway: str) -> str:
    """The review's row of `gateway`, its fee and total checked; its selector."""
    row = f'table#quotes tr.quote-row[data-gateway="{gateway}"]'
    assert tab.page.locator(row).count() == 1, f"{gateway} is not offered"
    assert tab.text(f"{row} td.amount") == AMOUNT_SHOWN
    assert tab.text(f"{row} td.fee") == FREE
    assert tab.text(f"{row} td.total") == AMOUNT_SHOWN
    # The row's figures in one size (the cards' big-figure style stays in the cards).
    sizes = {
        cell: tab.page.eval_on_selector(f"{row} td.{cell}", "e => getComputedStyle(e).fontSize")
        for cell in ("amount", "fee", "total")
    }
    assert len(set(sizes.values())) == 1, sizes
    return row


def pay_at_sandbox(tab: Tab, stack: Stack, row: str, button: str) -> str:
    """Pay from the review row: on through /pay to the sandbox's page, click
    `button` there, back on the order page. The order's id."""
    sandbox = stack.config.pay_sandbox_url
    tab.click(f"{row} button.pay-submit", to=f"{sandbox}/**")
    # The gateway's own page asks for the reviewed total.
    assert AMOUNT_SHOWN in tab.page.inner_text("dl")
    tab.click(f'button:text-is("{button}")', to=BACK)
    order = tab.page.locator("#topup-order")
    topup_id = order.get_attribute("data-topup-id") or ""
    assert topup_id and tab.page.url.split("?")[0].endswith(f"/dashboard/topup/{topup_id}")
    return topup_id


def wait_until_paid(tab: Tab, topup_id: str) -> None:
    """The order page reloads itself until the notification has credited the balance."""
    tab.wait_for(PAID)
    assert tab.page.get_attribute("#topup-order", "data-topup-id") == topup_id
    assert tab.page.locator("#topup-paid").count() == 1
    assert tab.text("#topup-amount") == AMOUNT_SHOWN
    assert tab.text("#topup-balance") == AMOUNT_SHOWN
    # The state shown is the API's: the reload dropped the gateway's query.
    assert "?" not in tab.page.url


def test_top_up_50000_by_qris_then_the_receipt_downloads(
    tab: Tab, stack: Stack, mail_folder: Path, album: Album
) -> None:
    email = new_email("dewi")
    sign_up_in_browser(tab, mail_folder, email)
    log_in(tab, email)

    review_50000(tab)
    row = quote_row(tab, "midtrans")
    topup_id = pay_at_sandbox(tab, stack, row, "Pay by QRIS")
    wait_until_paid(tab, topup_id)
    assert tab.text("#topup-method") == "QRIS"
    tab.open("/dashboard")
    assert tab.text("#balance-available") == AMOUNT_SHOWN

    # The receipt: its number names the order, the amount in figures and in words.
    tab.open(f"/dashboard/topup/{topup_id}")
    tab.click("#topup-receipt")
    assert tab.page.url.endswith(f"/dashboard/topup/{topup_id}/receipt")
    number = tab.text("#receipt-number")
    assert number.endswith(topup_id), number
    assert tab.page.get_attribute("#receipt", "data-number") == number
    assert tab.text("#receipt-amount") == AMOUNT_SHOWN
    assert tab.text("#receipt-total") == AMOUNT_SHOWN
    assert tab.text("#receipt-words") == IN_WORDS
    assert tab.text("#receipt-buyer") == email  # the person who paid
    assert "QRIS" in tab.text("#receipt-payment")

    # The PDF, through the page's link, as a download named after the number.
    with tab.page.expect_download() as downloading:
        tab.page.click("#receipt-pdf")
    download = downloading.value
    name = download.suggested_filename
    assert re.fullmatch(r"kwitansi-[A-Za-z0-9_.-]+\.pdf", name), name
    assert name == "kwitansi-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", number).strip("-") + ".pdf"
    saved = album.folder / name  # beside the screenshots, for a reviewer to open
    download.save_as(saved)
    assert download.failure() is None
    body = saved.read_bytes()
    assert body.startswith(b"%PDF-"), body[:16]
    assert body.rstrip().endswith(b"%%EOF")
    tab.check_console()

    # The billing page lists the top-up, paid, with its receipt.
    tab.open("/dashboard/billing")
    listed = f'table#billing-topups tr.billing-topup[data-topup-id="{topup_id}"]'
    assert tab.page.get_attribute(listed, "data-status") == "paid"
    assert tab.text(f"{listed} td.amount") == AMOUNT_SHOWN
    assert tab.text("#billing-available") == AMOUNT_SHOWN
    tab.click(f"{listed} a.topup-receipt")
    assert tab.page.url.endswith(f"/dashboard/topup/{topup_id}/receipt")
    assert tab.text("#receipt-number") == number


def test_top_up_50000_by_xendit_e_wallet(
    tab: Tab, stack: Stack, accounts: accounts_pb2_grpc.AccountsStub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    log_in(tab, person.email, person.password)

    review_50000(tab)
    row = quote_row(tab, "xendit")
    topup_id = pay_at_sandbox(tab, stack, row, "Pay by OVO")
    wait_until_paid(tab, topup_id)
    assert tab.text("#topup-gateway") == "Xendit"
    assert tab.text("#topup-method") == "OVO"
    assert tab.page.locator("#topup-receipt").count() == 1
