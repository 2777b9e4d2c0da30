"""Running servers until the process is told to stop (SIGINT, SIGTERM: `docker stop`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from virtual_server.scheduled_server import VirtualModbusTCPServer

__all__ = ["run", "serve"]

logger = logging.getLogger("virtual_server")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def serve(
    servers: Sequence[VirtualModbusTCPServer],
    stop: asyncio.Event | None = None,
    descriptions: Sequence[str] = (),
) -> None:
    """Start every server (all or none), then wait for `stop` or a SIGINT/SIGTERM, then stop
    them. A server that cannot start (port in use, first update failed) stops the others
    and raises."""
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)  # main thread on Unix only
            handled.append(signum)
    started: list[VirtualModbusTCPServer] = []
    try:
        for position, server in enumerate(servers):
            await server.start()
            started.append(server)
            what = descriptions[position] if position < len(descriptions) else ""
            updates = f"updates at {server.schedule}" if server.schedule else "no updates"
            logger.info(
                "listening on %s:%s%s; %s",
                server.host,
                server.port,
                f" ({what})" if what else "",
                updates,
            )
        await stop.wait()
        logger.info("stopping")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        for server in started:
            with contextlib.suppress(Exception):
                await server.stop()


def run(*servers: VirtualModbusTCPServer, log_level: int | str = logging.INFO) -> None:
    """Serve until SIGINT/SIGTERM: what a bridge script calls at its end, e.g.
    `run(MyBridge.from_environment())`. Sets up logging to stderr if nothing did."""
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    asyncio.run(serve(servers))
