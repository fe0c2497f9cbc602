"""Upstream 429s: the wait they ask for, how a request whose routes all
rate-limit ends, and the sandbox answering them as the providers do."""

from __future__ import annotations

import orjson

from sandbox import directives, gemini
from sandbox.errors import error_headers
from services.gateway import errors
from services.providers.adapters.gemini import classify_error
from services.providers.errors import MAX_RETRY_AFTER_SECONDS, UpstreamError, retry_after_seconds
from services.providers.failover import final_error, should_fail_over


def test_retry_after_in_seconds_date_or_milliseconds() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after": "1.2"}) == 2  # rounded up
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 2
    assert (
        retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500) == 10
    )
    assert retry_after_seconds({"retry-after": "99999999"}) == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "nan"}) is None
    assert retry_after_seconds({}) is None


def test_only_routes_that_all_rate_limit_make_a_rate_limit() -> None:
    cooling = UpstreamError("failed", "cooling down")
    limited = [UpstreamError("rate_limited", "429", 9), UpstreamError("rate_limited", "429", 3)]
    assert should_fail_over(limited[0])
    both = final_error(limited, cooling)
    assert both.kind == "rate_limited" and both.retry_after_seconds == 3
    no_wait = final_error([UpstreamError("rate_limited", "429")], cooling)
    assert no_wait.kind == "rate_limited" and no_wait.retry_after_seconds is None
    mixed = [limited[0], UpstreamError("failed", "HTTP 500")]
    assert final_error(mixed, cooling) is mixed[1]
    assert final_error([], cooling) is cooling
    # A real failure earlier, a 429 last: still the failure, never a "try later".
    failed_then_limited = [UpstreamError("failed", "HTTP 500"), limited[0]]
    assert final_error(failed_then_limited, cooling) is failed_then_limited[0]


def test_gemini_429_reads_its_retry_info() -> None:
    raw = orjson.dumps(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "Quota exceeded",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.5s"}
                ],
            }
        }
    )
    error = classify_error(429, raw, "key")
    assert error.kind == "rate_limited" and error.retry_after_seconds == 38
    assert classify_error(429, b"{}", "key", retry_after=4).retry_after_seconds == 4
    assert classify_error(503, raw, "key").kind == "failed"


def test_rate_limited_public_error_is_a_retryable_429_with_retry_after() -> None:
    error = errors.upstream_rate_limited(7)
    metadata = dict(error.trailing_metadata())
    assert error.status == 429 and error.code == "upstream_rate_limited"
    assert error.code != errors.insufficient_quota("x").code
    assert metadata[errors.RETRY_HEADER] == "true"
    assert metadata[errors.RETRY_AFTER_HEADER] == "7"
    assert errors.RETRY_AFTER_HEADER not in dict(errors.upstream_rate_limited().trailing_metadata())


def test_sandbox_429_carries_the_wait_it_was_told() -> None:
    found = directives.parse("hi [sim:status=429][sim:retry-after=7]")
    error = found.error(streaming=False)
    assert error is not None and error.status == 429
    assert error_headers(error) == {"Retry-After": "7"}
    details = gemini.error_body(error)["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details
    plain = directives.parse("hi [sim:status=429]").error(streaming=False)
    assert plain is not None and error_headers(plain) == {}
