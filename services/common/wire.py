"""Trailing-metadata names our services exchange about an upstream's failure."""

from typing import Final

# Set by providers when the upstream (not aiport) failed; "rate_limited" for 429s.
UPSTREAM_FAILURE_KEY: Final = "x-aiport-upstream-failure"
# Seconds to wait before retrying; the edge turns it into the client's retry-after.
RETRY_AFTER_KEY: Final = "x-aiport-retry-after"
