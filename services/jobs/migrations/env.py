"""Alembic environment for the `jobs` schema (see services.common.migrations)."""

from services.common.migrations import run_env

run_env("jobs")
