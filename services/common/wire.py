"""Names our services exchange on the wire: trailing metadata about an upstream's
failure, and the client protocols a route may pass through (NativeRequest.protocol);
and how a whole answer (ChatCompleted) reads as ChatCompletion's events."""

from typing import Final

from aiport.v1 import providers_pb2

# Set by providers when the upstream (not aiport) failed; "rate_limited" for 429s.
UPSTREAM_FAILURE_KEY: Final = "x-aiport-upstream-failure"
# Seconds to wait before retrying; the edge turns it into the client's retry-after.
RETRY_AFTER_KEY: Final = "x-aiport-retry-after"
# A Messages client's request, passed through to a route whose adapter speaks
# Anthropic Messages (the protocol name routes give that adapter).
ANTHROPIC_MESSAGES: Final = "anthropic-messages"


def completed_events(
    done: providers_pb2.ChatCompleted,
) -> tuple[providers_pb2.ChatCompletionEvent, providers_pb2.ChatCompletionEvent]:
    """CompleteChat's answer as ChatCompletion's two events for it: the answer
    (canonical, or a passthrough's native bytes), then the usage and provider."""
    if done.WhichOneof("answer") == "native_completion":
        answer = providers_pb2.ChatCompletionEvent(native_completion=done.native_completion)
    else:
        answer = providers_pb2.ChatCompletionEvent(completion=done.completion)
    return answer, providers_pb2.ChatCompletionEvent(usage=done.usage, provider=done.provider)
