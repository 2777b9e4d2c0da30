"""Running servers until the process is told to stop (SIGINT, SIGTERM: `docker stop`), and
reporting what they did to whoever runs the process: one log line per server at shutdown
and, if asked, a status file (JSON) kept current while they run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from virtual_server.scheduled_server import VirtualModbusTCPServer
from virtual_server.server import DeviceMemoryServer

__all__ = ["STATUS_INTERVAL_S", "run", "serve", "status", "write_status"]

logger = logging.getLogger("virtual_server")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: How often a changed status is written to the status file while the servers run.
STATUS_INTERVAL_S = 0.25


def status(servers: Sequence[DeviceMemoryServer], *, running: bool) -> dict:
    """What the status file holds: per server where it listens, how it serves, its counts
    (`ServerStats`), and the totals (`max_in_flight`: the highest of any one server)."""
    rows = [
        {
            "host": server.host,
            "port": server.port,
            "gateway": server.gateway,
            "max_connections": server.max_connections,
            "response_delay_ms": server.response_delay_ms,
            **server.stats.as_dict(),
        }
        for server in servers
    ]
    totals = {
        key: sum(row[key] for row in rows)
        for key in ("requests_served", "connections_accepted", "connections_refused")
    }
    totals["max_in_flight"] = max((row["max_in_flight"] for row in rows), default=0)
    return {"running": running, "time": time.time(), "servers": rows, "totals": totals}


def write_status(path: Path, servers: Sequence[DeviceMemoryServer], *, running: bool) -> None:
    """Replace `path` atomically (a reader never sees half a file)."""
    text = json.dumps(status(servers, running=running), indent=1)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)


async def _keep_status(path: Path, servers: Sequence[DeviceMemoryServer]) -> None:
    last = None
    while True:
        counts = [server.stats for server in servers]
        if counts != last:
            write_status(path, servers, running=True)
            last = counts
        await asyncio.sleep(STATUS_INTERVAL_S)


def _how(server: VirtualModbusTCPServer) -> str:
    parts = []
    if server.gateway:
        parts.append("a gateway: one request at a time")
    if server.max_connections:
        parts.append(f"at most {server.max_connections} connection(s)")
    return f"; {', '.join(parts)}" if parts else ""


async def serve(
    servers: Sequence[VirtualModbusTCPServer],
    stop: asyncio.Event | None = None,
    descriptions: Sequence[str] = (),
    status_file: str | os.PathLike | None = None,
) -> None:
    """Start every server (all or none), then wait for `stop` or a SIGINT/SIGTERM, then stop
    them. A server that cannot start (port in use, first update failed) stops the others
    and raises. At shutdown each server's counts are logged; with `status_file` they are
    also written there (see `status`) every STATUS_INTERVAL_S while they change, and once
    more, with "running": false, when the servers have stopped."""
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)  # main thread on Unix only
            handled.append(signum)
    path = Path(status_file) if status_file else None
    keeper: asyncio.Task | None = None
    started: list[VirtualModbusTCPServer] = []
    try:
        for position, server in enumerate(servers):
            await server.start()
            started.append(server)
            what = descriptions[position] if position < len(descriptions) else ""
            updates = f"updates at {server.schedule}" if server.schedule else "no updates"
            logger.info(
                "listening on %s:%s%s; %s%s",
                server.host,
                server.port,
                f" ({what})" if what else "",
                updates,
                _how(server),
            )
        if path is not None:
            try:  # an unwritable path fails here, before anyone relies on it
                write_status(path, started, running=True)
            except OSError as error:
                raise OSError(
                    f"cannot write the status file {path}: {error.strerror or error}"
                ) from error
            keeper = loop.create_task(_keep_status(path, started))
        await stop.wait()
        logger.info("stopping")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        for server in started:
            with contextlib.suppress(Exception):
                await server.stop()
            counts = server.stats
            logger.info(
                "%s:%s served %d requests, accepted %d connections, refused %d, "
                "at most %d requests in flight",
                server.host,
                server.port,
                counts.requests_served,
                counts.connections_accepted,
                counts.connections_refused,
                counts.max_in_flight,
            )
        if path is not None and started:
            with contextlib.suppress(OSError):
                write_status(path, started, running=False)


def run(*servers: VirtualModbusTCPServer, log_level: int | str = logging.INFO) -> None:
    """Serve until SIGINT/SIGTERM: what a bridge script calls at its end, e.g.
    `run(MyBridge.from_environment())`. Sets up logging to stderr if nothing did."""
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    asyncio.run(serve(servers))
