"""Alembic environment for the `accounts` schema (see services.common.migrations)."""

from services.common.migrations import run_env

run_env("accounts")
