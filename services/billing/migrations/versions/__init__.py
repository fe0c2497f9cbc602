"""Billing schema revisions."""
