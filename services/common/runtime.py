"""Running a service's main coroutine: on uvloop, which cuts the event loop's
own cost per request (measured in bench/README.md)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(main)
