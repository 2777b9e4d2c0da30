"""A Modbus TCP to RS-485 gateway stand-in for tests: many unit ids behind one port, one
request at a time across all its connections (the bus), a set delay per request, at most
`max_connections` connections (the rest are closed at once, as cheap gateways do), and counters
of what a poller did to it: overlapping requests, refused connections, requests per unit.

It runs its own event loop in a thread, so the code under test talks to it over real TCP.
Every unit answers FC 3/4 reads with `unit * 1000 + address` in each register, so a value read
names the unit and address it came from. Units in `silent` never answer; units in `late`
answer after `late_s` (past the client's timeout)."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from dataclasses import dataclass, field

WAIT_S = 10.0


def word(unit: int, address: int) -> int:
    """What `unit` holds at `address`."""
    return (unit * 1000 + address) & 0xFFFF


@dataclass
class Gateway:
    units: set[int]
    max_connections: int = 1
    delay_s: float = 0.01
    silent: set[int] = field(default_factory=set)
    late: set[int] = field(default_factory=set)
    late_s: float = 0.0
    port: int = 0
    # Counters.
    connections: int = 0
    open_connections: int = 0
    max_open_connections: int = 0
    refused: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # (unit, fc, address)
    request_times: list[float] = field(default_factory=list)
    connect_times: list[float] = field(default_factory=list)

    def start(self) -> Gateway:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self._bus = asyncio.Lock()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        assert ready.wait(WAIT_S), "gateway did not start"
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)

    def units_read(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for unit, _fc, _address in self.requests:
            counts[unit] = counts.get(unit, 0) + 1
        return counts

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        self.connect_times.append(time.monotonic())
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _protocol, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    answer = await self._answer(tid, unit, pdu)
                finally:
                    self.in_flight -= 1
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes | None:
        fc, address, count = pdu[0], *struct.unpack(">HH", pdu[1:5])
        async with self._bus:  # one request at a time on the bus
            self.requests.append((unit, fc, address))
            self.request_times.append(time.monotonic())
            await asyncio.sleep(self.delay_s)
            if unit not in self.units or unit in self.silent:
                return None
            if unit in self.late:
                await asyncio.sleep(self.late_s)
        if fc not in (3, 4):
            body = bytes([fc | 0x80, 1])
        else:
            data = b"".join(struct.pack(">H", word(unit, address + i)) for i in range(count))
            body = bytes([fc, len(data)]) + data
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
