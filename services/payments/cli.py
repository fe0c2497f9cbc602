"""Operate payments (top-up orders) over gRPC; aiportctl runs it as
`aiportctl payments ...`.

    aiportctl payments list [--account ACCOUNT_ID] [--status S] [--flagged] [--limit N]
    aiportctl payments show ORDER_ID
    aiportctl payments reconcile [--apply] [--limit N]

`reconcile` asks each payment gateway about our recent orders and lists every
one whose gateway state and ledger disagree (paid but not credited, refunded
but not taken back, flagged for an operator, a state we missed); exit status 2
when it finds any. With --apply it settles what the gateway confirms (never a
flagged order: those need a person). `--json` prints one JSON object;
`--payments HOST:PORT` overrides AIPORT_PAYMENTS_ADDR. The token presented is
AIPORT_PAYMENTS_TOKEN (or _FILE); else AIPORT_PAYMENTS_TOKEN_ADMIN; else the
one `make run` wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from aiport.v1 import payments_pb2, payments_pb2_grpc

from services.common import operator_cli, service_auth, settings
from services.common.money import micros_to_idr
from services.common.operator_cli import CliError, Parser

RPC_TIMEOUT_SECONDS = 120.0
LOCAL_ADMIN_TOKEN = settings.PROJECT_ROOT / ".aiport" / "payments-admin.token"
EXIT_FINDINGS = 2


def parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Operate aiport top-up orders (payments).")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--payments", metavar="ADDR", help="payments gRPC address (host:port)")
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="top-up orders, newest first")
    listing.add_argument("--account", default="", help="one account's orders")
    listing.add_argument("--status", default="", help="only this status")
    listing.add_argument(
        "--flagged", action="store_true", help="only orders flagged for an operator"
    )
    listing.add_argument("--limit", type=int, default=50)
    commands.add_parser("show", help="one order").add_argument("order_id")
    reconcile = commands.add_parser(
        "reconcile", help="orders whose gateway state and ledger disagree"
    )
    reconcile.add_argument("--apply", action="store_true", help="settle what the gateway confirms")
    reconcile.add_argument("--limit", type=int, default=500, help="how many recent orders to check")
    return p


def admin_token() -> str | None:
    return operator_cli.admin_token(
        service_auth.PAYMENTS_TOKEN_ENV,
        service_auth.PAYMENTS_CALLER_TOKEN_ENV["admin"],
        LOCAL_ADMIN_TOKEN,
    )


def _time(seconds: int) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else None


def order_data(order: payments_pb2.PaymentOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "account_id": order.account_id,
        "gateway": order.gateway,
        "status": order.status,
        "amount_idr": micros_to_idr(order.amount_micros),
        "fee_idr": micros_to_idr(order.fee_micros),
        "total_idr": micros_to_idr(order.total_micros),
        "payment_method": order.payment_method or None,
        "created_at": _time(order.created_at),
        "paid_at": _time(order.paid_at),
        "reversed_idr": micros_to_idr(order.reversed_micros),
        "flag": order.flag or None,
        "gateway_ref": order.gateway_ref or None,
    }


def _order_line(o: dict[str, Any]) -> str:
    flag = f"  FLAG: {o['flag']}" if o["flag"] else ""
    return (
        f"{o['id']}  {o['created_at']}  {o['account_id']}  {o['gateway']:<8}"
        f"  {o['status']:<16} Rp {o['amount_idr']:>12}{flag}"
    )


def run(
    stub: payments_pb2_grpc.PaymentsStub, ns: argparse.Namespace
) -> tuple[dict[str, Any], str, int]:
    if ns.command == "show":
        order = stub.GetOrder(
            payments_pb2.GetOrderRequest(order_id=ns.order_id), timeout=RPC_TIMEOUT_SECONDS
        )
        data = order_data(order)
        return data, "\n".join(f"{k:>15}: {v}" for k, v in data.items()), 0
    if ns.command == "list":
        page = stub.ListOrders(
            payments_pb2.ListOrdersRequest(
                account_id=ns.account, status=ns.status, flagged_only=ns.flagged, limit=ns.limit
            ),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        orders = [order_data(o) for o in page.orders]
        human = "\n".join(_order_line(o) for o in orders) or "no top-up orders"
        return {"orders": orders, "next_cursor": page.next_cursor or None}, human, 0
    report = stub.Reconcile(
        payments_pb2.ReconcileRequest(apply=ns.apply, limit=ns.limit), timeout=RPC_TIMEOUT_SECONDS
    )
    findings = [
        {
            "order_id": f.order_id,
            "gateway": f.gateway,
            "our_status": f.our_status,
            "gateway_status": f.gateway_status,
            "credited_idr": micros_to_idr(f.credited_micros),
            "problem": f.problem,
            "action": f.action,
        }
        for f in report.findings
    ]
    lines = [
        f"{f['order_id']}  {f['gateway']:<8} ours: {f['our_status']:<14} gateway: "
        f"{f['gateway_status'] or '-':<12} {f['problem']}  [{f['action']}]"
        for f in findings
    ]
    lines.append(f"checked {report.checked} orders; {len(findings)} disagree")
    return (
        {"checked": report.checked, "findings": findings},
        "\n".join(lines),
        (EXIT_FINDINGS if findings else 0),
    )


def main(argv: Sequence[str] | None = None, prog: str = "aiportctl payments") -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in raw
    flags = [a for a in raw if a == "--json"]
    rest = [a for a in raw if a != "--json"]
    try:
        ns = parser(prog).parse_args([*flags, *rest])
        addr = ns.payments or settings.payments_addr()
        with grpc.insecure_channel(addr) as plain:
            stub = payments_pb2_grpc.PaymentsStub(service_auth.with_token(plain, admin_token()))
            try:
                data, human, code = run(stub, ns)
            except grpc.RpcError as error:
                raise operator_cli.rpc_failure(error, "payments", addr) from None
    except CliError as error:
        if as_json:
            print(json.dumps({"error": {"code": error.code, "message": error.message}}))
        else:
            print(f"{prog}: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps(data, ensure_ascii=False) if as_json else human)
    return code


if __name__ == "__main__":
    sys.exit(main())
