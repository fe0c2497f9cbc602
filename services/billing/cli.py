"""aiportctl: operate billing (accounts, top-ups, keys, balances, the ledger) over gRPC.

    aiportctl account create NAME
    aiportctl topup ACCOUNT_ID AMOUNT_IDR [--idempotency-key K] [--description D]
    aiportctl key create ACCOUNT_ID [CONTROLS] | key list ACCOUNT_ID | key revoke KEY_ID
    aiportctl key set KEY_ID [--name N] [CONTROLS]
        CONTROLS: --daily-cap IDR --monthly-cap IDR --lifetime-cap IDR ("none" removes)
                  --models ID,ID ("all" removes) --expires TIME ("never" removes)
                  --rpm N --concurrent N ("default" or 0: the deployment's)
    aiportctl account limits ACCOUNT_ID [--rpm N] [--concurrent N]
    aiportctl balance ACCOUNT_ID
    aiportctl ledger ACCOUNT_ID [--limit N] [--after ENTRY_ID] [--all]
    aiportctl adjust ACCOUNT_ID AMOUNT_IDR --reason R --idempotency-key K [--promotion]
    aiportctl ledger verify [--database URL]
    aiportctl report revenue --from DATE --to DATE [--database URL]
    aiportctl report liabilities [--database URL]
    aiportctl operator grant|revoke EMAIL_OR_USER_ID | user find EMAIL_OR_USER_ID
    aiportctl payments list|show|reconcile ...  (services/payments/cli.py)

`--json` (anywhere) prints exactly one JSON object; IDR amounts are decimal
strings. `ledger` prints one page (newest first), the total of the entries it
shows, and the cursor of the next page (`--after`); `--all` pages through every
entry from there, printing each page as it comes (memory stays one page), so its
total from the newest entry is the balance. If a later page fails, the JSON
object so far is closed with an "error" member. `--billing HOST:PORT` overrides
AIPORT_BILLING_ADDR. Exit status 0 on success, 1 on any error (with --json:
{"error": {"code", "message"}}).

`ledger verify` and `report` read billing's schema directly (read-only, one
consistent snapshot; AIPORT_DATABASE_URL or --database), so they work while
billing is down. `ledger verify` proves every cached balance equals the sum of
its postings, every transaction balances and every key's spend counters equal
its holds; it exits 2 and prints the
differences when any is found. `report revenue` covers [--from, --to): dates
(YYYY-MM-DD, UTC) or RFC 3339 times.

`operator` and `user` are about people, whom the accounts service owns: they
are answered by services/accounts/cli.py (`--accounts HOST:PORT`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
from aiport.v1 import billing_pb2, billing_pb2_grpc

from services.accounts import cli as accounts_cli
from services.common import operator_cli, service_auth, settings
from services.common.operator_cli import CliError, Parser
from services.payments import cli as payments_cli

from . import audit, rules

RPC_TIMEOUT_SECONDS = 10.0
# Where `make run` leaves the admin service token (mode 0600) for this CLI.
LOCAL_ADMIN_TOKEN = settings.PROJECT_ROOT / ".aiport" / "admin.token"


def admin_token() -> str | None:
    """AIPORT_SERVICE_TOKEN(_FILE); else, inside a billing pod, billing's own copy
    of the admin token; else the one `make run` wrote."""
    return operator_cli.admin_token(
        service_auth.TOKEN_ENV, service_auth.CALLER_TOKEN_ENV["admin"], LOCAL_ADMIN_TOKEN
    )


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="aiportctl",
        description="Operate aiport billing: accounts, top-ups, API keys, balances, ledger.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--billing", metavar="ADDR", help="billing gRPC address (host:port)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    account = commands.add_parser("account", help="manage accounts")
    account_cmds = account.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = account_cmds.add_parser("create", help="create an account")
    create.add_argument("name", nargs="+", help="display name")
    disable = account_cmds.add_parser(
        "disable", help="stop every key of an account at once (open holds still settle)"
    )
    disable.add_argument("account_id")
    disable.add_argument("--reason", required=True, help="why; kept on the account")
    account_cmds.add_parser("enable", help="let a disabled account's keys work again").add_argument(
        "account_id"
    )
    limits = account_cmds.add_parser(
        "limits", help="the account's rate limits (the gateway enforces them)"
    )
    limits.add_argument("account_id")
    limits.add_argument("--rpm", default="default", help="requests per minute, or default")
    limits.add_argument("--concurrent", default="default", help="calls at once, or default")

    topup = commands.add_parser("topup", help="add IDR to an account")
    topup.add_argument("account_id")
    topup.add_argument("amount", metavar="AMOUNT_IDR", help='IDR amount, e.g. "50000" or "12.5"')
    topup.add_argument("--idempotency-key", default="", help="repeat-safe key")
    topup.add_argument("--description", default="", help="note kept on the ledger entry")

    key = commands.add_parser("key", help="manage API keys")
    key_cmds = key.add_subparsers(dest="action", metavar="ACTION", required=True)
    key_create = key_cmds.add_parser("create", help="issue a key (shown once)")
    key_create.add_argument("account_id")
    key_create.add_argument("--name", default="", help="a name to recognise it by")
    key_create.add_argument(
        "--manage", action="store_true", help="may also manage the account's keys (/v1/keys)"
    )
    _control_flags(key_create)
    key_set = key_cmds.add_parser("set", help="change a key's name and controls")
    key_set.add_argument("key_id")
    key_set.add_argument("--name", help="a new name")
    _control_flags(key_set)
    key_cmds.add_parser("list", help="list an account's keys").add_argument("account_id")
    key_cmds.add_parser("revoke", help="revoke a key now").add_argument("key_id")

    balance = commands.add_parser("balance", help="show balance, held and available")
    balance.add_argument("account_id")

    ledger = commands.add_parser("ledger", help="show ledger entries, newest first")
    ledger.add_argument("account_id")
    ledger.add_argument(
        "--limit",
        type=int,
        help=f"entries per page, 1..1000 (default {rules.DEFAULT_LEDGER_LIMIT};"
        f" {rules.MAX_LEDGER_LIMIT} with --all)",
    )
    ledger.add_argument(
        "--after", type=int, default=0, metavar="ENTRY_ID", help="start after this entry"
    )
    ledger.add_argument("--all", action="store_true", help="every page, to the oldest entry")
    ledger.add_argument(
        "--database", metavar="URL", help="for `ledger verify`: PostgreSQL URL of billing"
    )

    adjust = commands.add_parser("adjust", help="credit or debit an account (operator)")
    adjust.add_argument("account_id")
    adjust.add_argument("amount", metavar="AMOUNT_IDR", help='signed IDR amount, e.g. "-2500"')
    adjust.add_argument("--reason", required=True, help="why; kept on the ledger")
    adjust.add_argument("--idempotency-key", required=True, help="repeat-safe key")
    adjust.add_argument(
        "--promotion", action="store_true", help="a promotional credit (from `promotions`)"
    )

    report = commands.add_parser("report", help="operator reports from the ledger")
    report_cmds = report.add_subparsers(dest="action", metavar="REPORT", required=True)
    revenue = report_cmds.add_parser("revenue", help="revenue by model and provider")
    revenue.add_argument("--from", dest="start", required=True, metavar="DATE")
    revenue.add_argument("--to", dest="end", required=True, metavar="DATE")
    liabilities = report_cmds.add_parser("liabilities", help="customer balances owed")
    for sub in (revenue, liabilities):
        sub.add_argument("--database", metavar="URL", help="PostgreSQL URL of billing")
    return parser


def _control_flags(parser: argparse.ArgumentParser) -> None:
    """A key's controls; a flag not given leaves that control as it is."""
    for period in rules.CAPS:
        parser.add_argument(
            f"--{period}-cap",
            metavar="IDR",
            help=f"{period} spend cap in IDR (open holds + charges), or none",
        )
    parser.add_argument("--models", metavar="ID,ID", help="model allowlist, or all")
    parser.add_argument("--expires", metavar="TIME", help="RFC 3339 time or date, or never")
    parser.add_argument("--rpm", help="requests per minute, or default")
    parser.add_argument("--concurrent", help="calls at once, or default")


def _limit(text: str, flag: str) -> int:
    """A rate limit typed by an operator: a positive count, or default (0)."""
    if text.strip().lower() in ("default", "0"):
        return 0
    if not text.strip().isdigit():
        raise rules.InvalidArgument(f"{flag} must be a positive whole number or default")
    return int(text)


def _key_settings(ns: argparse.Namespace) -> billing_pb2.ApiKeySettings:
    settings = billing_pb2.ApiKeySettings()
    for period in rules.CAPS:
        text = getattr(ns, f"{period}_cap")
        if text is not None:
            micros = 0 if text.strip().lower() in ("none", "0") else rules.parse_idr_amount(text)
            setattr(settings, rules.CAP_COLUMNS[period], micros)
    if ns.models is not None:
        models = [] if ns.models.strip().lower() == "all" else ns.models.split(",")
        settings.allowed_models.CopyFrom(
            billing_pb2.ModelAllowlist(models=[m.strip() for m in models])
        )
    if ns.expires is not None:
        never = ns.expires.strip().lower() == "never"
        settings.expires_at_unix = (
            0 if never else int(parse_moment(ns.expires, "--expires").timestamp())
        )
    if ns.rpm is not None:
        settings.requests_per_minute = _limit(ns.rpm, "--rpm")
    if ns.concurrent is not None:
        settings.concurrent_requests = _limit(ns.concurrent, "--concurrent")
    return settings


def _key_data(k: billing_pb2.ApiKeyInfo) -> dict[str, Any]:
    def cap(micros: int) -> str | None:
        return rules.idr(micros) if micros else None

    return {
        "key_id": k.key_id,
        "name": k.name,
        "prefix": k.prefix,
        "created_at": rules.rfc3339(k.created_at_unix),
        "revoked_at": rules.rfc3339(k.revoked_at_unix),
        "daily_cap_idr": cap(k.daily_cap_micros),
        "monthly_cap_idr": cap(k.monthly_cap_micros),
        "lifetime_cap_idr": cap(k.lifetime_cap_micros),
        "spent_today_idr": rules.idr(k.spent_today_micros),
        "spent_this_month_idr": rules.idr(k.spent_this_month_micros),
        "spent_lifetime_idr": rules.idr(k.spent_lifetime_micros),
        "allowed_models": list(k.allowed_models) or None,
        "expires_at": rules.rfc3339(k.expires_at_unix),
        "requests_per_minute": k.requests_per_minute or None,
        "concurrent_requests": k.concurrent_requests or None,
    }


def _key_line(k: dict[str, Any]) -> str:
    state = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
    controls = [
        f"{period} cap {k[f'{period}_cap_idr']} IDR"
        for period in rules.CAPS
        if k[f"{period}_cap_idr"] is not None
    ]
    controls.append(
        f"spent today {k['spent_today_idr']}, this month {k['spent_this_month_idr']},"
        f" ever {k['spent_lifetime_idr']} IDR"
    )
    if k["allowed_models"]:
        controls.append("models " + ",".join(k["allowed_models"]))
    if k["expires_at"]:
        controls.append(f"expires {k['expires_at']}")
    for field, label in (("requests_per_minute", "rpm"), ("concurrent_requests", "concurrent")):
        if k[field]:
            controls.append(f"{label} {k[field]}")
    name = f" {k['name']!r}" if k["name"] else ""
    return (
        f"{k['key_id']}{name}  {k['prefix']}...  created {k['created_at']}  {state}  "
        + "; ".join(controls)
    )


def _split_global_flags(argv: Sequence[str]) -> tuple[list[str], bool, str | None]:
    """Pull --json and --billing out of any position on the line."""
    rest: list[str] = []
    as_json = False
    billing: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--json":
            as_json = True
        elif arg == "--billing":
            if i + 1 >= len(args):
                raise CliError("INVALID_ARGUMENT", "--billing needs an address (host:port)")
            billing = args[i + 1]
            i += 1
        elif arg.startswith("--billing="):
            billing = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, as_json, billing


Output = tuple[dict[str, Any], str]


def _balance_output(balance: billing_pb2.AccountBalance) -> Output:
    data = {
        "account_id": balance.account_id,
        "balance_idr": rules.idr(balance.balance_micros),
        "held_idr": rules.idr(balance.held_micros),
        "available_idr": rules.idr(balance.available_micros),
        "debt_idr": rules.idr(balance.debt_micros),
    }
    human = (
        f"{balance.account_id}: balance {data['balance_idr']} IDR,"
        f" held {data['held_idr']} IDR, available {data['available_idr']} IDR"
    )
    if balance.debt_micros:
        human += f", owes {data['debt_idr']} IDR (suspended until a top-up repays it)"
    return data, human


def _run(stub: billing_pb2_grpc.BillingStub, ns: argparse.Namespace) -> Output:
    timeout = RPC_TIMEOUT_SECONDS
    if ns.command == "account" and ns.action in ("disable", "enable"):
        rules.check_account_id(ns.account_id)
        disabled = ns.action == "disable"
        changed: billing_pb2.AccountInfo = stub.SetAccountDisabled(
            billing_pb2.SetAccountDisabledRequest(
                account_id=ns.account_id,
                disabled=disabled,
                reason=ns.reason if disabled else "",
            ),
            timeout=timeout,
        )
        state = "disabled" if changed.disabled_at_unix else "enabled"
        return {"account_id": changed.account_id, "disabled": disabled}, (
            f"{changed.account_id} {state}"
        )

    if ns.command == "account" and ns.action == "limits":
        rules.check_account_id(ns.account_id)
        account: billing_pb2.AccountInfo = stub.SetAccountRateLimits(
            billing_pb2.SetAccountRateLimitsRequest(
                account_id=ns.account_id,
                requests_per_minute=_limit(ns.rpm, "--rpm"),
                concurrent_requests=_limit(ns.concurrent, "--concurrent"),
            ),
            timeout=timeout,
        )
        data = {
            "account_id": account.account_id,
            "requests_per_minute": account.requests_per_minute or None,
            "concurrent_requests": account.concurrent_requests or None,
        }
        return data, (
            f"{account.account_id}: {account.requests_per_minute or 'default'} requests per"
            f" minute, {account.concurrent_requests or 'default'} at once"
        )

    if ns.command == "account":
        name = " ".join(ns.name)
        rules.check_name(name)
        info: billing_pb2.AccountInfo = stub.CreateAccount(
            billing_pb2.CreateAccountRequest(name=name), timeout=timeout
        )
        return {"account_id": info.account_id}, f"created account {info.account_id} ({info.name})"

    if ns.command == "topup":
        rules.check_account_id(ns.account_id)
        amount = rules.parse_idr_amount(ns.amount)
        topped: billing_pb2.AccountBalance = stub.TopUp(
            billing_pb2.TopUpRequest(
                account_id=ns.account_id,
                amount_micros=amount,
                idempotency_key=ns.idempotency_key,
                description=ns.description,
            ),
            timeout=timeout,
        )
        data = {"account_id": topped.account_id, "balance_idr": rules.idr(topped.balance_micros)}
        return data, f"{topped.account_id}: balance {data['balance_idr']} IDR"

    if ns.command == "key":
        if ns.action == "create":
            rules.check_account_id(ns.account_id)
            created: billing_pb2.CreatedApiKey = stub.CreateApiKey(
                billing_pb2.CreateApiKeyRequest(
                    account_id=ns.account_id,
                    name=ns.name,
                    scopes=["inference", "manage"] if ns.manage else ["inference"],
                    settings=_key_settings(ns),
                ),
                timeout=timeout,
            )
            human = f"{created.key_id} {created.api_key}  (shown once: store it now)"
            return {"key_id": created.key_id, "api_key": created.api_key}, human
        if ns.action == "set":
            rules.check_key_id(ns.key_id)
            request = billing_pb2.UpdateApiKeyRequest(key_id=ns.key_id, settings=_key_settings(ns))
            if ns.name is not None:
                request.name = ns.name
            updated: billing_pb2.ApiKeyInfo = stub.UpdateApiKey(request, timeout=timeout)
            data = _key_data(updated)
            return data, _key_line(data)
        if ns.action == "list":
            rules.check_account_id(ns.account_id)
            listed: billing_pb2.ApiKeyList = stub.ListApiKeys(
                billing_pb2.ListApiKeysRequest(account_id=ns.account_id), timeout=timeout
            )
            keys = [_key_data(k) for k in listed.keys]
            lines = [_key_line(k) for k in keys]
            return {"keys": keys}, "\n".join(lines) if lines else "no keys"
        rules.check_key_id(ns.key_id)
        revoked: billing_pb2.ApiKeyInfo = stub.RevokeApiKey(
            billing_pb2.RevokeApiKeyRequest(key_id=ns.key_id), timeout=timeout
        )
        return {"key_id": revoked.key_id, "revoked": True}, f"revoked {revoked.key_id}"

    if ns.command == "adjust":
        rules.check_account_id(ns.account_id)
        text = ns.amount.strip()
        sign = -1 if text.startswith("-") else 1
        amount = sign * rules.parse_idr_amount(text.lstrip("-"))
        kind = (
            billing_pb2.AdjustRequest.PROMOTION
            if ns.promotion
            else (billing_pb2.AdjustRequest.ADJUSTMENT)
        )
        adjusted: billing_pb2.AccountBalance = stub.Adjust(
            billing_pb2.AdjustRequest(
                account_id=ns.account_id,
                amount_micros=amount,
                idempotency_key=ns.idempotency_key,
                description=ns.reason,
                kind=kind,
            ),
            timeout=timeout,
        )
        return _balance_output(adjusted)

    if ns.command == "balance":
        rules.check_account_id(ns.account_id)
        balance: billing_pb2.AccountBalance = stub.GetAccountBalance(
            billing_pb2.GetAccountBalanceRequest(account_id=ns.account_id), timeout=timeout
        )
        return _balance_output(balance)

    raise CliError("INVALID_ARGUMENT", f"unknown command {ns.command}")


def _ledger_pages(
    stub: billing_pb2_grpc.BillingStub, ns: argparse.Namespace
) -> Iterator[billing_pb2.LedgerPage]:
    """The pages `aiportctl ledger` shows: one, or with --all every one from --after on."""
    rules.check_account_id(ns.account_id)
    limit = ns.limit or (rules.MAX_LEDGER_LIMIT if ns.all else rules.DEFAULT_LEDGER_LIMIT)
    if not 1 <= limit <= rules.MAX_LEDGER_LIMIT:
        raise rules.InvalidArgument(f"--limit must be between 1 and {rules.MAX_LEDGER_LIMIT}")
    if ns.after < 0:
        raise rules.InvalidArgument("--after must be a ledger entry id")
    after = ns.after
    while True:
        page: billing_pb2.LedgerPage = stub.ListLedger(
            billing_pb2.ListLedgerRequest(
                account_id=ns.account_id, limit=limit, after_entry_id=after
            ),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        yield page
        after = page.next_after_entry_id
        if not (ns.all and after):
            return


def _entry_data(e: billing_pb2.LedgerEntry) -> dict[str, Any]:
    return {
        "entry_id": e.entry_id,
        "kind": e.kind,
        "amount_idr": rules.idr(e.amount_micros),
        "balance_after_idr": rules.idr(e.balance_after_micros),
        "hold_id": e.hold_id or None,
        "description": e.description,
        "created_at": rules.rfc3339(e.created_at_unix),
    }


def _entry_line(e: dict[str, Any]) -> str:
    return (
        f"{e['created_at']}  #{e['entry_id']}  {e['kind']:<8} {e['amount_idr']:>16} IDR"
        f"  -> {e['balance_after_idr']} IDR  {e['description']}".rstrip()
    )


def _print_ledger(
    pages: Iterator[billing_pb2.LedgerPage],
    ns: argparse.Namespace,
    as_json: bool,
    addr: str,
    write: Callable[[str], object],
) -> None:
    """Print entries page by page; then their count, total and the next cursor.
    Nothing is printed before the first page arrives, so an error there is
    reported like any other."""
    first = next(pages)
    count = total = next_after = 0
    if as_json:
        write('{"entries": [')
    page: billing_pb2.LedgerPage | None = first
    while page is not None:
        for e in page.entries:
            data = _entry_data(e)
            if as_json:
                write((", " if count else "") + json.dumps(data, ensure_ascii=False))
            else:
                write(_entry_line(data) + "\n")
            count += 1
            total += e.amount_micros
        next_after = page.next_after_entry_id
        try:
            page = next(pages, None)
        except grpc.RpcError as error:
            if not as_json:
                raise
            failure = _rpc_error(error, addr)
            write(f'], "error": {json.dumps(_error_body(failure))}}}\n')
            raise _Reported from None
    if as_json:
        tail = {"total_idr": rules.idr(total), "next_after": next_after or None}
        write("], " + json.dumps(tail)[1:] + "\n")
        return
    shown = f"{count} entries" if count != 1 else "1 entry"
    write(f"{shown}, total {rules.idr(total)} IDR\n" if count else "no ledger entries\n")
    if next_after:
        write(f"more: aiportctl ledger {ns.account_id} --after {next_after}\n")


def parse_moment(text: str, flag: str) -> datetime:
    """A date (YYYY-MM-DD, midnight UTC) or an RFC 3339 time; naive times are UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise rules.InvalidArgument(
            f"{flag} must be a date (YYYY-MM-DD) or an RFC 3339 time, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _audit(ns: argparse.Namespace) -> tuple[Output, int]:
    """`ledger verify` and `report`: straight from the database, no billing service."""
    url = ns.database or settings.database_url()
    if ns.command == "ledger":
        verdict = audit.verify(url)
        data = verdict.as_json()
        checked = ", ".join(f"{n} {what}" for what, n in verdict.checked.items())
        if verdict.ok:
            return (data, f"ledger verified: no differences ({checked})"), 0
        lines = [f"ledger differs ({checked}):"]
        lines += [json.dumps(d, ensure_ascii=False) for d in verdict.differences]
        return (data, "\n".join(lines)), 2
    if ns.action == "revenue":
        start, end = parse_moment(ns.start, "--from"), parse_moment(ns.end, "--to")
        lines_ = audit.revenue(url, start, end)
        total = sum(line.revenue_micros for line in lines_)
        data = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "total_idr": rules.idr(total),
            "lines": [
                {
                    "model": line.model,
                    "provider": line.provider or None,
                    "captures": line.captures,
                    "revenue_idr": rules.idr(line.revenue_micros),
                }
                for line in lines_
            ],
        }
        rows = [
            f"{line.model:<32} {line.provider or '-':<16} {line.captures:>8}"
            f" {rules.idr(line.revenue_micros):>18} IDR"
            for line in lines_
        ]
        header = f"{'model':<32} {'provider':<16} {'captures':>8} {'revenue':>22}"
        human = "\n".join(
            [
                f"revenue {data['from']} .. {data['to']}",
                header,
                *rows,
                f"total {data['total_idr']} IDR",
            ]
        )
        return (data, human), 0
    owed = audit.liabilities(url)
    data = {
        "accounts": owed.accounts,
        "available_idr": rules.idr(owed.available_micros),
        "held_idr": rules.idr(owed.held_micros),
        "owed_idr": rules.idr(owed.owed_micros),
        "debt_idr": rules.idr(owed.debt_micros),
        "net_owed_idr": rules.idr(owed.net_micros),
        "system_accounts": {name: rules.idr(total) for name, total in owed.system.items()},
    }
    human = "\n".join(
        [
            f"owed to {owed.accounts} accounts: {data['owed_idr']} IDR"
            f" (available {data['available_idr']}, held {data['held_idr']})",
            f"owed to us (debt of reversed top-ups): {data['debt_idr']} IDR;"
            f" net owed {data['net_owed_idr']} IDR",
            *(f"  {name:<40} {total:>18} IDR" for name, total in data["system_accounts"].items()),
        ]
    )
    return (data, human), 0


class _Reported(Exception):
    """The error is already in the output; exit 1 without printing more."""


def _rpc_error(error: grpc.RpcError, addr: str) -> CliError:
    if not isinstance(error, grpc.Call):
        return CliError("UNKNOWN", f"billing call failed: {error}")
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "storage" not in details:
        message = f"billing service unreachable at {addr}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"billing at {addr} did not answer within {RPC_TIMEOUT_SECONDS:g}s"
    else:
        message = details or code.name
    return CliError(code.name, message)


def _error_body(error: CliError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def _emit_error(error: CliError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": _error_body(error)}))
    else:
        print(f"aiportctl: {error.message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    people = accounts_cli.from_aiportctl(raw)
    if people is not None:
        return accounts_cli.main(people, prog="aiportctl")
    words = [a for a in raw if not a.startswith("-")]
    if words[:1] == ["payments"]:
        # Top-up orders belong to the payments service.
        rest = list(raw)
        rest.remove("payments")
        return payments_cli.main(rest)
    as_json = "--json" in raw
    try:
        args, as_json, billing = _split_global_flags(raw)
        ns = _parser().parse_args(args)
        if ns.command == "report" or (ns.command == "ledger" and ns.account_id == "verify"):
            try:
                (data, human), code = _audit(ns)
            except psycopg.Error as error:
                raise CliError(
                    "UNAVAILABLE", f"cannot read the billing database: {error}"
                ) from None
            print(json.dumps(data, ensure_ascii=False) if as_json else human)
            return code
        addr = billing or settings.billing_addr()
        token = admin_token()
        with grpc.insecure_channel(addr) as plain:
            channel = service_auth.with_token(plain, token)
            stub = billing_pb2_grpc.BillingStub(channel)
            try:
                if ns.command == "ledger":
                    _print_ledger(_ledger_pages(stub, ns), ns, as_json, addr, sys.stdout.write)
                    return 0
                data, human = _run(stub, ns)
            except grpc.RpcError as error:
                raise _rpc_error(error, addr) from None
    except _Reported:
        return 1
    except CliError as error:
        return _emit_error(error, as_json)
    except rules.BillingError as error:
        return _emit_error(CliError("INVALID_ARGUMENT", str(error)), as_json)
    except KeyboardInterrupt:
        return _emit_error(CliError("CANCELLED", "interrupted"), as_json)
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(human)
    return 0


if __name__ == "__main__":
    sys.exit(main())
