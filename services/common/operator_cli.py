"""What every operator CLI (aiportctl's billing, accounts and payments parts)
does the same way: refuse bad arguments as an error rather than argparse's
exit, find the admin token, and turn a gRPC failure into one clear line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

import grpc

from services.common import service_auth


class CliError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a CliError (printed in --json's shape too)."""

    def error(self, message: str) -> NoReturn:
        raise CliError("INVALID_ARGUMENT", f"{message} (see {self.prog} --help)")


def admin_token(own_env: str, admin_env: str, local_file: Path) -> str | None:
    """The token to present: `own_env` (or its _FILE); else, inside the
    service's pod, its own copy of the admin token (`admin_env`); else the one
    `make run` left in `local_file`."""
    try:
        token = service_auth.own_token(name=own_env) or service_auth.own_token(name=admin_env)
        if token is None and local_file.is_file():
            token = service_auth.check_token(local_file.read_text(), str(local_file))
    except (ValueError, OSError) as exc:
        raise CliError("UNAUTHENTICATED", f"bad service token: {exc}") from None
    return token


def rpc_failure(error: grpc.RpcError, service: str, addr: str) -> CliError:
    """A failed call as the operator should read it (where, when unreachable)."""
    if not isinstance(error, grpc.Call):
        return CliError("UNKNOWN", str(error))
    code = error.code()
    message = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"{service} at {addr}: {message}"
    return CliError(code.name, message)
