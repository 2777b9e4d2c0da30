"""The virtual Modbus TCP server's core: `DeviceMemoryServer`, listening and answering from
the `DeviceMemory` of each simulated unit id (how: `virtual_server.request_handling`), on the
caller's event loop or in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Mapping

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer

from virtual_server.memory import DeviceMemory
from virtual_server.request_handling import (
    SCOPED_READS,
    AbsentUnitRequest,
    Request,
    answer_from_memory,
    request_of,
    whole_address_space,
)

__all__ = ["REQUEST_LOG_LIMIT", "DeviceMemoryServer"]

#: How many of the latest requests `DeviceMemoryServer.requests` remembers.
REQUEST_LOG_LIMIT = 100_000


class DeviceMemoryServer:
    """A read-only Modbus TCP server answering for the unit ids in `devices` from the
    `DeviceMemory` each maps to, as they are at each request: the caller fills and changes
    them (tests do), nothing here refreshes them. `VirtualModbusTCPServer` is the one that
    fills its memories itself, from devices or a bridge, on an update schedule.

    `port=0` picks a free port; `port` holds the real one once started (with port 0, give
    `host` as one address such as "127.0.0.1": a name or "" binding several sockets would get
    a different free port on each, and `port` reports the first). `response_delay_ms`
    delays every answer to a read or write (including exception answers), like a slow meter
    or gateway; it may be changed while running. Requests for a unit id not in `devices` get
    no answer (the client times out) unless `answer_unknown_units` is set, then exception 0x0B.
    `devices` is the live mapping: adding or removing a unit takes effect at the next request.

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
    ) -> None:
        self.devices: dict[int, DeviceMemory] = dict(devices or {})
        for unit_id in self.devices:
            if not isinstance(unit_id, int) or not 0 <= unit_id <= 255:
                raise ValueError(f"unit id {unit_id!r} is outside 0..255")
        if response_delay_ms < 0:
            raise ValueError(f"response_delay_ms must be >= 0, got {response_delay_ms}")
        self.host = host
        self.requested_port = port
        self.response_delay_ms = response_delay_ms
        self.answer_unknown_units = answer_unknown_units
        self._port: int | None = None
        self._server: ModbusTcpServer | None = None
        # Bounded: a long-running fleet must not grow by every request it ever answered.
        self._requests: deque[Request] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._requests_lock = threading.Lock()
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

    # -- async API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `host`:`port`; returns once connections are accepted."""
        if self._server is not None:
            raise RuntimeError(f"virtual Modbus server on {self.host}:{self.port} already runs")
        server = ModbusTcpServer(
            whole_address_space(self._on_access),
            address=(self.host, self.requested_port),
            ignore_missing_devices=not self.answer_unknown_units,
            trace_pdu=self._on_pdu,
            custom_pdu=SCOPED_READS,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as error:
            raise OSError(
                f"virtual Modbus server cannot listen on {self.host}:{self.requested_port} "
                "(port in use or address not local?)"
            ) from error
        self._port = server.transport.sockets[0].getsockname()[1]
        self._server = server

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; the port is free when this returns."""
        if self._thread is not None:
            raise RuntimeError("this server runs in its own thread: stop it with stop_thread()")
        server, self._server = self._server, None
        if server is not None:
            await asyncio.wait_for(server.shutdown(), timeout)

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
        # asyncio.run then cancels answers still waiting out response_delay_ms.

    # -- pymodbus callbacks (event loop thread) ------------------------------------------

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """trace_pdu: count each received request; divert those for absent unit ids."""
        if sending:
            return pdu
        with self._requests_lock:
            self._requests.append(request_of(pdu))
        if pdu.dev_id not in self.devices:
            return AbsentUnitRequest(pdu, self.response_delay_ms / 1000)
        return pdu

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        _set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """SimDevice action: after the response delay, refuse writes and answer reads from
        the unit's DeviceMemory."""
        if self.response_delay_ms > 0:
            await asyncio.sleep(self.response_delay_ms / 1000)
        return answer_from_memory(self.devices, function_code, start_address, registers)
