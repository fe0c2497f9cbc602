"""The failover loop, written once for chat and the provider workers.

A `Failover` walks one request along its model's routes in the order the
breakers planned, reports each route's outcome to them, logs each failure and
counts each failover. It holds the plan's `RouteLease` (failover.py, where the
decisions are): leaving the `with` block gives back every half-open probe the
plan reserved and did not use, however the request ended, including a
cancellation midway through a probe (which is not the route's failure).

Chat drives the attempts itself (it streams to the client during one);
workers hand over one call and get the first answer (`first_answer`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar

from services.common import metrics
from services.common.logs import fields
from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, RouteLease, route_key
from services.providers.routes import Route

T = TypeVar("T")

log = logging.getLogger(__name__)


class Failover:
    """One request's routes. `log_fields` name the request in every log line
    (request id, model, job id...)."""

    def __init__(
        self, breakers: Breakers, routes: tuple[Route, ...], log_fields: Mapping[str, object]
    ) -> None:
        self.breakers = breakers
        self.lease = breakers.plan(routes)
        self.log_fields = log_fields
        self.done = False  # an attempt answered, or failed in a way no other route helps

    def __enter__(self) -> Failover:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.lease.close()

    def attempts(self) -> Iterator[Attempt]:
        """The planned routes, one attempt each, until one answers or a failure
        ends the request. Each attempt must end in `succeeded` or `failed`."""
        planned = self.lease.routes
        for index, route in enumerate(planned):
            if self.done:
                return
            metrics.forget_upstream_outcome()  # so a failover's reason is this route's own
            yield Attempt(self, route, index + 1, last=index + 1 == len(planned))

    def final_error(self) -> UpstreamError:
        """Why the request got no answer (rate_limited only when every route said 429)."""
        return self.lease.final_error()

    async def first_answer(self, call: Callable[[Route], Awaitable[T]]) -> tuple[Route, T]:
        """The first route's answer to `call` that did not fail (and that route);
        raises the request's final error when none answered (the cooling-down
        error when every route was skipped)."""
        for attempt in self.attempts():
            try:
                answer = await call(attempt.route)
            except UpstreamError as error:
                attempt.failed(error)
                continue
            attempt.succeeded()
            return attempt.route, answer
        raise self.final_error()


class Attempt:
    """One route tried for a request: tell it how the route did."""

    __slots__ = ("_committed", "failover", "last", "number", "route")

    def __init__(self, failover: Failover, route: Route, number: int, last: bool) -> None:
        self.failover = failover
        self.route = route
        self.number = number
        self.last = last
        self._committed = False

    @property
    def _lease(self) -> RouteLease:
        return self.failover.lease

    def output_started(self) -> None:
        """Output reached the client: this request can no longer move to another
        route, so the probes it reserved for later routes go back now."""
        if not self._committed:
            self._committed = True
            self._lease.commit(self.route)

    def succeeded(self) -> None:
        self._lease.succeeded(self.route)
        self.failover.done = True

    def failed(self, error: UpstreamError, *, output_started: bool = False) -> None:
        """The route failed; the request moves on to the next route only when
        another might do better and no output has reached the client."""
        if output_started:
            self.output_started()
        moves_on = self._lease.failed(self.route, error)
        log.warning(
            "upstream failed",
            extra=fields(
                **self.failover.log_fields,
                route=route_key(self.route),
                attempt=self.number,
                error=error.message,
                output_started=output_started,
                breaker=self.failover.breakers.state(self.route),
            ),
        )
        if moves_on and not self.last:
            metrics.record_failover(route_key(self.route), error.kind)
        else:
            self.failover.done = True
