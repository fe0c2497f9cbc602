"""Free TCP ports for local stacks, tests and the bench.

Binding to port 0 asks the kernel for a port from the *ephemeral* range, the
same range it hands to outgoing connections. A port chosen that way and bound
later (or freed by a replica restart and bound again) can meanwhile become the
local end of some client connection, and the service then dies with EADDRINUSE.
So ports here come from below the ephemeral range, where the kernel never
allocates on its own; each is checked bindable and never handed out twice by
one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 15000
DEFAULT_EPHEMERAL_START = 32768
MAX_ATTEMPTS = 200

_handed_out: set[int] = set()
_rng = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        start = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START
    return start if start > LOWEST_PORT + 1000 else DEFAULT_EPHEMERAL_START


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 nothing is bound to now and the kernel will not
    give to an outgoing connection."""
    top = _ephemeral_start()
    for _ in range(MAX_ATTEMPTS):
        port = _rng.randrange(LOWEST_PORT, top)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {LOWEST_PORT}..{top - 1} after {MAX_ATTEMPTS} tries")
