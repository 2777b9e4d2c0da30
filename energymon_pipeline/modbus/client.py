"""The only module that uses pymodbus's client API.

pymodbus moves its API between minor releases (keyword `device_id` vs `slave`, reconnect
behaviour, exception types), so everything version-specific is kept here, behind a small
interface: open a connection to one meter, send planned read requests on it, get back raw
words/bits or a classified error. Decoding, planning and scheduling never see pymodbus.

pymodbus version: pinned in pyproject.toml (3.16.x).

One connection serves one link (a Modbus TCP endpoint or a local serial port, see
modbus/links.py): each request names the meter it is for (`read(request, meter)`), so it goes
to that meter's unit id with that meter's timeout and retries (pymodbus 3.16 reads both from
its transaction manager at each request, so they are set there per request), and its answer is
checked against that unit id. One request is in flight at a time: the caller awaits each read.

How pymodbus 3.16.1 surfaces a misbehaving peer, and what this module does about it:

- The peer closes the connection: the transport calls the client's `trace_connect(False)`,
  but the request keeps waiting until its timeout and then reads as "No response". The
  `trace_connect` hook ends the request at once as "connection closed by the device".
- Garbage: the socket framer ignores bytes without a valid MBAP header (protocol id not 0)
  and keeps waiting, so garbage also ends as a timeout; a frame with an unknown function
  code makes the framer raise inside `data_received`.
- A byte count larger than the data makes the response decoder raise inside
  `data_received`: asyncio then logs "Fatal error: protocol.data_received() call failed."
  with a traceback, closes the transport, and the request again times out. A byte count
  smaller than the data is decoded silently into fewer values.
- A frame for another transaction or unit id is skipped (a late answer); one with
  transaction id 0 is accepted for any request.

So every received buffer is checked against the request on the wire before pymodbus's framer
sees it (the `trace_packet` hook may replace what the framer gets): a broken answer ends the
request at once with a message saying what is wrong, and the framer is given nothing to trip
over. After any such fault, as after a timeout, the connection is closed, so nothing left in
the stream can be taken for the answer to a later request. As a last line, an exception that
still escapes pymodbus's `data_received` is taken from asyncio's exception handler, for this
module's own connections only, and reported the same way instead of as a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field
from enum import StrEnum

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU

from energymon_pipeline.modbus.types import Endpoint, FunctionCode, ReadRequest

# pymodbus logs every failed connect and timeout itself; this module classifies and reports
# them once, so pymodbus's own lines are only shown when its logger is configured explicitly.
_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

_LOG = logging.getLogger(__name__)


def exception_name(code: int | None) -> str:
    """pymodbus's name for a Modbus exception code, in words (ILLEGAL_ADDRESS -> "illegal
    address"); "unknown" for a code it does not define."""
    try:
        name = ExcCodes(code).name
    except ValueError:
        return "unknown"
    # pymodbus 3.16 spells code 10 GATEWAY_PATH_UNAVIABLE.
    return name.lower().replace("_", " ").replace("unaviable", "unavailable")


class ErrorKind(StrEnum):
    """How a read failed, in the words the run metadata and the CLI show."""

    REFUSED = "connection refused"
    TIMEOUT = "timeout"
    MODBUS_EXCEPTION = "modbus exception"
    MALFORMED = "malformed response"
    CLOSED = "connection closed by the device"
    CONNECTION = "connection failed"


@dataclass(frozen=True, slots=True)
class ReadError:
    kind: ErrorKind
    detail: str = ""
    exception_code: int | None = None

    def __str__(self) -> str:
        if self.kind is ErrorKind.MODBUS_EXCEPTION:
            text = f"modbus exception {self.exception_code} ({exception_name(self.exception_code)})"
        else:
            text = str(self.kind)
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True, slots=True)
class BlockRead:
    """The outcome of one request: raw data (words for FC 3/4, 0/1 bits for FC 1/2) or an
    error, with the wall-clock time the response arrived."""

    request: ReadRequest
    data: list[int] | None
    error: ReadError | None
    received_at: float
    latency_s: float


_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU}

#: How long a first connect a peer drops at once is retried (see ModbusConnection.read).
FIRST_CONNECT_RETRY_S = 0.5
#: The error of a request on a connection the peer closed before any answer on it: a gateway
#: at its connection limit accepts and drops at once (discover stops a scan on it).
_DROPPED_AT_ONCE = "right after accepting the connection"


# --- checking a received buffer against the request it should answer --------------------


@dataclass(frozen=True, slots=True)
class FrameCheck:
    """What a receive buffer holds for the request on the wire: `answer` (a well-formed
    answer, possibly followed by `trailing` bytes), `incomplete` (wait for more; `pending`
    are the bytes that do not make a frame yet), or `malformed` (`detail` says why).
    `ignored` names frames pymodbus skips itself (other transaction or unit id)."""

    status: str
    detail: str = ""
    ignored: tuple[str, ...] = ()
    pending: bytes = b""
    trailing: int = 0


def _show(data: bytes, limit: int = 16) -> str:
    shown = data[:limit].hex(" ")
    return f"{len(data)} byte(s): {shown}{' ...' if len(data) > limit else ''}"


def expected_byte_count(request: ReadRequest) -> int:
    """Data bytes a well-formed answer to `request` carries."""
    if request.function_code.is_bit:
        return (request.count + 7) // 8
    return 2 * request.count


def _check_pdu(pdu: bytes, request: ReadRequest) -> str | None:
    """None for a well-formed answer PDU to `request`, else what is wrong with it."""
    fc = int(request.function_code)
    if not pdu:
        return "a frame without a function code"
    if pdu[0] == fc | 0x80:
        return None if len(pdu) >= 2 else "an exception response without its code"
    if pdu[0] != fc:
        return f"function code {pdu[0]} in the answer to a function {fc} request"
    if len(pdu) < 2:
        return "an answer without a byte count"
    byte_count, data_bytes = pdu[1], len(pdu) - 2
    if byte_count != data_bytes:
        return f"response byte count {byte_count} does not match the {data_bytes} data bytes sent"
    expected = expected_byte_count(request)
    if byte_count != expected:
        unit = "bits" if request.function_code.is_bit else "registers"
        return (
            f"response byte count {byte_count} does not match the {expected} bytes "
            f"requested ({request.count} {unit})"
        )
    return None


def check_tcp_frame(buffer: bytes, request: ReadRequest, tid: int, unit: int) -> FrameCheck:
    """Check a Modbus TCP (MBAP) receive buffer against the request sent with transaction
    id `tid` to `unit`. Frames pymodbus's socket framer skips are skipped the same way (and
    named); anything its framer or decoder would choke on, or take for a valid answer when it
    is not one, is `malformed`."""
    ignored: list[str] = []
    offset = 0
    while True:
        rest = buffer[offset:]
        if len(rest) < 7:
            return FrameCheck("incomplete", ignored=tuple(ignored), pending=rest)
        frame_tid, protocol, length, frame_unit = struct.unpack(">HHHB", rest[:7])
        if protocol != 0 or not 2 <= length <= 254:
            what = f"protocol id {protocol}" if protocol else f"length field {length}"
            return FrameCheck(
                "malformed", f"not a Modbus TCP frame ({what}; {_show(rest)})", tuple(ignored)
            )
        size = 6 + length
        if size == 8 and len(rest) == 9:  # pymodbus's allowance for one short length field
            size = 9
        if len(rest) < size:
            return FrameCheck("incomplete", ignored=tuple(ignored), pending=rest)
        offset += size
        # The framer's own rules: another transaction (id 0 is accepted) or unit is skipped.
        if tid and frame_tid and frame_tid != tid:
            ignored.append(f"an answer for transaction {frame_tid} (expected {tid})")
            continue
        if unit and frame_unit != unit:
            ignored.append(f"an answer from unit {frame_unit} (expected {unit})")
            continue
        problem = _check_pdu(rest[7:size], request)
        if problem is not None:
            return FrameCheck("malformed", problem, tuple(ignored))
        return FrameCheck("answer", ignored=tuple(ignored), trailing=len(buffer) - offset)


def check_rtu_frame(buffer: bytes, request: ReadRequest, unit: int) -> FrameCheck:
    """Check an RTU-over-TCP receive buffer. RTU has no header to resynchronise on, so
    pymodbus's framer hunts for a frame with a valid CRC; only a buffer that starts like the
    answer (unit id, function code) is judged here, anything else is left to the framer and
    reported as `pending` if no answer comes."""
    fc = int(request.function_code)
    if len(buffer) < 2:
        return FrameCheck("incomplete", pending=buffer)
    starts_right = (not unit or buffer[0] == unit) and buffer[1] in (fc, fc | 0x80)
    if not starts_right:
        return FrameCheck("incomplete", pending=buffer)
    if buffer[1] == fc | 0x80:
        size = 5
    else:
        if len(buffer) < 3:
            return FrameCheck("incomplete", pending=buffer)
        if buffer[2] != expected_byte_count(request):
            unit_name = "bits" if request.function_code.is_bit else "registers"
            return FrameCheck(
                "malformed",
                f"response byte count {buffer[2]} does not match the "
                f"{expected_byte_count(request)} bytes requested ({request.count} {unit_name})",
            )
        size = 5 + buffer[2]
    if len(buffer) < size:
        return FrameCheck("incomplete", pending=buffer)
    crc = int.from_bytes(buffer[size - 2 : size], "big")
    if not FramerRTU.check_CRC(buffer[: size - 2], crc):
        return FrameCheck("malformed", f"CRC error ({_show(buffer[:size])})")
    return FrameCheck("answer", trailing=len(buffer) - size)


@dataclass(eq=False)
class _Exchange:
    """One request on the wire, as pymodbus's trace hooks show it.

    The request is awaited in the reading task itself (no task of its own, so its answer is
    handled, and the next request sent, in the same step of the event loop that resumes it).
    A fault the hooks see, or the safety bound running out, interrupts it by cancelling that
    task (`interrupt`); the reader takes the cancellation back (`Task.uncancel`) and
    classifies the request instead, so a cancellation from anywhere else still propagates."""

    request: ReadRequest
    #: The task awaiting the request (the reader's).
    task: asyncio.Task
    #: The unit id the request went to: an answer from another unit is not its answer.
    unit: int = 0
    tid: int = 0
    answered: bool = False
    #: A fault the hooks saw (the first one counts).
    error: ReadError | None = None
    #: Set while the task awaits pymodbus's call: only then may it be interrupted.
    in_flight: bool = False
    #: The task was cancelled by `interrupt` (once at most).
    interrupted: bool = False
    pending: bytes = b""
    ignored: list[str] = field(default_factory=list)

    def fail(self, error: ReadError) -> None:
        if self.error is None:
            self.error = error
        self.interrupt()

    def interrupt(self) -> None:
        """End the call now (a fault, or the bound ran out: classified by what was seen)."""
        if self.in_flight and not self.interrupted:
            self.interrupted = True
            self.task.cancel()


# --- asyncio's exception handler, for this module's connections only ---------------------

#: pymodbus protocol object (the client's transaction manager) -> its ModbusConnection.
_CONNECTIONS: weakref.WeakKeyDictionary[object, ModbusConnection] = weakref.WeakKeyDictionary()


def _connection_of(protocol: object) -> ModbusConnection | None:
    try:
        return _CONNECTIONS.get(protocol)
    except TypeError:  # None, or an object that cannot be weakly referenced: not ours
        return None


def _guard(loop: asyncio.AbstractEventLoop) -> None:
    """Route exceptions raised in one of this module's connections' protocol callbacks (asyncio
    would log them as "Fatal error: protocol.data_received() call failed." with a traceback)
    to that connection; every other context goes to the handler that was there before."""
    previous = loop.get_exception_handler()
    if getattr(previous, "energymon_modbus_guard", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        connection = _connection_of(context.get("protocol"))
        exception = context.get("exception")
        if connection is not None and exception is not None:
            connection._callback_failed(exception)
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    handler.energymon_modbus_guard = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


# --- the connection ----------------------------------------------------------------------


class ModbusConnection:
    """One connection to one link (a TCP connection, or the open serial port), reused for
    every request and sample of a run. `endpoint` holds the link's settings; a meter's own
    (unit id, timeout, retries) come with each request."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        #: Serial lines always speak RTU, whatever the row's framer says.
        self._framer = "rtu" if endpoint.serial is not None else endpoint.framer
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_request_at = 0.0
        self._was_connected = False
        self._exchange: _Exchange | None = None
        #: Bytes arrived that no request was waiting for: reconnect before the next request.
        self._stale = False
        #: The peer closed the connection (pymodbus may still call it connected: a close that
        #: arrives while it connects is overwritten by its connect).
        self._hung_up = False

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def open(self) -> ReadError | None:
        """Connect; returns the classified error, or None when connected."""
        endpoint = self.endpoint
        self.close()
        if self._framer not in _FRAMERS:
            return ReadError(ErrorKind.CONNECTION, f"unknown framer {endpoint.framer!r}")
        hooks = {
            "timeout": endpoint.timeout_s,
            "retries": max(0, endpoint.retries),
            # Reconnection is this module's decision, not a background task's.
            "reconnect_delay": 0,
            "reconnect_delay_max": 0,
            "trace_packet": self._trace_packet,
            "trace_connect": self._trace_connect,
        }
        line = endpoint.serial
        if line is not None:
            client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                parity=line.parity,
                stopbits=line.stopbits,
                bytesize=line.bytesize,
                **hooks,
            )
        else:
            client = AsyncModbusTcpClient(
                endpoint.host, port=endpoint.port, framer=_FRAMERS[self._framer], **hooks
            )
        _guard(asyncio.get_running_loop())
        _CONNECTIONS[client.ctx] = self
        self._stale = self._hung_up = False
        started = time.monotonic()
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as error:  # pymodbus usually returns False instead
            self._discard(client)
            return ReadError(ErrorKind.CONNECTION, str(error))
        except Exception as error:  # pyserial: the port refused the line settings (termios)
            if line is None:
                raise
            self._discard(client)
            return ReadError(
                ErrorKind.CONNECTION,
                f"serial port {line.port} refused the settings {line}: {error}",
            )
        if not ok:
            self._discard(client)
            if line is not None:
                return _serial_open_failure(line.port)
            remaining = endpoint.timeout_s - (time.monotonic() - started)
            return await _classify_connect_failure(endpoint, remaining)
        self._client = client
        if endpoint.connect_delay_s > 0:
            await asyncio.sleep(endpoint.connect_delay_s)
        return None

    async def read(self, request: ReadRequest, meter: Endpoint | None = None) -> BlockRead:
        """Send one read request to `meter` (its unit id, timeout and retries; default: the
        connection's own endpoint); never raises for device or network faults."""
        meter = meter or self.endpoint
        pause = max(self.endpoint.inter_request_delay_s, meter.request_delay_s)
        if pause > 0:
            wait = self._last_request_at + pause - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        started = time.monotonic()
        # How long a dropped or refused connect is retried: the meter's timeout once this
        # link has been connected (a reconnect), briefly for a first connect (a peer that
        # always drops connections fails fast).
        patience_s = (
            meter.timeout_s if self._was_connected else min(meter.timeout_s, FIRST_CONNECT_RETRY_S)
        )
        pause = 0.05
        while True:
            if self._stale or self._hung_up:
                self.close()
            opened = False
            if not self.connected:
                error = await self._connect(meter, started, patience_s)
                if error is not None:
                    return self._result(request, None, error, started)
                opened = True
            block = await self._request(request, meter, started)
            if block.error is None or block.error.kind is not ErrorKind.CLOSED or not opened:
                return block
            # Closed before answering the first request on a new connection: a gateway at its
            # connection limit accepts and drops at once (also one that has not yet seen
            # another run's connection close, or is busy with the answer a timeout abandoned).
            # Reads are idempotent: try again on a new connection while the patience lasts.
            # Sending at once and retrying costs nothing when the peer keeps the connection,
            # where a pause after every connect to watch for the drop cost each one its time.
            if time.monotonic() + pause - started > patience_s:
                return self._result(
                    request, None, ReadError(ErrorKind.CLOSED, _DROPPED_AT_ONCE), started
                )
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.5)

    async def _request(self, request: ReadRequest, meter: Endpoint, started: float) -> BlockRead:
        task = asyncio.current_task()
        assert task is not None
        exchange = _Exchange(request, task, meter.unit_id)
        self._exchange = exchange
        self._limits(meter)
        # pymodbus bounds the call itself (timeout per try, 1 + retries tries); this bound
        # only guards against that bookkeeping failing.
        bound = meter.timeout_s * (max(0, meter.retries) + 1) + 1.0
        timer = task.get_loop().call_later(bound, exchange.interrupt)
        response = failure = None
        try:
            exchange.in_flight = True
            try:
                response = await self._send(request, meter.unit_id)
            finally:
                exchange.in_flight = False
                if exchange.interrupted:
                    # Our cancellation is taken back, whatever came of it: pymodbus may still
                    # have returned an answer that had arrived (it then stands) or raised.
                    task.uncancel()
        except asyncio.CancelledError:
            # Ours (a fault or the bound) ends the request; anyone else's goes on.
            if not exchange.interrupted or task.cancelling():
                raise
        except Exception as error:  # what pymodbus raised: classified below
            failure = error
        finally:
            timer.cancel()
            self._exchange = None
            self._last_request_at = time.monotonic()
            if response is None and failure is None:
                self._stale = True  # its answer may still come: never on this connection
        if response is None:
            error = self._classify_failure(failure, exchange, meter)
            # A fault leaves the stream in an unknown state: a late or partial answer must
            # never be read as the answer to the next request.
            self.close()
            return self._result(request, None, error, started)
        if response.isError():
            code = getattr(response, "exception_code", None)
            return self._result(
                request, None, ReadError(ErrorKind.MODBUS_EXCEPTION, exception_code=code), started
            )
        data = _payload(request, response)
        if data is None:
            self.close()
            return self._result(
                request,
                None,
                ReadError(ErrorKind.MALFORMED, f"expected {request.count} values, got fewer"),
                started,
            )
        return self._result(request, data, None, started)

    async def _connect(
        self, meter: Endpoint, started: float, patience_s: float
    ) -> ReadError | None:
        """Connect for `meter`'s request, retrying until the patience is spent while the
        peer drops the connection before the first request (seen during a link's
        connect_delay_s) or refuses a reconnect (after a fault closed this link's last
        connection): a gateway that allows few connections may still hold the old one (busy
        with the answer a timeout abandoned, or not yet aware that another run's connection
        closed). A drop after the first request is sent is `read`'s to retry."""
        pause = 0.05
        while True:
            error = await self.open()
            if error is None and (self._hung_up or not self.connected):
                error = ReadError(ErrorKind.CLOSED, _DROPPED_AT_ONCE)
            if error is None:
                self._was_connected = True
                return None
            self.close()
            retry = error.kind is ErrorKind.CLOSED or (
                self._was_connected and error.kind is ErrorKind.REFUSED
            )
            if not retry or time.monotonic() + pause - started > patience_s:
                return error
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.5)

    def _limits(self, meter: Endpoint) -> None:
        """The meter's timeout and retries for the next request: pymodbus 3.16's transaction
        manager reads both at each request (a link's meters may differ)."""
        ctx = getattr(self._client, "ctx", None)
        if ctx is not None:
            ctx.comm_params.timeout_connect = meter.timeout_s
            ctx.retries = max(0, meter.retries)

    def _classify_failure(
        self, error: Exception | None, exchange: _Exchange, meter: Endpoint
    ) -> ReadError:
        """The error of a request that brought no answer: a fault the trace hooks saw on the
        wire first, else what pymodbus raised (`error`), else (the call was interrupted by
        the bound) a timeout."""
        if exchange.error is not None:
            return exchange.error
        if isinstance(error, ConnectionException):
            return ReadError(ErrorKind.CONNECTION, _first_line(error))
        if isinstance(error, ModbusIOException) and "No response" not in str(error):
            return ReadError(ErrorKind.MALFORMED, _first_line(error))
        if error is not None and not isinstance(error, ModbusIOException):
            return ReadError(ErrorKind.MALFORMED, _first_line(error))
        within = f"within {meter.timeout_s:g} s"
        if meter.retries:
            within += f" ({meter.retries} retries)"
        if exchange.pending:
            return ReadError(
                ErrorKind.MALFORMED,
                f"no complete answer {within}, got {_show(exchange.pending)}",
            )
        detail = f"no answer {within}"
        if exchange.ignored:
            detail += "; ignored " + ", ".join(dict.fromkeys(exchange.ignored))
        return ReadError(ErrorKind.TIMEOUT, detail)

    # pymodbus's trace hooks: called from the transport's protocol callbacks, so they
    # must not raise.

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        exchange = self._exchange
        if sending:
            if exchange is not None:
                # (Re)sent: pymodbus starts a fresh receive buffer.
                exchange.pending = b""
                if self._framer == "socket" and len(data) >= 2:
                    exchange.tid = int.from_bytes(data[:2], "big")
            return data
        if exchange is None or exchange.answered or exchange.error is not None:
            # Nothing is waiting for these bytes (a late answer, noise after an answer):
            # keep them from the framer and start the next request on a new connection.
            self._stale = True
            return b""
        if self._framer == "socket":
            check = check_tcp_frame(data, exchange.request, exchange.tid, exchange.unit)
        else:
            check = check_rtu_frame(data, exchange.request, exchange.unit)
        exchange.ignored.extend(check.ignored)
        exchange.pending = check.pending
        if check.status == "malformed":
            exchange.fail(ReadError(ErrorKind.MALFORMED, check.detail))
            return b""
        if check.status == "answer":
            exchange.answered = True
            if check.trailing:
                self._stale = True
        return data

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            return
        # Only the peer's close gets here: closing it ourselves does not call the hook.
        self._hung_up = True
        exchange = self._exchange
        if exchange is not None and not exchange.answered:
            exchange.fail(ReadError(ErrorKind.CLOSED))

    def _callback_failed(self, exception: BaseException) -> None:
        """An exception escaped pymodbus's protocol callbacks (asyncio closes the transport)."""
        _LOG.debug("%s: pymodbus failed on received data", self.endpoint, exc_info=exception)
        self._stale = True
        if self._exchange is not None:
            self._exchange.fail(
                ReadError(ErrorKind.MALFORMED, f"undecodable answer ({_first_line(exception)})")
            )

    async def _send(self, request: ReadRequest, unit: int):
        client = self._client
        assert client is not None
        fc = request.function_code
        if fc is FunctionCode.READ_HOLDING_REGISTERS:
            call = client.read_holding_registers
        elif fc is FunctionCode.READ_INPUT_REGISTERS:
            call = client.read_input_registers
        elif fc is FunctionCode.READ_COILS:
            call = client.read_coils
        else:
            call = client.read_discrete_inputs
        return await call(request.address, count=request.count, device_id=unit)

    def _result(
        self, request: ReadRequest, data: list[int] | None, error: ReadError | None, started: float
    ) -> BlockRead:
        return BlockRead(request, data, error, time.time(), time.monotonic() - started)

    def _discard(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        _CONNECTIONS.pop(client.ctx, None)
        client.close()

    def close(self) -> None:
        if self._client is not None:
            self._discard(self._client)
            self._client = None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _payload(request: ReadRequest, response) -> list[int] | None:
    if request.function_code.is_bit:
        bits = getattr(response, "bits", None)
        if bits is None or len(bits) < request.count:
            return None
        return [int(bool(b)) for b in bits[: request.count]]
    registers = getattr(response, "registers", None)
    if registers is None or len(registers) != request.count:
        return None
    return list(registers)


def _serial_open_failure(path: str) -> ReadError:
    """pymodbus reports a serial port it could not open as False: name the likely reason."""
    if not os.path.exists(path):
        return ReadError(ErrorKind.CONNECTION, f"serial port {path} does not exist")
    if not os.access(path, os.R_OK | os.W_OK):
        return ReadError(
            ErrorKind.CONNECTION,
            f"no permission to open serial port {path} (is the user in its group, e.g. dialout?)",
        )
    return ReadError(ErrorKind.CONNECTION, f"serial port {path} could not be opened")


async def _classify_connect_failure(endpoint: Endpoint, remaining_s: float) -> ReadError:
    """pymodbus reports a failed connect as False without the reason. A fast failure is
    re-tried once with a bare socket to name it (refused, unknown host, unreachable); a slow
    one used up the timeout."""
    if remaining_s <= 0.05:
        return ReadError(ErrorKind.TIMEOUT, f"no connection within {endpoint.timeout_s:g} s")
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), timeout=remaining_s
        )
    except TimeoutError:
        return ReadError(ErrorKind.TIMEOUT, f"no connection within {endpoint.timeout_s:g} s")
    except ConnectionRefusedError:
        return ReadError(ErrorKind.REFUSED, f"{endpoint.host}:{endpoint.port}")
    except socket.gaierror as error:
        return ReadError(
            ErrorKind.CONNECTION, f"host {endpoint.host!r} not found ({error.strerror})"
        )
    except OSError as error:
        if error.errno == errno.ECONNREFUSED:
            return ReadError(ErrorKind.REFUSED, f"{endpoint.host}:{endpoint.port}")
        return ReadError(ErrorKind.CONNECTION, error.strerror or str(error))
    writer.close()
    return ReadError(ErrorKind.CONNECTION, f"{endpoint.host}:{endpoint.port} refused the client")
