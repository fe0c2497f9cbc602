"""Alembic environment for the `payments` schema (see services.common.migrations)."""

from services.common.migrations import run_env

run_env("payments")
