"""Child process: one part of the simulated SDM630 fleet (`virtual_server.fleet.Fleet`).

`python -m bench.fleet_server --size N --units-per-port K --delay-ms D --first-index I`
starts N simulated SDM630s on free loopback ports (unit ids 1..K per port), answers with one
protocol line listing where each meter is, and serves until its stdin closes or it gets
SIGTERM. With `--gateway` each port is one RS-485 bus behind a gateway (one request at a time
across its connections) and `--max-connections M` closes connections beyond M at once, as
cheap gateways do. A `stats` line on stdin answers with the fleet's counts so far
(`virtual_server.server.ServerStats`: requests served, connections accepted and refused, the
most requests in flight on one port). No update schedule: values are published once at start,
so no refresh competes with the measurement for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from bench.procs import emit
from virtual_server.devices import make_device
from virtual_server.fleet import Fleet


async def serve(
    size: int,
    units_per_port: int,
    delay_ms: float,
    first_index: int,
    gateway: bool = False,
    max_connections: int = 0,
) -> None:
    fleet = Fleet(
        size,
        lambda index: make_device("sdm630", {}),
        host="127.0.0.1",
        first_port=0,
        units_per_port=units_per_port,
        response_delay_ms=delay_ms,
        schedule=None,
        gateway=gateway,
        max_connections=max_connections,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pending = bytearray()

    def on_stdin() -> None:
        """`stats` lines get the counts; stdin closing (the harness exiting or stopping us)
        stops the fleet."""
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            stop.set()
            return
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.strip() == b"stats":
                emit({"stats": fleet.stats.as_dict()})

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await fleet.start()
    try:
        emit(
            {
                "members": [
                    {
                        "index": first_index + m.index,
                        "host": m.host,
                        "port": m.port,
                        "unit": m.unit_id,
                    }
                    for m in fleet.members
                ]
            }
        )
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fleet.stop(), 10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_server")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--units-per-port", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--gateway", action="store_true")
    parser.add_argument("--max-connections", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(
            serve(
                args.size,
                args.units_per_port,
                args.delay_ms,
                args.first_index,
                args.gateway,
                args.max_connections,
            )
        )
    except Exception as error:  # reported to the harness, which shows the log
        emit({"error": f"fleet server failed: {error!r}"})
        raise


if __name__ == "__main__":
    main()
