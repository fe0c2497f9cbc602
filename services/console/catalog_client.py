"""The console's one source of models and prices: the gateway's public
Catalog service over gRPC (`GetPricing`, what `GET /v1/pricing` transcodes),
so every number the pages show is the API's by construction.

The answer is kept for a few seconds (the catalog changes only when the
gateway restarts with a new config), and concurrent page views that find it
stale share one call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import grpc
from aiport.v1 import catalog_pb2, catalog_pb2_grpc

from services.common import grpc_server
from services.common.logs import fields
from services.console.price_list import PriceList, from_proto

log = logging.getLogger("console")

CACHE_SECONDS: Final = 10.0
CALL_TIMEOUT_SECONDS: Final = 5.0


class CatalogUnavailable(Exception):
    """The gateway did not answer: the page says so (503), never a stack trace."""


class CatalogClient:
    def __init__(
        self,
        addr: str,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = grpc_server.channel(addr)
        self._stub = catalog_pb2_grpc.CatalogStub(self._channel)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached: tuple[float, PriceList] | None = None
        self._lock = asyncio.Lock()

    async def price_list(self) -> PriceList:
        cached = self._cached
        if cached is not None and self._clock() - cached[0] < self._cache_seconds:
            return cached[1]
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self._cache_seconds:
                return cached[1]
            try:
                reply = await self._stub.GetPricing(
                    catalog_pb2.GetPricingRequest(), timeout=CALL_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("catalog unavailable", extra=fields(code=exc.code().name))
                raise CatalogUnavailable from exc
            prices = from_proto(reply)
            self._cached = (self._clock(), prices)
            return prices

    async def close(self) -> None:
        await self._channel.close(None)
