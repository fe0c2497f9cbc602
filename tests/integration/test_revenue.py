"""Revenue by model and provider: each capture names the provider whose route served
the call (chat and jobs, failover included), and `aiportctl report revenue` sums it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import psycopg

from deploy.local.stack import Stack
from tests.integration.conftest import Account, wait_for_jobs_to_settle
from tests.integration.test_jobs import poll, submit

CHAT_MODEL = "deepseek-v4-flash"


def captures(stack: Stack, account_id: str) -> list[tuple[str, str]]:
    """(revenue account, provider) of the account's captures, oldest first."""
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT p.account, t.provider FROM billing.transactions t
            JOIN billing.postings p ON p.transaction_id = t.id
            WHERE t.kind = 'capture' AND t.account_id = %s AND p.account LIKE 'revenue:%%'
            ORDER BY t.id
            """,
            (account_id,),
        ).fetchall()
    return [(str(a), str(p)) for a, p in rows]


def report(stack: Stack) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    window = ["--from", str(today), "--to", str(today + timedelta(days=1))]
    done = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", "report", "revenue", "--json", *window],
        env={**os.environ, "AIPORT_DATABASE_URL": stack.config.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines: list[dict[str, Any]] = json.loads(done.stdout)["lines"]
    return lines


def test_captures_name_the_provider_that_served_them(
    stack: Stack, client: openai.OpenAI, http: httpx.Client, account: Account
) -> None:
    client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
    # The primary refuses: the backup serves, and is the one credited.
    client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "hi [sim:fail-route=primary]"}],
        stream=True,
    ).close()
    job = poll(http, submit(http, "/v1/image/generate", {"prompt": "a kite"})["job_id"])
    assert job["status"] == "done", job
    wait_for_jobs_to_settle(stack.config.database_url)

    found = captures(stack, account.account_id)
    assert found[:2] == [
        (f"revenue:{CHAT_MODEL}", "sandbox-openai-primary"),
        (f"revenue:{CHAT_MODEL}", "sandbox-openai-backup"),
    ]
    (image,) = found[2:]
    assert image[0] == f"revenue:{job['model']}" and image[1].startswith("sandbox-")

    lines = {(line["model"], line["provider"]) for line in report(stack)}
    assert {(CHAT_MODEL, "sandbox-openai-primary"), (CHAT_MODEL, "sandbox-openai-backup")} <= lines
    assert (job["model"], image[1]) in lines
