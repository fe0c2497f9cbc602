"""python -m sandbox [--host H] [--port P] [--api-key K] [--chunk-delay S]"""

from __future__ import annotations

import argparse
import asyncio

from sandbox.server import serve
from services.common import logs
from services.common.settings import env, env_float, env_int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Deterministic upstream (OpenAI chat and images, Ark video tasks) for tests.",
    )
    parser.add_argument(
        "--host", default=env("AIPORT_SANDBOX_HOST", "127.0.0.1"), help="[AIPORT_SANDBOX_HOST]"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env_int("AIPORT_SANDBOX_PORT", 9100),
        help="[AIPORT_SANDBOX_PORT]",
    )
    parser.add_argument(
        "--api-key",
        default=env("AIPORT_SANDBOX_API_KEY", "sk-sandbox"),
        help="bearer key clients must send [AIPORT_SANDBOX_API_KEY]",
    )
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=env_float("AIPORT_SANDBOX_CHUNK_DELAY", 0.0),
        help="seconds between streamed frames [AIPORT_SANDBOX_CHUNK_DELAY]",
    )
    args = parser.parse_args(argv)
    logs.setup("sandbox")
    asyncio.run(serve(args.host, args.port, args.api_key, args.chunk_delay))


if __name__ == "__main__":
    main()
