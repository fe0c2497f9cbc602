"""What must happen when a public call ends, whatever way it ends, and what a
call has done once already.

The boundary (boundary.py) opens a CallState for each call and runs its end
actions when the call's answer is over: a unary's return or error, a stream's
last message, or its client leaving. The rate limiter registers the giving
back of the call's lease here. It lives in a context variable: grpc.aio runs
each call in a task of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

_current: ContextVar[CallState | None] = ContextVar("aiport_call_state", default=None)


@dataclass(slots=True)
class CallState:
    # Whether the rate limits were applied to this call already (a call may
    # authenticate more than once, e.g. a job with references, then its hold).
    limited: bool = False
    _on_end: list[Callable[[], None]] = field(default_factory=list)

    def at_end(self, action: Callable[[], None]) -> None:
        self._on_end.append(action)

    def end(self) -> None:
        """Run the end actions, once."""
        actions, self._on_end = self._on_end, []
        for action in actions:
            action()


def begin() -> CallState:
    state = CallState()
    _current.set(state)
    return state


def current() -> CallState | None:
    return _current.get()
