"""Billing tests, against a real PostgreSQL (a fresh database per session)."""
