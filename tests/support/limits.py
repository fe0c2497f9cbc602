"""Rate limits for stacks whose tests are not about them: high enough that no test's
load meets them, still checked on every call (tests/integration/test_rate_limits.py
runs a stack of its own with small limits; bench/run.py does the same as this)."""

from __future__ import annotations

UNREACHED_RATE_LIMITS = {
    name: "100000000"
    for name in (
        "AIPORT_KEY_REQUESTS_PER_MINUTE",
        "AIPORT_ACCOUNT_REQUESTS_PER_MINUTE",
        "AIPORT_KEY_CONCURRENT_REQUESTS",
        "AIPORT_ACCOUNT_CONCURRENT_REQUESTS",
    )
}
