"""The virtual Modbus TCP server's core: `DeviceMemoryServer`, listening and answering from
the `DeviceMemory` of each simulated unit id (what it answers: `virtual_server.request_handling`;
how the byte stream is split into requests: `virtual_server.mbap`), on the caller's event
loop or in a thread of its own.

Each connection's requests are answered one at a time, in the order they arrived, however
they were packed into TCP segments. As a gateway (`gateway=True`) the server is one RS-485
bus: requests from all its connections queue for it and it serves one at a time, each
taking `response_delay_ms`, each answered on the connection it came from. `max_connections`
caps the connections held at once: one beyond it is accepted and closed at once, which is
what cheap Modbus TCP gateways do (the client sees its connection closed as soon as it is
made, or as it sends its first request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from virtual_server import mbap
from virtual_server.memory import DeviceMemory
from virtual_server.request_handling import Request, answer, request_of

__all__ = ["REQUEST_LOG_LIMIT", "DeviceMemoryServer", "ServerStats"]

logger = logging.getLogger(__name__)

#: How many of the latest requests `DeviceMemoryServer.requests` remembers.
REQUEST_LOG_LIMIT = 100_000


@dataclass(frozen=True)
class ServerStats:
    """What a server has done since it was created (across restarts) or `reset_stats()`.

    `requests_served`: requests taken through to the end (answered, or for an absent unit id
    left unanswered after the delay). `connections_refused`: connections closed at once
    because `max_connections` were already open. `max_in_flight`: the most requests ever
    being served at the same moment; a gateway must never go above 1.
    """

    requests_served: int = 0
    connections_accepted: int = 0
    connections_refused: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class DeviceMemoryServer:
    """A read-only Modbus TCP server answering for the unit ids in `devices` from the
    `DeviceMemory` each maps to, as they are at each request: the caller fills and changes
    them (tests do), nothing here refreshes them. `VirtualModbusTCPServer` is the one that
    fills its memories itself, from devices or a bridge, on an update schedule.

    `port=0` picks a free port; `port` holds the real one once started (with port 0, give
    `host` as one address such as "127.0.0.1": a name or "" binding several sockets would get
    a different free port on each, and `port` reports the first). `response_delay_ms`
    delays every answer (including exception answers and the silence for an absent unit),
    like a slow meter or gateway; it may be changed while running. Requests for a unit id not
    in `devices` get no answer (the client times out) unless `answer_unknown_units` is set,
    then exception 0x0B. `devices` is the live mapping: adding or removing a unit takes
    effect at the next request.

    `gateway=True` serves one request at a time across all connections (one RS-485 bus);
    otherwise only each connection's own requests wait for each other. `max_connections`
    (0: no limit) closes connections beyond it as soon as they are accepted. `stats` counts.

    Run it on the caller's event loop (`await start()` / `await stop()`, or `async with`), or
    in a daemon thread with its own loop (`start_in_thread()` / `stop_thread()`, or `with`).
    """

    def __init__(
        self,
        devices: Mapping[int, DeviceMemory] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        response_delay_ms: float = 0,
        answer_unknown_units: bool = False,
        gateway: bool = False,
        max_connections: int = 0,
    ) -> None:
        self.devices: dict[int, DeviceMemory] = dict(devices or {})
        for unit_id in self.devices:
            if not isinstance(unit_id, int) or not 0 <= unit_id <= 255:
                raise ValueError(f"unit id {unit_id!r} is outside 0..255")
        if response_delay_ms < 0:
            raise ValueError(f"response_delay_ms must be >= 0, got {response_delay_ms}")
        if max_connections < 0:
            raise ValueError(f"max_connections must be >= 0 (0: no limit), got {max_connections}")
        self.host = host
        self.requested_port = port
        self.response_delay_ms = response_delay_ms
        self.answer_unknown_units = answer_unknown_units
        self.gateway = gateway
        self.max_connections = max_connections
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._bus: asyncio.Lock | None = None
        # Bounded: a long-running fleet must not grow by every request it ever answered.
        self._requests: deque[Request] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._requests_lock = threading.Lock()
        self._served = self._accepted = self._refused = 0
        self._in_flight = self._max_in_flight = 0
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the requested one before the first start)."""
        return self._port if self._port is not None else self.requested_port

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def requests(self) -> list[Request]:
        """Every request received (across restarts) since creation or `reset_requests()`,
        in arrival order."""
        with self._requests_lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    @property
    def stats(self) -> ServerStats:
        return ServerStats(
            requests_served=self._served,
            connections_accepted=self._accepted,
            connections_refused=self._refused,
            max_in_flight=self._max_in_flight,
        )

    def reset_stats(self) -> None:
        self._served = self._accepted = self._refused = 0
        self._max_in_flight = self._in_flight

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    # -- async API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `host`:`port`; returns once connections are accepted."""
        if self._server is not None:
            raise RuntimeError(f"virtual Modbus server on {self.host}:{self.port} already runs")
        loop = asyncio.get_running_loop()
        self._bus = asyncio.Lock()
        try:
            server = await loop.create_server(
                lambda: _Connection(self), self.host, self.requested_port, reuse_address=True
            )
        except OSError as error:
            raise OSError(
                f"virtual Modbus server cannot listen on {self.host}:{self.requested_port} "
                f"(port in use or address not local?): {error.strerror or error}"
            ) from error
        self._port = server.sockets[0].getsockname()[1]
        self._server = server

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; the port is free when this returns."""
        if self._thread is not None:
            raise RuntimeError("this server runs in its own thread: stop it with stop_thread()")
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        workers = [c.worker for c in connections if c.worker is not None]
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        await asyncio.wait_for(server.wait_closed(), timeout)

    async def __aenter__(self) -> DeviceMemoryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- background thread ---------------------------------------------------------------

    def start_in_thread(self, timeout: float = 10.0) -> DeviceMemoryServer:
        """Run the server on its own event loop in a daemon thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError(f"virtual Modbus server on {self.host}:{self.port} already runs")
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve_in_thread(ready, failure),),
            name=f"virtual-modbus-{self.host}:{self.requested_port}",
            daemon=True,
        )
        thread.start()
        if not ready.wait(timeout):
            self._thread = thread
            with contextlib.suppress(TimeoutError):
                self.stop_thread(timeout)
            raise TimeoutError(f"virtual Modbus server did not start within {timeout} s")
        if failure:
            thread.join(timeout)
            raise failure[0]
        self._thread = thread
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started by `start_in_thread()` and wait (bounded) for its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"virtual Modbus server thread did not stop within {timeout} s")

    def __enter__(self) -> DeviceMemoryServer:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    async def _serve_in_thread(self, ready: threading.Event, failure: list[BaseException]):
        self._thread_loop = asyncio.get_running_loop()
        self._thread_stop = asyncio.Event()
        try:
            await self.start()
        except BaseException as error:  # handed to the thread that called start_in_thread
            failure.append(error)
            ready.set()
            return
        ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self.stop()

    # -- connections (event loop thread) -------------------------------------------------

    def _admit(self, connection: _Connection) -> bool:
        if self.max_connections and len(self._connections) >= self.max_connections:
            self._refused += 1
            return False
        self._accepted += 1
        self._connections.add(connection)
        return True

    def _received(self, frame: mbap.Frame) -> None:
        with self._requests_lock:
            self._requests.append(request_of(frame.unit_id, frame.pdu))

    async def _serve(self, frame: mbap.Frame) -> bytes | None:
        """Serve one request: on a gateway's bus one at a time, after the response delay."""
        assert self._bus is not None
        async with self._bus if self.gateway else contextlib.nullcontext():
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            try:
                if self.response_delay_ms > 0:
                    await asyncio.sleep(self.response_delay_ms / 1000)
                response = answer(
                    self.devices,
                    frame.unit_id,
                    frame.pdu,
                    answer_unknown_units=self.answer_unknown_units,
                )
            finally:
                self._in_flight -= 1
            self._served += 1
        return (
            None if response is None else mbap.encode(frame.transaction_id, frame.unit_id, response)
        )


class _Connection(asyncio.Protocol):
    """One client connection: its frames queue up and are served one at a time, in order."""

    def __init__(self, server: DeviceMemoryServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.reader = mbap.FrameReader()
        self.queue: asyncio.Queue[mbap.Frame] = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server._admit(self):
            logger.debug(
                "%s:%s: connection from %s refused: %d connections open",
                self.server.host,
                self.server.port,
                transport.get_extra_info("peername"),
                self.server.connections,
            )
            transport.close()
            return
        self.worker = asyncio.get_running_loop().create_task(self._work())

    def data_received(self, data: bytes) -> None:
        if self.worker is None:  # refused: nothing it sends is served
            return
        try:
            frames = self.reader.feed(data)
        except mbap.FramingError as error:
            logger.warning(
                "%s:%s: closing the connection from %s: %s",
                self.server.host,
                self.server.port,
                self.transport.get_extra_info("peername") if self.transport else "?",
                error,
            )
            frames = []
            self.close()
        for frame in frames:
            self.server._received(frame)
            self.queue.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.worker is not None:
            self.worker.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _work(self) -> None:
        while True:
            frame = await self.queue.get()
            response = await self.server._serve(frame)
            transport = self.transport
            if response is not None and transport is not None and not transport.is_closing():
                transport.write(response)
