"""Alembic migrations for the billing schema (loaded by path by alembic)."""
