"""Ports for local stacks come from below the kernel's ephemeral range, so a
client connection can never take one between "chosen" and "bound"."""

from __future__ import annotations

import socket

import pytest

from deploy.local import ports


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    start = ports._ephemeral_start()
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == len(chosen)
    for port in chosen:
        assert ports.LOWEST_PORT <= port < start
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_holds_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy: int = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            idle: int = probe.getsockname()[1]
        candidates = iter([busy, busy, idle])

        class Scripted:
            def randrange(self, low: int, high: int) -> int:
                return next(candidates)

        monkeypatch.setattr(ports, "_rng", Scripted())
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 65536)
        monkeypatch.setattr(ports, "_handed_out", set())
        assert ports.free_port() == idle
