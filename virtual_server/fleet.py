"""Many simulated meters at once, for the benchmark and for load tests.

A fleet is N devices spread over unit ids 1..`units_per_port` of one server, then the next
server (port) and so on: `units_per_port=1` imitates N meters with their own IP address each,
247 (the default) a few RS-485 gateways full of meters. `response_delay_ms` delays every
answer like a real meter or gateway does (SDM meters behind a gateway: tens of ms).
`gateway=True` makes each port one RS-485 bus (one request at a time across its
connections) and `max_connections` caps each port's connections, as cheap gateways do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from virtual_server.devices.base import Device
from virtual_server.request_handling import Request
from virtual_server.schedule import UpdateSchedule
from virtual_server.scheduled_server import VirtualModbusTCPServer
from virtual_server.server import ServerStats

__all__ = ["Fleet", "FleetMember", "MAX_UNITS_PER_PORT"]

#: Modbus unit ids 1-247 address devices; 0 is broadcast on serial lines, 248-255 reserved.
MAX_UNITS_PER_PORT = 247


@dataclass(frozen=True)
class FleetMember:
    """Where one simulated device answers (the port is the real one once started)."""

    index: int
    host: str
    port: int
    unit_id: int
    device: Device


class Fleet:
    """`size` devices made by `make_device(index)`, served by as many servers as needed.

    `first_port=0` gives every server a free port (tests); otherwise the servers listen on
    `first_port`, `first_port + 1`, ... Start and stop it like one server (async, in threads,
    or as a context manager).
    """

    def __init__(
        self,
        size: int,
        make_device: Callable[[int], Device],
        *,
        host: str = "127.0.0.1",
        first_port: int = 0,
        units_per_port: int = MAX_UNITS_PER_PORT,
        response_delay_ms: float = 0,
        schedule: UpdateSchedule | None = None,
        gateway: bool = False,
        max_connections: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a fleet needs at least 1 device, got {size}")
        if not 1 <= units_per_port <= MAX_UNITS_PER_PORT:
            raise ValueError(
                f"units_per_port {units_per_port} is not allowed; allowed: 1-{MAX_UNITS_PER_PORT}"
            )
        ports_needed = -(-size // units_per_port)
        if first_port and first_port + ports_needed - 1 > 65535:
            raise ValueError(
                f"{size} devices at {units_per_port} per port need ports {first_port}-"
                f"{first_port + ports_needed - 1}, past 65535"
            )
        self.servers: list[VirtualModbusTCPServer] = []
        self._units: list[tuple[int, int, Device]] = []  # (index, server position, unit id)
        for position, start in enumerate(range(0, size, units_per_port)):
            devices: dict[int, Device] = {}
            for index in range(start, min(size, start + units_per_port)):
                unit_id = 1 + index - start
                device = make_device(index)
                devices[unit_id] = device
                self._units.append((index, position, unit_id))
            self.servers.append(
                VirtualModbusTCPServer(
                    devices,
                    schedule=schedule,
                    host=host,
                    port=first_port + position if first_port else 0,
                    response_delay_ms=response_delay_ms,
                    gateway=gateway,
                    max_connections=max_connections,
                )
            )

    @property
    def members(self) -> list[FleetMember]:
        return [
            FleetMember(
                index,
                self.servers[position].host,
                self.servers[position].port,
                unit_id,
                self.servers[position].simulated[unit_id],
            )
            for index, position, unit_id in self._units
        ]

    @property
    def requests(self) -> list[Request]:
        """Every request any server of the fleet received."""
        return [request for server in self.servers for request in server.requests]

    @property
    def stats(self) -> ServerStats:
        """The servers' counts added up; `max_in_flight` is the highest of any one server
        (for a fleet of gateways: of any one bus)."""
        every = [server.stats for server in self.servers]
        return ServerStats(
            requests_served=sum(s.requests_served for s in every),
            connections_accepted=sum(s.connections_accepted for s in every),
            connections_refused=sum(s.connections_refused for s in every),
            max_in_flight=max(s.max_in_flight for s in every),
        )

    def set_response_delay_ms(self, delay_ms: float) -> None:
        if delay_ms < 0:
            raise ValueError(f"response delay must be >= 0 ms, got {delay_ms}")
        for server in self.servers:
            server.response_delay_ms = delay_ms

    # -- lifecycle: all servers or none --------------------------------------------------------

    async def start(self) -> None:
        started: list[VirtualModbusTCPServer] = []
        try:
            for server in self.servers:
                await server.start()
                started.append(server)
        except BaseException:
            for server in started:
                with contextlib.suppress(Exception):
                    await server.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            if server.running:
                await server.stop()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> Fleet:
        """Each server on its own event loop thread; returns once all listen."""
        started: list[VirtualModbusTCPServer] = []
        try:
            for server in self.servers:
                server.start_in_thread()
                started.append(server)
        except BaseException:
            for server in started:
                with contextlib.suppress(Exception):
                    server.stop_thread()
            raise
        return self

    def stop_thread(self) -> None:
        for server in self.servers:
            server.stop_thread()

    def __enter__(self) -> Fleet:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()
