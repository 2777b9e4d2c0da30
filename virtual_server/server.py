"""The core of the virtual Modbus TCP server: sparse, read-only device memories served by
pymodbus's current server API (ModbusTcpServer + SimDevice/SimData).

Why it is built this way (pymodbus 3.16.1; the classes it relies on are named so an upgrade
knows where to look):

- Sparse maps. A real meter answers exception 2 (illegal data address) to a read that touches
  any unmapped register, even when its neighbours exist; the pipeline's split fallback depends
  on that. SimData can mark addresses invalid, but only when the device is built, and for coils
  and discrete inputs only per 16-bit group. So the server runs one catch-all SimDevice
  (id 0, which pymodbus routes every unit id to) whose four blocks span the whole address space,
  and its `action` callback - called before pymodbus answers any read or write - looks the
  request up in the unit's `DeviceMemory`: an unmapped address returns
  `ExcCodes.ILLEGAL_ADDRESS`, otherwise it copies the current values into the block (the
  callback's documented "modify registers inline"), which pymodbus then returns.
- The action callback is not told the unit id, and for bit reads it receives the number of
  16-bit words spanned instead of the number of bits. The read request classes are therefore
  replaced (ModbusTcpServer's `custom_pdu`) by subclasses that publish the decoded request in a
  ContextVar before running the stock handling; pymodbus runs each request in its own task, so
  concurrent connections never see each other's request.
- Read-only. The action answers every write function code (5, 6, 15, 16, 22, 23) with
  `ExcCodes.ILLEGAL_FUNCTION` before pymodbus touches the block, so nothing changes.
- "No value". A bridge whose source failed must not publish 0.0 (the original did, and it
  corrupted energy totals). `DeviceMemory.set_no_value` keeps such addresses mapped but
  valueless: a read touching them is answered with an exception (default 0x0B, gateway
  target device failed to respond), so the poller records a gap. Not exception 2: that one
  means "this address does not exist", and the poller would learn to split its reads.
- Request counting uses `trace_pdu`, which pymodbus calls once for every request it decodes,
  whatever the outcome (served, exception 1/2, unknown unit id). Frames pymodbus cannot decode
  are not counted; among them reads asking for 0 or more than 125 registers / 2000 bits, which
  pymodbus answers itself with exception 1 under function code 0x80. pymodbus also decodes
  only the first request of each received TCP segment (the rest waits for more data), which
  matters only to a client that pipelines; pymodbus's own client does not.
- Unknown unit ids. With SimDevice, pymodbus itself never treats a unit id as missing: without
  a device 0 a request for an absent id fails with a KeyError inside pymodbus and is answered
  with exception 4 (device failure) plus an error log; with a device 0 every id is served by
  it. `ignore_missing_devices` only reacts to NoSuchIdException, which only the deprecated
  ModbusServerContext raises. So `trace_pdu` replaces a request for a unit id that is not in
  `devices` with one that raises NoSuchIdException, and pymodbus's own missing-device handling
  applies: by default no answer at all (what a gateway does for an absent device: the client
  times out), or with `answer_unknown_units=True` exception 0x0B (gateway target device failed
  to respond).

Addresses are zero-based protocol addresses, as sent on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadWriteMultipleRegistersRequest,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from energymon_pipeline.modbus.types import FunctionCode

__all__ = [
    "NO_VALUE_EXCEPTION",
    "WRITE_FUNCTION_CODES",
    "DeviceMemory",
    "Request",
    "VirtualModbusServer",
]

#: Function codes that would change a device; the virtual server refuses them (exception 1).
WRITE_FUNCTION_CODES = frozenset({5, 6, 15, 16, 22, 23})
#: What a read of an address holding no value is answered with: the bridged device (or the
#: simulation) had nothing to give, which is a gateway's "target device failed to respond".
NO_VALUE_EXCEPTION = int(ExcCodes.GATEWAY_NO_RESPONSE)

_ADDRESS_SPACE = 65536
_TABLE_NAMES = {
    FunctionCode.READ_COILS: "coil",
    FunctionCode.READ_DISCRETE_INPUTS: "discrete input",
    FunctionCode.READ_HOLDING_REGISTERS: "holding register",
    FunctionCode.READ_INPUT_REGISTERS: "input register",
}


def _table(function_code: int, *, bits: bool | None = None) -> FunctionCode:
    """The table a read function code addresses; `bits` restricts it to bit or word tables."""
    try:
        table = FunctionCode(function_code)
    except ValueError:
        raise ValueError(
            f"function code {function_code} does not name a table: use 1 (coils), "
            "2 (discrete inputs), 3 (holding registers) or 4 (input registers)"
        ) from None
    if bits is not None and table.is_bit != bits:
        wanted = "1 or 2 (bits)" if bits else "3 or 4 (16-bit registers)"
        raise ValueError(f"function code {function_code} is the wrong table here: use {wanted}")
    return table


def _check_span(table: FunctionCode, address: int, count: int) -> None:
    if not isinstance(address, int) or not 0 <= address < _ADDRESS_SPACE:
        raise ValueError(f"{_TABLE_NAMES[table]} address {address!r} is outside 0..65535")
    if address + count > _ADDRESS_SPACE:
        raise ValueError(
            f"{count} {_TABLE_NAMES[table]}s from address {address} run past address 65535"
        )


class DeviceMemory:
    """What one simulated unit id holds: four separate sparse tables, address -> value.

    Coils and discrete inputs hold bools, holding and input registers hold 16-bit words
    (0..65535). An address that is not in a table is unmapped: any read that touches it is
    answered with exception 2, like a real meter. Tables are addressed by their read function
    code (1 coils, 2 discrete inputs, 3 holding registers, 4 input registers).

    An address may also be mapped but hold no value (`set_no_value`): reads touching it are
    answered with an exception code instead of data; setting a value there again clears it.

    All methods take one lock, so tests may change values from their own thread while the
    server answers from its event loop thread; each read sees the tables either before or
    after a whole `set_*` call, or a whole `with memory.batch():` block of them.
    """

    def __init__(
        self,
        *,
        coils: Mapping[int, bool | int] | None = None,
        discrete_inputs: Mapping[int, bool | int] | None = None,
        holding_registers: Mapping[int, int] | None = None,
        input_registers: Mapping[int, int] | None = None,
    ) -> None:
        # Re-entrant, so `batch()` can hold it across several set_* calls.
        self._lock = threading.RLock()
        self._tables: dict[FunctionCode, dict[int, int | bool]] = {fc: {} for fc in FunctionCode}
        # address -> exception code, for addresses that are mapped but hold no value.
        self._no_value: dict[FunctionCode, dict[int, int]] = {fc: {} for fc in FunctionCode}
        for fc, initial in (
            (FunctionCode.READ_COILS, coils),
            (FunctionCode.READ_DISCRETE_INPUTS, discrete_inputs),
            (FunctionCode.READ_HOLDING_REGISTERS, holding_registers),
            (FunctionCode.READ_INPUT_REGISTERS, input_registers),
        ):
            for address, value in sorted((initial or {}).items()):
                if fc.is_bit:
                    self.set_bits(fc, address, [value])
                else:
                    self.set_registers(fc, address, [value])

    def set_registers(self, function_code: int, address: int, words: Iterable[int]) -> None:
        """Map `words` at `address`, `address + 1`, ... of table 3 or 4 (mapped or not)."""
        table = _table(function_code, bits=False)
        values = list(words)
        _check_span(table, address, len(values))
        for offset, word in enumerate(values):
            if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                raise ValueError(
                    f"{_TABLE_NAMES[table]} {address + offset}: {word!r} is not a 16-bit word "
                    "(an int in 0..65535)"
                )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for offset, word in enumerate(values):
                target[address + offset] = word
                no_value.pop(address + offset, None)

    def set_bits(self, function_code: int, address: int, bits: Iterable[bool | int]) -> None:
        """Map `bits` at `address`, `address + 1`, ... of table 1 or 2 (0/1 or bools)."""
        table = _table(function_code, bits=True)
        values = list(bits)
        _check_span(table, address, len(values))
        for offset, bit in enumerate(values):
            if bit not in (0, 1):
                raise ValueError(
                    f"{_TABLE_NAMES[table]} {address + offset}: {bit!r} is not a bit "
                    "(True/False or 0/1)"
                )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for offset, bit in enumerate(values):
                target[address + offset] = bool(bit)
                no_value.pop(address + offset, None)

    def set_no_value(
        self,
        function_code: int,
        address: int,
        count: int = 1,
        exception_code: int = NO_VALUE_EXCEPTION,
    ) -> None:
        """Keep `count` addresses from `address` mapped but without a value: a read touching
        any of them is answered with `exception_code` (a read that also touches an unmapped
        address is still exception 2). Setting a value there again clears this."""
        table = _table(function_code)
        if count < 1:
            raise ValueError(f"cannot clear {count} {_TABLE_NAMES[table]}s: count must be >= 1")
        _check_span(table, address, count)
        try:
            code = int(ExcCodes(exception_code))
        except ValueError:
            allowed = ", ".join(str(int(c)) for c in ExcCodes)
            raise ValueError(
                f"exception code {exception_code!r} is not a Modbus exception; allowed: {allowed}"
            ) from None
        if code == ExcCodes.ILLEGAL_ADDRESS:
            raise ValueError(
                "exception code 2 means the address does not exist: use unmap() for that"
            )
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for cleared in range(address, address + count):
                target.pop(cleared, None)
                no_value[cleared] = code

    @contextlib.contextmanager
    def batch(self):
        """Hold the lock across several set_* calls, so no read sees half of an update
        (a meter's power and energy from different moments)."""
        with self._lock:
            yield self

    def unmap(self, function_code: int, address: int, count: int = 1) -> None:
        """Make `count` addresses from `address` unmapped again (reads of them: exception 2)."""
        table = _table(function_code)
        if count < 1:
            raise ValueError(f"cannot unmap {count} {_TABLE_NAMES[table]}s: count must be >= 1")
        _check_span(table, address, count)
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            for unmapped in range(address, address + count):
                target.pop(unmapped, None)
                no_value.pop(unmapped, None)

    def clear(self) -> None:
        """Unmap every address of every table."""
        with self._lock:
            for target in (*self._tables.values(), *self._no_value.values()):
                target.clear()

    def answer(
        self, function_code: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        """What a read of `count` addresses from `address` is answered with: the values, or
        the exception code (2 when any address is unmapped, else the no-value code of the
        first address holding no value)."""
        table = _table(function_code)
        with self._lock:
            target, no_value = self._tables[table], self._no_value[table]
            values: list = []
            refusal: int | None = None
            for current in range(address, address + count):
                if current in target:
                    values.append(target[current])
                elif current in no_value:
                    refusal = no_value[current] if refusal is None else refusal
                else:
                    return ExcCodes.ILLEGAL_ADDRESS
            return values if refusal is None else ExcCodes(refusal)

    def read(self, function_code: int, address: int, count: int) -> list[int] | list[bool] | None:
        """The values at `address`..`address + count - 1`, or None if any of them is unmapped
        or holds no value."""
        outcome = self.answer(function_code, address, count)
        return None if isinstance(outcome, ExcCodes) else outcome

    def mapped(self, function_code: int) -> dict[int, int | bool]:
        """A copy of one table: address -> value for every address that holds a value."""
        table = _table(function_code)
        with self._lock:
            return dict(self._tables[table])

    def without_value(self, function_code: int) -> dict[int, int]:
        """Address -> exception code for every address that is mapped but holds no value."""
        table = _table(function_code)
        with self._lock:
            return dict(self._no_value[table])


class Request(NamedTuple):
    """One request as it arrived on the wire (compares equal to a plain 4-tuple).

    `address`/`count` are the request's start and quantity; for single writes the count is 1;
    for function code 23 (read/write) they describe the write half; for function codes without
    an address (diagnostics, device identification) both are 0.
    """

    unit_id: int
    function_code: int
    address: int
    count: int


def _request_of(pdu: ModbusPDU) -> Request:
    if isinstance(pdu, ReadWriteMultipleRegistersRequest):
        return Request(pdu.dev_id, pdu.function_code, pdu.write_address, pdu.write_count)
    if isinstance(pdu, MaskWriteRegisterRequest):
        return Request(pdu.dev_id, pdu.function_code, pdu.address, 1)
    count = pdu.count or len(pdu.bits) or len(pdu.registers)
    return Request(pdu.dev_id, pdu.function_code, pdu.address, count)


@dataclass(frozen=True, slots=True)
class _ReadScope:
    unit_id: int
    function_code: int
    address: int
    count: int


# The read being served by the current task; see the module docstring.
_current_read: ContextVar[_ReadScope | None] = ContextVar("virtual_server_read", default=None)


class _ScopedRead(ModbusPDU):
    """Runs pymodbus's own read handling with the decoded request published to the action."""

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        token = _current_read.set(
            _ReadScope(device_id, self.function_code, self.address, self.count)
        )
        try:
            return await super().datastore_update(context, device_id)
        finally:
            _current_read.reset(token)


class _ReadCoils(_ScopedRead, ReadCoilsRequest):
    pass


class _ReadDiscreteInputs(_ScopedRead, ReadDiscreteInputsRequest):
    pass


class _ReadHoldingRegisters(_ScopedRead, ReadHoldingRegistersRequest):
    pass


class _ReadInputRegisters(_ScopedRead, ReadInputRegistersRequest):
    pass


_SCOPED_READS: list[type[ModbusPDU]] = [
    _ReadCoils,
    _ReadDiscreteInputs,
    _ReadHoldingRegisters,
    _ReadInputRegisters,
]


class _AbsentUnitRequest(ModbusPDU):
    """Stands in for a request to a unit id the server does not simulate: raising
    NoSuchIdException hands it to pymodbus's missing-device handling (silence or 0x0B)."""

    def __init__(self, request: ModbusPDU, delay_s: float) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self._delay_s = delay_s

    async def datastore_update(self, context, device_id: int) -> ModbusPDU:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        raise NoSuchIdException(f"unit id {device_id} is not simulated by this server")


def _whole_address_space(action) -> SimDevice:
    """One device (id 0 = every unit id) whose four blocks cover addresses 0..65535, so every
    read and write reaches `action` instead of being refused by pymodbus's range check."""
    bits = [False] * _ADDRESS_SPACE
    return SimDevice(
        0,
        simdata=(
            [SimData(0, values=bits, datatype=DataType.BITS)],
            [SimData(0, values=list(bits), datatype=DataType.BITS)],
            [SimData(0, count=_ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=_ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )


#: How many of the latest requests `VirtualModbusServer.requests` remembers.
REQUEST_LOG_LIMIT = 100_000


class VirtualModbusServer:
    """A read-only Modbus TCP server answering for the unit ids in `devices`.

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
            _whole_address_space(self._on_access),
            address=(self.host, self.requested_port),
            ignore_missing_devices=not self.answer_unknown_units,
            trace_pdu=self._on_pdu,
            custom_pdu=_SCOPED_READS,
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

    async def __aenter__(self) -> VirtualModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- background thread ---------------------------------------------------------------

    def start_in_thread(self, timeout: float = 10.0) -> VirtualModbusServer:
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

    def __enter__(self) -> VirtualModbusServer:
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
            self._requests.append(_request_of(pdu))
        if pdu.dev_id not in self.devices:
            return _AbsentUnitRequest(pdu, self.response_delay_ms / 1000)
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
        """SimDevice action: refuse writes, answer reads from the unit's DeviceMemory."""
        if self.response_delay_ms > 0:
            await asyncio.sleep(self.response_delay_ms / 1000)
        if function_code in WRITE_FUNCTION_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        read = _current_read.get()
        if read is None or read.function_code != function_code:
            return ExcCodes.DEVICE_FAILURE  # a read that bypassed _ScopedRead: a bug here
        table = FunctionCode(function_code)
        memory = self.devices.get(read.unit_id)
        if memory is None:  # removed after the request arrived
            raise NoSuchIdException(f"unit id {read.unit_id} is not simulated by this server")
        values = memory.answer(table, read.address, read.count)
        if isinstance(values, ExcCodes):
            return values
        # No await from here until pymodbus slices the block, so concurrent reads of other
        # units cannot overwrite what is copied in.
        if table.is_bit:
            for address, bit in enumerate(values, start=read.address):
                word = address // 16 - start_address
                mask = 1 << (address % 16)
                registers[word] = registers[word] | mask if bit else registers[word] & ~mask
        else:
            first = read.address - start_address
            registers[first : first + len(values)] = values
        return None
