"""Create the database if needed and bring the `payments` schema to the latest revision.

python -m services.payments.migrate      # uses AIPORT_DATABASE_URL
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common import migrations
from services.common.migrations import ensure_database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

__all__ = ["MIGRATIONS_DIR", "ensure_database", "upgrade"]


def upgrade(url: str, revision: str = "head") -> None:
    """Apply payments migrations up to `revision` (the database must exist)."""
    migrations.upgrade(url, MIGRATIONS_DIR, revision)


if __name__ == "__main__":
    sys.exit(migrations.main("payments", MIGRATIONS_DIR))
