"""Alembic environment for the `billing` schema (see services.common.migrations)."""

from services.common.migrations import run_env

run_env("billing")
