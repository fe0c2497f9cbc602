"""Create the database if needed and bring the `jobs` schema to the latest revision.

python -m services.jobs.migrate      # uses AIPORT_DATABASE_URL
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common import migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def upgrade(url: str, revision: str = "head") -> None:
    """Apply jobs migrations up to `revision` (the database must exist)."""
    migrations.upgrade(url, MIGRATIONS_DIR, revision)


if __name__ == "__main__":
    sys.exit(migrations.main("jobs", MIGRATIONS_DIR))
