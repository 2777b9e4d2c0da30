"""The only module that uses pymodbus's client API.

pymodbus moves its API between minor releases (keyword `device_id` vs `slave`, reconnect
behaviour, exception types), so everything version-specific is kept here, behind a small
interface: open a connection to one meter, send planned read requests on it, get back raw
words/bits or a classified error. Decoding, planning and scheduling never see pymodbus.

pymodbus version: pinned in pyproject.toml (3.16.x).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass
from enum import StrEnum

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from energymon_pipeline.modbus.types import Endpoint, FunctionCode, ReadRequest

# pymodbus logs every failed connect and timeout itself; this module classifies and reports
# them once, so pymodbus's own lines are only shown when its logger is configured explicitly.
_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ErrorKind(StrEnum):
    """How a read failed, in the words the run metadata and the CLI show."""

    REFUSED = "connection refused"
    TIMEOUT = "timeout"
    MODBUS_EXCEPTION = "modbus exception"
    MALFORMED = "malformed response"
    CONNECTION = "connection failed"


@dataclass(frozen=True, slots=True)
class ReadError:
    kind: ErrorKind
    detail: str = ""
    exception_code: int | None = None

    def __str__(self) -> str:
        if self.kind is ErrorKind.MODBUS_EXCEPTION:
            name = EXCEPTION_NAMES.get(self.exception_code or 0, "unknown")
            text = f"modbus exception {self.exception_code} ({name})"
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


class ModbusConnection:
    """One TCP connection to one meter, reused for every request and sample of a run."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client: AsyncModbusTcpClient | None = None
        self._last_request_at = 0.0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def open(self) -> ReadError | None:
        """Connect; returns the classified error, or None when connected."""
        endpoint = self.endpoint
        self.close()
        if endpoint.framer not in _FRAMERS:
            return ReadError(ErrorKind.CONNECTION, f"unknown framer {endpoint.framer!r}")
        client = AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            framer=_FRAMERS[endpoint.framer],
            timeout=endpoint.timeout_s,
            retries=max(0, endpoint.retries),
            # Reconnection is this module's decision, not a background task's.
            reconnect_delay=0,
            reconnect_delay_max=0,
        )
        started = time.monotonic()
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as error:  # pymodbus usually returns False instead
            client.close()
            return ReadError(ErrorKind.CONNECTION, str(error))
        if not ok:
            client.close()
            remaining = endpoint.timeout_s - (time.monotonic() - started)
            return await _classify_connect_failure(endpoint, remaining)
        self._client = client
        if endpoint.connect_delay_s > 0:
            await asyncio.sleep(endpoint.connect_delay_s)
        return None

    async def read(self, request: ReadRequest) -> BlockRead:
        """Send one read request; never raises for device or network faults."""
        if self.endpoint.request_delay_s > 0:
            wait = self._last_request_at + self.endpoint.request_delay_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        started = time.monotonic()
        if not self.connected:
            error = await self.open()
            if error is not None:
                return self._result(request, None, error, started)
        try:
            response = await self._send(request)
        except ConnectionException as error:
            self.close()
            return self._result(request, None, ReadError(ErrorKind.CONNECTION, str(error)), started)
        except ModbusIOException as error:
            if "No response" not in str(error):  # a reply for another unit or transaction
                return self._result(
                    request, None, ReadError(ErrorKind.MALFORMED, _first_line(error)), started
                )
            detail = f"no answer within {self.endpoint.timeout_s:g} s"
            if self.endpoint.retries:
                detail += f" ({self.endpoint.retries} retries)"
            # A late answer would otherwise arrive as the reply to the next request.
            self.close()
            return self._result(request, None, ReadError(ErrorKind.TIMEOUT, detail), started)
        except (ModbusException, OSError) as error:
            self.close()
            return self._result(request, None, ReadError(ErrorKind.MALFORMED, str(error)), started)
        finally:
            self._last_request_at = time.monotonic()
        if response.isError():
            code = getattr(response, "exception_code", None)
            return self._result(
                request, None, ReadError(ErrorKind.MODBUS_EXCEPTION, exception_code=code), started
            )
        data = _payload(request, response)
        if data is None:
            return self._result(
                request,
                None,
                ReadError(ErrorKind.MALFORMED, f"expected {request.count} values, got fewer"),
                started,
            )
        return self._result(request, data, None, started)

    async def _send(self, request: ReadRequest):
        client = self._client
        assert client is not None
        unit = self.endpoint.unit_id
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

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _first_line(error: Exception) -> str:
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
