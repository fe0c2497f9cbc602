"""Pieces both gateways share: their error type, HTTP Basic keys, URL checks, a bounded
store. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
MAX_KEPT = 10_000  # transactions / invoices kept per gateway; the oldest go first

V = TypeVar("V")


class GatewayError(Exception):
    """An answer in the gateway's own error shape: the handler sends `body` with `status`."""

    def __init__(self, status: int, body: dict[str, object]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class Refused(Exception):
    """A page click or test control the payment's state does not allow (a 409 from the
    controls, a message on the page)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def basic_username(header: str | None) -> str | None:
    """The username of `Authorization: Basic base64(user:)`, or None when the header is
    missing, not Basic, not base64, or carries a password (both gateways say: empty)."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or password or not user:
        return None
    return user


def key_matches(header: str | None, key: str) -> bool:
    user = basic_username(header)
    return user is not None and hmac.compare_digest(user.encode(), key.encode())


def is_http_url(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        return False
    if any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def with_query(url: str, query: str) -> str:
    """`url` with `query` appended, whether or not it already has a query string."""
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


class BoundedStore(Generic[V]):
    """The last `limit` values by key, oldest first: a sandbox that runs for days must
    not grow without end."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self.limit = limit
        self._items: OrderedDict[str, V] = OrderedDict()

    def add(self, key: str, value: V) -> list[V]:
        """Store `value`; returns what was evicted to make room."""
        self._items[key] = value
        evicted = []
        while len(self._items) > self.limit:
            evicted.append(self._items.popitem(last=False)[1])
        return evicted

    def get(self, key: str) -> V | None:
        return self._items.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> Iterator[V]:
        return iter(list(self._items.values()))
