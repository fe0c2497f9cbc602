"""Job ids: made by the gateway (so a client can be told which job to poll even
when creating it went unanswered) or by the jobs service, checked by both."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
PREFIX = "job_"
RANDOM_CHARS = 26


def new_job_id() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_CHARS))


def is_job_id(value: str) -> bool:
    body = value[len(PREFIX) :]
    return (
        value.startswith(PREFIX) and len(body) == RANDOM_CHARS and body.isascii() and body.isalnum()
    )


# A client's own id for a job (client_task_id): printable ASCII without spaces, as
# the jobs table's CHECK constraint has it.
MAX_CLIENT_TASK_ID_CHARS = 64


def is_client_task_id(value: str) -> bool:
    return 1 <= len(value) <= MAX_CLIENT_TASK_ID_CHARS and all(
        "\x21" <= char <= "\x7e" for char in value
    )
