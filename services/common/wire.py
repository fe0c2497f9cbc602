"""Names our services exchange on the wire: trailing metadata about an upstream's
failure, and the client protocols a route may pass through (NativeRequest.protocol)."""

from typing import Final

# Set by providers when the upstream (not aiport) failed; "rate_limited" for 429s.
UPSTREAM_FAILURE_KEY: Final = "x-aiport-upstream-failure"
# Seconds to wait before retrying; the edge turns it into the client's retry-after.
RETRY_AFTER_KEY: Final = "x-aiport-retry-after"
# A Messages client's request, passed through to a route whose adapter speaks
# Anthropic Messages (the protocol name routes give that adapter).
ANTHROPIC_MESSAGES: Final = "anthropic-messages"
