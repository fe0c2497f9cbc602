"""Jobs store fixtures: a fresh database with the jobs schema, and a pool on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from services.common import pg
from services.jobs.migrate import upgrade
from tests.support.databases import drop_database, fresh_database_url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = fresh_database_url("aiport_test_jobs")
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[pg.Pool]:
    pool = pg.pool(database_url, "jobs-test", min_size=1, max_size=4)
    await pool.open()
    yield pool
    await pool.close()
