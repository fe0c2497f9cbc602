"""`[sim:...]` directives: how a test steers the sandbox from inside a prompt.

Directives live in the prompt text because that is the one thing every client,
SDK and gateway forwards untouched, whatever protocol it speaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandbox.errors import ApiError, invalid, simulated_failure, simulated_status

MAX_DELAY_SECONDS = 600.0
# Bounds the answer the sandbox has to build in memory (8 choices of this many words).
MAX_TOKENS_DIRECTIVE = 100_000

_DIRECTIVE = re.compile(r"\[sim:([a-z-]+)(?:=([^\]\s]*))?\]", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]{1,9}")

# Directives that take no value, and those that take a non-negative integer.
_FLAGS = frozenset({"fail", "echo", "parallel", "hang", "reset", "malformed", "moderation"})
_COUNTS = frozenset({"fail-after", "tokens", "cached", "cache-write", "reasoning", "retry-after"})

# What each endpoint understands; anything else in its prompt is a 400.
CHAT = frozenset(
    {"fail", "fail-after", "delay", "chunk-delay", "tokens", "cached", "cache-write", "reasoning"}
    | {"status", "retry-after", "echo", "parallel", "fail-route", "reset", "malformed"}
)
MEDIA = frozenset({"fail", "delay", "hang", "status", "retry-after", "fail-route", "moderation"})
_ROUTE_LABELS = re.compile(r"[A-Za-z0-9_-]{1,40}(,[A-Za-z0-9_-]{1,40}){0,9}")


@dataclass(frozen=True)
class Directives:
    fail: bool = False
    fail_after: int | None = None
    delay: float = 0.0
    chunk_delay: float | None = None  # None: the server's --chunk-delay
    tokens: int | None = None
    cached: int = 0
    # Prompt tokens written to the prompt cache: only Anthropic reports them apart
    # (cache_creation_input_tokens); the other protocols have no field and ignore it.
    cache_write: int = 0
    reasoning: int = 0
    status: int | None = None
    # With status=429: the seconds the answer asks the caller to wait, sent the way
    # each protocol sends it (a retry-after header; Gemini's RetryInfo too).
    retry_after: int | None = None
    echo: bool = False
    parallel: bool = False
    hang: bool = False  # media only: never answer (images) / never finish (video tasks)
    # Chat only: drop the connection before any response (a reset), or answer
    # 200 with a body that is not the protocol (a broken upstream).
    reset: bool = False
    malformed: bool = False
    # Route labels (the X-Sandbox-Route header a provider sends) that answer 503.
    fail_routes: tuple[str, ...] = ()
    # Media only: the upstream's content moderation refuses the prompt or the output,
    # with that upstream's documented error code.
    moderation: bool = False

    def error(self, streaming: bool) -> ApiError | None:
        """The error to answer instead of a completion, if the directives ask for one.

        `fail-after` can only break a stream midway; without a stream there is no
        "midway", so it fails the whole request like `fail`.
        """
        if self.status is not None:
            return simulated_status(self.status, self.retry_after)
        if self.fail or (self.fail_after is not None and not streaming):
            return simulated_failure()
        return None


def remove(text: str) -> str:
    """The text without directives, whitespace collapsed: what seeds the answer.

    Collapsing means "hi [sim:tokens=3]" and "hi" get the same words, so adding
    a directive to a prompt changes only what the directive is about.
    """
    return " ".join(_DIRECTIVE.sub(" ", text).split())


def parse(text: str, allowed: frozenset[str] = CHAT, param: str = "messages") -> Directives:
    """Every directive anywhere in `text`; an unknown or malformed one is a 400.

    Rejecting typos (`[sim:token=3]`) beats silently answering with defaults
    and leaving a test author puzzled. `allowed` is what the endpoint understands
    (chat and media differ); `param` names the request field in the 400.
    """
    # Values were validated per name in _value; their types follow from the name.
    found: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(text):
        name, raw = match.group(1).lower(), match.group(2)
        found[name] = _value(name, raw, match.group(0), param)
        if name not in allowed:
            raise _bad(match.group(0), "is not supported by this endpoint", param)
    # Plain dict -> dataclass; the names were validated in _value.
    return Directives(
        fail=bool(found.get("fail", False)),
        fail_after=_int_or_none(found.get("fail-after")),
        delay=float(found.get("delay", 0.0)),
        chunk_delay=_float_or_none(found.get("chunk-delay")),
        tokens=_int_or_none(found.get("tokens")),
        cached=int(found.get("cached", 0)),
        cache_write=int(found.get("cache-write", 0)),
        reasoning=int(found.get("reasoning", 0)),
        status=_int_or_none(found.get("status")),
        retry_after=_int_or_none(found.get("retry-after")),
        echo=bool(found.get("echo", False)),
        parallel=bool(found.get("parallel", False)),
        hang=bool(found.get("hang", False)),
        reset=bool(found.get("reset", False)),
        malformed=bool(found.get("malformed", False)),
        fail_routes=tuple(found.get("fail-route", ())),
        moderation=bool(found.get("moderation", False)),
    )


def failing_routes(text: str) -> tuple[str, ...]:
    """The labels in `[sim:fail-route=a,b]` directives, without validating the rest."""
    labels: list[str] = []
    for match in _DIRECTIVE.finditer(text):
        if match.group(1).lower() == "fail-route" and match.group(2):
            labels += match.group(2).split(",")
    return tuple(labels)


def _value(name: str, raw: str | None, literal: str, param: str) -> Any:
    if name in _FLAGS:
        if raw is not None:
            raise _bad(literal, "takes no value", param)
        return True
    if raw is None:
        raise _bad(literal, "needs a value", param)
    if name in _COUNTS:
        if not _DIGITS.fullmatch(raw):
            raise _bad(literal, "needs a non-negative integer", param)
        if name == "tokens" and int(raw) > MAX_TOKENS_DIRECTIVE:
            raise _bad(literal, f"is capped at {MAX_TOKENS_DIRECTIVE}", param)
        return int(raw)
    if name in ("delay", "chunk-delay"):
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0.0 <= seconds < float("inf"):
            raise _bad(literal, "needs a non-negative number of seconds", param)
        return min(seconds, MAX_DELAY_SECONDS)
    if name == "fail-route":
        if not _ROUTE_LABELS.fullmatch(raw):
            raise _bad(literal, "needs route labels like primary or a,b", param)
        return tuple(raw.split(","))
    if name == "status":
        if not _DIGITS.fullmatch(raw) or not 400 <= int(raw) <= 599:
            raise _bad(literal, "needs an HTTP error status 400..599", param)
        return int(raw)
    raise _bad(literal, "is not a known directive", param)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _bad(literal: str, why: str, param: str) -> Exception:
    return invalid(f"sandbox: directive {literal} {why}", param=param)
