"""What the baseline servers (``bench.raw_relay``, ``bench.raw_sio_relay``, ``bench.raw_fanout``)
share: the readiness probe the runner polls and their command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from aiohttp import web


async def healthz(request: web.Request) -> web.Response:
    """Readiness probe for the bench runner."""
    return web.Response(text="ok")


def serve(create_app: Callable[[], web.Application], description: str | None) -> None:
    """``python -m bench.<baseline> [--host H] --port N``: serve ``create_app()`` until killed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=None)
