"""Operate the accounts service (people) over gRPC.

    python -m services.accounts.cli grant-operator EMAIL_OR_USER_ID
    python -m services.accounts.cli revoke-operator EMAIL_OR_USER_ID
    python -m services.accounts.cli find EMAIL_OR_USER_ID

aiportctl runs the same commands as `aiportctl operator grant|revoke WHO` and
`aiportctl user find WHO`. `--json` prints one JSON object; `--accounts
HOST:PORT` overrides AIPORT_ACCOUNTS_ADDR. The token presented is
AIPORT_ACCOUNTS_TOKEN (or _FILE); else, inside an accounts pod, its own copy of
the admin token (AIPORT_ACCOUNTS_TOKEN_ADMIN); else the one `make run` wrote.
Exit status 0 on success, 1 on any error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from aiport.v1 import accounts_pb2, accounts_pb2_grpc

from services.common import operator_cli, service_auth, settings
from services.common.operator_cli import CliError, Parser

RPC_TIMEOUT_SECONDS = 10.0
LOCAL_ADMIN_TOKEN = settings.PROJECT_ROOT / ".aiport" / "accounts-admin.token"


def parser(prog: str = "python -m services.accounts.cli") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Operate aiport accounts: users and operator roles.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--accounts", metavar="ADDR", help="accounts gRPC address (host:port)")
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        ("grant-operator", "give a user the operator role (the console's /admin)"),
        ("revoke-operator", "take the operator role away"),
        ("find", "show one user"),
    ):
        commands.add_parser(name, help=text).add_argument("who", metavar="EMAIL_OR_USER_ID")
    return p


def admin_token() -> str | None:
    return operator_cli.admin_token(
        service_auth.ACCOUNTS_TOKEN_ENV,
        service_auth.ACCOUNTS_CALLER_TOKEN_ENV["admin"],
        LOCAL_ADMIN_TOKEN,
    )


def _by(who: str) -> dict[str, str]:
    """An email if it has an @, else a user id."""
    who = who.strip()
    return {"email": who} if "@" in who else {"user_id": who}


def user_data(user: accounts_pb2.User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "locale": user.locale,
        "email_verified": user.email_verified,
        "roles": [accounts_pb2.User.Role.Name(r).lower() for r in user.roles],
        "memberships": [
            {
                "billing_account_id": m.billing_account_id,
                "role": accounts_pb2.Membership.Role.Name(m.role).lower(),
            }
            for m in user.memberships
        ],
        "created_at_unix": user.created_at_unix,
    }


def _human(data: dict[str, Any]) -> str:
    accounts = ", ".join(f"{m['billing_account_id']} ({m['role']})" for m in data["memberships"])
    return (
        f"{data['user_id']}  {data['email']}  roles: {', '.join(data['roles'])}"
        f"  verified: {'yes' if data['email_verified'] else 'no'}\n"
        f"  billing accounts: {accounts or '-'}"
    )


def run(stub: accounts_pb2_grpc.AccountsStub, ns: argparse.Namespace) -> dict[str, Any]:
    by = _by(ns.who)
    if ns.command == "find":
        user = stub.FindUser(accounts_pb2.FindUserRequest(**by), timeout=RPC_TIMEOUT_SECONDS)
    else:
        user = stub.SetOperator(
            accounts_pb2.SetOperatorRequest(operator=ns.command == "grant-operator", **by),
            timeout=RPC_TIMEOUT_SECONDS,
        )
    return user_data(user)


AIPORTCTL_WORDS = {
    ("operator", "grant"): "grant-operator",
    ("operator", "revoke"): "revoke-operator",
    ("user", "find"): "find",
}


def from_aiportctl(argv: Sequence[str]) -> list[str] | None:
    """`aiportctl operator grant WHO ...` as this CLI's arguments; None when the
    line is not one of these commands (it is billing's)."""
    words = [i for i, a in enumerate(argv) if not a.startswith("-")]
    if len(words) < 2:
        return None
    first, second = words[0], words[1]
    command = AIPORTCTL_WORDS.get((argv[first], argv[second]))
    if command is None:
        return None
    rest = [a for i, a in enumerate(argv) if i not in (first, second)]
    return [command, *rest]


def _globals_first(argv: Sequence[str]) -> list[str]:
    """--json and --accounts ADDR may stand anywhere on the line (as in aiportctl)."""
    flags: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            flags.append(arg)
        elif arg == "--accounts":
            flags += [arg, next(args, "")]
        elif arg.startswith("--accounts="):
            flags.append(arg)
        else:
            rest.append(arg)
    return [*flags, *rest]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in raw
    try:
        ns = parser(prog or "python -m services.accounts.cli").parse_args(_globals_first(raw))
        addr = ns.accounts or settings.accounts_addr()
        with grpc.insecure_channel(addr) as plain:
            stub = accounts_pb2_grpc.AccountsStub(service_auth.with_token(plain, admin_token()))
            try:
                data = run(stub, ns)
            except grpc.RpcError as error:
                raise operator_cli.rpc_failure(error, "accounts", addr) from None
    except CliError as error:
        if as_json:
            print(json.dumps({"error": {"code": error.code, "message": error.message}}))
        else:
            print(f"{prog or 'accounts'}: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps(data, ensure_ascii=False) if as_json else _human(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
